"""The shared lock: one builder among concurrent processes, abandoned locks taken over."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from src.data.cache import cached, load_entry
from src.data.lock import OWNER_FILE, DirLock, LockTimeout, build_once, lock_path, machine_id

# Fork: the children need nothing but this module's functions, and start in milliseconds.
_fork = multiprocessing.get_context("fork")


def _exit_codes_of_together(target, args: tuple, count: int) -> list[int | None]:
    """Run `target(*args, start)` in `count` forked processes that begin at the same instant
    `start`, half a second from now; their exit codes."""
    start = time.time() + 0.5
    workers = [_fork.Process(target=target, args=(*args, start)) for _ in range(count)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    return [w.exitcode for w in workers]


def _build_counting(target: str, log: str, start: float) -> None:
    """Wait for the common start, then build `target` once; every build appends to `log`."""
    while time.time() < start:
        time.sleep(0.001)

    def load() -> str | None:
        return Path(target).read_text() if Path(target).is_file() else None

    def build() -> str:
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(0.5)  # long enough for the others to find the lock taken
        Path(target).write_text("built")
        return "built"

    assert build_once(target, load, build, poll=0.05) == "built"


def test_one_of_several_processes_builds(tmp_path: Path) -> None:
    target, log = tmp_path / "thing", tmp_path / "builds.log"
    assert _exit_codes_of_together(_build_counting, (str(target), str(log)), 4) == [0] * 4
    assert len(log.read_text().split()) == 1
    assert target.read_text() == "built"
    # The lock is gone and left nothing beside the target.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["builds.log", "thing"]


def _hold_forever(path: str) -> None:
    DirLock(path, heartbeat=0.1, stale_after=1.0).acquire()
    time.sleep(600)


def test_a_killed_holder_on_this_machine_is_taken_over_at_once(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    holder = _fork.Process(target=_hold_forever, args=(str(path),))
    holder.start()
    while not (path / OWNER_FILE).is_file():
        time.sleep(0.01)
    os.kill(holder.pid, signal.SIGKILL)
    holder.join()
    # stale_after is far away: the dead pid alone must free the lock.
    lock = DirLock(path, stale_after=3600, heartbeat=60, poll=0.01, timeout=30)
    lock.acquire()
    assert lock.held()
    lock.release()
    assert not path.exists()


def _fake_owner(path: Path, machine: str, beat: int = 0) -> None:
    path.mkdir(exist_ok=True)
    owner = {"machine": machine, "pid": 1, "token": "other", "beat": beat, "label": "x"}
    (path / OWNER_FILE).write_text(json.dumps(owner))


def test_a_silent_holder_on_another_machine_is_taken_over_after_stale_after(
    tmp_path: Path,
) -> None:
    path = tmp_path / "lock"
    _fake_owner(path, "other-node/pid:[1]")
    lock = DirLock(path, heartbeat=0.05, stale_after=0.5, poll=0.02, timeout=30)
    started = time.monotonic()
    lock.acquire()
    assert time.monotonic() - started >= 0.5
    assert lock.read_owner()["machine"] == machine_id()
    lock.release()


def test_a_holder_with_a_heartbeat_is_waited_for(tmp_path: Path) -> None:
    """A live holder elsewhere (its heartbeat moves) is never taken over: the wait times out."""
    path = tmp_path / "lock"
    _fake_owner(path, "other-node/pid:[1]")
    lock = DirLock(path, heartbeat=0.05, stale_after=0.3, poll=0.02, timeout=1.0)
    beats = iter(range(1, 1000))
    original_sleep = time.sleep

    def sleep_and_beat(seconds: float) -> None:
        _fake_owner(path, "other-node/pid:[1]", next(beats))
        original_sleep(seconds)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(time, "sleep", sleep_and_beat)
        with pytest.raises(LockTimeout, match="still held"):
            lock.acquire()
    assert json.loads((path / OWNER_FILE).read_text())["token"] == "other"


def test_heartbeat_rewrites_the_owner_file(tmp_path: Path) -> None:
    with DirLock(tmp_path / "lock", heartbeat=0.05, stale_after=1.0) as lock:
        first = lock.read_owner()["beat"]
        # Every 0.05 s on an idle machine; the deadline is for a heartbeat that never comes
        # (a loaded machine may not run the heartbeat thread within any short delay).
        deadline = time.monotonic() + 60
        while lock.read_owner()["beat"] == first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lock.read_owner()["beat"] > first


def test_release_leaves_a_lock_taken_over_by_another_job(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    lock = DirLock(path, heartbeat=10, stale_after=60)
    lock.acquire()
    _fake_owner(path, "other-node/pid:[1]")  # as if it had been judged stale and re-taken
    lock.release()
    assert json.loads((path / OWNER_FILE).read_text())["token"] == "other"


def test_bad_timing_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="heartbeat"):
        DirLock(tmp_path / "lock", heartbeat=5, stale_after=5)


def test_lock_sits_beside_its_target_never_inside() -> None:
    assert lock_path(Path("/data/demo/brats2021")) == Path("/data/demo/.brats2021.lock")


def _decode_counting(entry: str, log: str, start: float) -> None:
    while time.time() < start:
        time.sleep(0.001)

    def decode() -> dict[str, np.ndarray]:
        with open(log, "a") as f:
            f.write("decode\n")
        time.sleep(0.5)
        return {"image": np.arange(6, dtype=np.float32).reshape(2, 3)}

    arrays = cached(Path(entry), {"a.nii.gz": [1, 2]}, decode)
    assert arrays["image"].tolist() == [[0, 1, 2], [3, 4, 5]]


def test_slice_cache_entry_is_decoded_once_by_concurrent_processes(tmp_path: Path) -> None:
    entry, log = tmp_path / "case_flair.npz", tmp_path / "decodes.log"
    assert _exit_codes_of_together(_decode_counting, (str(entry), str(log)), 3) == [0] * 3
    assert log.read_text().count("decode") == 1
    assert load_entry(entry, {"a.nii.gz": [1, 2]})["image"].shape == (2, 3)
