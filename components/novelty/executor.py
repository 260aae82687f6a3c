"""novelty: fit the novelty scores' constants and thresholds (components/novelty/fit.py) for
the trained model and write them as the `scorer` artifact: scorer.npz (the arrays) and
scorer.json (each score's threshold, what it was fitted on)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from components.novelty import fit
from components.novelty.scores import SCORES
from components.train import model_io

if TYPE_CHECKING:
    from components.novelty.component import NoveltyParams
    from pipeline.artifacts import Artifact
    from pipeline.component import ExecutionContext


def run(
    params: NoveltyParams,
    ctx: ExecutionContext,
    *,
    model: Artifact,
    examples: Artifact,
    scorer: Artifact,
) -> dict:
    t0 = time.perf_counter()
    net = model_io.load_model(model)
    fitted, summary = fit.fit(
        net,
        examples,
        fit_examples=params.fit_examples,
        quantile=params.threshold_quantile,
        seed=params.seed,
        exclude_labels=params.holdout_labels,
    )
    fitted.save(scorer.uri, summary)
    thresholds = {f"threshold_{k}": fitted.thresholds[k] for k in SCORES}
    scorer.properties.update(thresholds, **summary)
    ctx.log.info(
        "novelty: fitted on %d train and %d validation examples (%d classes, %d code dims, "
        "%d layers); thresholds %s",
        summary["fit_examples"],
        summary["validation_examples"],
        len(summary["classes"]),
        summary["code_dims"],
        summary["layers"],
        ", ".join(f"{k} {fitted.thresholds[k]:.4g}" for k in SCORES),
    )
    return {**thresholds, **summary, "novelty_seconds": round(time.perf_counter() - t0, 2)}
