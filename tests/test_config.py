"""Config: keys and defaults derived from the components' parameters classes, presets,
--set overrides, and every bad value rejected naming the key (by the same planning the
CLI runs before anything is created)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from dataclasses import dataclass

import pytest

import models
from pipeline import config as C
from pipeline import runner
from pipeline.config import Params, key
from pipeline.errors import ConfigError
from tests.helpers import COMPONENTS, load_config, user_env


def plan_checks(*overrides: str, preset: str | None = None) -> None:
    """What `run_pipeline.py run` checks before it creates anything."""
    config = load_config(preset, *overrides)
    for c in COMPONENTS.values():
        c.params.from_config(config)
    runner.BeamParams.from_config(config)


def test_defaults_are_the_best_model_on_fashion_mnist_for_five_epochs():
    c = load_config()
    assert (c["model.variant"], c["train.epochs"], c["train.batch_size"]) == ("best", 5, 64)
    assert c["data.dataset"] == "fashion_mnist"
    assert c["data.source"] == "auto"
    assert c["noise.kind"] == "none"
    assert c.changed == ()


def test_each_key_has_one_default_declared_by_its_owner():
    keys = C.schema(runner.param_classes(COMPONENTS.values()))
    assert keys["train.seed"].owner == "TrainParams"
    assert keys["noise.kind"].owner == "TransformParams"
    assert keys["data.num_shards"].owner == "IngestParams"
    assert keys["beam.args"].owner == "BeamParams"
    # readers of a shared key get the owner's value
    c = load_config(None, "train.seed=7", "noise.kind=gaussian")
    assert COMPONENTS["transform"].params.from_config(c).seed == 7
    assert COMPONENTS["evaluate"].params.from_config(c).seed == 7
    assert COMPONENTS["train"].params.from_config(c).denoising is True


def test_a_second_default_or_a_reader_without_owner_is_a_programming_error():
    @dataclass(frozen=True, kw_only=True)
    class A(Params):
        x: int = key("s.x", 1)

    @dataclass(frozen=True, kw_only=True)
    class B(Params):
        x: int = key("s.x", 2)

    @dataclass(frozen=True, kw_only=True)
    class Reader(Params):
        y: int = key("s.y")

    @dataclass(frozen=True, kw_only=True)
    class WrongType(Params):
        x: str = key("s.x")

    with pytest.raises(AssertionError, match="two defaults"):
        C.schema([A, B])
    with pytest.raises(AssertionError, match="no parameters class declares"):
        C.schema([A, Reader])
    with pytest.raises(AssertionError, match="reads it as"):
        C.schema([A, WrongType])


def test_set_overrides_parse_toml_values_and_bare_strings():
    c = load_config(
        None,
        "train.epochs=3",
        "train.learning_rate=1e-4",
        "data.source=idx:/tmp/x",
        "train.jit_compile=true",
        'beam.args=["--direct_num_workers=2"]',
        "model.beta=2",
    )
    assert c["train.epochs"] == 3 and isinstance(c["train.epochs"], int)
    assert c["train.learning_rate"] == pytest.approx(1e-4)
    assert c["data.source"] == "idx:/tmp/x"
    assert c["train.jit_compile"] is True
    assert c["beam.args"] == ("--direct_num_workers=2",)
    assert c["model.beta"] == 2.0 and isinstance(c["model.beta"], float)
    assert set(c.changed) == {
        "train.epochs",
        "train.learning_rate",
        "data.source",
        "train.jit_compile",
        "beam.args",
        "model.beta",
    }
    assert c.differences()["train.epochs"] == 3


@pytest.mark.parametrize(
    "overrides, key_",
    [
        (["train.epochz=3"], "train.epochz"),
        (["trian.epochs=3"], "trian"),
        (["train.epochs=0"], "train.epochs"),
        (["train.epochs=2.5"], "train.epochs"),
        (["train.epochs=many"], "train.epochs"),
        (["train.batch_size=-1"], "train.batch_size"),
        (["data.validation_fraction=1.5"], "data.validation_fraction"),
        (["data.dataset=cifar10"], "data.dataset"),
        (["data.source=s3://x"], "data.source"),
        (["data.max_examples=-5"], "data.max_examples"),
        (["data.num_shards=0"], "data.num_shards"),
        (["noise.kind=blur"], "noise.kind"),
        (["noise.kind=mask", "noise.factor=1.5"], "noise.factor"),
        (["noise.kind=gaussian", "noise.factor=0"], "noise.factor"),
        (["model.variant=transformer"], "model.variant"),
        (["model.latent_dim=32"], "model.latent_dim"),  # best's code: a multiple of 7x7
        (["model.variant=denoise", "model.latent_dim=7"], "model.latent_dim"),
        (["model.latent_dim=-1"], "model.latent_dim"),
        (["model.beta=-1"], "model.beta"),
        (["train.optimizer=lbfgs"], "train.optimizer"),
        (["train.learning_rate=0"], "train.learning_rate"),
        (["train.mixed_precision=yes"], "train.mixed_precision"),
        (["model.decoder=deconv"], "model.decoder"),
        (["train.lr_schedule=step"], "train.lr_schedule"),
        (["train.seed=-1"], "train.seed"),
        (["train.steps_per_execution=0"], "train.steps_per_execution"),
        (["evaluate.tsne_points=5"], "evaluate.tsne_points"),
        (["evaluate.finetune_epochs=-1"], "evaluate.finetune_epochs"),
        (["evaluate.probe_max_train=-1"], "evaluate.probe_max_train"),
        (["evaluate.tsnepoints=5"], "evaluate.tsnepoints"),
        (["beam.args=[1, 2]"], "beam.args"),
        (["beam.args=direct"], "beam.args"),
        (['beam.args=["--runner=NoSuchRunner"]'], "beam.args"),
        (['beam.args=["--no_such_beam_flag=1"]'], "beam.args"),
        (['beam.args=["--direct_num_workers=two"]'], "beam.args"),
    ],
)
def test_bad_values_are_rejected_naming_the_key(overrides, key_):
    with pytest.raises(ConfigError) as e:
        plan_checks(*overrides)
    assert key_ in str(e.value)


def test_good_beam_args_pass():
    plan_checks(
        'beam.args=["--runner=DirectRunner", "--direct_num_workers=2", '
        '"--direct_running_mode=multi_processing"]'
    )
    plan_checks(
        'beam.args=["--runner=PortableRunner", "--job_endpoint=localhost:8099", '
        '"--environment_type=LOOPBACK"]'
    )


def test_set_without_equals_is_rejected():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(None, "train.epochs")


def test_every_preset_passes_every_check():
    presets = sorted(C.PRESET_DIR.glob("*.toml"))
    assert len(presets) >= 12
    for p in presets:
        plan_checks(preset=p.stem)


def test_each_variant_has_a_preset():
    names = {p.stem for p in C.PRESET_DIR.glob("*.toml")}
    assert set(models.VARIANTS) <= names
    for variant in models.VARIANTS:
        assert load_config(variant)["model.variant"] == variant


def test_unknown_preset_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="no preset named"):
        load_config("nope")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nepochs = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(str(bad))
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[training]\nepochs = 3\n")
    with pytest.raises(ConfigError, match=r"\[training\]"):
        load_config(str(unknown))


def test_params_are_frozen_and_hash_what_decides_the_output():
    p = COMPONENTS["transform"].params.from_config(load_config())
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.seed = 1  # type: ignore[misc]
    # without noise, the noise factor and seed do not change transform's output (cache key)
    a = COMPONENTS["transform"].params.from_config(load_config(None, "train.seed=1"))
    b = COMPONENTS["transform"].params.from_config(load_config(None, "train.seed=2"))
    assert a.cache_key() == b.cache_key()
    a = COMPONENTS["transform"].params.from_config(
        load_config(None, "train.seed=1", "noise.kind=mask")
    )
    b = COMPONENTS["transform"].params.from_config(
        load_config(None, "train.seed=2", "noise.kind=mask")
    )
    assert a.cache_key() != b.cache_key()
    # schemas are named by their project-relative path (relocatable keys)
    assert p.cache_key()["schema"] == "schemas/normalized/schema.pbtxt"


# A value out of its range is a mistake whether or not this run reads it (noise.factor
# without noise, beta of a model that is no VAE): each is checked, whatever the other keys
# say, by the one class that declares the key's default. (overrides, key, value as given)
OUT_OF_RANGE_WHATEVER_ELSE_IS_SET = [
    (["noise.factor=-1"], "noise.factor", "-1.0"),  # noise.kind is none by default
    (["noise.factor=0"], "noise.factor", "0.0"),
    (["noise.factor=10.5"], "noise.factor", "10.5"),
    (["noise.factor=nan"], "noise.factor", "nan"),
    (["noise.factor=inf"], "noise.factor", "inf"),
    (["noise.factor=-inf"], "noise.factor", "-inf"),
    (["model.beta=inf"], "model.beta", "inf"),  # best is no VAE
    (["model.activity_l1=inf"], "model.activity_l1", "inf"),  # nor sparse
    (["gate.max_bce_excess=inf"], "gate.max_bce_excess", "inf"),
    (["gate.max_neg_elbo=inf"], "gate.max_neg_elbo", "inf"),
    (["gate.max_neg_elbo=nan"], "gate.max_neg_elbo", "nan"),
]
# TOML integers are 64-bit, which tomllib does not enforce: beyond, TF fails mid-run.
BEYOND_64_BITS = [
    (["train.shuffle_buffer=9223372036854775808"], "train.shuffle_buffer", "9223372036854775808"),
    (
        ["train.steps_per_execution=18446744073709551616"],
        "train.steps_per_execution",
        "18446744073709551616",
    ),
]


@pytest.mark.parametrize(
    "overrides, key_, given", OUT_OF_RANGE_WHATEVER_ELSE_IS_SET + BEYOND_64_BITS
)
def test_every_value_is_range_checked_whether_or_not_the_run_reads_it(overrides, key_, given):
    with pytest.raises(ConfigError) as e:
        plan_checks(*overrides)
    message = str(e.value)
    # require()'s one line: the key, what was expected, the value given
    assert message.startswith(f"{key_}: expected ") and message.endswith(f"got {given}")
    assert "\n" not in message


@pytest.mark.parametrize("overrides, key_, given", OUT_OF_RANGE_WHATEVER_ELSE_IS_SET)
def test_a_range_is_checked_in_one_place_the_keys_owner(overrides, key_, given):
    config = load_config(None, *overrides)
    owner = C.schema(runner.param_classes(COMPONENTS.values()))[key_].owner
    rejecting = set()
    for cls in runner.param_classes(COMPONENTS.values()):
        try:
            cls.from_config(config)
        except ConfigError:
            rejecting.add(cls.__qualname__)
    assert rejecting == {owner}


def test_a_preset_file_is_range_checked_like_set(tmp_path):
    preset = tmp_path / "quiet.toml"
    preset.write_text('[noise]\nkind = "none"\nfactor = nan\n')
    with pytest.raises(ConfigError, match=r"^noise\.factor: expected .*got nan$"):
        plan_checks(preset=str(preset))


def test_kind_specific_ranges_still_apply_and_in_range_values_pass():
    with pytest.raises(ConfigError, match=r"^noise\.factor: .*salt_pepper.*got 1\.0$"):
        plan_checks("noise.kind=salt_pepper", "noise.factor=1")
    for overrides in (
        ["noise.factor=2"],
        ["noise.kind=gaussian", "noise.factor=10"],
        ["noise.kind=mask", "noise.factor=0.9"],
        ["model.beta=0"],
        ["model.activity_l1=0"],
        ["gate.max_bce_excess=1e6"],
        ["train.shuffle_buffer=9223372036854775807"],
    ):
        plan_checks(*overrides)


def test_cli_rejects_an_unused_out_of_range_value_with_one_line_and_exit_2(tmp_path):
    root = tmp_path / "cfgt"
    proc = subprocess.run(
        [sys.executable, "run_pipeline.py", "run", "--root", str(root), "--set", "noise.factor=-1"],
        capture_output=True,
        text=True,
        cwd=C.PROJECT_ROOT,
        timeout=300,
        env=user_env(),
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "noise.factor" in lines[0] and "-1.0" in lines[0], proc.stderr
    assert proc.stdout == ""
    assert not root.exists()
