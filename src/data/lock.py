"""One lock for every "build it once" step that concurrent jobs share: generated demo data,
slice-cache entries and trained classifiers in the model store.

The jobs may run on several machines that see one shared filesystem (NFS), so the lock is a
folder made with `mkdir`, which is atomic there too: of many concurrent calls exactly one
succeeds. `fcntl`/`flock` locks are not used: over NFS they depend on the lock daemon and on
mount options, and a lock a crashed machine held may never be released.

The holder writes `owner.json` (machine, pid, a random token, a heartbeat counter) into the
folder and rewrites it every `heartbeat` seconds from a thread, so a job that trains for hours
keeps its lock. A waiter takes the lock over when its holder is gone:

- the holder's process no longer exists (same machine and pid namespace: found at once), or
- the owner file has not changed for `stale_after` seconds, measured on the waiter's own
  clock (the clocks of two machines are never compared; a killed job on another node is
  found after `stale_after`).

Breaking a stale lock happens under a second, short-lived lock folder (`<lock>.break`), where
the waiter checks again that the owner file is still the one it judged stale, so two waiters
never both break it and a lock taken meanwhile is not broken. Removal first renames the folder
away, so nobody ever sees a half-deleted lock as a live one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from src.data.atomic import atomic_write_text

log = logging.getLogger(__name__)

T = TypeVar("T")

OWNER_FILE = "owner.json"
#: Seconds between two heartbeats of a holder.
HEARTBEAT = 15.0
#: Seconds without a heartbeat after which a lock counts as abandoned. NFS clients cache file
#: attributes for up to a minute, so this stays well above that.
STALE_AFTER = 180.0


class LockTimeout(TimeoutError):
    """The lock was still held by a live owner after the caller's timeout."""


def machine_id() -> str:
    """Host name and pid namespace: two processes with equal ids can see each other's pids."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{socket.gethostname()}/{namespace}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class DirLock:
    """A lock folder at `path` with an owner file and a heartbeat (see the module docstring).

    `label` is written into the owner file (e.g. the job that holds it) and named in the log
    of waiters; `timeout` (seconds, None = forever) bounds the wait for a live holder."""

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        label: str = "",
        heartbeat: float = HEARTBEAT,
        stale_after: float = STALE_AFTER,
        poll: float = 0.5,
        timeout: float | None = None,
    ) -> None:
        if not 0 < heartbeat < stale_after:
            raise ValueError(
                f"lock {path}: need 0 < heartbeat ({heartbeat}) < stale_after ({stale_after})"
            )
        self.path = Path(path)
        self.label = label
        self.heartbeat = heartbeat
        self.stale_after = stale_after
        self.poll = poll
        self.timeout = timeout
        self._token = ""
        self._beat = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- owner file ---------------------------------------------------------------------------

    def _write_owner(self) -> None:
        owner = {
            "machine": machine_id(),
            "pid": os.getpid(),
            "token": self._token,
            "beat": self._beat,
            "label": self.label,
        }
        atomic_write_text(self.path / OWNER_FILE, json.dumps(owner))

    def read_owner(self) -> dict | None:
        """The holder's owner record, or None (no lock, or one being made or removed)."""
        try:
            owner = json.loads((self.path / OWNER_FILE).read_text())
        except (OSError, ValueError):
            return None
        return owner if isinstance(owner, dict) else None

    @staticmethod
    def _state(owner: dict | None) -> tuple | None:
        return None if owner is None else (owner.get("token"), owner.get("beat"))

    @staticmethod
    def _holder_gone(owner: dict | None) -> bool:
        return (
            owner is not None
            and owner.get("machine") == machine_id()
            and isinstance(owner.get("pid"), int)
            and not _pid_alive(owner["pid"])
        )

    # -- acquire and release ------------------------------------------------------------------

    def acquire(self) -> None:
        """Wait until this process holds the lock (taking over an abandoned one)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        started = last_change = time.monotonic()
        last_state: tuple | None = None
        announced = False
        while True:
            try:
                os.mkdir(self.path)
            except FileExistsError:
                pass
            else:
                self._token = uuid.uuid4().hex
                self._beat = 0
                self._write_owner()
                self._start_heartbeat()
                return
            owner = self.read_owner()
            now = time.monotonic()
            if self._state(owner) != last_state:
                last_state, last_change = self._state(owner), now
            if self._holder_gone(owner) or now - last_change >= self.stale_after:
                self._break(last_state)
                continue
            if self.timeout is not None and now - started >= self.timeout:
                raise LockTimeout(f"{self.path}: still held by {owner} after {self.timeout:.0f} s")
            if not announced:
                log.info("Waiting for %s (held by %s)", self.path, owner)
                announced = True
            time.sleep(self.poll)

    def _break(self, judged: tuple | None) -> None:
        """Remove the lock if its owner file is still the one judged stale."""
        guard = self.path.with_name(self.path.name + ".break")
        try:
            os.mkdir(guard)
        except FileExistsError:
            # Another waiter is breaking it (milliseconds); a breaker killed meanwhile leaves
            # its guard behind, removed once older than `stale_after` (a margin that dwarfs
            # the clock skew between machines).
            with contextlib.suppress(OSError):
                if time.time() - guard.stat().st_mtime > self.stale_after:
                    os.rmdir(guard)
            time.sleep(self.poll)
            return
        try:
            owner = self.read_owner()
            if self._state(owner) == judged or self._holder_gone(owner):
                trash = self.path.with_name(f"{self.path.name}.stale-{uuid.uuid4().hex[:8]}")
                with contextlib.suppress(FileNotFoundError):
                    os.rename(self.path, trash)
                    shutil.rmtree(trash, ignore_errors=True)
                    log.warning(
                        "Took over the abandoned lock %s (was held by %s)", self.path, owner
                    )
        finally:
            os.rmdir(guard)

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat_loop, daemon=True, name="lock-heartbeat")
        self._thread.start()

    def _beat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat):
            if not self.held():
                log.error("Lost the lock %s (taken over as stale by another job)", self.path)
                return
            self._beat += 1
            with contextlib.suppress(OSError):
                self._write_owner()

    def held(self) -> bool:
        """True if the lock folder is this holder's."""
        owner = self.read_owner()
        return bool(self._token) and owner is not None and owner.get("token") == self._token

    def release(self) -> None:
        """Stop the heartbeat and remove the lock, unless another job took it over meanwhile."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.held():
            trash = self.path.with_name(f"{self.path.name}.done-{self._token[:8]}")
            os.rename(self.path, trash)
            shutil.rmtree(trash, ignore_errors=True)
        self._token = ""

    def __enter__(self) -> DirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_path(target: str | os.PathLike) -> Path:
    """The lock folder guarding `target`: a hidden sibling, never inside `target` itself
    (which may be a dataset folder)."""
    target = Path(target)
    return target.with_name(f".{target.name}.lock")


def build_once(
    target: str | os.PathLike,
    load: Callable[[], T | None],
    build: Callable[[], T],
    **lock_options: object,
) -> T:
    """`load()`'s result if there is one, else `build()` under the lock of `target`.

    Double-checked: after getting the lock `load()` runs again, so of many jobs started
    together one builds and the others wait and load its result."""
    found = load()
    if found is not None:
        return found
    with DirLock(lock_path(target), **lock_options):  # type: ignore[arg-type]
        found = load()
        return found if found is not None else build()
