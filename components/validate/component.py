"""validate: TFDV statistics per split plus content checks (components/validate/content.py),
against the curated raw schema; between splits (test vs train) and between scheduled
batches (this train split vs the data behind the last blessed model). Anomalies stop the
run with exit 3. Owns the [validate] config keys."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pipeline import artifacts
from pipeline.component import BLESSED_MODEL_DATA, Component, Input, Resolved
from pipeline.config import Params, key, require
from pipeline.schemas import RAW_SCHEMA, schema_digest
from pipeline.views import DataOutputs, Pictures, View

EXAMPLES_KEY = "examples"
REFERENCE_STATISTICS_KEY = "reference_statistics"
STATISTICS_KEY = "statistics"
ANOMALIES_KEY = "anomalies"
REFERENCES = ("latest_blessed", "none")


@dataclass(frozen=True, kw_only=True)
class ValidateParams(Params):
    dataset: str = key("data.dataset")
    reference: str = key(
        "validate.reference",
        "latest_blessed",
        "latest_blessed: also compare new data with the data behind the dataset's newest "
        "blessed model (drift between scheduled batches); none: splits only (to accept a "
        "deliberate change of the data)",
    )
    max_pixel_mean_rms: float = key(
        "validate.max_pixel_mean_rms",
        0.03,
        "largest RMS over pixels of the difference of two per-pixel mean maps (plus the "
        'sampling allowance); docs/stages.md, "Data validation", has the real data\'s figure',
    )
    max_pixel_std_rms: float = key(
        "validate.max_pixel_std_rms", 0.03, "the same for the per-pixel standard-deviation maps"
    )
    schema: str = RAW_SCHEMA  # project-relative path of the curated schema

    def reference_scope(self) -> str | None:
        """Whose blessed models' data is the reference (launcher's BLESSED_MODEL_DATA):
        any model of this dataset; None: no reference."""
        return f"{self.dataset}/" if self.reference == "latest_blessed" else None

    def check(self) -> None:
        require(
            self.reference in REFERENCES,
            "validate.reference",
            f"one of {REFERENCES}",
            self.reference,
        )
        for name, value in (
            ("validate.max_pixel_mean_rms", self.max_pixel_mean_rms),
            ("validate.max_pixel_std_rms", self.max_pixel_std_rms),
        ):
            require(0.0 < value <= 1.0, name, "an RMS in (0, 1]", value)

    def cache_key(self) -> dict:
        # The reference is a gate on new data, not part of what the statistics are: data
        # once accepted stays accepted (and cached) whichever model is blessed later.
        key_ = {**dataclasses.asdict(self), "schema_sha256": schema_digest(self.schema)}
        del key_["reference"]
        return key_


VALIDATE = Component(
    name="validate",
    inputs={
        EXAMPLES_KEY: Input(artifacts.EXAMPLES),
        REFERENCE_STATISTICS_KEY: Resolved(
            artifacts.STATISTICS,
            candidate=EXAMPLES_KEY,
            strategy=BLESSED_MODEL_DATA,
            output=STATISTICS_KEY,
            in_fingerprint=False,
        ),
    },
    outputs={STATISTICS_KEY: artifacts.STATISTICS, ANOMALIES_KEY: artifacts.ANOMALIES},
    params=ValidateParams,
    executor_module="components.validate.executor",
    description="TFDV statistics, content checks and drift against schemas/raw",
    published_on_rejection=(STATISTICS_KEY, ANOMALIES_KEY),
    view=View(
        headline=("anomalous_splits",),
        data=DataOutputs(STATISTICS_KEY, ANOMALIES_KEY, class_counts=True),  # raw labels
        pictures=Pictures(
            STATISTICS_KEY,
            {"pixel_maps.png": "per-pixel mean and standard deviation of each split (validate)"},
            rank=1,
        ),
    ),
)
