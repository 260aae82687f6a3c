"""Stage wall times of this checkout against a baseline checkout, side by side.

For each checkout (this one and --baseline, e.g. `git worktree add /tmp/base REV`) the
upstream of the first stage is committed once on a root of its own; then, --repeat times,
each checkout in turn runs each of --stages alone, as a user would:

    python <checkout>/run_pipeline.py run --root ROOT --run-id ID --only STAGE --force ...

and the launcher's duration_s of the stage is read from the run's summary.json. Prints
every figure, then per stage the medians and the ratio this / baseline (< 1: faster),
alternating so that the machine's drift falls on both alike.

    git worktree add /tmp/base HEAD~1
    .venv/bin/python bench/stage_ab.py --baseline /tmp/base --stages validate,transform
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

import _common


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--baseline", required=True, help="the other checkout (a directory)")
    p.add_argument("--stages", default="validate,transform", help="comma-separated, in order")
    p.add_argument("--repeat", type=int, default=3, help="runs per stage and checkout")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--root", help="where the two roots go (default: a temp dir)")
    return p


def _run(checkout: str, root: str, run_id: str, only: str, sets: list[str]) -> dict:
    argv = _common.cli_argv(root, run_id, overrides=sets, only=only, force=True)
    done = subprocess.run(
        [sys.executable, os.path.join(checkout, "run_pipeline.py"), *argv],
        cwd=checkout,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        sys.exit(f"{checkout}: {' '.join(argv)} exited {done.returncode}")
    return _common.read_summary(root, run_id)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    stages = args.stages.split(",")
    checkouts = {"this": str(_common.PROJECT_ROOT), "baseline": os.path.abspath(args.baseline)}
    base = args.root or tempfile.mkdtemp(prefix="bench-ab-")
    roots = {name: os.path.join(base, name) for name in checkouts}
    upstream = list(_common.ALL_STAGES[: _common.ALL_STAGES.index(stages[0])])
    for name, checkout in checkouts.items():
        for stage in upstream:
            _run(checkout, roots[name], f"upstream-{stage}", stage, args.set)
    seconds: dict[tuple[str, str], list[float]] = {}
    for i in range(args.repeat):
        for name, checkout in checkouts.items():
            for stage in stages:
                run_id = f"{stage}-{name}-{i}"
                s = _run(checkout, roots[name], run_id, stage, args.set)
                took = s["stages"][stage]["duration_s"]
                seconds.setdefault((stage, name), []).append(took)
                print(f"  {run_id}: {took:.2f}s", flush=True)
    print("\n| stage | this median s | baseline median s | ratio | runs this / baseline (s) |")
    print("|---|---:|---:|---:|---|")
    for stage in stages:
        this, other = seconds[(stage, "this")], seconds[(stage, "baseline")]
        ratio = statistics.median(this) / statistics.median(other)
        runs = f"{', '.join(f'{t:.1f}' for t in this)} / {', '.join(f'{t:.1f}' for t in other)}"
        print(
            f"| {stage} | {statistics.median(this):.2f} | {statistics.median(other):.2f} "
            f"| {ratio:.2f} | {runs} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
