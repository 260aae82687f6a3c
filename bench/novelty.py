"""Leave-one-class-out novelty detection: for each class of the dataset, one training
without it (data.holdout_labels=[c]); the held-out class's test examples are the
novelties. Every novelty score of components/novelty/scores.py is measured on the same
runs, so the served score (export.score) and the reconstruction score are side by side.

Each class goes through the pipeline's command line (bench/_common.py): the data stages
once (then from the cache), then train, novelty and evaluate with `--only` (export and
push are not needed for the numbers: evaluate reports them, and tests/test_export.py
shows the SavedModel computes the same scores). Read back from evaluate's metrics:
AUROC, AUPRC and the true-positive rate at 5% false positives of every score.

Printed: one line per class as it finishes, then the table (per class and score, mean and
standard deviation over the classes) and the served score minus reconstruction. Written
to --out after every class (a cut-short sweep keeps what it measured): novelty.md (the
tables), novelty.json (every number), novelty.png (AUROC per class and score).

    .venv/bin/python bench/novelty.py --root /tmp/novelty                # the default model
    .venv/bin/python bench/novelty.py --epochs 1 --max-examples 3000 --classes 0,9
    .venv/bin/python bench/novelty.py --source idx:/data/mnist --config conv_pool
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

import _common

METRICS = ("auroc", "auprc", "tpr_at_5fpr")
STAGE = "evaluate"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="/tmp/novelty-bench", help="pipeline root (cache)")
    ap.add_argument("--out", default="", help="where the tables go (default: <root>/novelty)")
    ap.add_argument("--config", default=None, help="preset (configs/<name>.toml)")
    ap.add_argument("--epochs", type=int, default=0, help="train.epochs (0: the config's)")
    ap.add_argument("--max-examples", type=int, default=0, help="data.max_examples (0: all)")
    ap.add_argument("--source", default="", help="data.source, e.g. idx:DIR for MNIST")
    ap.add_argument("--classes", default="", help="comma-separated (default: all ten)")
    ap.add_argument("--set", action="append", default=[], help="more KEY=VALUE overrides")
    ap.add_argument("--log-level", default="WARNING", choices=_common.LOG_LEVELS)
    args = ap.parse_args(argv)
    _common.quiet(args.log_level)

    overrides = list(args.set)
    if args.epochs:
        overrides.append(f"train.epochs={args.epochs}")
    if args.max_examples:
        overrides.append(f"data.max_examples={args.max_examples}")
    if args.source:
        overrides.append(f"data.source={args.source}")
    if args.source.startswith("idx:") and not any(o.startswith("data.dataset=") for o in overrides):
        overrides.append("data.dataset=mnist")  # an IDX directory of digits
    classes = [int(c) for c in args.classes.split(",")] if args.classes else list(range(10))
    out = pathlib.Path(args.out or os.path.join(args.root, "novelty"))
    out.mkdir(parents=True, exist_ok=True)
    config = _common.load_config(args.config, overrides)
    served = config["export.score"]
    print(
        f"leave-one-class-out novelty: {config['data.dataset']}, model {config['model.variant']}"
        f", {config['train.epochs']} epochs; served score {served}; classes {classes}",
        flush=True,
    )

    rows: dict[int, dict] = {}
    for c in classes:
        t0 = time.perf_counter()
        per_class = [*overrides, f"data.holdout_labels=[{c}]"]
        plan = _common.plan(args.config, per_class)
        _common.ensure_upstream(
            args.root,
            plan,
            STAGE,
            preset=args.config,
            overrides=per_class,
            prefix=f"nov{c}",
            log_level=args.log_level,
        )
        result = _common.run_pipeline(
            args.root,
            _common.new_run_id(f"nov{c}-{STAGE}"),
            preset=args.config,
            overrides=per_class,
            only=STAGE,
            log_level=args.log_level,
        )
        metrics = _common.require_ran(result, STAGE, plan)["metrics"]
        rows[c] = {k: {m: metrics.get(f"novelty_{k}_{m}") for m in METRICS} for k in _scores()} | {
            "bce_excess": metrics.get("bce_excess"),
            "minutes": (time.perf_counter() - t0) / 60,
        }
        print(
            f"class {c} ({_class_name(config, c)}): AUROC "
            + ", ".join(f"{k} {rows[c][k]['auroc']:.3f}" for k in _scores())
            + f"  ({rows[c]['minutes']:.1f} min)",
            flush=True,
        )
        _write(out, config, served, rows)
    print()
    print((out / "novelty.md").read_text())
    return 0


def _scores() -> tuple[str, ...]:
    from components.novelty.component import SCORES

    return SCORES


def _class_name(config, c: int) -> str:
    from components import features as F

    return F.CLASS_NAMES[config["data.dataset"]][c]


def _summary(rows: dict, score: str, metric: str) -> tuple[float, float]:
    values = [r[score][metric] for r in rows.values() if r[score][metric] is not None]
    if not values:
        return float("nan"), float("nan")
    return statistics.mean(values), statistics.pstdev(values)


def _write(out: pathlib.Path, config, served: str, rows: dict) -> None:
    scores = _scores()
    lines = [
        f"Leave-one-class-out on {config['data.dataset']} test: model "
        f"`{config['model.variant']}`, {config['train.epochs']} epochs, served score "
        f"`{served}` (export.score); {len(rows)} classes.",
        "",
        "AUROC per held-out class (AUPRC, TPR at 5% FPR in novelty.json):",
        "",
        "| held-out class | " + " | ".join(scores) + " | test bce_excess |",
        "|---|" + "---:|" * (len(scores) + 1),
    ]
    for c, r in sorted(rows.items()):
        cells = [f"{r[k]['auroc']:.3f}" if r[k]["auroc"] is not None else "-" for k in scores]
        lines.append(
            f"| {c} {_class_name(config, c)} | " + " | ".join(cells) + f" | {r['bce_excess']:.4f} |"
        )
    for metric in METRICS:
        cells = [
            "{:.3f} ± {:.3f}".format(*_summary(rows, k, metric)) for k in scores
        ]  # mean ± std over classes
        lines.append(f"| **mean ± sd {metric}** | " + " | ".join(cells) + " | |")
    gap = _summary(rows, served, "auroc")[0] - _summary(rows, "reconstruction", "auroc")[0]
    lines += ["", f"Served `{served}` minus `reconstruction`, mean AUROC: {gap:+.3f}.", ""]
    (out / "novelty.md").write_text("\n".join(lines))
    (out / "novelty.json").write_text(
        json.dumps({"config": config.differences(), "served": served, "classes": rows}, indent=1)
    )
    _plot(out / "novelty.png", config, rows, scores)


def _plot(path: pathlib.Path, config, rows: dict, scores) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    classes = sorted(rows)
    width = 0.8 / len(scores)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(classes) + 2), 4.0))
    for i, k in enumerate(scores):
        values = [rows[c][k]["auroc"] or 0.0 for c in classes]
        ax.bar(np.arange(len(classes)) + i * width, values, width, label=k)
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.set_xticks(np.arange(len(classes)) + width * (len(scores) - 1) / 2)
    ax.set_xticklabels([f"{c} {_class_name(config, c)}" for c in classes], rotation=30, ha="right")
    ax.set_ylabel("AUROC (held-out class vs seen)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, ncol=len(scores))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
