"""The blessing gate (TFX's Evaluator blessing): is the candidate good enough to push?

The candidate is compared with the currently blessed model of its lineage (same dataset,
variant, noise and held-out classes), both measured by evaluate on the same test split (its
seen classes only, when classes are held out), on one main metric,
lower is better: `neg_elbo` (nats per image) for VAEs, else `bce_excess` (BCE above the
floor of the test images' own pixel entropy). It is blessed when

  - its numbers are finite,
  - it is under the absolute ceilings (gate.max_bce_excess; gate.max_neg_elbo for VAEs),
  - and, when there is a blessed baseline, its main metric is at most the baseline's
    plus gate.relative_tolerance of it (equal within tolerance passes).

The first model of a lineage is blessed when it passes the ceilings. The decision says
why in one sentence, with both models' numbers, for people (report, `show`) and machines
(the ModelBlessing artifact's properties, summary.json).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

BASELINES = ("latest_blessed", "none")


def lineage(
    dataset: str,
    variant: str,
    noise_kind: str,
    noise_factor: float,
    holdout_labels: tuple[int, ...],
) -> str:
    """Models are compared with, and replace, only blessed models of their own lineage.
    A model trained without some classes (data.holdout_labels) is a lineage of its own,
    "<dataset>/<variant>/<noise>/holdout:<classes>", never mixed with normal models."""
    noise = "clean" if noise_kind == "none" else f"{noise_kind}:{noise_factor:g}"
    held_out = (
        f"/holdout:{','.join(str(c) for c in sorted(holdout_labels))}" if holdout_labels else ""
    )
    return f"{dataset}/{variant}/{noise}{held_out}"


def main_metric(variational: bool) -> str:
    return "neg_elbo" if variational else "bce_excess"


@dataclass(frozen=True)
class Thresholds:
    relative_tolerance: float
    max_bce_excess: float
    max_neg_elbo: float


def decide(metric: str, candidate: dict, baseline: dict | None, t: Thresholds) -> dict:
    """candidate / baseline: metric name -> value (baseline None: first of its lineage)."""
    value = candidate.get(metric)
    decision = {
        "metric": metric,
        "candidate": value,
        "baseline": None if baseline is None else baseline.get(metric),
        "thresholds": {
            "relative_tolerance": t.relative_tolerance,
            "max_bce_excess": t.max_bce_excess,
            "max_neg_elbo": t.max_neg_elbo,
        },
    }

    def verdict(blessed: bool, reason: str) -> dict:
        return {"blessed": blessed, "reason": reason, **decision}

    if value is None or not math.isfinite(value):
        return verdict(False, f"{metric} is {value}: not a finite number")
    ceilings = [("bce_excess", t.max_bce_excess, "gate.max_bce_excess")]
    if metric == "neg_elbo":
        ceilings.append(("neg_elbo", t.max_neg_elbo, "gate.max_neg_elbo"))
    for name, ceiling, key in ceilings:
        v = candidate.get(name)
        if v is None or not math.isfinite(v) or v > ceiling:
            return verdict(False, f"{name} {_fmt(v)} is above the ceiling {_fmt(ceiling)} ({key})")
    if baseline is None:
        return verdict(
            True, f"first model of its lineage; {metric} {_fmt(value)} is under the ceilings"
        )
    base = baseline.get(metric)
    if base is None or not math.isfinite(base):
        return verdict(
            True,
            f"the blessed baseline's {metric} is {base}; {metric} "
            f"{_fmt(value)} is under the ceilings",
        )
    limit = base + t.relative_tolerance * abs(base)
    change = (value - base) / abs(base) if base else 0.0
    compared = (
        f"{metric} {_fmt(value)} vs the blessed baseline's {_fmt(base)} "
        f"({change:+.2%}; allowed up to {_fmt(limit)}, gate.relative_tolerance "
        f"{t.relative_tolerance:g})"
    )
    if value <= limit:
        return verdict(
            True, ("better: " if value < base else "no worse within tolerance: ") + compared
        )
    return verdict(False, "worse than the blessed baseline: " + compared)


def _fmt(v) -> str:
    return "None" if v is None else f"{v:.6g}"
