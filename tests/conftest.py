"""Fixtures that test folders opt into."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

# Under pytest-xdist (`make test`: one worker per core) each worker, and through the
# environment each subprocess it starts, gets one intra-op thread: torch's default of one
# thread per core in every worker oversubscribes the cores, and an OpenMP thread that waits
# for a busy core spins.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

# The checkout first on sys.path, whatever starts pytest (`python -m pytest` or the `pytest`
# script, importlib mode inserts nothing): `tests.helpers`, `experiments` and `benchmarks` are
# folders of the checkout, not installed, and `src` must be this checkout's.
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


RELEASE_OPTION = "--release"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        RELEASE_OPTION,
        action="store_true",
        help="also run the tests marked `release` (what `make test-all` does)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `release` (the long runs: every README command as written, the 30-job
    sweep) are skipped unless --release is given: `make test` stays within CI's budget,
    `make test-all` runs everything before a release."""
    if config.getoption(RELEASE_OPTION):
        return
    skip = pytest.mark.skip(reason=f"release test: `make test-all` ({RELEASE_OPTION}) runs it")
    for item in items:
        if item.get_closest_marker("release") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    """One intra-op thread for a module of tiny-model tests: on a shared 2-core machine two
    OpenMP threads made a 32 px ResNet-18 forward ~60x slower (0.7 s vs 12 ms)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- Data and trained networks shared by the end-to-end tests of the whole session ---------
# Each is built once, on first use, and is read-only for the tests: a test that must change
# one copies it. A test whose subject is the building itself (generation, training, the
# store's locking) still builds its own.


@pytest.fixture(scope="session")
def brats_e2e(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The end-to-end tests' BraTS-format data: 6 generated cases of 64x64x16 voxels
    (seed 1, each with a tumour) in `data`, beside a slice cache (`slices`) and a model store
    (`store`) that the tests running the pipeline on them share."""
    from src.data.generators.brats import generate_brats

    root = tmp_path_factory.mktemp("brats-e2e")
    generate_brats(root / "BraTS2021", n_cases=6, seed=1, shape=(64, 64, 16), normal_cases=0)
    (root / "cache" / "slices").mkdir(parents=True)  # present for the tests that link to it
    return {
        "root": root,
        "data": root / "BraTS2021",
        "slices": root / "cache" / "slices",
        "store": root / "cache" / "classifiers",
    }


@pytest.fixture(scope="session")
def demo_brats(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's generated BraTS copy (`data=demo`, the default), where `make run` keeps it:
    this checkout's `.cache/demo` (generated here on first use, as `make run` does; a
    checkout that ran `make run` has it already)."""
    from src.pipeline.compose import compose_config
    from src.pipeline.stages import build_datamodule

    cfg = compose_config(["logger=none"], tmp_path_factory.mktemp("demo-config"), cwd=REPO_ROOT)
    build_datamodule(cfg).prepare_data()
    return Path(cfg.data.root)


@pytest.fixture(scope="module")
def module_tmp_path(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[Path]:
    """A folder for the runs a test module shares, removed when the module is done unless one
    of its tests failed. `tmp_path_factory` folders otherwise stay until the session ends, and
    the end-to-end modules write 0.1-0.9 GB each (checkpoints, stores, run folders): together
    enough to fill a small CI disk (pyproject.toml removes a passing test's own tmp_path)."""
    path = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    failed_before = request.session.testsfailed
    yield path
    if request.session.testsfailed == failed_before:
        shutil.rmtree(path, ignore_errors=True)
