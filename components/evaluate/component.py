"""evaluate: reconstruction metrics on test (BCE, its floor and excess, MSE, PSNR;
noisy-input error for denoising; ELBO and KL for VAEs), anomaly detection (every novelty
score, the served one's threshold, and with held-out classes each score's AUROC, AUPRC and
TPR at 5% FPR), embedding probe,
plots, and the blessing gate against the currently blessed model of the same lineage
(components/evaluate/gate.py). Owns the [evaluate] and [gate] config keys."""

from __future__ import annotations

import math
from dataclasses import dataclass

from components.evaluate import gate
from components.evaluate.gate import Thresholds
from components.novelty.component import SCORES
from pipeline import artifacts
from pipeline.component import Component, Input, Resolved
from pipeline.config import Params, key, require
from pipeline.views import Decision, MainMetric, MetricTable, Pictures, Row, Sweep, View

MODEL_KEY = "model"
MODEL_RUN_KEY = "model_run"
EXAMPLES_KEY = "examples"
SCORER_KEY = "scorer"
BASELINE_MODEL_KEY = "baseline_model"
EVALUATION_KEY = "evaluation"
BLESSING_KEY = "blessing"


@dataclass(frozen=True, kw_only=True)
class LineageParams(Params):
    """A model's lineage and whether to compare within it: evaluate blesses against the
    lineage's blessed model, push checks that the blessing still holds."""

    dataset: str = key("data.dataset")
    variant: str = key("model.variant")
    noise_kind: str = key("noise.kind")
    noise_factor: float = key("noise.factor")
    holdout_labels: tuple[int, ...] = key("data.holdout_labels")
    baseline: str = key("gate.baseline")  # its default: EvaluateParams

    def lineage(self) -> str:
        return gate.lineage(
            self.dataset, self.variant, self.noise_kind, self.noise_factor, self.holdout_labels
        )

    def baseline_lineage(self) -> str | None:
        """Where the launcher resolves the blessed baseline; None: compare with nothing."""
        return self.lineage() if self.baseline == "latest_blessed" else None


@dataclass(frozen=True, kw_only=True)
class EvaluateParams(LineageParams):
    probe_max_train: int = key(
        "evaluate.probe_max_train", 10000, "train embeddings for the linear probe; 0 = all"
    )
    tsne_points: int = key(
        "evaluate.tsne_points", 1000, "test points in the latent scatter (t-SNE for codes > 2-D)"
    )
    finetune_epochs: int = key(
        "evaluate.finetune_epochs",
        0,
        "> 0: also fine-tune encoder + softmax head (stacked AE classifier)",
    )
    relative_tolerance: float = key(
        "gate.relative_tolerance",
        0.01,
        "bless when the main metric (bce_excess; neg_elbo for VAEs) is at most the blessed "
        "baseline's plus this fraction of it",
    )
    max_bce_excess: float = key(
        "gate.max_bce_excess",
        0.15,
        "never bless above this BCE excess (predicting the mean image scores 0.249 on "
        "Fashion-MNIST)",
    )
    max_neg_elbo: float = key(
        "gate.max_neg_elbo",
        330.0,
        "VAEs: never bless above this -ELBO in nats/image (the mean image scores 385)",
    )
    baseline: str = key(
        "gate.baseline",
        "latest_blessed",
        "latest_blessed: compare with the lineage's newest blessed model; none: the ceilings "
        "only (to start a lineage afresh, e.g. after a deliberate architecture change)",
    )
    seed: int = key("train.seed")
    score: str = key("export.score")  # the novelty score served: its threshold is reported
    grid_images: int = 10  # columns of the reconstruction grid; rows of the VAE sample grid

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(self.relative_tolerance, self.max_bce_excess, self.max_neg_elbo)

    def check(self) -> None:
        require(
            0.0 <= self.relative_tolerance <= 1.0,
            "gate.relative_tolerance",
            "0..1",
            self.relative_tolerance,
        )
        require(
            self.baseline in gate.BASELINES,
            "gate.baseline",
            f"one of {gate.BASELINES}",
            self.baseline,
        )
        # Ceilings, so finite (an infinite one is no ceiling); max_neg_elbo is checked for
        # every variant, not only the VAEs that it applies to.
        require(
            0.0 < self.max_bce_excess < math.inf,
            "gate.max_bce_excess",
            "a finite number > 0",
            self.max_bce_excess,
        )
        require(
            0.0 < self.max_neg_elbo < math.inf,
            "gate.max_neg_elbo",
            "a finite number > 0",
            self.max_neg_elbo,
        )
        require(
            self.probe_max_train >= 0,
            "evaluate.probe_max_train",
            ">= 0 (0 = all)",
            self.probe_max_train,
        )
        require(
            10 <= self.tsne_points <= 20000, "evaluate.tsne_points", "10..20000", self.tsne_points
        )
        require(
            0 <= self.finetune_epochs <= 1000,
            "evaluate.finetune_epochs",
            "0..1000",
            self.finetune_epochs,
        )


