"""The evaluation's PNGs (matplotlib, Agg backend), written through tf.io.gfile."""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
from tensorflow.io import gfile  # noqa: E402

GAP = 2  # white pixels between the images of a grid


def _save(fig, path: str) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    with gfile.GFile(path, "wb") as f:
        f.write(buf.getvalue())


def _images(a) -> np.ndarray:
    a = np.asarray(a, np.float32)
    return a.reshape(len(a), 28, 28)


def reconstruction_grid(rows: list[tuple[str, np.ndarray]], path: str) -> None:
    """One row of images per (label, images [k,28,28(,1)]) pair, e.g. originals over
    reconstructions; columns are the same examples. Drawn as one image with white gaps
    (one axes, not one per image: a tenth of the time to draw)."""
    k = min(len(images) for _, images in rows)
    step = 28 + GAP
    canvas = np.ones((len(rows) * step - GAP, k * step - GAP), np.float32)
    for r, (_, images) in enumerate(rows):
        for c, image in enumerate(_images(images)[:k]):
            canvas[r * step : r * step + 28, c * step : c * step + 28] = image
    fig, ax = plt.subplots(figsize=(1.1 * k, 1.2 * len(rows)))
    ax.imshow(canvas, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([r * step + 14 for r in range(len(rows))], [label for label, _ in rows])
    ax.tick_params(length=0, labelsize=9)
    for spine in ax.spines.values():
        spine.set_visible(False)
    _save(fig, path)


def tile(images, n_rows: int, n_cols: int) -> np.ndarray:
    """[n_rows*n_cols, 28, 28] -> one [n_rows*28, n_cols*28] image, row-major."""
    images = _images(images)[: n_rows * n_cols]
    out = np.zeros((n_rows * 28, n_cols * 28), np.float32)
    for i, img in enumerate(images):
        r, c = divmod(i, n_cols)
        out[r * 28 : (r + 1) * 28, c * 28 : (c + 1) * 28] = img
    return out


def image_tiles(
    images,
    n_rows: int,
    n_cols: int,
    path: str,
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    extent=None,
) -> None:
    """A tiled grid of decoded images (prior samples, latent manifolds, code sweeps)."""
    fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * n_cols), max(4.0, 0.35 * n_rows)))
    ax.imshow(tile(images, n_rows, n_cols), cmap="gray", vmin=0.0, vmax=1.0, extent=extent)
    if extent is None:
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _save(fig, path)


def loss_curves(history: dict[str, list], path: str, title: str = "") -> None:
    """Train and validation curves per epoch: the loss, plus kl / reconstruction for VAEs
    (or mse for plain autoencoders) when the history has them."""
    epochs = [int(e) + 1 for e in history.get("epoch", range(len(history.get("loss", []))))]
    panels = ["loss"] + [m for m in ("reconstruction", "kl", "mse") if m in history]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, name in zip(axes[0], panels):
        for key, style in ((name, "-o"), (f"val_{name}", "-s")):
            values = history.get(key)
            if values:
                ax.plot(
                    epochs[: len(values)],
                    values,
                    style,
                    markersize=3,
                    label="train" if key == name else "validation",
                )
        val = history.get(f"val_{name}")
        if name == "loss" and val:
            best = int(np.nanargmin(np.asarray(val, np.float64)))
            ax.axvline(
                epochs[best], color="grey", linestyle=":", label=f"best (epoch {epochs[best]})"
            )
        ax.set_xlabel("epoch")
        # Whole-epoch ticks, also for a run of one or two epochs.
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_title(name)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, y=1.02)
    _save(fig, path)


def scatter_panels(
    panels: list[tuple[str, np.ndarray]], labels, path: str, class_names: Sequence[str]
) -> None:
    """Side-by-side 2-D scatters coloured by class, e.g. the code and t-SNE of raw pixels,
    with a legend naming each class present (class_names[label])."""
    labels = np.asarray(labels)
    present = np.unique(labels)
    colors = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 5), squeeze=False)
    for ax, (title, points) in zip(axes[0], panels):
        for c in present:
            at = labels == c
            ax.scatter(
                points[at, 0],
                points[at, 1],
                color=colors(int(c)),
                s=4,
                alpha=0.8,
                label=class_names[int(c)],
            )
        ax.set_title(title, fontsize=10)
    # One legend, beside the last panel: every panel colours the same classes the same way.
    axes[0, -1].legend(
        loc="center left",
        bbox_to_anchor=(1.02, 0.5),
        title="class",
        markerscale=3,
        frameon=False,
        fontsize=9,
    )
    _save(fig, path)


def score_histograms(
    panels: list[tuple[str, list[tuple[str, np.ndarray]]]], thresholds: list[float], path: str
) -> None:
    """One panel per score (title, its (label, scores) groups), each group a histogram
    normalized to its own area on the panel's shared bins, the score's threshold a
    dashed line."""
    colors = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.0 * len(panels), 3.4), squeeze=False)
    for ax, (title, groups), threshold in zip(axes[0], panels, thresholds):
        groups = [(label, np.asarray(s, np.float64)) for label, s in groups if len(s)]
        values = np.concatenate([s for _, s in groups] + [np.array([threshold])])
        lo, hi = np.quantile(values, [0.001, 0.999]) if len(values) > 10 else (0, 0)
        bins = np.linspace(lo, hi, 51) if hi > lo else 10
        for i, (label, scores) in enumerate(groups):
            ax.hist(
                np.clip(scores, lo, hi) if hi > lo else scores,
                bins=bins,
                density=True,
                histtype="stepfilled",
                alpha=0.35,
                color=colors(i),
                edgecolor=colors(i),
                label=f"{label} (n={len(scores)})",
            )
        ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.4g}")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("score (higher = more unusual)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("density")
    _save(fig, path)


def roc_curves(scores: dict[str, np.ndarray], positive: np.ndarray, path: str) -> None:
    """Each score's ROC curve for the positives (held-out classes), its AUROC in the legend."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = plt.subplots(figsize=(5.0, 4.6))
    for name, values in scores.items():
        fpr, tpr, _ = roc_curve(positive, values)
        ax.plot(fpr, tpr, label=f"{name} (AUROC {roc_auc_score(positive, values):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
    ax.set_xlabel("false-positive rate (seen classes flagged)")
    ax.set_ylabel("true-positive rate (held-out classes flagged)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, path)
