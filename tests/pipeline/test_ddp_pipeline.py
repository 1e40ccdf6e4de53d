"""`python -m src.run trainer=ddp stage=all` on CPU: pretrain, finetune and eval in 2 gloo
processes on a shrunken demo, through the real command line (Lightning's DDP launcher
re-executes the command for rank 1, which it could not do from inside pytest)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import torch

from src.evaluation.map_store import read_maps
from src.evaluation.sampling import eval_indices
from src.pipeline.stages import build_datamodule
from src.pipeline.store import load_state_dict
from tests.helpers.processes import run_python

EVAL_IMAGES = 5  # odd: the distributed sampler repeats one image to even out the 2 shards
# The demo, shrunk: 8 cases of 64x64x24 voxels (4 train / 2 val / 2 test), 64 px, 1 epoch per
# stage, a cheap CAM and mask.
DEMO = [
    "data=demo",
    "+data.demo.shape=[64,64,24]",
    "data.demo.n_cases=8",
    "data.demo.normal_cases=1",
    "data.slice_range=null",
    "data.slice_step=1",
    "data.image_size=64",
    "keep_last_checkpoint=true",  # the tests read last.ckpt
    "pretrain.enabled=true",
    "pretrain.epochs=1",
    "pretrain.batch_size=32",
    "finetune.epochs=1",
    f"eval.limit={EVAL_IMAGES}",
    "cam=gradcam",
    "cam.mask=otsu",
    "eval.mask_workers=0",
    "eval.figure_images=2",
    "trainer.enable_progress_bar=false",
    "logger=csv",
    "threads=1",
    "keep_last_checkpoint=true",  # the tests read the step counts of the last epochs
]


@pytest.fixture(scope="module")
def ddp_run(module_tmp_path) -> dict[str, Path]:
    root = module_tmp_path
    out = root / "run"
    command = [
        "-m",
        "src.run",
        *DEMO,
        f"paths.root_dir={root}",
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        "stage=all",
        f"hydra.run.dir={out}",
    ]
    result = run_python(*command)
    assert "distributed_backend=gloo" in result.stdout + result.stderr
    return {"root": root, "out": out, "store": root / ".cache" / "classifiers"}


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "per_image.csv") as handle:
        return list(csv.DictReader(handle))


def test_store_holds_one_entry_per_stage_written_by_rank_zero(ddp_run):
    entries = sorted(p.name for p in ddp_run["store"].iterdir())
    # No second copy and no leftover temporary folder of a concurrent write.
    assert len(entries) == 2, entries
    assert entries[0].startswith("finetune-") and entries[1].startswith("pretrain-")
    logs = {p.name: p.read_text() for p in ddp_run["out"].glob("*.log")}
    assert set(logs) == {"run.log", "train_ddp_process_1.log"}
    assert logs["run.log"].count("Stored") == 2
    assert "Stored" not in logs["train_ddp_process_1.log"]
    # The stored classifier is the best checkpoint both ranks agreed on.
    best = [re.findall(r"Best val/auc .*", text) for text in logs.values()]
    assert len(best[0]) == 1 and best[0] == best[1], best
    checkpoint = best[0][0].rsplit("(", 1)[1].rstrip(")")
    stored = torch.load(
        ddp_run["store"] / entries[0] / "weights.pt", map_location="cpu", weights_only=True
    )
    expected = load_state_dict(checkpoint)
    assert stored.keys() == expected.keys()
    assert all(torch.equal(stored[k], expected[k]) for k in stored)


def test_training_was_sharded_over_the_two_processes(ddp_run):
    """Each process sees half of every epoch: the step counts are those of half the data."""
    checkpoints = ddp_run["out"] / "checkpoints"
    pretrain = torch.load(checkpoints / "pretrain" / "last.ckpt", weights_only=True)
    finetune = torch.load(checkpoints / "finetune" / "last.ckpt", weights_only=True)
    # 4 train cases x 24 slices = 96 items, 48 per process: batch 32 -> 2 steps, 16 -> 3.
    assert pretrain["global_step"] == 2
    assert finetune["global_step"] == 3


def test_each_evaluated_image_is_reported_once(ddp_run, composer, tmp_path):
    out = ddp_run["out"]
    rows = _rows(out)
    ids = [r["id"] for r in rows]
    assert len(ids) == EVAL_IMAGES and len(set(ids)) == EVAL_IMAGES
    # Exactly the images a one-process evaluation picks.
    cfg = composer([*DEMO, f"paths.root_dir={ddp_run['root']}"], tmp_path)
    datamodule = build_datamodule(cfg)
    dataset = datamodule.dataset("test")
    chosen = eval_indices(dataset, EVAL_IMAGES, cfg.eval.positive_fraction)
    assert sorted(ids) == sorted(dataset.ids[i] for i in chosen)
    assert sorted(dict(read_maps(out / "cam_maps.npz"))) == sorted(ids)
    assert not list(out.glob("cam_maps.rank*"))
    for name in ("config.yaml", "summary.json", "overview.png", "split.json"):
        assert (out / name).is_file(), name


def test_supervised_unet_trains_and_scores_under_ddp(tmp_path):
    """`method=supervised trainer=ddp`: the U-Net trains in 2 processes (half the steps each),
    rank 0 stores it once, and every evaluated image is reported once."""
    out = tmp_path / "run"
    run_python(
        "-m",
        "src.run",
        *DEMO,
        "method=supervised",
        "segmenter.epochs=1",
        "segmenter.batch_size=16",
        "segmenter.net.filters=[4,8,16,32,64]",
        f"paths.root_dir={tmp_path}",
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        f"hydra.run.dir={out}",
    )
    store = tmp_path / ".cache" / "classifiers"
    assert [p.name.split("-")[0] for p in store.iterdir()] == ["segmenter"]
    last = torch.load(out / "checkpoints" / "segmenter" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 3  # 96 training slices, 48 per process, batch 16
    ids = [r["id"] for r in _rows(out)]
    assert len(ids) == EVAL_IMAGES and len(set(ids)) == EVAL_IMAGES
    assert "Stored" not in (out / "train_ddp_process_1.log").read_text()
