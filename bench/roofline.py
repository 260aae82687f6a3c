"""Training FLOP per image of every preset's model, counted from its layers, against the
peak float32 matmul rate measured on the same backend and device: how much of the machine
the training actually uses.

For each preset (configs/*.toml, read by the pipeline's loader exactly as
bench/gpu_models.py reads them; --presets a,b to choose), at the preset's own batch size
(train.batch_size), one row:

  forward MFLOP/image  counted, not measured: a fresh model of the preset (models.build with
                       its model.* arguments), every leaf layer reached from it (the encoder,
                       decoder and, for the VAEs, posterior sub-models, recursively; a layer
                       shared by two sub-models, e.g. encoder and posterior, counted once,
                       as a training step runs it once), from the layer's own symbolic input
                       and output shapes (batch axis dropped). One multiply-add = 2 FLOP:
                         Dense            2*in*out per row (+out with a bias)
                         Conv             2*H_out*W_out*kh*kw*(C_in/groups)*C_out (+bias per
                                          output element); padded taps count, as usual
                         Conv transpose   2*H_in*W_in*kh*kw*C_in*C_out (+bias)
                         Depthwise conv   2*H_out*W_out*kh*kw*C_in*depth_multiplier
                         Separable conv   the depthwise part + a 1x1 conv
                       and, approximately, a few FLOP per output element for the rest (per
                       element: BatchNormalization / other normalisation 4; ReLU-type
                       activations 1, sigmoid/tanh/softplus/other 4, inside a Dense/Conv
                       too; pooling one per window element; upsampling 1 (a copy); Add and
                       the other merges one per extra input; dropout 1, its mask multiply).
                       Flatten, Reshape, padding, cropping and input layers move data: 0.
                       Not counted: arithmetic outside layers (the VAEs' reparameterised
                       sample and KL, the loss, the optimizer's update, metrics); a layer
                       type not listed here is counted as 0 and named under its row.
  train MFLOP/image    3 x forward: the backward pass costs about 2 forward passes (one for
                       the gradients of the activations, one for those of the weights).
  images/s             a training fit at that batch size, measured by bench/gpu_models.py's
                       own measure() (a fresh model, the preset's optimizer, Keras' stock
                       fit on synthetic images: --warmup steps, then --steps timed steps,
                       best of --repeat), at --precision (default float32) and --jit
                       (default off).
  achieved GFLOP/s     images/s x train FLOP/image.
  % of peak            achieved / peak, the peak being measured in this same invocation:
                       keras.ops.matmul of two --matmul-n square matrices (default 2048,
                       --matmul-dtype, default float32) on the same backend and device,
                       warmed up, then timed with the result materialized (a 1x1 slice of
                       it fetched to the host) before the clock stops, best of 3 repeats
                       of enough back-to-back matmuls to fill about 0.25 s. Both figures
                       come from this invocation, so the ratio is not skewed by a
                       different machine, load or library version (it is, of course, by
                       a machine that is busy with something else meanwhile).

Under each row: the three layers with the most forward FLOP, so the reader sees where the
work is. "Float32" is the backend's default float32 arithmetic for both the matmul and the
training: on recent NVIDIA GPUs that may be TF32 (JAX and TensorFlow allow it by default).
With --precision mixed_float16, compare against --matmul-dtype float16.

    .venv/bin/python bench/roofline.py --smoke                  # checks it runs (CPU here)
    .venv/bin/python bench/roofline.py --presets conv_pool,dense --steps 20
    .venv/bin/python bench/roofline.py --jit on --repeat 3

On the GPU machines: the recipe of bench/gpu_models.py's docstring (Keras and its two
missing dependencies carried as wheels in .whl/, device tool carry [".whl"]), then:

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \\
      && PYTHONPATH=/tmp/site KERAS_BACKEND=jax PYTHONUNBUFFERED=1 \\
         python3 bench/roofline.py --jit on --steps 50 --matmul-n 8192 | tee $OUT/roofline.txt

(jit on: un-jitted JAX runs op by op; a larger matmul keeps a big GPU busy past the
per-call dispatch cost.)
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import _common
import gpu_models

ELEMENTWISE = {"norm": 4, "relu": 1, "transcendental": 4, "upsample": 1, "dropout": 1}
RELU_LIKE = ("relu", "relu6", "leaky_relu")
MATMUL_DTYPES = ("float32", "float16", "bfloat16")
SMOKE_MATMUL_N = 256  # --smoke: a matmul that takes milliseconds (its figure is meaningless)
TOP_LAYERS = 3


# -- counting: forward FLOP per image, layer by layer --------------------------------------


def per_image(shape) -> int:
    """Elements of one image's slice of a tensor (the batch axis dropped)."""
    return math.prod(int(d) for d in shape[1:])


