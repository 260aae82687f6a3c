"""Training throughput: our train stage vs a plain Keras `fit` on in-memory numpy arrays.

Same data, same model, same optimizer and learning-rate schedule, same batch size, same
number of epochs, same seed, in the same process. Both sides take their parameters from
one TrainParams, built from the pipeline's real config (defaults < --config preset <
this script's overrides < --set):

  ours      the train stage through the pipeline's command line and launcher (driver,
            executor, publisher), in this process:
                run_pipeline.py run --root ROOT --run-id ID --only train --force --set ...
            (with a work_dir, so the resumable backup runs as in the pipeline); its
            steady-state images/s and the other figures are the stage's metrics in
            ROOT/runs/ID/summary.json, its stage time the launcher's duration_s.
  baseline  the transform output's train / validation splits loaded into numpy
            (components.examples_io.load_split), then model.fit(x, y, batch_size, epochs,
            validation_data=..., shuffle=True) on the model our trainer builds
            (components.train.model_io.build_model(fit.model_info(params))), compiled
            with the same loss and metrics (model.compile_for_training) and the same
            optimizer (fit.make_optimizer: the config's optimizer, learning rate and
            schedule, over the same number of steps), but otherwise Keras' default
            `compile` (steps_per_execution=1, jit_compile="auto", whatever the config's
            train.steps_per_execution / train.jit_compile say) and default `fit`
            arguments; same precision policy and distribution strategy, timed by a
            callback exactly as the trainer times itself.

Steady state: epoch 1 (tracing, warm-up) is excluded on both sides; an epoch's time is its
training phase only (up to the start of its validation pass). images/s = train images x
steady epochs / their seconds. Prints both and the ratio ours/baseline (target >= 1.2) per
round and, with --repeat N, the median ratio over the N rounds with its spread (min..max);
each round is a fresh model on each side (--order alternate swaps which side goes first every
round, for a machine whose load drifts).
Early stopping is off (train.early_stopping_patience=0) so that both sides run every epoch.

Data: the pipeline's own ingest, validate and transform stages on ROOT (the Debian
Fashion-MNIST files by default, all of them or --max-examples per source split), each run
with `--only <stage>` unless ROOT's cache already holds it for this config: pass --root to
keep the pipeline root and reuse them next time (default: a temp dir, deleted).

    .venv/bin/python bench/train_throughput.py
    .venv/bin/python bench/train_throughput.py --variant deep --epochs 4 --max-examples 10000
    .venv/bin/python bench/train_throughput.py --epochs 2 --max-examples 500    # a quick check
    .venv/bin/python bench/train_throughput.py --epochs 3 --batch-size 64 --repeat 3 \
        --root /tmp/bench-train-root                     # the README's figures
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import statistics
import sys
import tempfile
import time

import _common

# Issue 9: our train stage at least this many times plain fit's images/s.
TARGET = 1.2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--config",
        help="preset to start from (configs/<name>.toml), e.g. denoise "
        "for the denoising variant (it needs noise); default: the config defaults",
    )
    p.add_argument(
        "--variant",
        default=None,
        help="model zoo variant, model.variant (default: the preset's / config's)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=3,
        help="train.epochs on each side, >= 2 (epoch 1 is warm-up; default %(default)s)",
    )
    p.add_argument(
        "--batch-size", type=int, default=256, help="train.batch_size (default: %(default)s)"
    )
    p.add_argument(
        "--max-examples",
        type=int,
        default=0,
        help="data.max_examples, cap per source split; 0 = all (default)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra config override, e.g. train.optimizer=rmsprop (repeatable; applied last)",
    )
    p.add_argument(
        "--beam-args",
        default=None,
        help="Beam options for the data stages (not timed), one string (passed as "
        "--set beam.args=[...])",
    )
    p.add_argument(
        "--order",
        choices=("ours-first", "baseline-first", "alternate"),
        default="ours-first",
        help="which side trains first; alternate: ours first in rounds 1, 3, ... "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds of (ours, baseline); prints each and the median ratio (default: %(default)s)",
    )
    p.add_argument(
        "--root",
        help="pipeline root to keep; a later run with the same --root and "
        "data settings reuses its ingest / validate / transform outputs (default: a "
        "temp dir, deleted)",
    )
    p.add_argument(
        "--log-level",
        default="WARNING",
        choices=_common.LOG_LEVELS,
        help="console level of the pipeline's log (default %(default)s; all of it "
        "is in each run's pipeline.log)",
    )
    return p


def _overrides(args) -> list[str]:
    overrides = [
        f"train.epochs={args.epochs}",
        f"train.batch_size={args.batch_size}",
        f"data.max_examples={args.max_examples}",
        "train.early_stopping_patience=0",
    ]  # both sides must run every epoch
    if args.variant:
        overrides.insert(0, f"model.variant={args.variant}")
    if args.beam_args is not None:
        overrides.append(_common.beam_override(args.beam_args))
    return overrides + args.set


def run_ours(plan, args, overrides: list[str], root: str) -> dict:
    """`--only train --force` on `root`: the stage's summary metrics, plus its duration_s."""
    result = _common.run_pipeline(
        root,
        _common.new_run_id("bench-train"),
        preset=args.config,
        overrides=overrides,
        only="train",
        force=True,
        log_level=args.log_level,
    )
    st = _common.require_ran(result, "train", plan)
    m = dict(st["metrics"])
    if m.get("resumed"):
        print(
            "  warning: our trainer resumed from a backup a crashed run left in ROOT/work; "
            "its figures cover the remaining epochs only",
            file=sys.stderr,
        )
    m.update(stage_seconds=st["duration_s"], run_id=result.summary["run_id"])
    return m


