"""The data-parallel stages run unchanged on Beam's portable job API (what Flink and
Spark use), here through the SDK's embedded job service with a loopback worker."""

import os

import pytest

from pipeline.component import ExecutionContext
from tests.helpers import output_artifacts, params, run_executor, synthetic_images, write_idx

PORTABLE = ("--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK")


@pytest.mark.slow
def test_ingest_validate_and_transform_on_the_portable_runner(tmp_path):
    write_idx(tmp_path / "idx", "train", *synthetic_images(100, 1))
    write_idx(tmp_path / "idx", "t10k", *synthetic_images(40, 2))
    keys = (f"data.source=idx:{tmp_path / 'idx'}", "noise.kind=mask")
    ctx = ExecutionContext(beam_args=PORTABLE)

    ingested = output_artifacts("ingest", tmp_path / "ingest")
    m = run_executor("ingest", params("ingest", *keys), {}, ingested, ctx)
    assert m["num_examples"] == 140
    raw = ingested["examples"]

    validated = output_artifacts("validate", tmp_path / "validate")
    m = run_executor("validate", params("validate", *keys), {"examples": raw}, validated, ctx)
    assert m["anomalous_splits"] == [] and m["splits"]["test"]["num_examples"] == 40

    transformed = output_artifacts("transform", tmp_path / "transform")
    m = run_executor("transform", params("transform", *keys),
                     {"examples": raw, "raw_anomalies": validated["anomalies"]}, transformed, ctx)
    assert m["num_examples"] == 140
    assert transformed["transformed_examples"].properties["noisy"] is True
    assert transformed["transformed_examples"].properties["noise_kind"] == "mask"
    assert os.path.exists(tmp_path / "transform" / "statistics" / "Split-test" / "FeatureStats.pb")
