"""push: a blessed SavedModel copied atomically into the layout TensorFlow Serving
watches, `<serving_dir>/<model_name>/<version>/`, versions integers that only grow
(TFX's Pusher). An unblessed candidate is not pushed and the run still succeeds; the
PushedModel artifact says whether it was pushed and why. A blessing is acted on only
if the lineage's blessed model is still the one it was decided against: a run that
overlapped another one, which blessed a model meanwhile, does not push (the next run
compares with that model). Owns the [push] config keys."""

from __future__ import annotations

from dataclasses import dataclass

from components.evaluate.component import LineageParams
from pipeline import artifacts
from pipeline.component import Channel, Component, Resolved
from pipeline.config import key, require

MODEL_KEY = "model"
SAVED_MODEL_KEY = "saved_model"
BLESSING_KEY = "blessing"
CURRENT_BASELINE_KEY = "current_baseline"
PUSHED_MODEL_KEY = "pushed_model"


@dataclass(frozen=True, kw_only=True)
class PushParams(LineageParams):
    serving_dir: str = key("push.serving_dir", "serving",
                           "TensorFlow Serving's model base path; relative to the root "
                           "unless absolute")
    model_name: str = key("push.model_name", "",
                          "the served model's name; '' = <dataset>_<variant>[_<noise>]"
                          "[_holdout<classes>]")
    force: bool = key("push.force", False,
                      "push even when not blessed (the CLI's --force-push)")

    @property
    def name(self) -> str:
        if self.model_name:
            return self.model_name
        noise = "" if self.noise_kind == "none" else f"_{self.noise_kind}"
        # A model trained without some classes never replaces a normal one in serving.
        held_out = ("_holdout" + "-".join(str(c) for c in sorted(self.holdout_labels))
                    if self.holdout_labels else "")
        return f"{self.dataset}_{self.variant}{noise}{held_out}"

    def check(self) -> None:
        require(bool(self.serving_dir.strip()) and "://" not in self.serving_dir,
                "push.serving_dir", "a local or mounted directory (object stores: not yet)",
                self.serving_dir)
        require(self.model_name == "" or (self.model_name.replace("_", "").replace("-", "")
                                          .isalnum() and self.model_name[0] not in "-_"),
                "push.model_name", "'' or letters, digits, '_', '-'", self.model_name)


PUSH = Component(
    name="push",
    inputs={MODEL_KEY: Channel(artifacts.MODEL, "train", "model"),
            SAVED_MODEL_KEY: Channel(artifacts.SAVED_MODEL, "export", "saved_model"),
            BLESSING_KEY: Channel(artifacts.BLESSING, "evaluate", "blessing"),
            # resolved again when push starts: did another run bless a model meanwhile?
            CURRENT_BASELINE_KEY: Resolved(artifacts.MODEL, candidate=MODEL_KEY)},
    outputs={PUSHED_MODEL_KEY: artifacts.PUSHED_MODEL},
    params=PushParams,
    executor_module="components.push.executor",
    description="copy a blessed SavedModel into the serving directory",
)
