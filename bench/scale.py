"""Scale note: throughput per stage and per Beam worker measured here, projected to 10x and
1000x the data on N Beam workers and M GPUs.

Measured (the real command line, as a subprocess, every stage through the launcher):

    python run_pipeline.py run --root ROOT --run-id ID --force --set train.epochs=1 \\
        --set data.max_examples=CAP [--set beam.args=[...]]

once per data size in --caps (default: 5000 per source split, and all 70,000 images) and
Beam worker count in --workers (1: Beam's in-process direct runner; W > 1:
`--direct_running_mode=multi_processing --direct_num_workers=W`). Per stage, the two sizes
give a line t = fixed + images / rate (least squares over the sizes): the fixed cost (job
start-up, imports, model building, bounded work such as t-SNE) and the marginal rate in
dataset images per second. Train is taken from its own metrics: the fit's steady-state
images/s (epoch 1 excluded). The parallel efficiency of W workers is rate(W) / (W x
rate(1)). Bytes per image of every artifact come from the full-size run's files.

Projected (printed with the assumptions it rests on; change them with the flags):

    Beam stage (ingest, validate, transform, export) on N workers x C vCPUs:
        t = job start-up + fixed + images / (rate(1) x C x N x efficiency)
    evaluate (runs in the launching process, not on Beam workers): fixed + images / rate
    train on M GPUs: epochs x train images / (M x gpu images/s x all-reduce efficiency)
    cost = vCPU-hours x price + GPU-hours x price (the launching machine not counted)

rate(1) is per Beam worker process here, one process per core, as Dataflow runs one
Python SDK process per vCPU. Nothing about GPUs is measured here unless
--gpu-images-per-s comes from bench/gpu_models.py on a GPU machine; the default is an
assumption and says so.

    .venv/bin/python bench/scale.py                       # about 6 minutes on 2 idle cores
    .venv/bin/python bench/scale.py --workers 1 --caps 2000,10000   # a quick check
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

import _common
from _common import ALL_STAGES

BEAM_STAGES = ("ingest", "validate", "transform", "export")
SCALES = (10, 1000)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--root", help="pipeline root (default: a temp dir, deleted afterwards)")
    p.add_argument("--config", help="preset (configs/<name>.toml); default conv_pool")
    p.add_argument(
        "--caps",
        default="5000,0",
        help="data.max_examples per measured size, comma-separated; 0 = all (default %(default)s)",
    )
    p.add_argument(
        "--workers",
        default="1,2",
        help="Beam worker processes per measured run, comma-separated (default %(default)s)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra config override (repeatable)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=30,
        help="training epochs in the projection (default %(default)s, the preset's)",
    )
    p.add_argument(
        "--nodes", default="10,100", help="Beam workers N in the projection (default %(default)s)"
    )
    p.add_argument("--vcpus", type=int, default=4, help="vCPUs per Beam worker (default 4)")
    p.add_argument("--gpus", default="1,8", help="GPUs M in the projection (default %(default)s)")
    p.add_argument(
        "--gpu-images-per-s",
        type=float,
        default=20000.0,
        help="training images/s of one GPU: an ASSUMPTION unless measured with "
        "bench/gpu_models.py (default %(default)s)",
    )
    p.add_argument(
        "--allreduce-efficiency",
        type=float,
        default=0.8,
        help="throughput per GPU with M > 1 relative to one (assumed, default %(default)s)",
    )
    p.add_argument(
        "--job-startup-s",
        type=float,
        default=180.0,
        help="cluster start-up per Beam job (Dataflow VM start is minutes; "
        "assumed, default %(default)s)",
    )
    p.add_argument(
        "--usd-per-vcpu-hour",
        type=float,
        default=0.05,
        help="assumed price of a vCPU-hour with its memory (default %(default)s)",
    )
    p.add_argument(
        "--usd-per-gpu-hour",
        type=float,
        default=3.0,
        help="assumed price of a GPU-hour (default %(default)s)",
    )
    return p


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _beam_override(workers: int) -> list[str]:
    if workers <= 1:
        return []
    return [
        _common.beam_override(
            f"--direct_running_mode=multi_processing --direct_num_workers={workers}"
        )
    ]


def _measure(root: str, preset, cap: int, workers: int, extra: list[str]) -> dict:
    run_id = _common.new_run_id(f"scale-w{workers}-n{cap}")
    overrides = (
        ["train.epochs=1", "train.early_stopping_patience=0", f"data.max_examples={cap}"]
        + _beam_override(workers)
        + extra
    )
    log_path = os.path.join(root, f"{run_id}.log")
    result = _common.run_pipeline(
        root,
        run_id,
        preset=preset,
        overrides=overrides,
        force=True,
        subprocess=True,
        log_path=log_path,
    )
    if result.rc != 0 or not result.summary or result.summary["status"] != "succeeded":
        with open(log_path) as f:
            tail = "".join(f.readlines()[-20:])
        sys.exit(f"run {run_id} failed (exit {result.rc}); log {log_path}:\n{tail}")
    stages = result.summary["stages"]
    images = stages["ingest"]["metrics"]["num_examples"]
    out = {
        "images": images,
        "workers": workers,
        "seconds": {s: stages[s]["duration_s"] for s in ALL_STAGES},
        "train_images_per_s": stages["train"]["metrics"]["images_per_second"],
        "train_examples": stages["train"]["metrics"]["train_examples"],
        "artifacts": {s: stages[s]["artifacts"] for s in ALL_STAGES},
    }
    print(
        f"  {workers} worker(s), {images} images: "
        + ", ".join(f"{s} {out['seconds'][s]:.1f}s" for s in ALL_STAGES),
        flush=True,
    )
    return out


def _line(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares t = a + n / rate over (n, t) points; (a, rate). One point: a = 0."""
    if len(points) == 1:
        n, t = points[0]
        return 0.0, n / max(t, 1e-9)
    mn = sum(n for n, _ in points) / len(points)
    mt = sum(t for _, t in points) / len(points)
    slope = sum((n - mn) * (t - mt) for n, t in points) / max(
        sum((n - mn) ** 2 for n, _ in points), 1e-12
    )
    if slope <= 0:  # the growth is below the timing noise: all of the largest run is per image
        n, t = max(points)
        return 0.0, n / max(t, 1e-9)
    return max(mt - slope * mn, 0.0), 1.0 / slope


