"""Peak resident memory per stage as the data grow (1x vs 10x Fashion-MNIST), and train's
streaming input path vs its in-memory path (issue 10: data larger than memory).

Builds two IDX directories from the real Fashion-MNIST files: the 1x set (70,000 images,
the original files) and the set replicated --scale times (default 10: 700,000 images; the
ingest stage gives every copy its own id). On each, one pipeline root, and every stage run
as its own subprocess through the command line a user runs,

    python run_pipeline.py run --root R --run-id ID --only STAGE --force --set ...

(ingest, validate, transform, train, evaluate, export: `--only export` needs evaluate's
output too). The
subprocess' peak resident set size comes from the kernel (os.wait4's ru_maxrss: the
largest of the process and the children it waited for), its duration and metrics from
R/runs/ID/summary.json (the launcher's record).

Train runs with train.epochs=1 and no early stopping, three times:
  - 1x, default budget (train.memory_budget_mb 1024): the parsed 1x splits fit -> in memory
  - 1x, train.memory_budget_mb=0: the same data streamed from the shards (side by side with
    the run above: same data, same model, same steps; only the input pipeline differs)
  - 10x, default budget: the parsed splits exceed it -> streaming
(`--train-in-memory-at-scale` adds 10x in memory, for the memory it would have taken.)

Prints the commands, a table of peak RSS per stage at 1x and at scale with the ratio, the
stages' durations and images/s at scale (examples handled / duration_s), and the ratios
the issue asks for: train peak RSS at scale (streaming) / at 1x (in memory), target <= 1.5;
streaming images/s / in-memory images/s, target >= 0.8.

    nice .venv/bin/python bench/memory.py                       # ~15-20 min on 2 cores
    nice .venv/bin/python bench/memory.py --scale 2 --max-examples 5000   # a quick check
"""

from __future__ import annotations

import argparse
import gzip
import os
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before _common.plan imports TensorFlow
import _common  # noqa: E402

from components.ingest.sources import DEBIAN_DIRS  # noqa: E402

FASHION_IDX = DEBIAN_DIRS["fashion_mnist"]  # where ingest looks for them too
DATA_STAGES = ("ingest", "validate", "transform")
ALL = ("ingest", "validate", "transform", "train", "evaluate", "export")
MiB = 2**20


def _read_idx(path: str, header: int) -> tuple[bytes, np.ndarray]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    return data[:header], np.frombuffer(data, np.uint8, offset=header)


def _find(directory: str, prefix: str, kind: str, idx: str) -> str:
    for name in (f"{prefix}-{kind}-{idx}-ubyte.gz", f"{prefix}-{kind}-{idx}-ubyte"):
        if os.path.exists(os.path.join(directory, name)):
            return os.path.join(directory, name)
    sys.exit(f"{directory}: no {prefix}-{kind}-{idx}-ubyte[.gz]")


def write_replicated(source: str, dest: str, scale: int, max_examples: int) -> int:
    """IDX files (uncompressed) holding the first `max_examples` (0 = all) of each source
    split, `scale` times over. Returns the number of images written."""
    os.makedirs(dest, exist_ok=True)
    total = 0
    for prefix in ("train", "t10k"):
        _, pixels = _read_idx(_find(source, prefix, "images", "idx3"), 16)
        _, labels = _read_idx(_find(source, prefix, "labels", "idx1"), 8)
        images = pixels.reshape(-1, 28 * 28)
        if max_examples:
            images, labels = images[:max_examples], labels[:max_examples]
        n = len(labels) * scale
        with open(os.path.join(dest, f"{prefix}-images-idx3-ubyte"), "wb") as f:
            f.write(struct.pack(">IIII", 2051, n, 28, 28))
            for _ in range(scale):
                f.write(images.tobytes())
        with open(os.path.join(dest, f"{prefix}-labels-idx1-ubyte"), "wb") as f:
            f.write(struct.pack(">II", 2049, n))
            for _ in range(scale):
                f.write(labels.tobytes())
        total += n
    return total


