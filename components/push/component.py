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
from pipeline.component import Component, Input, Resolved
from pipeline.config import key, require
from pipeline.views import Decision, View

MODEL_KEY = "model"
SAVED_MODEL_KEY = "saved_model"
BLESSING_KEY = "blessing"
CURRENT_BASELINE_KEY = "current_baseline"
PUSHED_MODEL_KEY = "pushed_model"


@dataclass(frozen=True, kw_only=True)
class PushParams(LineageParams):
    serving_dir: str = key(
        "push.serving_dir",
        "serving",
        "TensorFlow Serving's model base path; relative to the root unless absolute",
    )
    model_name: str = key(
        "push.model_name",
        "",
        "the served model's name; '' = <dataset>_<variant>[_<noise>][_holdout<classes>]",
    )
    force: bool = key("push.force", False, "push even when not blessed (the CLI's --force-push)")

    @property
    def name(self) -> str:
        if self.model_name:
            return self.model_name
        noise = "" if self.noise_kind == "none" else f"_{self.noise_kind}"
        # A model trained without some classes never replaces a normal one in serving.
        held_out = (
            "_holdout" + "-".join(str(c) for c in sorted(self.holdout_labels))
            if self.holdout_labels
            else ""
        )
        return f"{self.dataset}_{self.variant}{noise}{held_out}"

    def check(self) -> None:
        require(
            bool(self.serving_dir.strip()) and "://" not in self.serving_dir,
            "push.serving_dir",
            "a local or mounted directory (object stores: not yet)",
            self.serving_dir,
        )
        require(
            self.model_name == ""
            or (
                self.model_name.replace("_", "").replace("-", "").isalnum()
                and self.model_name[0] not in "-_"
            ),
            "push.model_name",
            "'' or letters, digits, '_', '-'",
            self.model_name,
        )


PUSH = Component(
    name="push",
    inputs={
        MODEL_KEY: Input(artifacts.MODEL),
        SAVED_MODEL_KEY: Input(artifacts.SAVED_MODEL),
        BLESSING_KEY: Input(artifacts.BLESSING),
        # resolved again when push starts: did another run bless a model meanwhile?
        CURRENT_BASELINE_KEY: Resolved(artifacts.MODEL, candidate=MODEL_KEY),
    },
    outputs={PUSHED_MODEL_KEY: artifacts.PUSHED_MODEL},
    params=PushParams,
    executor_module="components.push.executor",
    description="copy a blessed SavedModel into the serving directory",
    view=View(
        headline=("pushed", "version"),
        decision=Decision(
            key="push",
            output=PUSHED_MODEL_KEY,
            flag="pushed",
            title="Push",
            fields=("pushed", "reason", "version", "destination", "model_name", "forced"),
            detail=" as version {version} at {destination}",
            detail_only_if_yes=True,
            version="version",
            paths=("destination",),
            says_if_reused=True,
        ),
    ),
)
