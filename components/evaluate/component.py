"""evaluate: reconstruction metrics on test (BCE, its floor and excess, MSE, PSNR;
noisy-input error for denoising; ELBO and KL for VAEs), embedding probe, plots."""

from pipeline import artifacts as a
from pipeline.component import ComponentSpec


def _params(c):
    return {"seed": c.train.seed, "grid_images": 10,
            "probe_max_train": c.evaluate.probe_max_train, "tsne_points": c.evaluate.tsne_points,
            "finetune_epochs": c.evaluate.finetune_epochs}


COMPONENT = ComponentSpec(
    name="evaluate",
    inputs={"model": (a.MODEL, "train.model"),
            "model_run": (a.MODEL_RUN, "train.model_run"),
            "examples": (a.EXAMPLES, "transform.examples")},
    outputs={"evaluation": a.EVALUATION},
    executor="components.evaluate.executor:run",
    params=_params,
    description="test-set metrics and plots",
)
