"""Minutes of training until the test bce_excess first reaches a target, per candidate
recipe, side by side with the earlier default (the conv_pool preset: Adam 3e-3 cosine,
batch 32, 30 epochs) in the same invocation.

Each candidate is a preset plus `--set`-style overrides, read by the pipeline's own config
loader, so its model, optimizer, learning-rate schedule (over the candidate's own
train.epochs), batch size, precision and steps per execution are the train stage's
(components/train/fit.py builds the optimizer, components/train/model_io.py the model).
The data is the transform stage's output for the full Fashion-MNIST (made, or reused from
the cache, under --root). Every candidate is fitted one epoch at a time, the candidates in
turn (epoch 1 of each, then epoch 2 of each, ...), so that the machine's drift from minute
to minute falls on all of them alike; after each epoch, the mean test bce_excess
(components/scoring.py's score, the number evaluate reports) is computed untimed. A
candidate stops at the first epoch at or under the target, or after its train.epochs.

Printed: the epoch-by-epoch curve (cumulative training minutes, test excess) of each, then
per candidate the epochs and minutes to the target and the ratio of its minutes to the
baseline's whole training time (the conv_pool default trained all its epochs).

    .venv/bin/python bench/time_to_quality.py --root /tmp/ttq      # conv_pool vs the defaults
    .venv/bin/python bench/time_to_quality.py --candidate "b256=conv_pool,train.batch_size=256"
    .venv/bin/python bench/time_to_quality.py --max-examples 2000 --baseline-epochs 2 --quiet
"""

from __future__ import annotations

import argparse
import logging
import math
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field

import _common

TARGET = 0.0222  # conv_pool after 30 epochs (bench/README.md, "Model quality")
BASELINE = "conv_pool"
# Today's default, conv_pool's preset (configs/conv_pool.toml: 30 epochs), is the baseline;
# the candidate by default is the config defaults (the best model, 5 epochs).
DEFAULT_CANDIDATES = ("default=",)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--candidate",
        action="append",
        default=[],
        metavar="NAME=PRESET[,KEY=VALUE...]",
        help=f"a recipe to measure (repeatable; default: {', '.join(DEFAULT_CANDIDATES)}); "
        "PRESET may be empty for the config defaults",
    )
    p.add_argument("--target", type=float, default=TARGET, help="test bce_excess to reach")
    p.add_argument(
        "--baseline-epochs",
        type=int,
        default=0,
        help="stop the baseline after this many epochs (its schedule stays its own 30); its "
        "whole training time is then extrapolated (0: run all of them)",
    )
    p.add_argument(
        "--max-examples", type=int, default=0, help="data.max_examples (0: all; for a quick check)"
    )
    p.add_argument("--root", help="pipeline root for the data stages (default: a temp dir)")
    p.add_argument("--quiet", action="store_true", help="only the tables, not each epoch")
    return p


@dataclass
class Candidate:
    name: str
    preset: str | None
    overrides: list[str]
    params: object = None  # TrainParams
    model: object = None
    data: dict = field(default_factory=dict)
    epochs_done: int = 0
    seconds: list[float] = field(default_factory=list)  # training time of each epoch
    excess: list[float] = field(default_factory=list)  # test bce_excess after each epoch
    reached: int | None = None  # first epoch at or under the target
    cap: int = 0  # stop after this many epochs (0: train.epochs)

    @property
    def active(self) -> bool:
        last = min(self.cap or self.params.epochs, self.params.epochs)
        return self.reached is None and self.epochs_done < last

    def total_minutes(self) -> tuple[float, bool]:
        """Minutes for all of train.epochs: measured, or (stopped early by its cap) epoch 1
        (tracing included) plus the median of the later epochs for each epoch not run."""
        import statistics

        left = self.params.epochs - self.epochs_done
        if left <= 0 or self.reached is not None or len(self.seconds) < 2:
            return self.minutes(), False
        return self.minutes() + left * statistics.median(self.seconds[1:]) / 60, True

    def minutes(self, epochs: int | None = None) -> float:
        return sum(self.seconds[: epochs or len(self.seconds)]) / 60


def parse_candidate(text: str, max_examples: int) -> Candidate:
    name, _, spec = text.partition("=")
    preset, *overrides = spec.split(",") if spec else [""]
    if not name:
        sys.exit(f"--candidate {text!r}: expected NAME=PRESET[,KEY=VALUE...]")
    overrides = [o for o in overrides if o] + [f"data.max_examples={max_examples}"]
    return Candidate(name, preset or None, overrides)