def run_baseline(params, examples) -> dict:
    """Plain Keras fit on numpy arrays, with our trainer's model, optimizer and schedule."""
    import keras
    import tensorflow as tf

    from components import examples_io
    from components import features as F
    from components.train import fit, model_io

    x_key = F.NOISY_IMAGE if params.denoising else F.IMAGE
    train = examples_io.load_split(examples, "train", noisy=params.denoising)
    val = examples_io.load_split(examples, "validation", noisy=params.denoising)
    x, y = train[x_key], train[F.IMAGE]
    xv, yv = val[x_key], val[F.IMAGE]
    total_steps = params.epochs * math.ceil(len(x) / params.batch_size)  # as the trainer plans

    keras.utils.set_random_seed(params.seed)
    gpus = tf.config.list_physical_devices("GPU")
    strategy = tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    log = logging.getLogger("bench")
    with fit.precision_policy(params.mixed_precision, gpus, log) as policy:
        with strategy.scope():
            model = model_io.build_model(fit.model_info(params))
            model.compile_for_training(
                fit.make_optimizer(
                    params.optimizer, params.learning_rate, params.lr_schedule, total_steps
                ),
                jit_compile="auto",
                steps_per_execution=1,
            )  # Keras' compile defaults

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
        history = model.fit(
            x,
            y,
            batch_size=params.batch_size,
            epochs=params.epochs,
            validation_data=(xv, yv),
            shuffle=True,
            verbose=0,
            callbacks=[timer],
        )
        wall = time.perf_counter() - t0
    steady = timer.train_seconds[1:] or timer.train_seconds
    return {
        "images_per_second": len(x) * len(steady) / max(sum(steady), 1e-9),
        "train_examples": len(x),
        "epoch_train_seconds": timer.train_seconds,
        "final_loss": history.history["loss"][-1],
        "best_val_loss": min(history.history["val_loss"]),
        "train_seconds": wall,
        "params": int(model.count_params()),
        "precision": policy,
    }


