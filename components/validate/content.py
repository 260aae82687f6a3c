"""Content checks of the raw images, beside TFDV's statistics and in the same Beam pass.

TFDV pools the 784 pixel values of every image into one feature and checks only their
domain, so blank, constant, inverted or shifted images pass it. Two additions close that:

1. Per-image features (`ContentFeatures`), appended to each Arrow RecordBatch before
   TFDV's GenerateStatistics, so TFDV itself computes their statistics and checks them
   against the float_domain of each in the curated schema (schemas/raw/schema.pbtxt).
     image_mean           mean intensity in [0, 1]
     image_std            standard deviation of the intensities
     ink_fraction         share of pixels brighter than INK_LEVEL (10% of full scale)
     saturated_fraction   share of pixels at 255
2. Per-pixel mean and standard-deviation maps (`PixelMoments`, a Beam CombineFn), compared
   between train and test and against the data of the last blessed model (`compare_maps`):
   the RMS over pixels of the difference of the maps must stay within a configured limit
   plus three times the RMS that sampling alone would give at these split sizes, so small
   splits do not raise false alarms. Saved per split as pixel_moments.npz and drawn in
   pixel_maps.png.
"""

from __future__ import annotations

import io
import posixpath
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tensorflow.io import gfile

from components import features as F
from components.preprocessing import PIXEL_MAX

MEAN, STD, INK, SATURATED = "image_mean", "image_std", "ink_fraction", "saturated_fraction"
MOMENTS_FILE = "pixel_moments.npz"
MAPS_PNG = "pixel_maps.png"
INK_LEVEL = 0.1
# The RMS difference a split pair may show from sampling alone is this many times its
# expected value: above it, the difference is real.
SAMPLING_SIGMAS = 3.0


def _image_matrix(batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
    """(rows with exactly 784 values as float64 [k, 784] in [0, 1], their row indices).
    Rows of another length are left to the schema's value_count check."""
    column = batch.column(batch.schema.get_field_index(F.IMAGE))
    lengths = pc.list_value_length(column).fill_null(0).to_numpy(zero_copy_only=False)
    good = np.flatnonzero(lengths == F.PIXELS)
    if len(good) == len(lengths):
        values = column.flatten().to_numpy(zero_copy_only=False)
    else:
        values = (
            np.concatenate([np.asarray(column[int(i)].as_py(), np.float64) for i in good])
            if len(good)
            else np.zeros(0)
        )
    return np.asarray(values, np.float64).reshape(-1, F.PIXELS) / PIXEL_MAX, good


class ContentFeatures(beam.DoFn):
    """One conversion of each (split, batch) to pixels for both content checks: emits
    (split, the batch with its per-image features) on the main output, for TFDV, and
    (split, the batch's pixel moments: count, sum, sum of squares) on the MOMENTS output,
    which PixelMoments sums per split."""

    MOMENTS = "moments"

    def process(self, element: tuple[str, pa.RecordBatch]):
        split, batch = element
        x, good = _image_matrix(batch)
        yield beam.pvalue.TaggedOutput(self.MOMENTS, (split, _moments(x)))
        yield split, _with_features(batch, x, good)


def _moments(x: np.ndarray):
    return len(x), x.sum(axis=0), np.square(x).sum(axis=0)


def _with_features(batch: pa.RecordBatch, x: np.ndarray, good: np.ndarray) -> pa.RecordBatch:
    """The batch with the four per-image features appended (one float per row; missing
    for rows that are not 784 pixels long)."""
    per_image = {
        MEAN: x.mean(axis=1),
        STD: x.std(axis=1),
        INK: (x > INK_LEVEL).mean(axis=1),
        SATURATED: (x >= 1.0).mean(axis=1),
    }
    n = batch.num_rows
    # One value per good row; a null list for the others (offsets repeat, validity off).
    offsets = np.zeros(n + 1, np.int32)
    offsets[good + 1] = 1
    offsets = pa.array(np.cumsum(offsets, dtype=np.int32))
    valid = np.zeros(n, bool)
    valid[good] = True
    columns, names = list(batch.columns), list(batch.schema.names)
    for name, values in per_image.items():
        column = pa.ListArray.from_arrays(
            offsets,
            pa.array(values.astype(np.float32)),
            mask=None if len(good) == n else pa.array(~valid),
        )
        columns.append(column)
        names.append(name)
    return pa.RecordBatch.from_arrays(columns, names)


class PixelMoments(beam.CombineFn):
    """Count, per-pixel sum and sum of squares (float64) of a split's images, from the
    per-batch moments ContentFeatures emits."""

    def create_accumulator(self):
        return 0, np.zeros(F.PIXELS), np.zeros(F.PIXELS)

    def add_input(self, acc, moments):
        n, s, ss = acc
        return n + moments[0], s + moments[1], ss + moments[2]

    def merge_accumulators(self, accumulators):
        n, s, ss = self.create_accumulator()
        for a in accumulators:
            n, s, ss = n + a[0], s + a[1], ss + a[2]
        return n, s, ss

    def extract_output(self, acc):
        return acc


@dataclass(frozen=True)
class Maps:
    """Per-pixel mean and standard deviation of a split, over `count` images."""

    count: int
    mean: np.ndarray  # [784]
    std: np.ndarray  # [784]

    @classmethod
    def from_moments(cls, moments) -> Maps:
        n, s, ss = moments
        if n == 0:
            return cls(0, np.zeros(F.PIXELS), np.zeros(F.PIXELS))
        mean = s / n
        return cls(int(n), mean, np.sqrt(np.maximum(ss / n - mean**2, 0.0)))


def write_maps(split_moments: tuple[str, tuple], stats_uri: str) -> None:
    """Beam sink of a split's PixelMoments: <stats>/Split-<split>/pixel_moments.npz."""
    split, moments = split_moments
    maps = Maps.from_moments(moments)
    buf = io.BytesIO()
    np.savez(buf, count=maps.count, mean=maps.mean, std=maps.std)
    with gfile.GFile(posixpath.join(stats_uri, f"Split-{split}", MOMENTS_FILE), "wb") as f:
        f.write(buf.getvalue())


def read_maps(stats_uri: str, split: str) -> Maps | None:
    path = posixpath.join(stats_uri, f"Split-{split}", MOMENTS_FILE)
    if not gfile.exists(path):
        return None
    with gfile.GFile(path, "rb") as f:
        data = np.load(io.BytesIO(f.read()))
        return Maps(int(data["count"]), data["mean"], data["std"])


def rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a))))


