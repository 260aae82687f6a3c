"""SavedModel export time of one model, this checkout against a baseline checkout, side by
side: each round runs one fresh process per side (the order alternating), each process
builds the variant, writes the SavedModel twice (the first write pays the one-off tracing
of Keras' own functions) and loads it once. Printed: per round, then the medians and the
ratios this / baseline.

    git worktree add /tmp/old_tree <the commit before>
    .venv/bin/python bench/saved_model_export.py --baseline /tmp/old_tree --variant best --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys

import _common

# Runs inside the checkout under test (its own components/ and tests/helpers).
CHILD = """
import json, os, sys, tempfile, time
sys.path.insert(0, os.getcwd())
import numpy as np
import models
from components.export import saved_model
from tests.helpers import neutral_fitted
import tensorflow as tf

model = models.build(sys.argv[1])
model(np.zeros((2, 28, 28, 1), np.float32))
fitted = neutral_fitted(model, 1.0)
writes = []
for _ in range(2):
    path = os.path.join(tempfile.mkdtemp(), "model")
    t = time.perf_counter()
    saved_model.export(model, path, fitted, "combined")
    writes.append(time.perf_counter() - t)
t = time.perf_counter()
tf.saved_model.load(path)
load = time.perf_counter() - t
size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
print(json.dumps({"first": writes[0], "second": writes[1], "load": load, "bytes": size}))
"""


def _measure(checkout: pathlib.Path, variant: str) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, variant],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"{checkout}: the export failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", required=True, help="another checkout (a git worktree)")
    ap.add_argument("--variant", default="best", help="models.build variant")
    ap.add_argument("--repeat", type=int, default=3, help="rounds (default %(default)s)")
    args = ap.parse_args(argv)
    sides = {"this": _common.PROJECT_ROOT, "baseline": pathlib.Path(args.baseline).resolve()}
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    for i in range(args.repeat):
        order = list(sides) if i % 2 == 0 else list(reversed(sides))
        for name in order:
            runs[name].append(_measure(sides[name], args.variant))
            r = runs[name][-1]
            print(
                f"round {i + 1} {name:8s}: first {r['first']:.2f} s, second {r['second']:.2f} s,"
                f" load {r['load']:.2f} s, {r['bytes']:,} bytes",
                flush=True,
            )
    print(f"\n{args.variant}, medians of {args.repeat} rounds (this / baseline):")
    for key in ("first", "second", "load", "bytes"):
        this, base = (statistics.median(r[key] for r in runs[n]) for n in ("this", "baseline"))
        print(f"  {key:6s}: {this:,.2f} / {base:,.2f}  ratio {this / base:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
