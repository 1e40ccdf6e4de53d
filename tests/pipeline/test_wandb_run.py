"""The pipeline's W&B run: complete on disk when the pipeline returns, and its attached
result files movable with the run folder."""

from __future__ import annotations

import json
import os

import pytest

from src.evaluation.wandb_report import log_results
from src.pipeline.trainer import PipelineLoggers

pytest.importorskip("wandb")


def test_finished_offline_run_holds_its_summary_and_relative_links(
    make_config, tmp_path, monkeypatch
):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    cfg = make_config("logger=wandb", output_dir=out)
    loggers = PipelineLoggers(cfg)
    loggers.for_stage("eval")
    run = loggers.wandb_run()
    summary = {"groups": {"all": {"n": 2}}, "headline": {"dice": {"mean": 0.5}}}
    (out / "summary.json").write_text(json.dumps(summary))
    (out / "per_image.csv").write_text("id,dice\na,0.5\n")
    rows = [{"id": "a", "dice": 0.5}]
    files = [out / "summary.json", out / "per_image.csv"]
    log_results(run, summary, rows, {}, [], files=files)
    loggers.finish()
    (folder,) = (out / "wandb").glob("offline-run-*")
    # Read at once: the service used to write the log after run.finish() returned.
    run_log = next(folder.glob("run-*.wandb")).read_bytes()
    assert b"eval/headline/dice/mean" in run_log and b"eval/all/n" in run_log
    for name in ("summary.json", "per_image.csv"):
        link = folder / "files" / name
        assert link.is_symlink() and not os.path.isabs(os.readlink(link)), name
        assert link.read_text() == (out / name).read_text()
