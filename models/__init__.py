"""The autoencoder model zoo: one builder per variant of models/README.md.

    model = models.build("conv_pool")
    model.compile_for_training(keras.optimizers.RMSprop())
    model.fit(x_in, x_target, ...)

Weights only are saved (`model.save_weights("w.weights.h5")`); to restore, rebuild with the
same arguments, call the model once on zeros, then `load_weights`.

This module is the zoo's catalog and imports no Keras: the pipeline's config checks use
it, and a fully cached run never loads Keras. The builders are imported when `build` is
called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from models.base import Autoencoder

SPARSE_L1 = 1e-5  # the sparse variant's L1 activity penalty on the code

VARIANTS: tuple[str, ...] = (
    "dense",
    "sparse",
    "deep",
    "conv_pool",
    "conv_dense",
    "conv_small",
    "denoise",
    "vae_mlp",
    "vae_conv",
    "vae_bn",
    "vae_tril",
    "best",
)

DEFAULT_LATENT: dict[str, int] = {
    "dense": 32,
    "sparse": 32,
    "deep": 32,
    "conv_pool": 4 * 4 * 16,
    "conv_dense": 16,
    "conv_small": 10,
    "denoise": 4 * 4 * 32,
    "vae_mlp": 2,
    "vae_conv": 32,
    "vae_bn": 2,
    "vae_tril": 10,
    "best": 7 * 7 * 8,
}
# best's code is a 7x7 map of latent_dim / 49 channels.
GRID_LATENT = {"best": 7 * 7}

# Their code is the flattened 4x4xF feature map, so its size is not a free parameter.
FIXED_LATENT = ("conv_pool", "denoise")
DECODERS = ("transpose", "upsample")


def check_args(variant: str, latent_dim: int = 0, decoder: str = "transpose") -> None:
    """The zoo's own rules for its arguments; ValueError names the config key."""
    if variant not in VARIANTS:
        raise ValueError(f"model.variant: expected one of {', '.join(VARIANTS)}, got {variant!r}")
    if decoder not in DECODERS:
        raise ValueError(f"model.decoder: expected one of {DECODERS}, got {decoder!r}")
    default = DEFAULT_LATENT[variant]
    if not 0 <= latent_dim <= 4096:
        raise ValueError(
            f"model.latent_dim: expected 0..4096 (0 = the variant's default), got {latent_dim}"
        )
    if variant in FIXED_LATENT and latent_dim not in (0, default):
        raise ValueError(
            f"model.latent_dim: expected 0 or {default} ({variant}'s code is the "
            f"flattened 4x4 feature map, fixed at {default}), got {latent_dim}"
        )
    cells = GRID_LATENT.get(variant)
    if cells and latent_dim % cells:
        raise ValueError(
            f"model.latent_dim: expected 0 or a multiple of {cells} ({variant}'s code "
            f"is a 7x7 map of latent_dim / {cells} channels), got {latent_dim}"
        )


def build(
    variant: str,
    latent_dim: int = 0,
    beta: float = 1.0,
    activity_l1: float = SPARSE_L1,
    decoder: str = "transpose",
) -> Autoencoder:
    """A fresh, untrained model of `variant`.

    latent_dim 0 means the variant's default. beta is used by the VAEs only, activity_l1 by
    sparse only, decoder ("transpose" | "upsample") by conv_small only.
    """
    from models.conv import conv_dense, conv_pool, conv_small, denoise
    from models.dense import deep, dense, sparse
    from models.residual import best
    from models.vae import vae_bn, vae_conv, vae_mlp, vae_tril

    check_args(variant, latent_dim, decoder)
    z = latent_dim or DEFAULT_LATENT[variant]

    if variant == "dense":
        return dense(z)
    if variant == "sparse":
        return sparse(z, activity_l1)
    if variant == "deep":
        return deep(z)
    if variant == "conv_pool":
        return conv_pool()
    if variant == "denoise":
        return denoise()
    if variant == "conv_dense":
        return conv_dense(z)
    if variant == "conv_small":
        return conv_small(z, decoder)
    if variant == "vae_mlp":
        return vae_mlp(z, beta)
    if variant == "vae_conv":
        return vae_conv(z, beta)
    if variant == "vae_bn":
        return vae_bn(z, beta)
    if variant == "best":
        return best(z)
    return vae_tril(z, beta)
