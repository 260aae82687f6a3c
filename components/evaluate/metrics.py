"""Reconstruction metrics, defined once, here (docs/stages.md, "Metrics"). Pure numpy, float64.

All functions take images of any shape [n, ...] with values in [0, 1]; per-image numbers are
over all of an image's pixels, and the reported figure is the mean over images.
"""

from __future__ import annotations

import numpy as np

# Predictions are clipped to [EPS, 1 - EPS] before the log, as Keras' binary_crossentropy does.
EPS = 1e-7
# PSNR of a perfect reconstruction is infinite; per-image MSE is floored so that it is capped
# at 100 dB (an 8-bit image off by one grey level in one pixel is ~77 dB).
PSNR_CAP_DB = 100.0
_MSE_FLOOR = 10.0 ** (-PSNR_CAP_DB / 10.0)


def _flat(a) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(len(a), -1)


def bce_per_image(target, pred) -> np.ndarray:
    """Mean per-pixel binary cross-entropy of each image (nats per pixel)."""
    t, p = _flat(target), np.clip(_flat(pred), EPS, 1.0 - EPS)
    return -(t * np.log(p) + (1.0 - t) * np.log1p(-p)).mean(axis=1)


def entropy_per_image(target) -> np.ndarray:
    """Mean per-pixel entropy of the targets: the lowest BCE any prediction can reach
    (reached by predicting the target itself); 0 log 0 = 0."""
    t = _flat(target)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(np.where(t > 0, t * np.log(t), 0.0) + np.where(t < 1, (1 - t) * np.log1p(-t), 0.0))
    return h.mean(axis=1)


def mse_per_image(target, pred) -> np.ndarray:
    return ((_flat(target) - _flat(pred)) ** 2).mean(axis=1)


def psnr_per_image(target, pred) -> np.ndarray:
    """10 log10(MAX^2 / MSE) with MAX = 1, capped at PSNR_CAP_DB for identical images."""
    return 10.0 * np.log10(1.0 / np.maximum(mse_per_image(target, pred), _MSE_FLOOR))


def per_image(target, pred) -> dict[str, np.ndarray]:
    """The per-image numbers `reconstruction` averages (bce, bce_floor, mse, psnr), for
    callers that see the images a batch at a time: concatenate, then `summarize`."""
    return {
        "bce": bce_per_image(target, pred),
        "bce_floor": entropy_per_image(target),
        "mse": mse_per_image(target, pred),
        "psnr": psnr_per_image(target, pred),
    }


def summarize(per: dict[str, np.ndarray], prefix: str = "") -> dict[str, float]:
    """`reconstruction`'s result from `per_image` arrays (the same numbers)."""
    bce, floor = float(per["bce"].mean()), float(per["bce_floor"].mean())
    return {
        f"{prefix}bce": bce,
        f"{prefix}bce_floor": floor,
        f"{prefix}bce_excess": bce - floor,
        f"{prefix}mse": float(per["mse"].mean()),
        f"{prefix}psnr": float(per["psnr"].mean()),
    }


def reconstruction(target, pred, prefix: str = "") -> dict[str, float]:
    """bce, bce_floor, bce_excess, mse, psnr (means over images), keys prefixed."""
    bce = float(bce_per_image(target, pred).mean())
    floor = float(entropy_per_image(target).mean())
    return {
        f"{prefix}bce": bce,
        f"{prefix}bce_floor": floor,
        f"{prefix}bce_excess": bce - floor,
        f"{prefix}mse": float(mse_per_image(target, pred).mean()),
        f"{prefix}psnr": float(psnr_per_image(target, pred).mean()),
    }


def denoising(target, noisy, pred) -> dict[str, float]:
    """The noisy input's own error against the clean target, and how much the model removed."""
    return denoising_summary(
        reconstruction(target, noisy, prefix="noisy_input_"), reconstruction(target, pred)
    )


def denoising_summary(noisy_m: dict, model_m: dict) -> dict[str, float]:
    """`denoising` from the noisy input's `reconstruction(..., prefix="noisy_input_")` and
    the model's `reconstruction`."""
    return {
        **{k: v for k, v in noisy_m.items() if not k.endswith(("bce_floor",))},
        # 1 = all of the noise's squared error removed, 0 = none, < 0 = made it worse.
        "denoise_mse_reduction": 1.0 - model_m["mse"] / max(noisy_m["noisy_input_mse"], 1e-12),
        "denoise_psnr_gain_db": model_m["psnr"] - noisy_m["noisy_input_psnr"],
        "denoise_bce_reduction": noisy_m["noisy_input_bce"] - model_m["bce"],
    }


def rounded(metrics: dict, digits: int = 6) -> dict:
    """Floats to `digits` significant digits (JSON-friendly, still exact enough to compare)."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, float) and np.isfinite(v) and v != 0.0:
            out[k] = float(f"{v:.{digits}g}")
        elif isinstance(v, (np.floating, np.integer)):
            out[k] = v.item()
        else:
            out[k] = v
    return out