def _round(round_, args, plan, params, overrides, root, examples) -> float:
    """Both sides once, in the --order; prints them and returns ours/baseline images/s."""
    ours_first = args.order == "ours-first" or (args.order == "alternate" and round_ % 2 == 0)
    results = {}
    if args.repeat > 1:
        print(f"round {round_ + 1}/{args.repeat}", flush=True)
    for side in ("ours", "baseline") if ours_first else ("baseline", "ours"):
        if side == "ours":
            m = run_ours(plan, args, overrides, root)
        else:
            m = run_baseline(params, examples)
        results[side] = m
        print(
            f"  {side:<8} {m['images_per_second']:8.0f} images/s (steady state)  "
            f"fit {m['train_seconds']:.1f}s  final loss {m['final_loss']:.4f}  "
            f"best val loss {m['best_val_loss']:.4f}  "
            f"train examples {m['train_examples']}  params {m['params']}  "
            f"{m['precision']}",
            flush=True,
        )
        if side == "ours":
            print(
                f"           run_pipeline.py run --only train --force (run {m['run_id']}): "
                f"stage {m['stage_seconds']:.1f}s (launcher duration_s)"
            )
        else:
            print(
                "           per-epoch train phase: "
                + " ".join(f"{s:.1f}s" for s in m["epoch_train_seconds"])
            )
    ours, base = results["ours"], results["baseline"]
    if (ours["train_examples"], ours["params"]) != (base["train_examples"], base["params"]):
        print(
            "warning: the two sides differ in train examples or model parameters", file=sys.stderr
        )
    ratio = ours["images_per_second"] / base["images_per_second"]
    print(f"ratio ours/baseline images/s: {ratio:.3f}", flush=True)
    return ratio


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.epochs < 2:
        sys.exit("--epochs: expected >= 2 (epoch 1 is excluded as warm-up)")
    if args.repeat < 1:
        sys.exit("--repeat: expected >= 1")
    _common.quiet(args.log_level)
    overrides = _overrides(args)
    plan = _common.plan(args.config, overrides)
    params = plan.params["train"]
    root = os.path.abspath(args.root) if args.root else tempfile.mkdtemp(prefix="bench-train-")
    os.makedirs(root, exist_ok=True)
    try:
        from pipeline import artifacts

        print(
            f"config: {args.config or '(defaults)'} " + " ".join(f"--set {o}" for o in overrides),
            flush=True,
        )
        t0 = time.perf_counter()
        upstream = _common.ensure_upstream(
            root,
            plan,
            "train",
            preset=args.config,
            overrides=overrides,
            prefix="bench-train",
            log_level=args.log_level,
        )
        channel = plan.component("train").inputs["examples"]
        examples = artifacts.load(
            artifacts.EXAMPLES, upstream[channel.producer][channel.output].uri, root
        )
        print(
            f"data: {examples.uri} {examples.properties.get('counts')} "
            f"(ready in {time.perf_counter() - t0:.1f}s)",
            flush=True,
        )

        import keras
        import tensorflow as tf

        print(
            f"model: {params.variant}, {params.epochs} epochs, batch {params.batch_size}, "
            f"{params.optimizer} lr={params.learning_rate} ({params.lr_schedule}), "
            f"noise {params.noise_kind}, seed {params.seed}; ours: steps_per_execution "
            f"{params.steps_per_execution}, jit_compile {params.jit_compile}; "
            f"TF {tf.__version__}, "
            f"Keras {keras.__version__}, {len(tf.config.list_physical_devices('GPU'))} GPU(s), "
            f"{os.cpu_count()} CPUs",
            flush=True,
        )
        ratios = []
        for round_ in range(args.repeat):
            ratios.append(_round(round_, args, plan, params, overrides, root, examples))
        if args.repeat > 1:
            lo, med = _common.best_median(ratios)
            print(
                f"median ratio ours/baseline over {args.repeat} rounds: {med:.3f} "
                f"(spread {lo:.3f}..{max(ratios):.3f}; rounds "
                + " ".join(f"{r:.3f}" for r in ratios)
                + ")"
            )
        med = statistics.median(ratios)
        print(f"target >= {TARGET} -> {'met' if med >= TARGET else 'NOT met'}")
        if args.root:
            print(f"pipeline root kept: --root {root}")
    finally:
        if not args.root:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
