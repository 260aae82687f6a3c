"""Deterministic corruption for the denoising variants.

Each example's noise comes from its own generator seeded by (run seed, a hash of
the example id), never from global RNG state, so the noisy copy of an image is the
same whatever the worker count, shard layout or processing order.
"""

from __future__ import annotations

import numpy as np

from components.features import id_hash64

KINDS = ("none", "gaussian", "salt_pepper", "mask")


def example_rng(seed: int, example_id: str) -> np.random.Generator:
    return np.random.default_rng([seed, id_hash64(example_id)])


def corrupt_one(x: np.ndarray, rng: np.random.Generator, kind: str, factor: float) -> np.ndarray:
    """x: float32 pixels in [0, 1]; returns a corrupted copy, still in [0, 1]."""
    if kind == "gaussian":  # factor = stddev
        return np.clip(x + factor * rng.standard_normal(x.shape, np.float32), 0.0, 1.0)
    if kind == "salt_pepper":  # factor = fraction of pixels forced to 0 or 1
        u = rng.random(x.shape, np.float32)
        out = x.copy()
        out[u < factor / 2] = 0.0
        out[(u >= factor / 2) & (u < factor)] = 1.0
        return out
    if kind == "mask":  # factor = fraction of pixels zeroed
        return np.where(rng.random(x.shape, np.float32) < factor, 0.0, x).astype(np.float32)
    raise ValueError(f"noise.kind: expected one of {KINDS[1:]}, got {kind!r}")


def corrupt(images: np.ndarray, ids, kind: str, factor: float, seed: int) -> np.ndarray:
    """images [n, ...] float32 in [0, 1], ids [n] -> noisy copies [n, ...]."""
    out = np.empty_like(images, dtype=np.float32)
    for i, example_id in enumerate(ids):
        if isinstance(example_id, bytes):
            example_id = example_id.decode()
        out[i] = corrupt_one(images[i], example_rng(seed, example_id), kind, factor)
    return out
