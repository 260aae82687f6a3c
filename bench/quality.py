"""Model quality per preset vs the reference write-ups' results (/work/shared/MODELS.md).

For each preset (default conv_pool, deep, denoise) runs, one after the other, the real
command line as a subprocess (every stage through the launcher),

    python run_pipeline.py run --root ROOT --run-id quality-PRESET-<time> --config PRESET ...

with the same ROOT, so ingest / validate / transform are cached across presets that share
their data settings (and a preset already trained with the same settings is cached too:
its metrics are then those of the earlier run, marked "cached"). Then reads each run's
summary.json and prints a markdown table, also written to ROOT/quality.md:

  epochs run, training time (train_seconds of the fit), best validation loss (the number
  the references report: their "val BCE" is Keras' val_loss), test BCE and its excess over
  the target-entropy floor, MSE, PSNR, linear-probe accuracy on the code (and on raw
  pixels), the VAEs' negative ELBO and KL (nats/image), the denoising models' noisy-input
  BCE (the error the model started from), and the reference value.

The references trained longer (e.g. 150 epochs) and some on MNIST; compare with that in
mind. Metric definitions: GUIDE.md section 4, components/evaluate/metrics.py.

    .venv/bin/python bench/quality.py                       # presets' own epochs: slow on CPU
    .venv/bin/python bench/quality.py --epochs 2 --max-examples 2000 --root /tmp/q
    .venv/bin/python bench/quality.py --presets conv_pool,denoise --epochs 1 \\
        --max-examples 500 --root /tmp/q --quiet                  # a quick check
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import sys

import _common

# Reference results of the write-ups (MODELS.md), shown beside ours.
REFERENCES = {
    "dense": "val BCE ~0.282 (100 ep)",
    "sparse": "~dense (val BCE ~0.282, 150 ep)",
    "deep": "val BCE 0.277 (150 ep)",
    "conv_pool": "val BCE 0.265 (150 ep)",
    "denoise": "val BCE 0.287 (150 ep, noisy in)",
    "vae_bn": "val loss ~0.18 (5 ep, MNIST)",
}

COLUMNS = (
    "preset",
    "status",
    "epochs",
    "train s",
    "best val loss",
    "test BCE",
    "excess",
    "MSE",
    "PSNR dB",
    "probe (raw px)",
    "neg ELBO",
    "KL",
    "noisy-in BCE",
    "reference",
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--presets",
        default="conv_pool,deep,denoise",
        help="comma-separated preset names (default: %(default)s)",
    )
    p.add_argument(
        "--root",
        default="output/quality",
        help="pipeline root shared by the runs; quality.md goes here (default: %(default)s)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=0,
        help="override train.epochs for every preset (default: each preset's own)",
    )
    p.add_argument(
        "--max-examples",
        type=int,
        default=0,
        help="cap per source split (data.max_examples); 0 = all (default)",
    )
    p.add_argument(
        "--beam-args",
        default=None,
        help="Beam options, one string (passed as --set beam.args=[...])",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra override for every run (repeatable)",
    )
    p.add_argument(
        "--quiet",
        action="store_true",
        help="send each run's log to ROOT/quality-<preset>.log instead of the terminal",
    )
    return p


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _row(preset: str, summary: dict | None, rc: int) -> list[str]:
    ref = REFERENCES.get(preset, "-")
    if summary is None:
        return [preset, f"failed (exit {rc}, no summary)"] + ["-"] * (len(COLUMNS) - 3) + [ref]
    stages = summary["stages"]
    train = stages.get("train", {})
    tm = train.get("metrics") or {}
    em = stages.get("evaluate", {}).get("metrics") or {}
    status = summary["status"]
    if status != "succeeded":
        err = summary.get("error") or {}
        status = f"failed in {err.get('stage', '?')} (exit {summary.get('exit_code')})"
    elif train.get("status") == "cached":
        status = "ok (train cached)"
    else:
        status = "ok"
    probe = "-"
    if "probe_accuracy" in em:
        probe = f"{em['probe_accuracy']:.3f} ({_fmt(em.get('probe_accuracy_raw_pixels'), 3)})"
    return [
        preset,
        status,
        _fmt(tm.get("epochs_run")),
        _fmt(tm.get("train_seconds"), 0),
        _fmt(tm.get("best_val_loss")),
        _fmt(em.get("bce")),
        _fmt(em.get("bce_excess")),
        _fmt(em.get("mse"), 5),
        _fmt(em.get("psnr"), 2),
        probe,
        _fmt(em.get("neg_elbo"), 1),
        _fmt(em.get("kl"), 2),
        _fmt(em.get("noisy_input_bce")),
        ref,
    ]


def _table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    root = os.path.abspath(args.root)
    os.makedirs(root, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    overrides = []
    if args.epochs:
        overrides.append(f"train.epochs={args.epochs}")
    if args.max_examples:
        overrides.append(f"data.max_examples={args.max_examples}")
    if args.beam_args is not None:
        overrides.append(_common.beam_override(args.beam_args))
    overrides += args.set

    rows, failed = [], 0
    for preset in presets:
        run_id = f"quality-{preset}-{stamp}"
        argv_ = _common.cli_argv(root, run_id, preset, overrides)
        print("$ " + shlex.join([sys.executable, str(_common.RUN_PIPELINE), *argv_]), flush=True)
        result = _common.run_pipeline(
            root,
            run_id,
            preset=preset,
            overrides=overrides,
            subprocess=True,
            log_path=os.path.join(root, f"quality-{preset}.log") if args.quiet else None,
        )
        print(f"  {preset}: exit {result.rc} after {result.wall_s:.0f}s", flush=True)
        failed += result.rc != 0
        rows.append(_row(preset, result.summary, result.rc))

    settings = ", ".join(
        filter(
            None,
            [
                f"epochs {args.epochs}" if args.epochs else "each preset's epochs",
                f"max_examples {args.max_examples}" if args.max_examples else "all examples",
                f"beam.args {args.beam_args}" if args.beam_args is not None else "",
                " ".join(args.set),
            ],
        )
    )
    text = (
        f"# Quality, {stamp}\n\nFashion-MNIST test split; {settings}; root {root}.\n"
        "best val loss = Keras val_loss of the best epoch (what the references call val BCE; "
        "for VAEs their own loss); BCE / MSE / PSNR on the test split; probe = linear-probe "
        "accuracy on the code (on raw pixels).\n\n" + _table(rows) + "\n"
    )
    print()
    print(text)
    with open(os.path.join(root, "quality.md"), "w") as f:
        f.write(text)
    print(f"written: {os.path.join(root, 'quality.md')}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