def spatial(shape, data_format: str) -> int:
    """Positions of a conv feature map: H*W (or L, or D*H*W), without batch and channels."""
    dims = shape[1:-1] if data_format == "channels_last" else shape[2:]
    return math.prod(int(d) for d in dims)


def activation_flop(fn) -> int:
    """Per output element, for a Dense/Conv `activation=` or an Activation layer."""
    name = getattr(fn, "__name__", "linear")
    if name == "linear":
        return 0
    return ELEMENTWISE["relu"] if name in RELU_LIKE else ELEMENTWISE["transcendental"]


def conv_flop(layer, in_shape, out_shape) -> int | None:
    """The convolution's multiply-adds, from the kernel's own shape so groups and depth
    multipliers are included; None if `layer` is no convolution."""
    from keras import layers

    transpose = (layers.Conv1DTranspose, layers.Conv2DTranspose, layers.Conv3DTranspose)
    plain = (layers.Conv1D, layers.Conv2D, layers.Conv3D)  # kernel (*k, C_in/groups, C_out)
    depthwise = (layers.DepthwiseConv1D, layers.DepthwiseConv2D)  # kernel (*k, C_in, mult)
    separable = (layers.SeparableConv1D, layers.SeparableConv2D)
    data_format = getattr(layer, "data_format", "channels_last")
    if isinstance(layer, transpose):
        # Each input position scatters a kh*kw*C_out patch per input channel: kernel
        # (*k, C_out, C_in), so the count goes by the input's positions, not the output's.
        return 2 * spatial(in_shape, data_format) * math.prod(layer.kernel.shape)
    if isinstance(layer, plain + depthwise):
        return 2 * spatial(out_shape, data_format) * math.prod(layer.kernel.shape)
    if isinstance(layer, separable):
        kernels = math.prod(layer.depthwise_kernel.shape) + math.prod(layer.pointwise_kernel.shape)
        return 2 * spatial(out_shape, data_format) * kernels
    return None


def weighted_flop(layer, in_shape, out_shape) -> int | None:
    """Dense or convolution: multiply-adds + bias + activation; None for other layers."""
    from keras import layers

    n_out = per_image(out_shape)
    if isinstance(layer, layers.Dense):
        rows = n_out // layer.units  # a Dense on [B, ..., in] runs once per leading position
        flop = rows * 2 * int(in_shape[-1]) * layer.units
    else:
        flop = conv_flop(layer, in_shape, out_shape)
        if flop is None:
            return None
    bias = n_out if getattr(layer, "use_bias", False) else 0
    return flop + bias + n_out * activation_flop(getattr(layer, "activation", None))


def elementwise_per_output(layer, n_inputs: int) -> int | None:
    """Approximate FLOP per output element of a layer without weights' arithmetic (or with
    only per-channel ones, like BatchNormalization); None for a type not listed here."""
    from keras import layers

    if isinstance(layer, layers.BatchNormalization | layers.LayerNormalization):
        return ELEMENTWISE["norm"]  # - mean, x 1/std, x gamma, + beta (batch stats not counted)
    if isinstance(layer, layers.ReLU | layers.LeakyReLU):
        return ELEMENTWISE["relu"]
    if isinstance(layer, layers.Activation):
        return activation_flop(layer.activation)
    pooling = (layers.MaxPooling1D, layers.MaxPooling2D, layers.AveragePooling1D)
    if isinstance(layer, pooling + (layers.AveragePooling2D,)):
        return math.prod(layer.pool_size)  # one compare / add per window element
    if isinstance(layer, layers.UpSampling1D | layers.UpSampling2D | layers.UpSampling3D):
        return ELEMENTWISE["upsample"]
    merges = (layers.Add, layers.Subtract, layers.Multiply, layers.Average, layers.Maximum)
    if isinstance(layer, merges + (layers.Minimum,)):
        return n_inputs - 1
    if isinstance(layer, layers.Dropout | layers.SpatialDropout2D | layers.GaussianNoise):
        return ELEMENTWISE["dropout"]
    return None


def moves_data(layer) -> bool:
    """Layers that only reshape or copy: no arithmetic."""
    from keras import layers

    return isinstance(
        layer,
        layers.InputLayer
        | layers.Flatten
        | layers.Reshape
        | layers.Permute
        | layers.RepeatVector
        | layers.Concatenate
        | layers.ZeroPadding2D
        | layers.Cropping2D,
    )


