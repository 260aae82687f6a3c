"""Config loading: defaults, presets, --set overrides, and rejection of bad keys/values."""

import pathlib

import pytest

from pipeline import config as C
from pipeline.errors import ConfigError


def test_defaults_are_conv_pool_on_fashion_mnist():
    c = C.load_config()
    assert c.model.variant == "conv_pool"
    assert c.data.dataset == "fashion_mnist"
    assert c.data.source == "auto"
    assert c.noise.kind == "none"


def test_set_overrides_parse_toml_values_and_bare_strings():
    c = C.load_config(None, ["train.epochs=3", "train.learning_rate=1e-4", "data.source=idx:/tmp/x",
                             "train.jit_compile=true", 'beam.args=["--direct_num_workers=2"]',
                             "model.beta=2"])
    assert c.train.epochs == 3 and isinstance(c.train.epochs, int)
    assert c.train.learning_rate == pytest.approx(1e-4)
    assert c.data.source == "idx:/tmp/x"
    assert c.train.jit_compile is True
    assert c.beam.args == ["--direct_num_workers=2"]
    assert c.model.beta == 2.0 and isinstance(c.model.beta, float)


@pytest.mark.parametrize("override, key", [
    ("train.epochz=3", "train.epochz"),
    ("trian.epochs=3", "trian"),
    ("train.epochs=0", "train.epochs"),
    ("train.epochs=2.5", "train.epochs"),
    ("train.epochs=many", "train.epochs"),
    ("train.batch_size=-1", "train.batch_size"),
    ("data.validation_fraction=1.5", "data.validation_fraction"),
    ("data.dataset=cifar10", "data.dataset"),
    ("data.source=s3://x", "data.source"),
    ("data.max_examples=-5", "data.max_examples"),
    ("noise.kind=blur", "noise.kind"),
    ("noise.kind=mask", "noise.factor"),  # default factor 0.5 ok; checked below with 1.5
    ("model.variant=transformer", "model.variant"),
    ("train.optimizer=lbfgs", "train.optimizer"),
    ("train.learning_rate=0", "train.learning_rate"),
    ("train.mixed_precision=yes", "train.mixed_precision"),
    ("model.decoder=deconv", "model.decoder"),
    ("beam.args=[1, 2]", "beam.args"),
    ("train.lr_schedule=step", "train.lr_schedule"),
    ("evaluate.tsne_points=5", "evaluate.tsne_points"),
    ("evaluate.finetune_epochs=-1", "evaluate.finetune_epochs"),
    ("evaluate.probe_max_train=-1", "evaluate.probe_max_train"),
    ("evaluate.tsnepoints=5", "evaluate.tsnepoints"),
])
def test_bad_values_are_rejected_naming_the_key(override, key):
    if override == "noise.kind=mask":
        override_list = [override, "noise.factor=1.5"]
    else:
        override_list = [override]
    with pytest.raises(ConfigError) as e:
        C.load_config(None, override_list)
    assert key in str(e.value)


def test_set_without_equals_is_rejected():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        C.load_config(None, ["train.epochs"])


def test_every_preset_loads_and_names_a_known_variant():
    presets = sorted(C.PRESET_DIR.glob("*.toml"))
    assert len(presets) >= 12
    for p in presets:
        c = C.load_config(p.stem)
        assert c.model.variant in C.VARIANTS


def test_each_variant_has_a_preset():
    names = {p.stem for p in C.PRESET_DIR.glob("*.toml")}
    assert set(C.VARIANTS) <= names


def test_unknown_preset_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="no preset named"):
        C.load_config("nope")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nepochs = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        C.load_config(str(bad))
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[training]\nepochs = 3\n")
    with pytest.raises(ConfigError, match=r"\[training\]"):
        C.load_config(str(unknown))


def test_config_variants_match_the_model_zoo():
    import models

    assert tuple(C.VARIANTS) == tuple(models.VARIANTS)
