"""The model store: keys by data content (not path), one trainer among concurrent jobs."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import time
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict
from pytorch_lightning.utilities import rank_zero_only

from src.data.fingerprint import content_fingerprint
from src.data.lock import DirLock, lock_path
from src.pipeline.stages import drop_last_checkpoints
from src.pipeline.store import (
    KEY_FILE,
    ModelStore,
    NonFiniteWeightsError,
    job_identity,
    training_key,
)

_fork = multiprocessing.get_context("fork")


def _dataset(root: Path, text: str = "voxels") -> Path:
    (root / "case1").mkdir(parents=True)
    (root / "case1" / "case1_flair.nii.gz").write_text(text)
    (root / "case1" / "case1_seg.nii.gz").write_text("labels")
    return root


@pytest.fixture
def brats_config(make_config, tmp_path: Path):
    def make(root: Path, *extra: str):
        return make_config(
            "data=brats",
            f"data.root={root}",
            f"paths.cache_dir={tmp_path / 'cache'}",
            f"paths.model_store={tmp_path / 'store'}",
            "pretrain=none",
            *extra,
        )

    return make


def test_same_data_at_another_path_has_the_same_key(brats_config, tmp_path: Path) -> None:
    here = _dataset(tmp_path / "node1" / "BraTS")
    there = tmp_path / "node2" / "mnt" / "BraTS"
    shutil.copytree(here, there)
    os.utime(there / "case1" / "case1_flair.nii.gz", ns=(1, 1))  # a copy has other mtimes
    key_here = training_key(brats_config(here), "finetune")
    assert key_here == training_key(brats_config(there), "finetune")
    assert str(here) not in json.dumps(key_here)


def test_other_content_or_file_names_change_the_key(brats_config, tmp_path: Path) -> None:
    base = training_key(brats_config(_dataset(tmp_path / "a")), "finetune")
    other_bytes = training_key(brats_config(_dataset(tmp_path / "b", "VOXELS")), "finetune")
    renamed = _dataset(tmp_path / "c")
    (renamed / "case1").rename(renamed / "case2")
    other_name = training_key(brats_config(renamed), "finetune")
    assert len({json.dumps(k, sort_keys=True) for k in (base, other_bytes, other_name)}) == 3


def test_split_file_enters_the_key_by_content(brats_config, tmp_path: Path) -> None:
    root = _dataset(tmp_path / "data")
    one, two = tmp_path / "one.json", tmp_path / "sub" / "two.json"
    two.parent.mkdir()
    one.write_text('{"train": ["case1"]}')
    two.write_text('{"train": ["case1"]}')
    key_one = training_key(brats_config(root, f"data.split_file={one}"), "finetune")
    key_two = training_key(brats_config(root, f"data.split_file={two}"), "finetune")
    assert key_one == key_two
    assert key_one != training_key(brats_config(root), "finetune")


def test_hidden_files_do_not_count_and_hashes_are_remembered(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "data")
    memo = tmp_path / "memo"
    first = content_fingerprint(root, memo)
    (root / ".marker.json").write_text("generator parameters")
    (root / ".cache").mkdir()
    assert content_fingerprint(tmp_path / "data" / ".." / "data", memo) == first
    [memo_file] = memo.iterdir()
    assert sorted(json.loads(memo_file.read_text())) == [
        "case1/case1_flair.nii.gz",
        "case1/case1_seg.nii.gz",
    ]


def test_remembered_hashes_are_trusted_until_size_or_mtime_change(tmp_path: Path) -> None:
    """A later run reads the memo instead of the files (that is what makes it cheap)."""
    from src.data import fingerprint as fp

    root = _dataset(tmp_path / "data")
    memo = tmp_path / "memo"
    first = content_fingerprint(root, memo)
    [memo_file] = memo.iterdir()
    remembered = json.loads(memo_file.read_text())
    remembered["case1/case1_seg.nii.gz"][2] = "0" * 64  # as if the bytes had hashed so
    memo_file.write_text(json.dumps(remembered))
    fp._fingerprint.cache_clear()
    trusted = content_fingerprint(root, memo)
    assert trusted != first
    (root / "case1" / "case1_seg.nii.gz").write_text("labels!")  # new size: hashed again
    fp._fingerprint.cache_clear()
    assert content_fingerprint(root, memo) not in (first, trusted)


def test_old_scheme_entries_are_named_and_not_reused(
    brats_config, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = brats_config(_dataset(tmp_path / "data"))
    old = tmp_path / "store" / "finetune-0123456789abcdef"
    old.mkdir(parents=True)
    (old / "weights.pt").write_bytes(b"")
    (old / KEY_FILE).write_text(json.dumps({"data": {"root": "/old/path"}, "data_files": "x"}))
    store = ModelStore(cfg.paths.model_store)
    with caplog.at_level(logging.INFO, logger="src.pipeline.store"):
        assert store.lookup(cfg, "finetune") is None
        assert store.lookup(cfg, "finetune") is None
    notes = [r.getMessage() for r in caplog.records if "older scheme" in r.getMessage()]
    assert len(notes) == 1 and "finetune-0123456789abcdef" in notes[0]


def _train_in_child(cfg, log: str, start: float) -> None:
    while time.time() < start:
        time.sleep(0.001)
    store = ModelStore(cfg.paths.model_store, poll=0.05)

    def train() -> Path:
        with open(log, "a") as f:
            f.write("train\n")
        time.sleep(1.0)
        return store.save(cfg, "finetune", {"w": torch.ones(2)})

    path = store.train_once(cfg, "finetune", train)
    assert torch.load(path)["w"].tolist() == [1.0, 1.0]


def test_concurrent_jobs_train_once_and_share_the_entry(brats_config, tmp_path: Path) -> None:
    cfg = brats_config(_dataset(tmp_path / "data"))
    log = tmp_path / "trainings.log"
    start = time.time() + 0.5
    jobs = [_fork.Process(target=_train_in_child, args=(cfg, str(log), start)) for _ in range(3)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(120)
    assert [job.exitcode for job in jobs] == [0, 0, 0]
    assert log.read_text().count("train") == 1
    # One entry and nothing else: no lock, no temporary folder.
    assert [p.name for p in (tmp_path / "store").iterdir()] == [
        ModelStore(cfg.paths.model_store).entry(cfg, "finetune").name
    ]


def _train_until_killed(cfg) -> None:
    store = ModelStore(cfg.paths.model_store, poll=0.05)

    def train() -> Path:
        time.sleep(600)  # the test kills the process meanwhile
        raise AssertionError("not killed")

    store.train_once(cfg, "finetune", train)


def test_a_job_killed_while_training_leaves_no_entry_and_blocks_nobody(
    brats_config, tmp_path: Path
) -> None:
    cfg = brats_config(_dataset(tmp_path / "data"))
    store = ModelStore(cfg.paths.model_store, poll=0.05)
    lock = lock_path(store.entry(cfg, "finetune"))
    victim = _fork.Process(target=_train_until_killed, args=(cfg,))
    victim.start()
    while not (lock / "owner.json").is_file():
        time.sleep(0.02)
    os.kill(victim.pid, 9)
    victim.join()
    assert store.lookup(cfg, "finetune") is None  # nothing half-written looks valid
    path = store.train_once(
        cfg, "finetune", lambda: store.save(cfg, "finetune", {"w": torch.ones(1)})
    )
    assert torch.load(path)["w"].tolist() == [1.0]
    assert not lock.exists()


def test_reuse_false_trains_even_with_an_entry(brats_config, tmp_path: Path) -> None:
    cfg = brats_config(_dataset(tmp_path / "data"), "reuse_classifier=false")
    store = ModelStore(cfg.paths.model_store)
    store.save(cfg, "finetune", {"w": torch.zeros(1)})
    calls = []
    store.train_once(cfg, "finetune", lambda: calls.append(1) or Path("new"))
    assert calls == [1]


def test_other_ranks_join_their_own_job_and_load_others_results(
    brats_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rank > 0 takes no lock: it trains when its own job's rank 0 holds the lock (DDP needs
    every rank) and loads the entry another job stored."""
    cfg = brats_config(_dataset(tmp_path / "data"))
    store = ModelStore(cfg.paths.model_store, poll=0.01)
    entry = store.entry(cfg, "finetune")
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    with DirLock(lock_path(entry), label=job_identity(cfg)):
        assert store.train_once(cfg, "finetune", lambda: Path("trained")) == Path("trained")
    other = cfg.copy()
    with open_dict(other):
        other.paths.output_dir = str(tmp_path / "another-run")
    with DirLock(lock_path(entry), label=job_identity(other)):
        store.save(cfg, "finetune", {"w": torch.ones(1)})
        assert store.train_once(cfg, "finetune", lambda: Path("trained")) == entry / "weights.pt"


