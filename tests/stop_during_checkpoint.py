"""Child process of tests/test_checkpoint_stops.py: trains (the train executor on a
committed Examples artifact, parameters from the real config) and sends itself SIGTERM
or SIGKILL at one point *inside* a checkpoint write; with no point it trains to the end.

    python tests/stop_during_checkpoint.py EXAMPLES_URI WORK_DIR OUT_DIR EPOCHS \
        [SIGNAL KIND SAVE STEP]

KIND: backup (the training backup) or best (the best checkpoint); SAVE: which write of
that kind in this process (1-based); STEP: N (at the N-th HDF5 dataset of the weights
file), fsync (its bytes written, not yet synced or renamed) or rename (the backup
directory complete, just before it is renamed into place).
SIGTERM goes through the CLI's own handler (KeyboardInterrupt), as systemd's stop does.
Prints the executor's metrics as JSON on success; exits 130 when interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _arm(sig: int, kind: str, save: int, step: str) -> None:
    """Wrap the writers of components/train/checkpoints.py to signal at the point."""
    import h5py

    from components.train import checkpoints

    state = {"saves": {"backup": 0, "best": 0}, "in": None, "armed": False, "datasets": 0}
    fire = lambda: os.kill(os.getpid(), sig)  # noqa: E731
    writers = {
        "backup": checkpoints.AtomicBackupAndRestore,
        "best": checkpoints.AtomicModelCheckpoint,
    }

    def wrap(which, original):
        def save_model(self, *args, **kwargs):
            state["saves"][which] += 1
            state["in"] = which
            state["armed"] = which == kind and state["saves"][which] == save
            state["datasets"] = 0
            try:
                return original(self, *args, **kwargs)
            finally:
                state["in"], state["armed"] = None, False

        return save_model

    for which, cls in writers.items():
        cls._save_model = wrap(which, cls._save_model)
    original_create, original_fsync = h5py.Group.create_dataset, os.fsync

    def create_dataset(self, *args, **kwargs):  # the weights file, made in memory
        out = original_create(self, *args, **kwargs)
        if state["armed"] and step.isdigit():
            state["datasets"] += 1
            if state["datasets"] == int(step):
                fire()
        return out

    def fsync(fd):  # the bytes are written, not yet synced nor renamed
        if state["armed"] and step == "fsync":
            fire()
        return original_fsync(fd)

    h5py.Group.create_dataset, os.fsync = create_dataset, fsync
    original_rename = os.rename

    def rename(src, dst, *args, **kwargs):  # the backup directory, complete
        if state["armed"] and step == "rename":
            fire()
        return original_rename(src, dst, *args, **kwargs)

    os.rename = rename


def main(argv: list[str]) -> int:
    from pipeline import cli, console

    console.quiet_third_party("WARNING")
    examples_uri, work_dir, out_dir, epochs = argv[:4]
    signal.signal(signal.SIGTERM, cli.interrupt)
    if len(argv) > 4:
        sig, kind, save, step = argv[4:8]
        _arm(getattr(signal, f"SIG{sig}"), kind, int(save), step)

    from pipeline import artifacts
    from pipeline.artifacts import EXAMPLES
    from pipeline.component import ExecutionContext
    from tests.helpers import output_artifacts, params, run_executor

    p = params(
        "train", "model.variant=dense", f"train.epochs={epochs}", "train.early_stopping_patience=0"
    )
    examples = artifacts.load(EXAMPLES, examples_uri)
    try:
        metrics = run_executor(
            "train",
            p,
            {"examples": examples},
            output_artifacts("train", out_dir),
            ExecutionContext(work_dir=work_dir),
        )
    except KeyboardInterrupt:
        return 130
    print(json.dumps(metrics, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
