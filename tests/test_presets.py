"""Every preset trains end to end through run_pipeline.py on a small subset: shapes,
finite losses that go down, the family's metrics (ELBO and a positive KL for VAEs,
noisy-input error for denoising), and the export's embeddings.

The data stages are shared (same root, same data config => cached after the first on
each worker).
"""

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

import run_pipeline
from pipeline import config
from pipeline.errors import EXIT_OK
from tests.helpers import params, synthetic_images, write_idx

PRESETS = sorted(p.stem for p in config.PRESET_DIR.glob("*.toml") if p.stem != "smoke")
VAES = {"vae_mlp", "vae_conv", "vae_bn", "vae_tril"}
# vae_bn has 23M parameters: about 100 s end to end here even on 80 images, most of it
# fixed cost (tracing, its evaluation plots, the SavedModel). Its model is unit-tested in
# tests/test_models.py; this end-to-end case is marked heavy and runs with `make test-all`.
EXTRA = {"vae_bn": ["--set", "data.max_examples=80"]}
# The suite's 10-minute budget: presets whose family another preset already runs end to end
# here (dense: sparse, deep; conv_pool: conv_dense, conv_small) run with `make test-all`;
# their models are unit-tested in tests/test_models.py and every preset passes the config
# checks (tests/test_config.py).
HEAVY = {"vae_bn", "sparse", "deep", "conv_dense", "conv_small"}


# Session-scoped, not module-scoped: the presets need not run on one worker as one xdist
# group (conftest), and each worker reuses its root's data stages.
@pytest.fixture(scope="session")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("idx")
    write_idx(d, "train", *synthetic_images(330, 11))
    test_images, test_labels = synthetic_images(100, 12)
    write_idx(d, "t10k", test_images, test_labels)
    # What always answering the most frequent test class scores (0.13; chance is 0.1): the
    # probe's accuracy on codes that carry nothing of the class, or out of step with labels.
    majority = float(np.bincount(test_labels).max() / len(test_labels))
    return d, tmp_path_factory.mktemp("root"), majority


@pytest.mark.slow
@pytest.mark.parametrize(
    "preset", [pytest.param(p, marks=pytest.mark.heavy) if p in HEAVY else p for p in PRESETS]
)
def test_preset_trains_end_to_end(setup, preset):
    idx, root, majority = setup
    run_id = f"p-{preset}"
    code = run_pipeline.main(
        [
            "run",
            "--config",
            preset,
            "--root",
            str(root),
            "--run-id",
            run_id,
            "--set",
            f"data.source=idx:{idx}",
            "--set",
            "data.num_shards=1",
            "--set",
            "train.epochs=2",
            "--set",
            "train.batch_size=32",
            "--set",
            "train.early_stopping_patience=0",
            "--set",
            "data.validation_fraction=0.15",
            *EXTRA.get(preset, []),
        ]
    )
    assert code == EXIT_OK
    with open(os.path.join(root, "runs", run_id, "summary.json")) as f:
        s = json.load(f)
    assert all(st["status"] in ("ran", "cached") for st in s["stages"].values())
    train, ev, ex = (s["stages"][n] for n in ("train", "evaluate", "export"))
    assert train["metrics"]["variant"] == params("train", preset=preset).variant

    with open(os.path.join(train["artifacts"]["model_run"], "history.json")) as f:
        history = json.load(f)
    losses = history["loss"]
    assert len(losses) == 2 and all(np.isfinite(losses)) and all(np.isfinite(history["val_loss"]))
    assert losses[1] < losses[0], losses

    m = ev["metrics"]
    assert m["bce"] >= m["bce_floor"] - 1e-6 and np.isfinite(m["mse"]) and m["psnr"] > 0
    # The class is linearly readable after 2 epochs on 280 images: from the raw pixels, and
    # from every preset's code, clearly so when the code has more than 2 dimensions.
    assert m["probe_accuracy_raw_pixels"] > majority + 0.15, m
    assert m["probe_accuracy"] > majority + (0.1 if m["latent_dim"] > 2 else 0.0), m
    if preset in VAES:
        assert m["kl"] > 0 and m["neg_elbo"] > m["kl"]
        assert "kl" in history and all(k > 0 for k in history["kl"])
    if preset == "denoise":
        assert "noisy_input_bce" in m

    table = pq.read_table(os.path.join(ex["artifacts"]["embeddings"], "parquet"))
    assert table.num_rows == s["stages"]["ingest"]["metrics"]["num_examples"]
    assert len(table.column("embedding")[0].as_py()) == ex["metrics"]["latent_dim"]
    pngs = [f for f in os.listdir(ev["artifacts"]["evaluation"]) if f.endswith(".png")]
    assert len(pngs) >= 3, pngs
