"""`stage=masks maps_from=<old run>` on a run folder written before the pipeline/evaluation
seam (issue 12): the old files still load and re-mask to the results the old code gave."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from src.pipeline.stages import run_pipeline
from tests.pipeline.old_run_fixture import LITERAL, ROOT, build_old_run, remask_config


@pytest.fixture(scope="module")
def old_run(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("old-run")
    return root, build_old_run(root)


@pytest.mark.parametrize("mask", ["otsu", "threshold"])
def test_an_old_run_folder_remasks_to_the_old_results(old_run, mask):
    root, source = old_run
    out = root / f"remask-{mask}"
    summary = run_pipeline(remask_config(root, source, out, mask))
    expected = (LITERAL / f"remask-{mask}.per_image.csv").read_text()
    assert (out / "per_image.csv").read_text() == expected.replace(ROOT, str(root))
    expected_summary = json.loads(
        (LITERAL / f"remask-{mask}.summary.json").read_text().replace(ROOT, str(root))
    )
    # Everything the old code wrote is the same; the one addition since is the per-case
    # scoring of volumes (`per_case`, and its sentence in `conventions`).
    written = json.loads((out / "summary.json").read_text())
    assert set(written) - set(expected_summary) == {"per_case"}
    assert set(written["conventions"]) - set(expected_summary["conventions"]) == {"per_case"}
    written.pop("per_case")
    written["conventions"].pop("per_case")
    assert written == expected_summary
    assert summary["headline"] == expected_summary["headline"]


def test_an_old_run_folder_without_its_summary_fails_naming_the_file(old_run, tmp_path):
    root, source = old_run
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for name in ("per_image.csv", "cam_maps.npz", "config.yaml"):
        (damaged / name).write_bytes((source / name).read_bytes())
    with pytest.raises(FileNotFoundError, match="summary.json"):
        run_pipeline(remask_config(root, damaged, tmp_path / "out", "otsu"))