def measure(
    root: str, tag: str, stage: str, overrides: list[str], log_dir: str, label: str = ""
) -> dict:
    """One `run_pipeline.py run --only stage --force` subprocess: peak RSS, duration,
    metrics; exits with the run's error unless the stage ran with the planned parameters."""
    run_id = _common.new_run_id(f"mem-{tag}-{stage}")
    argv = _common.cli_argv(root, run_id, None, overrides, only=stage, force=True)
    log_path = os.path.join(log_dir, f"{tag}-{label or stage}.log")
    print("$ " + shlex.join(["python", "run_pipeline.py", *argv]) + f"  > {log_path}", flush=True)
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, str(_common.RUN_PIPELINE), *argv],
            cwd=_common.PROJECT_ROOT,
            stdout=log,
            stderr=log,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    try:
        summary = _common.read_summary(root, run_id)
    except FileNotFoundError:
        summary = None
    result = _common.RunResult(argv, proc.returncode, wall, 0.0, summary)
    if result.rc != 0 or result.stage(stage).get("status") != "ran":
        with open(log_path) as f:
            sys.stderr.write("".join(f.readlines()[-30:]))
    st = _common.require_ran(result, stage, _common.plan(None, overrides))
    rss = usage.ru_maxrss * 1024 / MiB  # Linux: KiB
    out = {
        "rss_mib": rss,
        "duration_s": st["duration_s"],
        "wall_s": wall,
        "metrics": st.get("metrics") or {},
    }
    print(
        f"  {tag:>4} {label or stage:<12} peak RSS {rss:7.0f} MiB  "
        f"duration {st['duration_s']:7.1f}s  (command {wall:.1f}s)",
        flush=True,
    )
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--scale", type=int, default=10, help="replication factor (default 10)")
    p.add_argument(
        "--idx-dir",
        default=FASHION_IDX,
        help="the real Fashion-MNIST IDX files (default %(default)s)",
    )
    p.add_argument(
        "--max-examples",
        type=int,
        default=0,
        help="use the first N images of each source split before replicating "
        "(0 = all; for a quick check)",
    )
    p.add_argument(
        "--root",
        help="work dir (IDX copies, pipeline roots, logs); default a temp dir, deleted afterwards",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for every run (repeatable)",
    )
    p.add_argument(
        "--stages",
        default=",".join(ALL),
        help="comma-separated stages to measure, in pipeline order (default all; "
        "a stage's upstream must be among them, e.g. ingest,validate,transform)",
    )
    p.add_argument(
        "--train-in-memory-at-scale",
        action="store_true",
        help="also train at scale in memory (train.memory_budget_mb=1000000)",
    )
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    _common.quiet()
    work = os.path.abspath(args.root) if args.root else tempfile.mkdtemp(prefix="bench-memory-")
    os.makedirs(work, exist_ok=True)
    big = f"x{args.scale}"
    try:
        t0 = time.perf_counter()
        sizes = {}
        for tag, scale in (("x1", 1), (big, args.scale)):
            sizes[tag] = write_replicated(
                args.idx_dir, os.path.join(work, f"idx-{tag}"), scale, args.max_examples
            )
        print(
            f"IDX sets under {work}: "
            + ", ".join(f"{t} {n} images" for t, n in sizes.items())
            + f" ({time.perf_counter() - t0:.1f}s)",
            flush=True,
        )
        base = ["train.epochs=1", "train.early_stopping_patience=0", *args.set]
        stages = [s for s in ALL if s in args.stages.split(",")]
        log_dir = os.path.join(work, "logs")
        os.makedirs(log_dir, exist_ok=True)
        results: dict[tuple[str, str], dict] = {}
        for tag in ("x1", big):
            root = os.path.join(work, f"root-{tag}")
            overrides = [f"data.source=idx:{os.path.join(work, f'idx-{tag}')}", *base]
            for stage in stages:
                if stage == "train" and tag == "x1":
                    # Side by side on the same data: streamed (budget 0), then in memory.
                    results[(tag, "train-stream")] = measure(
                        root,
                        tag,
                        stage,
                        overrides + ["train.memory_budget_mb=0"],
                        log_dir,
                        "train-stream",
                    )
                if stage == "train" and tag == big and args.train_in_memory_at_scale:
                    results[(tag, "train-memory")] = measure(
                        root,
                        tag,
                        stage,
                        overrides + ["train.memory_budget_mb=1000000"],
                        log_dir,
                        "train-memory",
                    )
                # Default config last, so export (same config) reads this train's model.
                results[(tag, stage)] = measure(root, tag, stage, overrides, log_dir)
        _report(results, stages, sizes, big)
    finally:
        if not args.root:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def _report(results, stages, sizes, big) -> None:
    def pipeline_of(r):
        return (r["metrics"].get("input_pipeline") or "?").replace("_", " ")

    rows = []
    for stage in stages:
        keys = [stage]
        if stage == "train":
            keys = ["train-stream", "train", "train-memory"]
        for key in keys:
            small, large = results.get(("x1", key)), results.get((big, key))
            if small is None and large is None:
                continue
            label = stage
            if stage == "train":
                label = "train (" + " / ".join(pipeline_of(r) for r in (small, large) if r) + ")"
            rows.append((label, small, large))

    n_big = sizes[big]
    print()
    print(
        f"Peak RSS per stage (MiB), 1x = {sizes['x1']} images, {big} = {n_big} images; "
        f"throughput at {big}"
    )
    print()
    print(
        f"| stage | peak RSS 1x | peak RSS {big} | ratio {big}/1x | duration {big} (s) "
        f"| images/s {big} |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for label, small, large in rows:
        rss1 = f"{small['rss_mib']:.0f}" if small else "-"
        rssn = f"{large['rss_mib']:.0f}" if large else "-"
        ratio = f"{large['rss_mib'] / small['rss_mib']:.2f}" if small and large else "-"
        if large and label.startswith("train"):
            ips = f"{large['metrics'].get('images_per_second', 0):.0f} (fit)"
        elif large:
            ips = f"{n_big / max(large['duration_s'], 1e-9):.0f}"
        else:
            ips = "-"
        dur = f"{large['duration_s']:.1f}" if large else "-"
        print(f"| {label} | {rss1} | {rssn} | {ratio} | {dur} | {ips} |")
    print()
    print(
        "images/s of data stages = all examples of the set (every split) / the stage's "
        "duration_s; train = the fit's images/s (train split, 1 epoch, tracing included)."
    )

    if ("x1", "train") not in results:
        return
    mem1, stream1 = results[("x1", "train")], results[("x1", "train-stream")]
    streamn = results[(big, "train")]
    ips = {
        k: r["metrics"].get("images_per_second", 0.0)
        for k, r in (("mem1", mem1), ("stream1", stream1), ("streamn", streamn))
    }
    print()
    print(
        f"train 1x  {pipeline_of(mem1):<9}: {ips['mem1']:7.0f} images/s, peak RSS "
        f"{mem1['rss_mib']:.0f} MiB"
    )
    print(
        f"train 1x  {pipeline_of(stream1):<9}: {ips['stream1']:7.0f} images/s, peak RSS "
        f"{stream1['rss_mib']:.0f} MiB"
    )
    print(
        f"train {big:<3} {pipeline_of(streamn):<9}: {ips['streamn']:7.0f} images/s, peak RSS "
        f"{streamn['rss_mib']:.0f} MiB"
    )
    r_rss = streamn["rss_mib"] / mem1["rss_mib"]
    r_ips = ips["stream1"] / max(ips["mem1"], 1e-9)
    r_ips_n = ips["streamn"] / max(ips["mem1"], 1e-9)
    print(
        f"ratio train peak RSS {big} ({pipeline_of(streamn)}) / 1x ({pipeline_of(mem1)}): "
        f"{r_rss:.2f} (target <= 1.5: {'met' if r_rss <= 1.5 else 'NOT met'})"
    )
    print(
        f"ratio images/s streaming / in memory, 1x side by side: {r_ips:.2f} "
        f"(target >= 0.8: {'met' if r_ips >= 0.8 else 'NOT met'})"
    )
    print(f"ratio images/s streaming {big} / in memory 1x: {r_ips_n:.2f}")


if __name__ == "__main__":
    sys.exit(main())
