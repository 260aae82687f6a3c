"""evaluate: reconstruction metrics on test (BCE, its floor and excess, MSE, PSNR;
noisy-input error for denoising; ELBO and KL for VAEs), embedding probe, plots. Owns
the [evaluate] config keys."""

from __future__ import annotations

from dataclasses import dataclass

from components.evaluate import executor
from pipeline import artifacts
from pipeline.component import Channel, Component
from pipeline.config import Params, key, require

MODEL_KEY = "model"
MODEL_RUN_KEY = "model_run"
EXAMPLES_KEY = "examples"
EVALUATION_KEY = "evaluation"


@dataclass(frozen=True, kw_only=True)
class EvaluateParams(Params):
    probe_max_train: int = key("evaluate.probe_max_train", 10000,
                               "train embeddings for the linear probe; 0 = all")
    tsne_points: int = key("evaluate.tsne_points", 1000,
                           "test points in the latent scatter (t-SNE for codes > 2-D)")
    finetune_epochs: int = key("evaluate.finetune_epochs", 0,
                               "> 0: also fine-tune encoder + softmax head (stacked AE classifier)")
    seed: int = key("train.seed")
    grid_images: int = 10  # columns of the reconstruction grid; rows of the VAE sample grid

    def check(self) -> None:
        require(self.probe_max_train >= 0, "evaluate.probe_max_train", ">= 0 (0 = all)",
                self.probe_max_train)
        require(10 <= self.tsne_points <= 20000, "evaluate.tsne_points", "10..20000",
                self.tsne_points)
        require(0 <= self.finetune_epochs <= 1000, "evaluate.finetune_epochs", "0..1000",
                self.finetune_epochs)


EVALUATE = Component(
    name="evaluate",
    inputs={MODEL_KEY: Channel(artifacts.MODEL, "train", "model"),
            MODEL_RUN_KEY: Channel(artifacts.MODEL_RUN, "train", "model_run"),
            EXAMPLES_KEY: Channel(artifacts.EXAMPLES, "transform", "transformed_examples")},
    outputs={EVALUATION_KEY: artifacts.EVALUATION},
    params=EvaluateParams,
    executor=executor.run,
    description="test-set metrics and plots",
)
