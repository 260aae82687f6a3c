"""Wall time of the pipeline's non-training stages on the full data set, vs a 60 s budget.

Runs the real command line once, as a user would, as a subprocess (interpreter start and
imports included), every stage through the launcher:

    python run_pipeline.py run --root ROOT --run-id ID --force --set train.epochs=1 ...

on all of Fashion-MNIST (or --max-examples per source split), then reads every stage's
duration_s (the launcher's: staging, executor, commit, ML Metadata record) from
ROOT/runs/ID/summary.json and prints the per-stage table, the sum of the non-training
stages (ingest, validate, transform, evaluate, export) against the target (--target,
default 60 s), and, for reference, the training epoch(s) and the process' overhead
(interpreter start, imports, planning, the Beam DAG: command wall time minus the stages).
`--force` makes every stage run even when --root already holds cached artifacts.

The baseline here is a fixed budget, not a second program: the ratio printed is
sum / target (target: <= 1.0).

    .venv/bin/python bench/stages.py
    .venv/bin/python bench/stages.py --beam-args \\
        "--direct_running_mode=multi_processing --direct_num_workers=2"
    .venv/bin/python bench/stages.py --max-examples 500 --quiet    # a quick check
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile

import _common
from _common import ALL_STAGES, NON_TRAINING_STAGES


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", help="pipeline root (default: a temp dir, deleted afterwards)")
    p.add_argument("--config", help="preset (configs/<name>.toml); default: the config defaults "
                   "(conv_pool)")
    p.add_argument("--beam-args", default=None,
                   help="Beam options for the run, one string, e.g. \"--direct_running_mode="
                        "multi_processing --direct_num_workers=2\" (passed as --set beam.args=[...])")
    p.add_argument("--max-examples", type=int, default=0,
                   help="cap per source split; 0 = all (default)")
    p.add_argument("--epochs", type=int, default=1, help="training epochs (default %(default)s)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config override passed to run_pipeline.py (repeatable)")
    p.add_argument("--target", type=float, default=60.0,
                   help="budget for the non-training stages, seconds (default %(default)s)")
    p.add_argument("--quiet", action="store_true",
                   help="send the pipeline's log to ROOT/bench-stages.log instead of the terminal")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    root = os.path.abspath(args.root) if args.root else tempfile.mkdtemp(prefix="bench-stages-")
    os.makedirs(root, exist_ok=True)
    run_id = _common.new_run_id("bench-stages")
    overrides = [f"train.epochs={args.epochs}", f"data.max_examples={args.max_examples}"]
    if args.beam_args is not None:
        overrides.append(_common.beam_override(args.beam_args))
    overrides += args.set
    log_path = os.path.join(root, "bench-stages.log") if args.quiet else None
    argv_ = _common.cli_argv(root, run_id, args.config, overrides, force=True)
    print("$ " + shlex.join([sys.executable, str(_common.RUN_PIPELINE), *argv_]), flush=True)
    try:
        result = _common.run_pipeline(root, run_id, preset=args.config, overrides=overrides,
                                      force=True, subprocess=True, log_path=log_path)
        if result.summary is None:
            print(f"run_pipeline.py exited {result.rc} without a summary", file=sys.stderr)
            if log_path:
                with open(log_path) as f:
                    sys.stderr.write("".join(f.readlines()[-30:]))
            return result.rc or 1
        summary, stages = result.summary, result.summary["stages"]

        def seconds(name: str) -> float:
            return stages.get(name, {}).get("duration_s") or 0.0

        print()
        print(f"| {'stage':<10} | {'status':<7} | {'seconds':>8} |")
        print(f"|{'-' * 12}|{'-' * 9}|{'-' * 10}|")
        for name in ALL_STAGES:
            st = stages.get(name, {})
            note = ("" if name in NON_TRAINING_STAGES
                    else f"  ({args.epochs} epoch{'s' if args.epochs != 1 else ''}, not counted)")
            print(f"| {name:<10} | {st.get('status', '?'):<7} | {seconds(name):8.1f} |" + note)
        non_training = sum(seconds(n) for n in NON_TRAINING_STAGES)
        all_stages = sum(seconds(n) for n in ALL_STAGES)
        n = (stages.get("ingest", {}).get("metrics") or {}).get("num_examples", "?")
        print()
        outside = result.wall_s - all_stages
        print(f"examples: {n}; run {summary['status']} (exit {result.rc}); command wall time "
              f"{result.wall_s:.1f}s, of which outside the stages {outside:.1f}s")
        print(f"non-training stages: {non_training:.1f}s vs target {args.target:.0f}s -> ratio "
              f"{non_training / args.target:.3f} "
              f"({'met' if non_training <= args.target else 'NOT met'})")
        if summary["status"] != "succeeded":
            print(f"run failed: {summary.get('error')}", file=sys.stderr)
            if log_path:
                with open(log_path) as f:
                    sys.stderr.write("".join(f.readlines()[-30:]))
            return result.rc or 1
    finally:
        if not args.root:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