def test_a_completed_run_drops_only_its_last_checkpoints(tmp_path, make_config):
    assert make_config().keep_last_checkpoint is False  # the default
    for stage in ("pretrain", "finetune"):
        folder = tmp_path / "checkpoints" / stage
        folder.mkdir(parents=True)
        for name in ("last.ckpt", "best-epoch=1.ckpt", "key.json"):
            (folder / name).write_text(name)
    drop_last_checkpoints(tmp_path)
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == [
        "checkpoints/finetune/best-epoch=1.ckpt",
        "checkpoints/finetune/key.json",
        "checkpoints/pretrain/best-epoch=1.ckpt",
        "checkpoints/pretrain/key.json",
    ]


def test_loader_settings_stay_out_of_the_key(brats_config, tmp_path: Path) -> None:
    """num_workers' default moved from 0 to null (auto) and pin_memory / persistent_workers
    are new: a stored classifier keeps its key whatever they are."""
    root = _dataset(tmp_path / "data")
    base = training_key(brats_config(root), "finetune")
    assert not {"num_workers", "pin_memory", "persistent_workers"} & set(base["data"])
    loaders = ("data.num_workers=0", "data.pin_memory=true", "data.persistent_workers=true")
    assert training_key(brats_config(root, *loaders), "finetune") == base