def layer_flop(layer) -> int | None:
    """Forward FLOP per image of one leaf layer, from the shapes of its (first) call in
    the model's graph; None for a layer type this script does not know."""
    if moves_data(layer):
        return 0
    inputs = layer.input if isinstance(layer.input, list | tuple) else [layer.input]
    out_shape = layer.output.shape
    flop = weighted_flop(layer, inputs[0].shape, out_shape)
    if flop is not None:
        return flop
    per_output = elementwise_per_output(layer, len(inputs))
    return None if per_output is None else per_output * per_image(out_shape)


def sublayers(layer) -> list:
    """The layers directly inside `layer`: a Model's layers, or what a custom layer tracks."""
    import keras

    if isinstance(layer, keras.Model):
        return list(layer.layers)
    return list(layer._flatten_layers(include_self=False, recursive=False))


def leaf_layers(layer, path: str = "", seen: set | None = None):
    """(path, layer) for every leaf layer under `layer`, each once (posterior and encoder
    share theirs), in model order; path is e.g. "decoder/conv2d_5"."""
    seen = set() if seen is None else seen
    for sub in sublayers(layer):
        if id(sub) in seen:
            continue
        seen.add(id(sub))
        name = f"{path}{sub.name}"
        if sublayers(sub):
            yield from leaf_layers(sub, f"{name}/", seen)
        else:
            yield name, sub


def build_model(cfg):
    """The preset's model, with the arguments bench/gpu_models.py's measure() builds it with."""
    import models

    return models.build(
        cfg["model.variant"],
        cfg["model.latent_dim"],
        cfg["model.beta"],
        cfg["model.activity_l1"],
        cfg["model.decoder"],
    )


def count_forward(cfg) -> tuple[list[tuple[str, int]], list[str]]:
    """([(layer path, forward FLOP per image)], [layer types not counted])."""
    import keras

    keras.backend.clear_session()  # layer names from conv2d, conv2d_1, ... for every preset
    try:
        counted, unknown = [], []
        for path, layer in leaf_layers(build_model(cfg)):
            flop = layer_flop(layer)
            if flop is None:
                unknown.append(type(layer).__name__)
            counted.append((path, flop or 0))
        return counted, sorted(set(unknown))
    finally:
        keras.backend.clear_session()


# -- the machine's peak: a large matmul ----------------------------------------------------


def matmul_peak(n: int, dtype: str, repeat: int = 3, fill_s: float = 0.25) -> float:
    """FLOP/s of an n x n @ n x n keras.ops.matmul on this backend's default device."""
    import numpy as np
    from keras import ops

    rng = np.random.default_rng(0)
    a = ops.convert_to_tensor(rng.random((n, n), dtype=np.float32), dtype=dtype)
    b = ops.convert_to_tensor(rng.random((n, n), dtype=np.float32), dtype=dtype)

    def seconds(k: int) -> float:
        t0 = time.perf_counter()
        for _ in range(k):
            c = ops.matmul(a, b)
        # JAX and GPUs run asynchronously: fetching a slice of the last product waits for
        # it, and the device runs the matmuls in order, so all k are done when it returns.
        ops.convert_to_numpy(c[:1, :1])
        return time.perf_counter() - t0

    seconds(2)  # warm-up: compilation, kernel choice, thread pools, allocations
    k = max(1, min(1000, int(fill_s / seconds(1))))  # enough back to back to hide the fetch
    best = min(seconds(k) for _ in range(repeat))
    return 2 * n**3 * k / best


# -- the table -----------------------------------------------------------------------------


def scaled(value: float | None, unit: float) -> float | None:
    return None if value is None else value / unit


def fmt(value, spec: str, width: int) -> str:
    return f"{value:{width}{spec}}" if isinstance(value, float) else f"{'-':>{width}}"


def top_layers(counted: list[tuple[str, int]], forward: float) -> str:
    top = sorted((item for item in counted if item[1]), key=lambda item: -item[1])[:TOP_LAYERS]
    share = sum(f for _, f in top) / forward if forward else 0.0
    parts = ", ".join(f"{path} {flop / 1e6:.3g}" for path, flop in top)
    return f"top {len(top)} layers (forward MFLOP): {parts} ({share:.0%} of forward)"