def _bytes_per_image(run: dict) -> dict[str, float]:
    out = {}
    for stage, arts in run["artifacts"].items():
        total = sum(_common.du(p) for p in (arts or {}).values() if p and os.path.exists(p))
        out[stage] = total / run["images"]
    return out


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    root = os.path.abspath(args.root) if args.root else tempfile.mkdtemp(prefix="bench-scale-")
    os.makedirs(root, exist_ok=True)
    caps, worker_counts = _ints(args.caps), _ints(args.workers)
    print(f"measuring on {root}: data caps {caps}, Beam workers {worker_counts}", flush=True)
    runs: dict[int, list[dict]] = {w: [] for w in worker_counts}
    try:
        for w in worker_counts:
            for cap in caps:
                runs[w].append(_measure(root, args.config, cap, w, args.set))
        full = max(runs[worker_counts[0]], key=lambda r: r["images"])
        per_image_bytes = _bytes_per_image(full)
    finally:
        if not args.root:
            shutil.rmtree(root, ignore_errors=True)

    fits = {
        w: {
            s: _line([(r["images"], r["seconds"][s]) for r in runs[w]])
            for s in ALL_STAGES
            if s != "train"
        }
        for w in worker_counts
    }
    w1 = worker_counts[0]
    print("\nmeasured here (2 cores): per stage, fixed seconds + marginal dataset images/s")
    header = "| stage | " + " | ".join(f"{w} worker(s): fixed s, images/s" for w in worker_counts)
    print(header + " | efficiency | artifact bytes/image |")
    print("|---" * (len(worker_counts) + 3) + "|")
    efficiency = {}
    for s in ALL_STAGES:
        if s == "train":
            cells = [
                f"fit {max(r['train_images_per_s'] for r in runs[w]):,.0f} images/s"
                for w in worker_counts
            ]
            eff = "-"
        else:
            cells = [f"{fits[w][s][0]:.1f}, {fits[w][s][1]:,.0f}" for w in worker_counts]
            wn = worker_counts[-1]
            e = (fits[wn][s][1] / (wn / w1 * fits[w1][s][1])) if wn != w1 else 1.0
            efficiency[s] = min(e, 1.0)
            eff = f"{e:.2f}" if wn != w1 else "-"
        print(f"| {s} | " + " | ".join(cells) + f" | {eff} | {per_image_bytes.get(s, 0):,.0f} |")

    base_images = full["images"]
    train_share = full["train_examples"] / base_images
    cpu_fit = max(r["train_images_per_s"] for r in runs[w1])
    print(
        f"\nprojection (assumptions: {args.vcpus} vCPUs per Beam worker, job start-up "
        f"{args.job_startup_s:.0f} s, GPU {args.gpu_images_per_s:,.0f} training images/s "
        f"[{'ASSUMED' if args.gpu_images_per_s == 20000.0 else 'given'}], all-reduce "
        f"efficiency {args.allreduce_efficiency}, ${args.usd_per_vcpu_hour}/vCPU-h, "
        f"${args.usd_per_gpu_hour}/GPU-h, {args.epochs} epochs)"
    )
    print(
        "| data | images | Beam workers N | GPUs M | Beam stages | evaluate | train | "
        "storage | cost |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for scale in SCALES:
        images = base_images * scale
        storage = sum(per_image_bytes.values()) * images
        for n in _ints(args.nodes):
            beam_s = 0.0
            for s in BEAM_STAGES:
                fixed, rate = fits[w1][s]
                beam_s += (
                    args.job_startup_s
                    + fixed
                    + images / (rate * args.vcpus * n * efficiency.get(s, 1.0))
                )
            fixed, rate = fits[w1]["evaluate"]
            eval_s = fixed + images / rate
            for m in _ints(args.gpus):
                per_gpu = args.gpu_images_per_s * (args.allreduce_efficiency if m > 1 else 1.0)
                train_s = args.epochs * images * train_share / (m * per_gpu)
                cost = (
                    beam_s / 3600 * n * args.vcpus * args.usd_per_vcpu_hour
                    + train_s / 3600 * m * args.usd_per_gpu_hour
                )
                print(
                    f"| {scale}x | {images:,} | {n} | {m} | {_hours(beam_s)} | "
                    f"{_hours(eval_s)} | {_hours(train_s)} | {storage / 2**30:,.1f} GiB | "
                    f"${cost:,.0f} |"
                )
    one_machine = (
        sum(
            fits[w1][s][0] + base_images * 1000 / fits[w1][s][1] for s in ALL_STAGES if s != "train"
        )
        + args.epochs * base_images * 1000 * train_share / cpu_fit
    )
    print(f"\nfor comparison, 1000x on this 2-core machine alone: {_hours(one_machine)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
