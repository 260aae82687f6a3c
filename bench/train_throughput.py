"""Training throughput: our train component vs a plain Keras `fit` on in-memory numpy arrays.

Same data, same model (models.build with the config's variant and knobs), same batch size,
same optimizer and learning rate, same number of epochs, same seed, in the same process:

  ours      components.train executor through pipeline.component.run_executor, with the
            parameters the pipeline derives from the config and a work_dir (so the resumable
            backup runs, as in the pipeline); its own steady-state images/s metric.
  baseline  the split's arrays loaded into numpy (components.examples_io.load_split), then
            model.fit(x, y, batch_size, epochs, validation_data=..., shuffle=True) on a model
            built and compiled the same way (model.compile_for_training, i.e. the zoo's own loss),
            timed by a callback exactly as the trainer times itself.

Steady state: epoch 1 (tracing, warm-up) is excluded on both sides; an epoch's time is its
training phase only (up to the start of its validation pass). images/s = train images x
steady epochs / their seconds. Prints both and the ratio ours/baseline (target >= 1.0).

Data: ingest + transform executors on the Debian Fashion-MNIST files (all of it, or
--max-examples per source split) into a temporary directory, or --examples DIR, a committed
transform output artifact (e.g. <root>/artifacts/transform/<run_id>/examples).

    .venv/bin/python bench/train_throughput.py
    .venv/bin/python bench/train_throughput.py --variant deep --epochs 4 --max-examples 10000
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
import time

import _common  # noqa: F401  (puts the project root on sys.path)
from _common import quiet_tf


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", default="conv_pool", help="model zoo variant (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=3,
                   help="epochs on each side, >= 2 (epoch 1 is warm-up; default %(default)s)")
    p.add_argument("--batch-size", type=int, default=256, help="default: %(default)s")
    p.add_argument("--max-examples", type=int, default=0,
                   help="cap per source split when producing the examples; 0 = all (default)")
    p.add_argument("--examples", metavar="DIR",
                   help="use this committed normalized Examples artifact (transform output) "
                        "instead of producing one")
    p.add_argument("--config", help="preset to start from (configs/<name>.toml), e.g. denoise "
                   "for the denoising variant (it needs noise); default: the config defaults")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config override, e.g. train.optimizer=adam (repeatable)")
    p.add_argument("--beam-args", default=None,
                   help="Beam options for producing the examples (not timed), one string")
    p.add_argument("--order", choices=("ours-first", "baseline-first"), default="ours-first",
                   help="which side trains first (default: %(default)s)")
    p.add_argument("--work-dir", help="keep the produced examples here; a later run with the "
                   "same --work-dir reuses them (whatever --max-examples says); default: a temp "
                   "dir, deleted")
    return p


def _config(args):
    from pipeline.config import load_config

    overrides = [f"model.variant={args.variant}", f"train.epochs={args.epochs}",
                 f"train.batch_size={args.batch_size}",
                 f"data.max_examples={args.max_examples}",
                 # both sides must run every epoch
                 "train.early_stopping_patience=0", *args.set]
    config = load_config(args.config, overrides)
    if args.beam_args is not None:
        config.beam.args = shlex.split(args.beam_args)
    return config


def _stage(spec, inputs, config, work, name, ctx_kwargs=None):
    """Run one executor into staging dirs and commit them, as the runner does."""
    from pipeline import artifacts
    from pipeline.artifacts import Artifact
    from pipeline.component import ExecutionContext, run_executor

    staged, outputs = {}, {}
    for out, type_ in spec.outputs.items():
        final = os.path.join(work, name, out)
        staged[out] = (artifacts.begin(final), final)
        outputs[out] = Artifact(type=type_, uri=staged[out][0])
    ctx = ExecutionContext(run_id="bench", **(ctx_kwargs or {}))
    metrics = run_executor(spec, inputs, outputs, spec.params(config), ctx)
    committed = {}
    for out, (tmp, final) in staged.items():
        artifacts.commit(tmp, final, dict(outputs[out].properties, type=outputs[out].type))
        committed[out] = artifacts.load(outputs[out].type, final)
    return committed, metrics


def produce_examples(config, work: str):
    from components.ingest.component import COMPONENT as INGEST
    from components.transform.component import COMPONENT as TRANSFORM

    beam = {"beam_args": list(config.beam.args)}
    t0 = time.perf_counter()
    raw, _ = _stage(INGEST, {}, config, work, "ingest", beam)
    # transform's `statistics` input only orders it after validate; its executor reads examples.
    out, _ = _stage(TRANSFORM, {"examples": raw["examples"]}, config, work, "transform", beam)
    print(f"data: ingest + transform in {time.perf_counter() - t0:.1f}s -> "
          f"{out['examples'].uri} {out['examples'].properties.get('counts')}", flush=True)
    return out["examples"]


def run_ours(config, examples, work: str) -> dict:
    from components.train.component import COMPONENT as TRAIN

    _, metrics = _stage(TRAIN, {"examples": examples}, config, work, "train",
                        {"work_dir": os.path.join(work, "train-work")})
    return metrics


def run_baseline(config, examples) -> dict:
    import keras
    import numpy as np

    import models
    from components import examples_io
    from components import features as F

    mp, tp = config.model, config.train
    denoising = config.noise.kind != "none"
    x_key = F.NOISY_IMAGE if denoising else F.IMAGE
    train = examples_io.load_split(examples, "train", noisy=denoising)
    val = examples_io.load_split(examples, "validation", noisy=denoising)
    x, y = train[x_key], train[F.IMAGE]
    xv, yv = val[x_key], val[F.IMAGE]

    keras.utils.set_random_seed(tp.seed)
    model = models.build(mp.variant, latent_dim=mp.latent_dim, beta=mp.beta,
                         activity_l1=mp.activity_l1, decoder=mp.decoder)
    model(np.zeros((1, 28, 28, 1), np.float32))
    optimizer = {"adam": lambda: keras.optimizers.Adam(tp.learning_rate),
                 "rmsprop": lambda: keras.optimizers.RMSprop(tp.learning_rate),
                 "sgd": lambda: keras.optimizers.SGD(tp.learning_rate, momentum=0.9)}[tp.optimizer]()
    model.compile_for_training(optimizer, jit_compile=tp.jit_compile,
                               steps_per_execution=tp.steps_per_execution)

    class Timer(keras.callbacks.Callback):
        """Training phase of each epoch, up to its validation pass (as the trainer times)."""

        def __init__(self):
            super().__init__()
            self.train_seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self._t0, self._t_val = time.perf_counter(), None

        def on_test_begin(self, logs=None):
            if getattr(self, "_t0", None) is not None and self._t_val is None:
                self._t_val = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.train_seconds.append((self._t_val or time.perf_counter()) - self._t0)
            self._t0 = None

    timer = Timer()
    t0 = time.perf_counter()
    history = model.fit(x, y, batch_size=tp.batch_size, epochs=tp.epochs,
                        validation_data=(xv, yv), shuffle=True, verbose=0, callbacks=[timer])
    wall = time.perf_counter() - t0
    steady = timer.train_seconds[1:] or timer.train_seconds
    return {
        "images_per_second": len(x) * len(steady) / max(sum(steady), 1e-9),
        "train_examples": len(x),
        "epoch_train_seconds": timer.train_seconds,
        "final_loss": history.history["loss"][-1],
        "best_val_loss": min(history.history["val_loss"]),
        "train_seconds": wall,
    }


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.epochs < 2:
        sys.exit("--epochs: expected >= 2 (epoch 1 is excluded as warm-up)")
    quiet_tf()
    config = _config(args)
    work = args.work_dir or tempfile.mkdtemp(prefix="bench-train-")
    os.makedirs(work, exist_ok=True)
    try:
        from pipeline import artifacts

        kept = os.path.join(work, "transform", "examples")
        if args.examples or artifacts.is_committed(kept):
            examples = artifacts.load(artifacts.EXAMPLES, os.path.abspath(args.examples or kept))
            print(f"data: {examples.uri} {examples.properties.get('counts')}")
        else:
            examples = produce_examples(config, work)
        import keras
        import tensorflow as tf

        print(f"model: {config.model.variant}, {config.train.epochs} epochs, batch "
              f"{config.train.batch_size}, {config.train.optimizer} lr={config.train.learning_rate}, "
              f"noise {config.noise.kind}; TF {tf.__version__}, Keras {keras.__version__}, "
              f"{len(tf.config.list_physical_devices('GPU'))} GPU(s), {os.cpu_count()} CPUs",
              flush=True)
        results = {}
        order = ("ours", "baseline") if args.order == "ours-first" else ("baseline", "ours")
        for side in order:
            if side == "ours":
                m = run_ours(config, examples, work)
            else:
                m = run_baseline(config, examples)
            results[side] = m
            print(f"  {side:<8} {m['images_per_second']:8.0f} images/s (steady state)  "
                  f"fit {m['train_seconds']:.1f}s  final loss {m['final_loss']:.4f}  "
                  f"best val loss {m['best_val_loss']:.4f}  "
                  f"train examples {m['train_examples']}", flush=True)
            if side == "baseline":
                print("           per-epoch train phase: "
                      + " ".join(f"{s:.1f}s" for s in m["epoch_train_seconds"]))
        ours, base = results["ours"]["images_per_second"], results["baseline"]["images_per_second"]
        print(f"ratio ours/baseline images/s: {ours / base:.3f} (target >= 1.0 -> "
              f"{'met' if ours / base >= 1.0 else 'NOT met'})")
        if args.work_dir and not args.examples:
            print(f"examples kept: --examples {os.path.join(work, 'transform', 'examples')}")
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
        else:  # keep the examples, drop the (re-creatable) training outputs
            shutil.rmtree(os.path.join(work, "train"), ignore_errors=True)
            shutil.rmtree(os.path.join(work, "train-work"), ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