def run_preset(name: str, cfg, args, peak: float) -> tuple[str, list[str]]:
    """One table row and the notes to print under it."""
    from pipeline import console

    batch = int(cfg["train.batch_size"])
    if args.smoke:
        batch = min(batch, gpu_models.SMOKE_BATCH)
    notes, forward, rate = [], None, None
    try:
        counted, unknown = count_forward(cfg)
        forward = float(sum(f for _, f in counted))
        notes.append(top_layers(counted, forward))
        if unknown:
            notes.append(f"not counted (unknown layer types, taken as 0): {', '.join(unknown)}")
    except Exception as e:  # one preset failing must not hide the others
        notes.append(f"FLOP count failed: {gpu_models.one_line(e)}")
    try:
        with console.native_stderr_to_log():  # XLA's absl notices (fd 2)
            rate = gpu_models.measure(
                cfg,
                batch,
                args.precision,
                gpu_models.JIT[args.jit],
                args.steps,
                args.warmup,
                args.repeat,
            )
    except Exception as e:
        notes.append(f"fit skipped: {gpu_models.one_line(e)}")
    train = None if forward is None else 3 * forward
    achieved = None if rate is None or train is None else rate * train
    row = (
        f"{name:<11} {cfg['model.variant']:<11} {batch:>5}"
        f" {fmt(scaled(forward, 1e6), '.3f', 10)} {fmt(scaled(train, 1e6), '.3f', 10)}"
        f" {fmt(rate, '.0f', 9)} {fmt(scaled(achieved, 1e9), '.2f', 10)}"
        f" {fmt(scaled(achieved, peak / 100), '.2f', 7)}"
    )
    print(f"  {name:<11} batch {batch:<4} {fmt(rate, '.0f', 9)} images/s", flush=True)
    return row, notes


def parse_args(argv):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--presets", default="", help="comma-separated (default: configs/*.toml)")
    ap.add_argument("--steps", type=int, default=50, help="timed steps per preset")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation)")
    ap.add_argument("--repeat", type=int, default=1, help="timed fits per preset, best taken")
    ap.add_argument("--precision", default="float32", choices=gpu_models.PRECISIONS)
    ap.add_argument("--jit", default="off", choices=tuple(gpu_models.JIT))
    ap.add_argument("--matmul-n", type=int, default=2048, help="the peak's square matmul size")
    ap.add_argument("--matmul-dtype", default="float32", choices=MATMUL_DTYPES)
    ap.add_argument(
        "--smoke",
        action="store_true",
        help=f"2 timed steps after 1, batch capped at {gpu_models.SMOKE_BATCH}, a "
        f"{SMOKE_MATMUL_N} matmul: checks it runs (figures meaningless)",
    )
    args = ap.parse_args(argv)
    if args.smoke:
        args.steps, args.warmup, args.repeat = 2, 1, 1
        args.matmul_n = min(args.matmul_n, SMOKE_MATMUL_N)
    if min(args.steps, args.warmup, args.repeat, args.matmul_n) < 1:
        ap.error("--steps, --warmup, --repeat and --matmul-n must be >= 1")
    return ap, args


def main(argv=None) -> int:
    ap, args = parse_args(argv)
    backend = gpu_models.choose_backend()
    if backend == "tensorflow":
        _common.quiet()  # TF's C++ and absl notices off the console, as the pipeline does
    import keras

    presets = gpu_models.load_presets()
    names = [p for p in args.presets.split(",") if p] or list(presets)
    unknown = sorted(set(names) - set(presets))
    if unknown:
        ap.error(f"--presets: unknown {unknown} (known: {', '.join(presets)})")

    device = gpu_models.device_name(backend)
    n = args.matmul_n
    peak = matmul_peak(n, args.matmul_dtype)
    print(f"backend: {gpu_models.backend_version(backend)} (keras {keras.__version__})")
    print(f"device:  {device}")
    print(
        f"peak:    {peak / 1e9:.1f} GFLOP/s ({args.matmul_dtype} keras.ops.matmul "
        f"{n}x{n} @ {n}x{n}, best of 3)"
    )
    smoke = f"; SMOKE: batch <= {gpu_models.SMOKE_BATCH}, figures meaningless"
    print(
        f"fit:     {args.precision}, jit {args.jit}, {args.steps} timed steps after "
        f"{args.warmup} warm-up, best of {args.repeat}{smoke if args.smoke else ''}"
    )
    if args.precision != "float32" and args.matmul_dtype == "float32":
        print("note:    mixed precision against a float32 peak: % of peak can exceed 100")

    rows = [run_preset(name, presets[name], args, peak) for name in names]
    print(f"\ntraining FLOP vs peak, {backend} on {device} (train = 3 x forward)")
    print(
        f"{'preset':<11} {'variant':<11} {'batch':>5} {'fwd MFLOP':>10} {'trn MFLOP':>10}"
        f" {'images/s':>9} {'GFLOP/s':>10} {'% peak':>7}"
    )
    for row, notes in rows:
        print(row)
        for note in notes:
            print(f"    {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