def test_zeros_padding_stays_out_of_the_key(brats_config, tmp_path: Path) -> None:
    """`backbone.net.padding_mode` was added at `zeros` (the former network): classifiers
    stored before keep their key; another padding is another network."""
    root = _dataset(tmp_path / "data")
    base = training_key(brats_config(root), "finetune")
    assert "padding_mode" not in base["backbone"]
    assert training_key(brats_config(root, "backbone.net.padding_mode=zeros"), "finetune") == base
    reflect = training_key(brats_config(root, "backbone.net.padding_mode=reflect"), "finetune")
    assert reflect["backbone"]["padding_mode"] == "reflect"


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_diverged_weights_are_refused_and_nothing_is_stored(brats_config, tmp_path, bad) -> None:
    """A training that diverged must not leave weights every later run with the same key
    would reuse: the store refuses them, names the tensor, and keeps no entry."""
    cfg = brats_config(_dataset(tmp_path / "data"))
    store = ModelStore(cfg.paths.model_store)
    weights = {"conv.weight": torch.ones(2, 2), "bn.num_batches_tracked": torch.tensor(3)}
    weights["fc.bias"] = torch.tensor([0.0, bad])
    with pytest.raises(NonFiniteWeightsError, match="fc.bias"):
        store.save(cfg, "pretrain", weights)
    assert store.lookup(cfg, "pretrain") is None
    weights["fc.bias"] = torch.zeros(2)
    assert store.save(cfg, "pretrain", weights).is_file()


def test_an_early_stop_enters_the_key_only_when_set(brats_config, tmp_path: Path) -> None:
    """`finetune.patience` is newer than the stored classifiers: off (null) it leaves the key
    as it was, so they are still found; set, it can keep another epoch, so it is a new key."""
    root = _dataset(tmp_path / "data")
    base = training_key(brats_config(root), "finetune")
    assert "patience" not in base["finetune"]
    stopped = training_key(brats_config(root, "finetune.patience=3"), "finetune")
    assert stopped["finetune"]["patience"] == 3
    assert {k: v for k, v in stopped["finetune"].items() if k != "patience"} == base["finetune"]
