"""Training images/s of every model-zoo variant on whatever accelerator (or CPU) is here:
float32 vs mixed_float16, jit_compile off vs on, on the Keras 3 backend that is installed.

For each variant of models.VARIANTS (a variant added to the zoo is picked up), at its
preset's batch size: the preset is configs/<variant>.toml, else the first preset whose
model.variant is that variant, else the defaults. The preset is read by the pipeline's
own loader (pipeline.config.load over the components' parameter classes: the batch size
and the model arguments have one home), without TensorFlow: the component specs
(components/*/component.py) import neither TensorFlow, Keras nor Beam, and the
TensorFlow-importing executors are not imported. Only pipeline.runner's beam.args key
is left out where pipeline.runner cannot be imported (it needs ML Metadata, absent on the
GPU machines); no preset sets it.

Each cell is a fresh model (models.build with the preset's model.* arguments) compiled
with model.compile_for_training and the preset's optimizer at its learning rate (a
constant rate: the executor's cosine schedule is a scalar per step and costs nothing
measurable, and the executor imports TensorFlow), fitted with Keras' stock `fit` on
synthetic numpy images (uniform [0,1], the right shape; input = target): one `fit` of
--warmup steps (tracing, compilation, autotuning), then one timed `fit` of --steps steps.
images/s = steps x batch / seconds of that second fit. --repeat N takes the best of N
timed fits. The ratios mixed/float32 and xla/no-xla are between cells measured in this
same invocation, on the same backend and device.

What jit_compile means per backend (Keras' own compile argument; the pipeline's
train.jit_compile key):
  tensorflow  off: tf.function graph; on: XLA.
  jax         off: the train step runs op by op, un-jitted (slow; shown for completeness);
              on: jax.jit, i.e. XLA.
  torch       off: eager; on: torch.compile.
A cell that fails (a backend without an op, an out-of-memory, ...) is reported as skipped
with the error's first line; the others still run.

Backend: KERAS_BACKEND if set, else tensorflow if importable, else jax, else torch. The
table says which backend and device produced every figure.

    .venv/bin/python bench/gpu_models.py --smoke                 # a few tiny steps per cell
    .venv/bin/python bench/gpu_models.py --variants dense,conv_pool --steps 20
    .venv/bin/python bench/gpu_models.py --precisions float32 --jit on

On the GPU machines (Python 3.12 with JAX and PyTorch, no TensorFlow, no Keras, no network):
carry Keras at the version pyproject.toml pins, with the two dependencies missing there,
as wheels in .whl/ (ignored by .gitignore), from the project root here:

    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \\
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \\
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \\
        -d .whl keras==3.15.1 namex==0.1.0 optree==0.20.0          # 2.9 MB

then run there (device tool: carry [".whl"]):

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \\
      && PYTHONPATH=/tmp/site KERAS_BACKEND=jax PYTHONUNBUFFERED=1 \\
         python3 bench/gpu_models.py --steps 50 | tee $OUT/gpu_models.txt
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import platform
import sys
import time
import tomllib

import _common

BACKENDS = ("tensorflow", "jax", "torch")
PRECISIONS = ("float32", "mixed_float16")
JIT = {"off": False, "on": True}
SMOKE_BATCH = 16  # --smoke caps every batch at this: it checks that each cell runs, no more


def choose_backend() -> str:
    """KERAS_BACKEND if set, else the first of BACKENDS that is installed. Keras reads the
    variable once, at import, so this runs before anything imports keras."""
    chosen = os.environ.get("KERAS_BACKEND")
    if not chosen:
        chosen = next((b for b in BACKENDS if importlib.util.find_spec(b)), None)
        if chosen is None:
            sys.exit("no Keras backend installed (tensorflow, jax or torch)")
        os.environ["KERAS_BACKEND"] = chosen
    return chosen


def pinned_keras() -> str:
    """The Keras version pyproject.toml pins (the one the recipe carries)."""
    deps = tomllib.loads((_common.PROJECT_ROOT / "pyproject.toml").read_text())
    pins = [d for d in deps["project"]["dependencies"] if d.replace(" ", "").startswith("keras==")]
    return pins[0].split("==")[1].strip() if pins else "?"


# -- config: presets through the pipeline's loader, without TensorFlow ---------------------


def load_presets() -> dict[str, object]:
    """{preset name: Config} for every configs/*.toml, loaded as `run --config` loads it."""
    from pipeline import config as config_lib
    from run_pipeline import create_pipeline

    classes = [c.params for c in create_pipeline()]
    try:
        from pipeline import runner  # + beam.args; imports ML Metadata

        classes = runner.param_classes(create_pipeline())
    except ImportError:
        pass
    return {
        p.stem: config_lib.load(classes, p.stem)
        for p in sorted(config_lib.PRESET_DIR.glob("*.toml"))
    }


def preset_for(variant: str, presets: dict) -> str | None:
    if variant in presets and presets[variant]["model.variant"] == variant:
        return variant
    return next((name for name, c in presets.items() if c["model.variant"] == variant), None)


def default_config():
    from pipeline import config as config_lib
    from run_pipeline import create_pipeline

    try:
        from pipeline import runner

        return runner.load_config(create_pipeline())
    except ImportError:
        return config_lib.load([c.params for c in create_pipeline()])


# -- the device ----------------------------------------------------------------------------


def device_name(backend: str) -> str:
    cpu = f"CPU ({platform.machine()}, {os.cpu_count()} cores)"
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            return f"GPU {details.get('device_name', gpus[0].name)} (x{len(gpus)})"
        return cpu
    if backend == "jax":
        import jax

        d = jax.devices()[0]
        return (
            cpu
            if d.platform == "cpu"
            else f"{d.platform.upper()} {d.device_kind} (x{jax.device_count()})"
        )
    import torch

    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)} (x{torch.cuda.device_count()})"
    return cpu


def backend_version(backend: str) -> str:
    module = __import__(backend)
    return f"{backend} {module.__version__}"


# -- one cell: a fresh model, warm-up fit, timed fit ----------------------------------------


def measure(
    cfg, batch: int, precision: str, jit: bool, steps: int, warmup: int, repeat: int
) -> float:
    import keras
    import numpy as np

    import models

    keras.mixed_precision.set_global_policy(precision)
    try:
        keras.utils.set_random_seed(int(cfg["train.seed"]))
        model = models.build(
            cfg["model.variant"],
            cfg["model.latent_dim"],
            cfg["model.beta"],
            cfg["model.activity_l1"],
            cfg["model.decoder"],
        )
        optimizer = keras.optimizers.get(cfg["train.optimizer"])
        optimizer.learning_rate = cfg["train.learning_rate"]
        # The pipeline's own steps_per_execution (train.steps_per_execution): on a GPU, one
        # host round trip per step would dominate the small models' figures.
        model.compile_for_training(
            optimizer, jit_compile=jit, steps_per_execution=int(cfg["train.steps_per_execution"])
        )
        x = np.random.default_rng(0).random(
            (batch * max(steps, warmup), 28, 28, 1), dtype=np.float32
        )

        def fit(n):
            model.fit(
                x[: n * batch], x[: n * batch], batch_size=batch, epochs=1, shuffle=False, verbose=0
            )

        fit(warmup)
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            fit(steps)  # fit returns after its last step's logs are fetched: work is done
            best = min(best, time.perf_counter() - t0)
        return steps * batch / best
    finally:
        keras.mixed_precision.set_global_policy("float32")
        keras.backend.clear_session()
        gc.collect()


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:110] if text else ''}"


# -- the table -----------------------------------------------------------------------------


def fmt_rate(value) -> str:
    return f"{value:9.0f}" if isinstance(value, float) else f"{'skipped':>9}"


def fmt_ratio(a, b) -> str:
    return f"{a / b:6.3g}" if isinstance(a, float) and isinstance(b, float) else f"{'-':>6}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--variants", default="", help="comma-separated (default: all of models.VARIANTS)"
    )
    ap.add_argument("--steps", type=int, default=50, help="timed steps per cell")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation)")
    ap.add_argument("--repeat", type=int, default=1, help="timed fits per cell, best taken")
    ap.add_argument("--precisions", default=",".join(PRECISIONS))
    ap.add_argument("--jit", default="off,on", help="jit_compile settings: off,on")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help=f"2 timed steps after 1, batch capped at {SMOKE_BATCH}: checks each "
        "cell runs (figures meaningless)",
    )
    args = ap.parse_args(argv)
    if args.smoke:
        args.steps, args.warmup, args.repeat = 2, 1, 1
    if args.steps < 1 or args.warmup < 1 or args.repeat < 1:
        ap.error("--steps, --warmup and --repeat must be >= 1")

    backend = choose_backend()
    if backend == "tensorflow":
        _common.quiet()  # TF's C++ and absl notices off the console, as the pipeline does
    import keras

    import models
    from pipeline import console

    variants = [v for v in args.variants.split(",") if v] or list(models.VARIANTS)
    unknown = sorted(set(variants) - set(models.VARIANTS))
    if unknown:
        ap.error(f"--variants: unknown {unknown} (known: {', '.join(models.VARIANTS)})")
    precisions = [p for p in args.precisions.split(",") if p]
    jits = [j for j in args.jit.split(",") if j]
    if set(precisions) - set(PRECISIONS) or set(jits) - set(JIT):
        ap.error(f"--precisions: {PRECISIONS}; --jit: off,on")

    presets = load_presets()
    device = device_name(backend)
    pin = pinned_keras()
    print(
        f"backend: {backend_version(backend)} (keras {keras.__version__}"
        f"{'' if keras.__version__ == pin else f'; pyproject pins {pin}'})"
    )
    print(f"device:  {device}")
    print(
        f"steps:   {args.steps} timed after {args.warmup} warm-up, best of {args.repeat}"
        f"{f'; SMOKE: batch <= {SMOKE_BATCH}, figures meaningless' if args.smoke else ''}"
    )

    cells = [(p, j) for p in precisions for j in jits]
    rows = []
    for variant in variants:
        name = preset_for(variant, presets)
        cfg = presets[name] if name else default_config()
        if not name:
            from pipeline.config import Config

            cfg = Config({**cfg.values, "model.variant": variant})
        batch = int(cfg["train.batch_size"])
        if args.smoke:
            batch = min(batch, SMOKE_BATCH)
        rates, notes = {}, []
        for precision, jit in cells:
            try:
                with console.native_stderr_to_log():  # XLA's absl notices (fd 2)
                    rates[precision, jit] = measure(
                        cfg, batch, precision, JIT[jit], args.steps, args.warmup, args.repeat
                    )
            except Exception as e:  # one cell failing must not hide the others
                rates[precision, jit] = None
                notes.append(f"{precision}/jit {jit} skipped: {one_line(e)}")
            print(
                f"  {variant:<11} {precision:<13} jit {jit:<3} {fmt_rate(rates[precision, jit])}"
                " images/s",
                flush=True,
            )
        rows.append((variant, name or "(defaults)", batch, rates, notes))

    print(f"\nimages/s, {backend} on {device} (training, steady state)")
    short = {"float32": "f32", "mixed_float16": "mixed"}
    columns = [f"{short[p]}{'+xla' if j == 'on' else ''}" for p, j in cells]
    both_precisions = {"float32", "mixed_float16"} <= set(precisions)
    both_jits = {"off", "on"} <= set(jits)
    if both_precisions:
        columns += [f"mix/f32{' xla' if j == 'on' else ''}" for j in jits]
    if both_jits:
        columns += [f"xla/no {short[p][:3]}" for p in precisions]
    print(
        f"{'variant':<11} {'preset':<11} {'batch':>5} {'backend':<10}"
        + "".join(f" {c:>11}" for c in columns)
    )
    for variant, name, batch, rates, notes in rows:
        values = [fmt_rate(rates[c]) for c in cells]
        if both_precisions:
            values += [fmt_ratio(rates["mixed_float16", j], rates["float32", j]) for j in jits]
        if both_jits:
            values += [fmt_ratio(rates[p, "on"], rates[p, "off"]) for p in precisions]
        print(
            f"{variant:<11} {name:<11} {batch:>5} {backend:<10}"
            + "".join(f" {v.strip():>11}" for v in values)
        )
        for note in notes:
            print(f"    {variant}: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
