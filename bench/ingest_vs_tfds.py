"""Ingest speed: our ingest stage vs tensorflow_datasets preparing fashion_mnist.

Both read the SAME four Fashion-MNIST IDX .gz files (Debian's dataset-fashion-mnist, all
70,000 images, or --max-examples per source split) and write a fresh copy of the data set:

  ours  the ingest stage run through the pipeline's command line and launcher (driver,
        executor, publisher), in this process:
            run_pipeline.py run --root TMP --run-id ID --only ingest --force \
                --set data.source=idx:DIR [--set beam.args=[...]] [--set ...]
        sharded GZIP TFRecords of tf.Example, train / validation / test splits, Beam with
        the config's beam.args. Its time is the stage's duration_s in summary.json
        (launcher: staging, executor, commit, ML Metadata record); its CPU is that of the
        whole command (planning, which hashes the IDX files, included).
  tfds  tfds.builder("fashion_mnist").download_and_prepare(): tfds' own download manager,
        extraction, example generation, encoding and TFRecord (or ArrayRecord) writing
        (--max-examples: DownloadConfig.max_examples_per_split).

tfds offline: the files are handed to tfds through its manual_dir (symlinks named as tfds
expects: `train-images-idx3-ubyte.gz`, ...), and GCS downloads are off. Debian recompressed
the .gz files, so their sha256 differs from what tfds has registered and tfds would raise
NonMatchingChecksumError; the script gives the builder's download manager the size/sha256
of the local files as the registered checksums (computed before timing starts). Everything
else is tfds' real prepare code. Checksum *verification* still runs, inside the timing.

Prints wall time per repetition, best and median of each side, and the ratio ours/tfds
(target: <= 0.5). Process CPU seconds (user+sys, this process and waited-for children) are
shown as well: on a loaded machine they are steadier than wall time.

    .venv/bin/python bench/ingest_vs_tfds.py
    .venv/bin/python bench/ingest_vs_tfds.py --repeat 3 \\
        --beam-args "--direct_running_mode=multi_processing --direct_num_workers=2"
    .venv/bin/python bench/ingest_vs_tfds.py --max-examples 500     # a quick check
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import pathlib
import shutil
import sys
import tempfile
import time

import _common
from _common import best_median, cpu_seconds, du

from components.ingest.sources import DEBIAN_DIRS  # noqa: E402

DEFAULT_IDX_DIR = DEBIAN_DIRS["fashion_mnist"]  # where ingest looks for them too
IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--idx-dir",
        default=DEFAULT_IDX_DIR,
        help="directory with the 4 Fashion-MNIST IDX .gz files (default: %(default)s)",
    )
    p.add_argument(
        "--max-examples",
        type=int,
        default=0,
        help="cap per source split on both sides (ours: data.max_examples, tfds: "
        "max_examples_per_split); 0 = all (default)",
    )
    p.add_argument(
        "--config",
        help="preset our ingest starts from (configs/<name>.toml); default: the config defaults",
    )
    p.add_argument(
        "--beam-args",
        default=None,
        help='Beam options for our ingest, one string, e.g. "--direct_running_mode='
        'multi_processing --direct_num_workers=2" (passed as --set '
        "beam.args=[...]; default: the config's beam.args)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra config override for our ingest, e.g. data.num_shards=8 (repeatable)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="repetitions of each side (default 1); the two sides alternate within each repetition",
    )
    p.add_argument(
        "--tfds-file-format",
        default="tfrecord",
        choices=("tfrecord", "array_record"),
        help="file format tfds writes (default: %(default)s)",
    )
    p.add_argument(
        "--tmp-dir",
        default=None,
        help="where the temporary outputs go "
        "(default: the system temp dir); each repetition's output is deleted",
    )
    p.add_argument(
        "--log-level",
        default="WARNING",
        choices=_common.LOG_LEVELS,
        help="console level of the pipeline's log (default %(default)s; all of it "
        "is in the run's pipeline.log)",
    )
    return p


# ---------------------------------------------------------------- ours


def _ours_setup(args):
    """The config overrides of our runs and the plan they give (all config checks, the
    parameters shown, the fingerprint the runs must have)."""
    overrides = [f"data.source=idx:{os.path.abspath(args.idx_dir)}"]
    if args.max_examples:
        overrides.append(f"data.max_examples={args.max_examples}")
    if args.beam_args is not None:
        overrides.append(_common.beam_override(args.beam_args))
    overrides += args.set
    plan = _common.plan(args.config, overrides)
    # Untimed warm-up of the imports both the executor and Beam's local runner pull in lazily.
    import apache_beam.runners.portability.fn_api_runner  # noqa: F401

    import components.ingest.executor  # noqa: F401
    import components.records  # noqa: F401  (tfx_bsl, TensorFlow)
    import run_pipeline  # noqa: F401

    return plan, overrides


def run_ours(plan, args, overrides: list[str], root: str) -> tuple[float, float, dict]:
    """One `--only ingest --force` run on `root`; its artifact is deleted afterwards."""
    result = _common.run_pipeline(
        root,
        _common.new_run_id("bench-ingest"),
        preset=args.config,
        overrides=overrides,
        only="ingest",
        force=True,
        log_level=args.log_level,
    )
    st = _common.require_ran(result, "ingest", plan)
    out = st["artifacts"]["examples"]
    info = {
        "examples": st["metrics"].get("num_examples"),
        "bytes": du(out),
        "command_wall": result.wall_s,
    }
    shutil.rmtree(out, ignore_errors=True)
    return st["duration_s"], result.cpu_s, info


# ---------------------------------------------------------------- tfds


def _tfds_setup(idx_dir: str, base: str):
    """A manual_dir of symlinks to the local files and the checksums tfds should expect."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core.download import checksums

    tfds.disable_progress_bar()  # tqdm output costs time and buries the results
    manual = pathlib.Path(base) / "tfds-manual"
    manual.mkdir(parents=True, exist_ok=True)
    for name in IDX_FILES:
        src = pathlib.Path(idx_dir) / name
        if not src.is_file():
            sys.exit(f"{src}: missing (need {', '.join(IDX_FILES)} in --idx-dir)")
        link = manual / name
        if not link.exists():
            link.symlink_to(src)
    registered = tfds.builder_cls("fashion_mnist").url_infos or {}
    by_name = {info.filename: url for url, info in registered.items()}
    missing = [n for n in IDX_FILES if n not in by_name]
    if missing:
        sys.exit(
            f"tfds {tfds.__version__}: fashion_mnist registers no URL for {missing}; "
            "this script knows the 4.9.x layout only"
        )
    local_infos = {by_name[n]: checksums.compute_url_info(manual / n) for n in IDX_FILES}
    return str(manual), local_infos