EVALUATE = Component(
    name="evaluate",
    inputs={
        MODEL_KEY: Input(artifacts.MODEL),
        MODEL_RUN_KEY: Input(artifacts.MODEL_RUN),
        EXAMPLES_KEY: Input(artifacts.EXAMPLES),
        SCORER_KEY: Input(artifacts.SCORER),
        BASELINE_MODEL_KEY: Resolved(artifacts.MODEL, candidate=MODEL_KEY),
    },
    outputs={EVALUATION_KEY: artifacts.EVALUATION, BLESSING_KEY: artifacts.BLESSING},
    params=EvaluateParams,
    executor_module="components.evaluate.executor",
    description="test-set metrics, plots, and the blessing gate",
    view=View(
        # the metric the gate compares: a VAE's neg_elbo, else bce_excess (gate.py)
        main_metric=MainMetric(("neg_elbo", "bce_excess"), lower_is_better=True),
        headline=(
            "bce",
            "bce_floor",
            "bce_excess",
            "mse",
            "psnr",
            "neg_elbo",
            "kl",
            "noisy_input_bce",
            "probe_accuracy",
            "probe_accuracy_raw_pixels",
            "blessed",
        ),
        decision=Decision(
            key="blessing",
            output=BLESSING_KEY,
            flag="blessed",
            title="Blessing",
            fields=(
                "blessed",
                "reason",
                "lineage",
                "metric",
                "candidate_value",
                "baseline_value",
                "baseline_run_id",
                "thresholds",
            ),
            detail=" ({lineage})",
        ),
        metrics=MetricTable(
            "Evaluation",
            "test split",
            rows=(
                Row(
                    "bce = bce_floor + bce_excess",
                    "{bce:.4f} = {bce_floor:.4f} (floor) + {bce_excess:.4f} (excess)",
                ),
                Row("mse", "{mse:.4g}"),
                Row("psnr", "{psnr:.2f} dB"),
                Row(
                    "probe_accuracy (raw-pixel probe)",
                    "{probe_accuracy:.3f} (raw pixels {probe_accuracy_raw_pixels:.3f})",
                ),
                Row("finetune_accuracy", "{finetune_accuracy:.3f}"),
                Row("neg_elbo", "{neg_elbo:.1f} nats/image"),
                Row("kl", "{kl:.2f} nats"),
                Row("beta", "{beta:.3g}"),
                # denoising: how far the input itself is from the target
                Row(
                    "noisy input: bce (excess), mse, psnr",
                    "{noisy_input_bce:.4f} ({noisy_input_bce_excess:.4f}), {noisy_input_mse}, "
                    "{noisy_input_psnr:.2f} dB",
                ),
                Row(prefix="denoise_"),
            ),
        ),
        sections=(
            MetricTable(
                "Novelty detection",
                'test split; docs/stages.md, "Novelty scores"',
                rows=(
                    Row(
                        "served score {anomaly_score}: threshold (validation quantile "
                        "{anomaly_threshold_quantile})",
                        "{anomaly_threshold}; flagged {anomaly_flagged_fraction:.2%} of test",
                    ),
                    Row(
                        "held-out classes: AUROC, precision / recall at the threshold",
                        "{anomaly_auroc:.3f}, {anomaly_precision:.3f} / {anomaly_recall:.3f}",
                    ),
                    *(
                        Row(
                            f"{k}: AUROC, AUPRC, TPR at 5% FPR",
                            f"{{novelty_{k}_auroc:.3f}}, {{novelty_{k}_auprc:.3f}}, "
                            f"{{novelty_{k}_tpr_at_5fpr:.3f}}",
                        )
                        for k in SCORES
                    ),
                    *(Row(f"{k}: threshold", f"{{novelty_{k}_threshold:.4g}}") for k in SCORES),
                ),
                pictures=("score_histogram.png", "novelty_roc.png"),
            ),
        ),
        # bench/novelty.py's leave-one-class-out runs, a row per held-out class
        sweep=Sweep(
            "Novelty detection, AUROC per held-out class",
            "data.holdout_labels",
            tuple((k, f"novelty_{k}_auroc") for k in SCORES),
        ),
        pictures=Pictures(
            EVALUATION_KEY,
            {
                "reconstructions.png": "test images over their reconstructions",
                "loss_curves.png": "train and validation loss per epoch",
                "latent_scatter.png": "test codes in 2-D, coloured by class",
                "prior_samples.png": "decodings of z ~ N(0, I)",
                "latent_manifold.png": "the decoded 2-D latent manifold",
                "code_sweep.png": "a sweep of code dims 0 and 1",
                "score_histogram.png": "each novelty score on test, held-out classes apart, "
                "with its threshold",
                "novelty_roc.png": "each novelty score's ROC curve for the held-out classes",
            },
        ),
    ),
)
