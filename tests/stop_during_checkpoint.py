"""Child process of tests/test_checkpoint_stops.py: trains (the train executor on a
committed Examples artifact, parameters from the real config) and sends itself SIGTERM
or SIGKILL at one point *inside* a checkpoint write; with no point it trains to the end.

    python tests/stop_during_checkpoint.py EXAMPLES_URI WORK_DIR OUT_DIR EPOCHS \
        [SIGNAL KIND SAVE STEP]

KIND: backup (the training backup's weights file), best (the best checkpoint), rename
(just before the backup directory is renamed into place). SAVE: which write of that kind
in this process (1-based); STEP: at which HDF5 dataset of that file (1-based).
SIGTERM goes through the CLI's own handler (KeyboardInterrupt), as systemd's stop does.
Prints the executor's metrics as JSON on success; exits 130 when interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _arm(sig: int, kind: str, save: int, step: int) -> None:
    """Patch h5py (what Keras writes weights with) and os.rename to signal at the point."""
    import h5py

    state = {"saves": 0, "datasets": 0, "armed": False}
    fire = lambda: os.kill(os.getpid(), sig)  # noqa: E731

    def matches(name: str) -> bool:
        return ("/backup/" in name) if kind == "backup" else ("/train_state/" in name)

    original_init, original_create = h5py.File.__init__, h5py.Group.create_dataset

    def init(self, name, *args, **kwargs):
        original_init(self, name, *args, **kwargs)
        mode = kwargs.get("mode", args[0] if args else "r")
        if kind in ("backup", "best") and mode == "w" and matches(str(name)):
            state["saves"] += 1
            state["armed"], state["datasets"] = state["saves"] == save, 0

    def create_dataset(self, *args, **kwargs):
        out = original_create(self, *args, **kwargs)
        if state["armed"]:
            state["datasets"] += 1
            if state["datasets"] == step:
                fire()
        return out

    h5py.File.__init__, h5py.Group.create_dataset = init, create_dataset
    original_rename = os.rename

    def rename(src, dst, *args, **kwargs):
        if kind == "rename" and "/backup/.tmp-" in str(src):
            state["saves"] += 1
            if state["saves"] == save:
                fire()
        return original_rename(src, dst, *args, **kwargs)

    os.rename = rename


def main(argv: list[str]) -> int:
    from pipeline import cli, console

    console.quiet_third_party("WARNING")
    examples_uri, work_dir, out_dir, epochs = argv[:4]
    signal.signal(signal.SIGTERM, cli._interrupt)
    if len(argv) > 4:
        sig, kind, save, step = argv[4:8]
        _arm(getattr(signal, f"SIG{sig}"), kind, int(save), int(step))

    from pipeline import artifacts
    from pipeline.artifacts import EXAMPLES
    from pipeline.component import ExecutionContext
    from tests.helpers import output_artifacts, params, run_executor

    p = params("train", "model.variant=dense", f"train.epochs={epochs}",
               "train.early_stopping_patience=0")
    examples = artifacts.load(EXAMPLES, examples_uri)
    try:
        metrics = run_executor("train", p, {"examples": examples},
                               output_artifacts("train", out_dir), ExecutionContext(work_dir=work_dir))
    except KeyboardInterrupt:
        return 130
    print(json.dumps(metrics, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