def run_tfds(
    manual_dir: str, local_infos: dict, file_format: str, max_examples: int, out_dir: str
) -> tuple[float, float, dict]:
    import tensorflow_datasets as tfds

    data_dir = os.path.join(out_dir, "tfds-data")
    builder = tfds.builder("fashion_mnist", data_dir=data_dir)
    make_dm = builder._make_download_manager  # tfds' own, then the local checksums on top

    def make_download_manager(**kwargs):
        dm = make_dm(**kwargs)
        dm._url_infos.update(local_infos)  # noqa: SLF001 - the one checksum bypass
        return dm

    builder._make_download_manager = make_download_manager
    config = tfds.download.DownloadConfig(
        manual_dir=manual_dir, try_download_gcs=False, max_examples_per_split=max_examples or None
    )
    printed = io.StringIO()  # tfds' "Downloading and preparing ..." lines
    c0, t0 = cpu_seconds(), time.perf_counter()
    with contextlib.redirect_stdout(printed):
        builder.download_and_prepare(
            download_dir=os.path.join(out_dir, "tfds-downloads"),
            download_config=config,
            file_format=file_format,
        )
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    n = sum(s.num_examples for s in builder.info.splits.values())
    return wall, cpu, {"examples": n, "bytes": du(builder.data_dir)}


# ---------------------------------------------------------------- main


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.repeat < 1:
        sys.exit("--repeat: expected >= 1")
    if args.max_examples < 0:
        sys.exit("--max-examples: expected >= 0 (0 = all)")
    _common.quiet(args.log_level)
    base = tempfile.mkdtemp(prefix="bench-ingest-", dir=args.tmp_dir)
    try:
        plan, overrides = _ours_setup(args)
        params = plan.params["ingest"]
        manual_dir, local_infos = _tfds_setup(args.idx_dir, base)
        import tensorflow_datasets as tfds

        root = os.path.join(base, "root")  # our pipeline root: runs, metadata, artifacts
        print(f"data: {args.idx_dir} (cap per source split: {args.max_examples or 'none'})")
        print(
            "ours: run_pipeline.py run --only ingest --force "
            + " ".join(f"--set {o}" for o in overrides)
            + (f" --config {args.config}" if args.config else "")
        )
        print(
            f"      shards/split={params.num_shards} "
            f"validation_fraction={params.validation_fraction} beam.args={list(plan.beam.args)}"
        )
        print(
            f"tfds: {tfds.__version__}, fashion_mnist, format {args.tfds_file_format}, "
            "local files via manual_dir"
            + (f", max_examples_per_split={args.max_examples}" if args.max_examples else "")
        )
        results = {"ours": [], "tfds": []}
        for i in range(args.repeat):
            order = ("ours", "tfds") if i % 2 == 0 else ("tfds", "ours")
            for side in order:
                if side == "ours":
                    wall, cpu, info = run_ours(plan, args, overrides, root)
                    extra = f"  (command {info['command_wall']:.2f}s)"
                else:
                    out = os.path.join(base, f"tfds-{i}")
                    os.makedirs(out)
                    wall, cpu, info = run_tfds(
                        manual_dir, local_infos, args.tfds_file_format, args.max_examples, out
                    )
                    shutil.rmtree(out, ignore_errors=True)
                    extra = ""
                results[side].append((wall, cpu))
                print(
                    f"  rep {i + 1}/{args.repeat} {side:<4} wall {wall:7.2f}s  cpu {cpu:7.2f}s  "
                    f"examples {info['examples']}  "
                    f"written {info['bytes'] / 2**20:.1f} MiB{extra}",
                    flush=True,
                )
        print()
        print("ours wall = the ingest stage's duration_s (summary.json); cpu = the whole command")
        print(f"{'':6}{'best wall':>11}{'median wall':>13}{'median cpu':>12}")
        for side in ("ours", "tfds"):
            best, med = best_median([w for w, _ in results[side]])
            cpu = best_median([c for _, c in results[side]])[1]
            print(f"{side:<6}{best:10.2f}s{med:12.2f}s{cpu:11.2f}s")
        ob, om = best_median([w for w, _ in results["ours"]])
        tb, tm = best_median([w for w, _ in results["tfds"]])
        cpu_ratio = best_median([c for _, c in results["ours"]])[1] / max(
            best_median([c for _, c in results["tfds"]])[1], 1e-9
        )
        print(
            f"ratio ours/tfds: best {ob / tb:.3f}, median {om / tm:.3f} "
            f"(cpu, median {cpu_ratio:.3f}); target <= 0.5 -> "
            f"{'met' if om / tm <= 0.5 else 'NOT met'} (median wall)"
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
