"""A scheduled run on unchanged data and config: every stage is a cache hit. How long
does the whole command take, as a scheduler sees it (a fresh interpreter each time)?

    .venv/bin/python bench/noop_rerun.py [--config smoke] [--repeat 5] [--set k=v ...]

First one real run fills a temp root (the config's stages run; `smoke` by default: real
Fashion-MNIST, 500 images per split, one epoch), then the same command is repeated with
new run ids, each as `run_pipeline.py run` in a subprocess. Side by side, in the same
invocation, two baselines:

  - imports: a fresh interpreter importing TensorFlow and Apache Beam, what a cached
    rerun cost before the runner skipped Beam and loaded executors on first use;
  - floor: a fresh interpreter importing only `run_pipeline` (the interpreter's start).

Prints each repetition, best and median, and the ratios no-op / imports and
no-op / floor. The target is a no-op rerun under 3 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

import _common

IMPORTS = "import tensorflow, apache_beam"
FLOOR = "import run_pipeline"


def _timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=_common.PROJECT_ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", default="smoke")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    root = tempfile.mkdtemp(prefix="noop-rerun-")
    base = [
        sys.executable,
        str(_common.RUN_PIPELINE),
        "run",
        "--root",
        root,
        "--config",
        args.config,
        *[a for s in args.set for a in ("--set", s)],
    ]
    print(f"filling {root}: {' '.join(base[1:])}", flush=True)
    first = _timed([*base, "--run-id", "fill"])
    print(f"  first run (stages executed): {first:.1f} s", flush=True)

    sides = {
        "no-op rerun": lambda i: [*base, "--run-id", f"noop-{i}"],
        "imports (TF + Beam)": lambda i: [sys.executable, "-c", IMPORTS],
        "floor (interpreter)": lambda i: [sys.executable, "-c", FLOOR],
    }
    times: dict[str, list[float]] = {name: [] for name in sides}
    for i in range(args.repeat):  # interleaved, so load changes hit every side alike
        for name, cmd in sides.items():
            times[name].append(_timed(cmd(i)))
        print("  " + "  ".join(f"{n}: {times[n][-1]:.2f} s" for n in sides), flush=True)

    print(f"\n{'side':<22} {'best':>7} {'median':>7}")
    for name, ts in times.items():
        print(f"{name:<22} {min(ts):>6.2f}s {statistics.median(ts):>6.2f}s")
    noop = statistics.median(times["no-op rerun"])
    imports = statistics.median(times["imports (TF + Beam)"])
    print(f"\nratio no-op / imports (median): {noop / imports:.2f}")
    floor = statistics.median(times["floor (interpreter)"])
    print(f"ratio no-op / floor (median):   {noop / floor:.2f}")
    print(f"no-op rerun median {noop:.2f} s: target < 3 s {'met' if noop < 3 else 'NOT met'}")


if __name__ == "__main__":
    main()
