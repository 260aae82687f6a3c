"""What the probe recorded, summed: per xdist worker its cases, busy time and gaps; per
test module the summed case times; how many processes imported TensorFlow; the child
processes' CPU, per test case.

    rm -rf /tmp/suite-probe
    PYTHONPATH=$PWD/bench/suite_probe .venv/bin/python -m pytest -q -p no:cacheprovider \\
        -p timeline_plugin -n auto --durations=40
    python3 bench/suite_probe/summarize.py [/tmp/suite-probe]
"""

import collections
import json
import os
import sys


def _lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def main(out: str) -> None:
    events = [e for e in _lines(os.path.join(out, "timeline.jsonl")) if e["worker"] != "-"]
    t0 = min(e["t"] for e in events)
    started, cases = {}, collections.defaultdict(list)
    for e in events:
        if e["event"] == "start":
            started[e["id"]] = e["t"]
        elif e["id"] in started:
            cases[e["worker"]].append((started[e["id"]] - t0, e["t"] - t0, e["id"]))
    for worker, runs in sorted(cases.items()):
        runs.sort()
        gaps = [b[0] - a[1] for a, b in zip(runs, runs[1:]) if b[0] - a[1] > 1]
        print(
            f"{worker}: {len(runs)} cases, busy {sum(e - s for s, e, _ in runs):.0f} s, "
            f"last end {max(e for _, e, _ in runs):.0f} s, gaps over 1 s: {len(gaps)} "
            f"({sum(gaps):.0f} s)"
        )
    modules = collections.Counter()
    for runs in cases.values():
        for s, e, nodeid in runs:
            modules[nodeid.split("::")[0]] += e - s
    print("\nsummed case times per module:")
    for module, seconds in modules.most_common(15):
        print(f"  {seconds:6.1f} s  {module}")
    path = os.path.join(out, "processes.jsonl")
    if not os.path.exists(path):
        return
    procs = _lines(path)
    children = [p for p in procs if p["test"]]
    by_test = collections.defaultdict(lambda: [0, 0.0])
    for p in children:
        name = p["test"].split("::")[-1].split(" ")[0]
        by_test[name][0] += 1
        by_test[name][1] += p["cpu"]
    with_tf = sum(p["tensorflow"] for p in procs)
    print(f"\n{len(procs)} processes recorded, {with_tf} imported TensorFlow")
    print(f"child processes' CPU: {sum(p['cpu'] for p in children):.0f} s; by test:")
    for name, (n, cpu) in sorted(by_test.items(), key=lambda kv: -kv[1][1])[:12]:
        print(f"  {cpu:6.1f} s  {n:3d} processes  {name[:90]}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/suite-probe")
