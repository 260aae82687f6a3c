"""Advisory file locks (fcntl.flock) for runs that share a root.

flock locks belong to the open file and the kernel drops them when the process dies,
SIGKILL included, so a lock can never outlive its owner: a run lock that can be taken
means the run that held it is gone. Lock files live under `<root>/locks/` for a local
root; for a remote root (gs://...) under a local directory named after the root, so
they order the runs of one host (docs/operations.md, "Overlap, kills and resume").
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator


def lock_dir(root: str) -> str:
    if "://" in root:
        digest = hashlib.sha256(root.encode()).hexdigest()[:16]
        path = os.path.join(tempfile.gettempdir(), "ae-pipeline-locks", digest)
    else:
        path = os.path.join(root, "locks")
    os.makedirs(path, exist_ok=True)
    return path


class FileLock:
    """An exclusive lock on `<lock_dir>/<name>.lock`; the holder's note is kept in the file
    so a waiter can say what it waits for."""

    def __init__(self, root: str, name: str):
        self.path = os.path.join(lock_dir(root), f"{name}.lock")
        self._fd: int | None = None

    def acquire(self, blocking: bool = True, note: str = "") -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        if note:
            os.ftruncate(fd, 0)
            os.pwrite(fd, note.encode(), 0)
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def holder_note(self) -> str:
        try:
            with open(self.path) as f:
                return f.read().strip()
        except OSError:
            return ""

    def is_held_elsewhere(self) -> bool:
        """True when another open file holds the lock (its owner is alive)."""
        if self.acquire(blocking=False):
            self.release()
            return False
        return True


@contextlib.contextmanager
def held(
    root: str,
    name: str,
    note: str = "",
    on_wait: Callable[[str], None] | None = None,
    poll_s: float = 0.5,
) -> Iterator[None]:
    """Hold the lock for the block; `on_wait(holder_note)` is called once if it must wait."""
    lock = FileLock(root, name)
    if not lock.acquire(blocking=False, note=note):
        if on_wait:
            on_wait(lock.holder_note())
        while not lock.acquire(blocking=False, note=note):
            time.sleep(poll_s)  # polling, not a blocking flock: Ctrl-C stays responsive
    try:
        yield
    finally:
        lock.release()
