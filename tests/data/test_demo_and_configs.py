"""Demo data cache and the Hydra configs of the data group."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from src.data.brats import BraTSDataModule
from src.data.demo import MARKER, ensure_demo_brats

CONF = Path(__file__).resolve().parents[2] / "conf" / "data"
TINY = {"shape": [24, 24, 10], "normal_cases": 1}


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def test_demo_is_generated_once_and_rebuilt_on_change(tmp_path):
    root = tmp_path / "demo"
    assert ensure_demo_brats(root, n_cases=3, seed=0, **TINY) == root
    marker = json.loads((root / MARKER).read_text())
    assert marker["params"]["n_cases"] == 3 and len(marker["cases"]) == 3
    first = _mtimes(root)
    ensure_demo_brats(root, n_cases=3, seed=0, **TINY)
    assert _mtimes(root) == first  # cached: nothing rewritten

    # An incomplete folder is rebuilt.
    case = marker["cases"][0]
    (root / case / f"{case}_t2.nii.gz").unlink()
    ensure_demo_brats(root, n_cases=3, seed=0, **TINY)
    assert (root / case / f"{case}_t2.nii.gz").is_file()

    # Other parameters rebuild it; the reader ignores the hidden marker.
    ensure_demo_brats(root, n_cases=4, seed=1, **TINY)
    assert len([p for p in root.iterdir() if p.is_dir()]) == 4
    dm = BraTSDataModule(root, cache_dir=tmp_path / "cache")
    dm.setup()
    assert sum(len(v) for v in dm.split.values()) == 4
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".demo")]  # no temp dirs left


def test_demo_refuses_to_replace_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not a generated demo folder"):
        ensure_demo_brats(tmp_path / "mine", n_cases=2, **TINY)


def _compose(name: str, tmp_path: Path, **extra) -> dict:
    cfg = OmegaConf.create(
        {"modality": "t2", "paths": {"cache_dir": str(tmp_path / "cache")}, **extra}
    )
    group = OmegaConf.load(CONF / f"{name}.yaml")
    defaults = group.pop("defaults", [])
    for parent in defaults:  # emulate Hydra's defaults list inside the data group
        if parent != "_self_":
            group = OmegaConf.merge(OmegaConf.load(CONF / f"{parent}.yaml"), group)
    cfg.data = group
    return cfg


def test_demo_config_instantiates_brats_module(tmp_path):
    cfg = _compose("demo", tmp_path)
    data = OmegaConf.to_container(cfg.data, resolve=True)
    demo = data.pop("demo")
    assert set(demo) == {"n_cases", "seed", "normal_cases"}
    assert data["root"] == str(tmp_path / "cache" / "demo" / "brats2021")
    dm = instantiate(data)
    assert isinstance(dm, BraTSDataModule)
    assert dm.modalities == ["t2"] and dm.image_size == (64, 64) and dm.slice_range == (30, 130)


@pytest.mark.parametrize("name", ["brats", "tcga_lgg", "ksdd2", "voc"])
def test_dataset_configs_instantiate(name, tmp_path):
    cfg = _compose(name, tmp_path)
    cfg.data.root = str(tmp_path)
    dm = instantiate(cfg.data)
    assert dm.num_classes in (1, 20) and dm.batch_size > 0


def test_hydra_composes_the_group(tmp_path):
    """The real Hydra defaults-list form inside the group works (demo extends brats)."""
    from hydra import compose, initialize_config_dir

    primary = tmp_path / "conf"
    (primary / "data").mkdir(parents=True)
    for f in CONF.glob("*.yaml"):
        (primary / "data" / f.name).write_text(f.read_text())
    (primary / "config.yaml").write_text(
        "defaults:\n  - data: demo\n  - _self_\nmodality: flair\npaths:\n  cache_dir: /c\n"
    )
    with initialize_config_dir(str(primary), version_base="1.3"):
        cfg = compose("config")
    assert cfg.data._target_ == "src.data.brats.BraTSDataModule"
    assert cfg.data.modality == "flair" and cfg.data.cache_dir == "/c/slices"
    assert cfg.data.image_size == 64 and cfg.data.demo.n_cases == 12
