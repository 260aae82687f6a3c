"""train's resumable state, written so that a stop at any instant leaves it usable.

Keras' BackupAndRestore and ModelCheckpoint write their `.weights.h5` in place: a SIGTERM
(systemd's stop) or a SIGKILL during the write leaves a truncated file that the next run
cannot load. Here every write goes to a new name beside the target and is renamed into
place once complete and fsynced:

- the backup (weights, optimizer state and epoch) is a directory `backup/epoch-NNNN/`,
  built as `backup/.tmp-*` and renamed; the newest complete one is restored and the one
  before it is kept as a fallback;
- the best checkpoint is written as `.tmp-<random>-<name>` and renamed over `<name>`.

The HDF5 file itself is made in memory (weights_bytes), so a full disk fails a plain
write with ENOSPC, which the pipeline reports as an environment failure (exit 74).

A backup that cannot be restored (damaged on disk, or written by an older version in
place) is moved aside to `<work_dir>/unusable/` and named in the log and in the stage's
`warnings` metric; training resumes from the next older one or starts again.
"""

from __future__ import annotations

import glob
import io
import json
import os
import shutil
import time
import uuid

import keras
from keras.src.saving import saving_lib  # Keras' own weights writer, given a buffer here

EPOCH_PREFIX = "epoch-"
WEIGHTS = "latest.weights.h5"  # Keras' names, so a backup reads like Keras' own
METADATA = "training_metadata.json"
UNUSABLE_DIR = "unusable"
KEEP = 2  # the newest backup and the one before it


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def weights_bytes(model) -> bytes:
    """The `.weights.h5` that model.save_weights writes, made in memory. HDF5 never writes
    to the disk itself: a full disk under its own writes leaves it in a state that
    crashes the process at exit (SIGSEGV), so only plain file writes meet the disk."""
    buffer = io.BytesIO()
    store = saving_lib.H5IOStore(buffer, mode="w")
    saving_lib._save_state(
        model, weights_store=store, assets_store=None, inner_path="", visited_saveables=set()
    )
    store.close()
    return buffer.getvalue()


def _write(path: str, data: bytes) -> None:
    """`data` into a new file, fsynced; a failed write names the file (a write error's
    OSError carries no file name)."""
    try:
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise OSError(e.errno, e.strerror, path) from None


def write_atomically(path: str, data: bytes) -> None:
    """`data` into `path`, written beside it, fsynced and renamed: `path` is always either
    the previous complete file or the new complete one."""
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".tmp-{uuid.uuid4().hex[:8]}-{name}")
    try:
        _write(tmp, data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    _fsync_dir(directory or ".")


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """Keras' ModelCheckpoint (best weights by a monitored value) whose file is replaced
    atomically."""

    def _save_model(self, epoch, batch, logs):
        model = self.model
        path = self._get_file_path(epoch, batch, logs)
        if not self._should_save_model(epoch, batch, logs, path):
            return
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        write_atomically(path, weights_bytes(model))


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore with the layout of the module docstring. `restore(model)`
    runs before fit (so the caller knows whether it resumes); on_train_begin then has
    nothing left to do."""

    def __init__(self, backup_dir: str, unusable_dir: str, log):
        super().__init__(backup_dir=backup_dir)
        self.unusable_dir, self.log = unusable_dir, log
        self.set_aside: list[str] = []  # backups moved to unusable_dir by restore()

    # -- restore ---------------------------------------------------------------------
    def candidates(self) -> list[str]:
        """Backup directories, newest first; an older version's in-place backup last."""
        found = sorted(glob.glob(os.path.join(self.backup_dir, EPOCH_PREFIX + "*")), reverse=True)
        if os.path.exists(os.path.join(self.backup_dir, WEIGHTS)) or os.path.exists(
            os.path.join(self.backup_dir, METADATA)
        ):
            found.append(self.backup_dir)
        return found

    def restore(self, model) -> int | None:
        """Load the newest backup that loads into `model`; returns its epoch, or None to
        start from scratch. Leftovers of interrupted writes are removed."""
        for tmp in glob.glob(os.path.join(self.backup_dir, ".tmp-*")):
            shutil.rmtree(tmp, ignore_errors=True)
        self.set_model(model)
        for candidate in self.candidates():
            try:
                with open(os.path.join(candidate, METADATA)) as f:
                    epoch = int(json.load(f)["epoch"])
                if not model.optimizer.built:  # optimizer slots exist before they are loaded
                    model.optimizer.build(model.trainable_variables)
                model.load_weights(os.path.join(candidate, WEIGHTS))
            except Exception as e:  # noqa: BLE001 - any unreadable backup is set aside
                self._set_aside(candidate, e)
                continue
            model._initial_epoch = epoch
            return epoch
        return None

    def _set_aside(self, candidate: str, error: Exception) -> None:
        os.makedirs(self.unusable_dir, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        target = os.path.join(self.unusable_dir, f"{os.path.basename(candidate)}-{stamp}")
        if candidate == self.backup_dir:  # an in-place backup: move its files only
            os.makedirs(target, exist_ok=True)
            for name in (WEIGHTS, METADATA):
                if os.path.exists(os.path.join(candidate, name)):
                    os.replace(os.path.join(candidate, name), os.path.join(target, name))
        else:
            os.replace(candidate, target)
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        self.log.warning(
            "train: backup %s cannot be restored (%s); moved aside to %s",
            candidate,
            reason[:200],
            target,
        )
        self.set_aside.append(target)

    def on_train_begin(self, logs=None):
        pass  # restore() ran before fit

    # -- save ------------------------------------------------------------------------
    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        tmp = os.path.join(self.backup_dir, f".tmp-{uuid.uuid4().hex[:8]}")
        final = os.path.join(self.backup_dir, f"{EPOCH_PREFIX}{self._current_epoch:06d}")
        os.makedirs(tmp)
        try:
            for name, data in (
                (WEIGHTS, weights_bytes(self.model)),
                (
                    METADATA,
                    json.dumps(
                        {"epoch": self._current_epoch, "batch": self._last_batch_seen}
                    ).encode(),
                ),
            ):
                _write(os.path.join(tmp, name), data)
            if os.path.exists(final):  # the same epoch again (a resumed run): replace it
                shutil.rmtree(final)
            os.rename(tmp, final)
            _fsync_dir(self.backup_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        for old in self.candidates()[KEEP:]:
            if old != self.backup_dir:
                shutil.rmtree(old, ignore_errors=True)