def prepare(c: Candidate, root: str) -> None:
    """Its parameters (the pipeline's planning: every config check), the transform
    output for its data settings (cached under root), and a fresh compiled model."""
    import keras
    import tensorflow as tf

    from components import examples_io
    from components import features as F
    from components.train import fit, model_io

    plan = _common.plan(c.preset, c.overrides)
    c.params = p = plan.params["train"]
    upstream = _common.ensure_upstream(
        root, plan, "train", preset=c.preset, overrides=c.overrides, prefix=f"ttq-{c.name}"
    )
    examples = upstream["transform"]["transformed_examples"]
    x_key = F.NOISY_IMAGE if p.denoising else F.IMAGE
    train = examples_io.load_split(examples, "train", noisy=p.denoising)
    test = examples_io.load_split(examples, "test", noisy=False)
    c.data = {"x": train[x_key], "y": train[F.IMAGE], "test": test[F.IMAGE]}
    total_steps = p.epochs * math.ceil(len(c.data["x"]) / p.batch_size)
    keras.utils.set_random_seed(p.seed)
    gpus = tf.config.list_physical_devices("GPU")
    with fit.precision_policy(p.mixed_precision, gpus, logging.getLogger("bench")):
        c.model = model_io.build_model(fit.model_info(p))
        c.model.compile_for_training(
            fit.make_optimizer(p.optimizer, p.learning_rate, p.lr_schedule, total_steps),
            jit_compile=p.jit_compile,
            steps_per_execution=p.steps_per_execution,
        )


def one_epoch(c: Candidate) -> None:
    """Fit one more epoch (timed), then the test excess (untimed)."""
    import numpy as np

    from components import scoring

    t0 = time.perf_counter()
    c.model.fit(
        c.data["x"],
        c.data["y"],
        batch_size=c.params.batch_size,
        epochs=c.epochs_done + 1,
        initial_epoch=c.epochs_done,
        shuffle=True,
        verbose=0,
    )  # returns once the epoch's last step has run
    c.seconds.append(time.perf_counter() - t0)
    c.epochs_done += 1
    c.excess.append(float(np.mean(scoring.scores(c.model, c.data["test"]))))


def describe(c: Candidate) -> str:
    p = c.params
    return (
        f"{p.variant} latent {p.latent_dim or 'default'}, {p.optimizer} {p.learning_rate:g} "
        f"({p.lr_schedule}), batch {p.batch_size}, {p.epochs} epochs"
    )


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    _common.quiet()
    specs = [f"{BASELINE}=conv_pool"] + (args.candidate or list(DEFAULT_CANDIDATES))
    candidates = [parse_candidate(s, args.max_examples) for s in specs]
    candidates[0].cap = args.baseline_epochs
    root = args.root or tempfile.mkdtemp(prefix="ttq-")
    try:
        for c in candidates:
            prepare(c, root)
            print(f"{c.name:<10} {describe(c)}", flush=True)
        print(f"target: test bce_excess <= {args.target}", flush=True)
        while any(c.active for c in candidates):
            for c in candidates:
                if not c.active:
                    continue
                one_epoch(c)
                if c.excess[-1] <= args.target:
                    c.reached = c.epochs_done
                if not args.quiet:
                    print(
                        f"  {c.name:<10} epoch {c.epochs_done:>3}  {c.seconds[-1]:6.1f}s  "
                        f"{c.minutes():6.2f} min  excess {c.excess[-1]:.4f}",
                        flush=True,
                    )
        report(candidates, args.target)
    finally:
        if not args.root:
            shutil.rmtree(root, ignore_errors=True)
    return 0


def report(candidates: list[Candidate], target: float) -> None:
    base = candidates[0]
    base_total, extrapolated = base.total_minutes()
    print(f"\n| recipe | epochs to {target} | minutes to it | final excess | ratio to conv_pool |")
    print("|---|---:|---:|---:|---:|")
    for c in candidates:
        epochs = f"{c.reached}" if c.reached else f"not in {c.epochs_done}"
        minutes = c.minutes(c.reached) if c.reached else c.minutes()
        ratio = minutes / base_total if base_total else float("nan")
        print(
            f"| {c.name}: {describe(c)} | {epochs} | {minutes:.2f} | {c.excess[-1]:.4f} | "
            f"{ratio:.3f} |"
        )
    how = (
        f"{base.epochs_done} measured, the other {base.params.epochs - base.epochs_done} "
        "at the median of its epochs 2.."
        if extrapolated
        else f"{base.epochs_done} epochs measured"
    )
    print(
        f"\nratio: the recipe's training minutes to the target over conv_pool's whole training "
        f"({base.params.epochs} epochs, {base_total:.2f} min: {how}) in this invocation; "
        "goal <= 0.25"
    )
    print("\ncurves (epoch: cumulative minutes / test excess):")
    for c in candidates:
        points = ", ".join(
            f"{i + 1}: {sum(c.seconds[: i + 1]) / 60:.2f}/{e:.4f}" for i, e in enumerate(c.excess)
        )
        print(f"  {c.name}: {points}")


if __name__ == "__main__":
    sys.exit(main())