@dataclass(frozen=True)
class MapLimits:
    mean_rms: float  # validate.max_pixel_mean_rms
    std_rms: float  # validate.max_pixel_std_rms


def compare_maps(current: Maps, reference: Maps, limits: MapLimits) -> list[tuple[str, str]]:
    """(short description, description) of each map that differs more than allowed; the
    allowance is the configured limit plus SAMPLING_SIGMAS times the RMS difference that
    sampling alone gives two splits of these sizes (for the mean map: sqrt of the mean
    over pixels of var * (1/n1 + 1/n2); the std map's sampling error is taken as the same)."""
    if current.count == 0 or reference.count == 0:
        return []
    pooled_var = (current.std**2 + reference.std**2) / 2.0
    sampling = float(np.sqrt(np.mean(pooled_var) * (1 / current.count + 1 / reference.count)))
    found = []
    for what, a, b, limit in (
        ("mean", current.mean, reference.mean, limits.mean_rms),
        ("standard deviation", current.std, reference.std, limits.std_rms),
    ):
        diff = a - b
        shift = rms(diff)
        allowed = limit + SAMPLING_SIGMAS * sampling
        if not shift <= allowed:
            worst = int(np.argmax(np.abs(diff)))
            row, col = divmod(worst, F.WIDTH)
            found.append(
                (
                    f"Pixel {what} map shift",
                    f"the per-pixel {what} map differs by RMS {shift:.4f} "
                    f"(expected <= {allowed:.4f}: "
                    f"limit {limit:g} + {SAMPLING_SIGMAS:g} x sampling RMS {sampling:.4f} at "
                    f"{current.count} vs {reference.count} images); largest at pixel "
                    f"(row {row}, col {col}): {a[worst]:.3f} vs {b[worst]:.3f}",
                )
            )
    return found


def draw_maps(
    maps: dict[str, Maps],
    path: str,
    reference: Maps | None = None,
    reference_label: str = "reference",
) -> None:
    """One column per split (and the reference data): the mean map over the std map."""
    import matplotlib  # the headless backend is chosen before pyplot first loads

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [(s, m) for s, m in maps.items() if m.count]
    if reference is not None and reference.count:
        columns.append((reference_label, reference))
    if not columns:
        return
    fig, axes = plt.subplots(2, len(columns), figsize=(2.4 * len(columns), 5.0), squeeze=False)
    for c, (name, m) in enumerate(columns):
        for r, (what, values, vmax) in enumerate((("mean", m.mean, 1.0), ("std", m.std, 0.5))):
            ax = axes[r, c]
            im = ax.imshow(values.reshape(F.HEIGHT, F.WIDTH), cmap="viridis", vmin=0.0, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{name}: {what}" + (f"\n{m.count} images" if r == 0 else ""), fontsize=8)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    with gfile.GFile(path, "wb") as f:
        f.write(buf.getvalue())
