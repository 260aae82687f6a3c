"""evaluate: test-split metrics, embedding probe and plots for a trained model.

Output `evaluation`: metrics.json (every number, plus notes on how each was computed) and
the PNGs: reconstructions.png, loss_curves.png, latent_scatter.png, score_histogram.png,
and for VAEs prior_samples.png, latent_manifold.png (2-D codes), code_sweep.png (vae_tril).
Output `blessing`: the gate's decision against the blessed baseline (gate.py): an empty
BLESSED or NOT_BLESSED file, as TFX writes them, and blessing.json.

Metric definitions: components/evaluate/metrics.py (README, "Metrics").

Anomaly detection: every test example is scored (components/scoring.py, on the clean
image) and the threshold is calibrated on the validation split without the held-out
classes, as export calibrates the SavedModel's. With held-out classes
(data.holdout_labels): the AUROC of the score for held-out vs seen test classes, and
precision / recall at the threshold (components/evaluate/detection.py). The reconstruction
metrics and the gate are then measured on the test examples of the seen classes only:
the held-out ones are meant to reconstruct badly, so counting them would blur the gate's
question (how well does the model reconstruct what it was trained to) and penalize a
better detector; their own reconstruction error is reported as held_out_*.
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
import statistics
import time
from typing import TYPE_CHECKING

import keras
import numpy as np
import tensorflow as tf
from tensorflow.io import gfile

from components import examples_io
from components import features as F
from components import scoring
from components.evaluate import detection, gate
from components.evaluate import metrics as M
from components.evaluate import plots, probe
from components.train import model_io
from pipeline.errors import StageError

if TYPE_CHECKING:
    from components.evaluate.component import EvaluateParams
    from pipeline.artifacts import Artifact
    from pipeline.component import ExecutionContext

BATCH = 512
METRICS_JSON = "metrics.json"
BLESSING_JSON = "blessing.json"
SCORE_HISTOGRAM = "score_histogram.png"


def predict(fn, x: np.ndarray, batch: int = BATCH) -> np.ndarray:
    """fn over x in batches, as one float32 numpy array (eager: a few dozen batches at most,
    not worth tracing a graph for)."""
    out = [np.asarray(fn(tf.constant(x[i:i + batch])), np.float32)
           for i in range(0, len(x), batch)]
    return np.concatenate(out)


def read_history(model_run: Artifact) -> dict[str, list]:
    json_path = posixpath.join(model_run.uri, "history.json")
    if gfile.exists(json_path):
        with gfile.GFile(json_path) as f:
            return json.load(f)
    csv_path = posixpath.join(model_run.uri, "history.csv")
    if not gfile.exists(csv_path):
        return {}
    with gfile.GFile(csv_path) as f:
        rows = list(csv.DictReader(io.StringIO(f.read())))
    return {k: [float(r[k]) for r in rows] for k in (rows[0] if rows else {})}


def run(params: EvaluateParams, ctx: ExecutionContext, *, model: Artifact, model_run: Artifact,
        examples: Artifact, baseline_model: Artifact | None, evaluation: Artifact,
        blessing: Artifact) -> dict:
    log = ctx.log
    t_start = time.perf_counter()
    seed, grid_k = params.seed, params.grid_images
    out_uri = evaluation.uri
    model_artifact = model

    info = model_io.read_model_json(model_artifact)
    model = model_io.load_model(model_artifact)
    input_feature = info["input_feature"]
    denoising = input_feature == F.NOISY_IMAGE
    variational = bool(getattr(model, "is_variational", False))
    holdout = params.holdout_labels
    if sorted(model_io.holdout_labels(info)) != sorted(holdout):
        raise StageError(
            f"the model at {model_artifact.uri} was trained without classes "
            f"{sorted(model_io.holdout_labels(info))} (its model.json), but "
            f"data.holdout_labels is {sorted(holdout)}; expected the same classes")
    log.info("evaluate: %s (latent_dim %d%s) on the test split%s", info["variant"],
             model.latent_dim, ", denoising" if denoising else "",
             f", classes {list(holdout)} held out of training" if holdout else "")

    forward = scoring.forward(model)
    base, base_info, unusable = _load_baseline(baseline_model, log)
    # Bounded memory: the probes are fitted on a train subsample (evaluate.probe_max_train)
    # read in batches, the threshold calibrated on streamed validation batches, and the
    # test split passes once, a batch at a time; only per-example numbers are kept.
    probes = _fit_probes(scoring.encoder(model), examples, params, seed, log)
    calibration = _calibrate(forward, examples, params)
    test = _test_pass(model, forward, base, examples, params, denoising, variational, probes,
                      seed)
    held = test["held"]

    result: dict = {"test_examples": int(len(held)), "latent_dim": int(model.latent_dim)}
    notes: dict = {
        "bce": "mean per-pixel binary cross-entropy vs the clean target, predictions clipped "
               f"to [{M.EPS}, 1-{M.EPS}]",
        "bce_floor": "mean per-pixel entropy of the targets (the BCE of a perfect model)",
        "psnr": f"per image with MAX=1, averaged; capped at {M.PSNR_CAP_DB:g} dB",
    }
    result.update(_summary(test["candidate"], info, variational))
    if holdout:
        result["reconstruction_test_examples"] = int((~held).sum())
        if held.any():
            held_out = M.summarize(test["held_out"], prefix="held_out_")
            result.update({k: v for k, v in held_out.items() if k != "held_out_bce_floor"})
        notes["reconstruction_test_examples"] = (
            f"reconstruction metrics and the gate: the test examples of the classes seen in "
            f"training only (classes {list(holdout)} held out); held_out_*: the others")
    if denoising:
        result.update(M.denoising_summary(
            M.summarize(test["noisy_input"], prefix="noisy_input_"),
            M.summarize(test["candidate"]["per_image"])))
        notes["denoise_mse_reduction"] = "1 - mse(model) / mse(noisy input)"
    if variational:
        notes["reconstruction"] = "VAE: reconstruct() decodes the posterior mean"
        notes["neg_elbo"] = ("nats/image = 784-pixel BCE sum of the clean target under the "
                             "decoding of ONE posterior sample z ~ q(z|x) (the training "
                             "estimator) + ANALYTIC KL(q(z|x) || N(0, I)); beta not applied "
                             "(beta_weighted_loss applies it)")

    baseline = None if base is None else M.rounded(
        _summary(test["baseline"], base_info, scoring.is_variational(base)))
    decision = _gate(params, variational, M.rounded(result), baseline_model, baseline,
                     unusable, log)
    _write_blessing(blessing, decision, params)
    result["blessed"] = decision["blessed"]
    keras.utils.set_random_seed(seed)  # the plots as without a baseline

    anomaly = _detection(model, calibration, test["scores"], held, params, notes, log)
    result.update(anomaly)
    test_scores, val_scores = test["scores"], calibration["scores"]

    # Embedding quality: a linear probe on the code of clean images vs on raw pixels.
    if probes is not None:
        n_test = len(held)
        acc, acc_raw = test["probe_correct"] / n_test, test["probe_raw_correct"] / n_test
        log.info("evaluate: linear probe on %d train codes: %.4f test accuracy (raw pixels "
                 "%.4f) in %.1fs", probes["examples"], acc, acc_raw,
                 probes["seconds"] + test["probe_seconds"])
        result.update({"probe_accuracy": acc, "probe_accuracy_raw_pixels": acc_raw,
                       "probe_train_examples": probes["examples"]})

    if params.finetune_epochs > 0:  # opt-in; holds the splits in memory (README)
        train = examples_io.load_split(examples, "train", noisy=False)
        full_test = examples_io.load_split(examples, "test", noisy=False)
        result.update(_finetune(model_artifact, train, examples, full_test, params, seed, log))

    # Plots.
    pngs = []
    rows = ([("noisy", test["grid_input"]), ("reconstruction", test["grid_recon"]),
             ("clean", test["grid_clean"])] if denoising
            else [("original", test["grid_clean"]), ("reconstruction", test["grid_recon"])])
    plots.reconstruction_grid(rows, posixpath.join(out_uri, "reconstructions.png"))
    pngs.append("reconstructions.png")

    history = read_history(model_run)
    if history.get("loss"):
        plots.loss_curves(history, posixpath.join(out_uri, "loss_curves.png"),
                          title=info["variant"])
        pngs.append("loss_curves.png")
    else:
        log.warning("evaluate: no history in %s, skipping loss curves", model_run.uri)

    pngs.append(_latent_scatter(test["tsne"], params, seed, out_uri, log))
    pngs.append(_score_histogram(result, test_scores, val_scores, held, params, out_uri))
    if variational:
        pngs += _vae_plots(model, info, grid_k, seed, out_uri)

    result["eval_seconds"] = round(time.perf_counter() - t_start, 2)
    result = M.rounded(result)
    with gfile.GFile(posixpath.join(out_uri, METRICS_JSON), "w") as f:
        json.dump({"metrics": result, "notes": notes, "plots": pngs, "model": info},
                  f, indent=2, sort_keys=True)
    evaluation.properties.update(
        {"plots": pngs, "holdout_labels": list(holdout),
         **{k: result[k] for k in ("bce", "bce_excess", "psnr", "anomaly_threshold",
                                   "anomaly_auroc") if result.get(k) is not None}})
    log.info("evaluate: bce %.4f (floor %.4f, excess %.4f), mse %.5f, psnr %.2f dB%s%s%s",
             result["bce"], result["bce_floor"], result["bce_excess"], result["mse"],
             result["psnr"],
             f", neg_elbo {result['neg_elbo']:.1f} nats (kl {result['kl']:.2f})"
             if variational else "",
             f", probe {result['probe_accuracy']:.3f} vs raw pixels "
             f"{result['probe_accuracy_raw_pixels']:.3f}" if "probe_accuracy" in result else "",
             f", anomaly auroc {result['anomaly_auroc']:.3f} (held-out classes "
             f"{list(holdout)} vs the rest of test)" if result.get("anomaly_auroc") is not None
             else "")
    return result


def _calibrate(forward, examples, params) -> dict:
    """The anomaly threshold on validation without the held-out classes, as export
    calibrates it (components/scoring.py); the split streamed in batches."""
    holdout = params.holdout_labels
    return scoring.calibrate(
        forward, examples_io.iter_split(examples, "validation"), params.threshold_quantile,
        holdout, f"split 'validation' of {examples.uri}",
        lambda kept, total: examples_io.require_examples_left(kept, total, examples,
                                                              "validation", holdout))


def _detection(model, calibration, test_scores, held, params, notes, log) -> dict:
    """The anomaly score on test, its threshold calibrated on validation without the
    held-out classes (as export does), and with held-out classes how well it finds them."""
    holdout = params.holdout_labels
    threshold, val_scores = calibration["threshold"], calibration["scores"]
    name = scoring.score_name(model)
    out = {"anomaly_score": name, "anomaly_threshold": threshold,
           "anomaly_threshold_quantile": params.threshold_quantile,
           "anomaly_validation_examples": int(len(val_scores)),
           **detection.flagged(test_scores, threshold)}
    notes["anomaly_score"] = (
        "per test example, of its clean image (components/scoring.py): "
        + ("the deterministic negative ELBO in nats (decoding of the posterior mean + "
           "analytic KL) minus 784 x the image's mean pixel entropy" if scoring.is_variational(model)
           else "its mean per-pixel BCE minus its mean pixel entropy (its bce_excess)"))
    notes["anomaly_threshold"] = (
        f"the {params.threshold_quantile:g} quantile of the scores of the "
        f"{len(val_scores)} validation examples" + (f" not of classes {list(holdout)}"
                                                    if holdout else "")
        + "; flagged: score > threshold")
    if holdout:
        out.update(detection.held_out_detection(test_scores, held, threshold))
        notes["anomaly_auroc"] = (f"AUROC of the score for test examples of classes "
                                  f"{list(holdout)} (held out of training; positive) vs the "
                                  "other test examples; precision / recall: of the flag")
        if out["anomaly_auroc"] is None:
            log.warning("evaluate: no AUROC: the test split has %d examples of the held-out "
                        "classes %s and %d of the others; both are needed",
                        out["anomaly_held_out_examples"], list(holdout),
                        out["anomaly_seen_examples"])
    log.info("evaluate: anomaly score %s, threshold %.4g (validation quantile %g) flags "
             "%.1f%% of test%s", name, threshold, params.threshold_quantile,
             100 * (out["anomaly_flagged_fraction"] or 0.0),
             f"; held-out classes: precision {_opt(out['anomaly_precision'])}, recall "
             f"{_opt(out['anomaly_recall'])}" if holdout else "")
    return out


def _score_histogram(result, test_scores, val_scores, held, params, out_uri) -> str:
    """Held-out vs seen test classes (without held-out classes: test vs the validation
    scores the threshold was calibrated on), and the threshold."""
    if params.holdout_labels:
        names = F.CLASS_NAMES[params.dataset]
        held_names = ", ".join(f"{c} {names[c]}" for c in sorted(params.holdout_labels))
        groups = [("test, seen classes", test_scores[~held]),
                  (f"test, held-out classes ({held_names})", test_scores[held])]
    else:
        groups = [("validation", val_scores), ("test", test_scores)]
    plots.score_histogram(
        groups, result["anomaly_threshold"], posixpath.join(out_uri, SCORE_HISTOGRAM),
        result["anomaly_score"],
        threshold_label=f"threshold (validation quantile {params.threshold_quantile:g})")
    return SCORE_HISTOGRAM


def _opt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


class _Chunks:
    """Rows pushed in batches of any size, handed to `fn` in chunks of exactly `size` (the
    last one shorter): the slices a loop over the whole arrays would take, so a sampling
    estimate (the VAE's one posterior draw per chunk) is the same as on whole arrays."""

    def __init__(self, size: int, fn):
        self.size, self.fn, self.pending = size, fn, []

    def push(self, *arrays) -> None:
        self.pending.append(arrays)
        held = sum(len(p[0]) for p in self.pending)
        if held < self.size:
            return
        joined = [np.concatenate(cols) for cols in zip(*self.pending)]
        cut = held - held % self.size
        for i in range(0, cut, self.size):
            self.fn(*(a[i:i + self.size] for a in joined))
        self.pending = [tuple(a[cut:] for a in joined)] if cut < held else []

    def close(self) -> None:
        if self.pending:
            self.fn(*(np.concatenate(cols) for cols in zip(*self.pending)))
            self.pending = []


class _Measured:
    """One model's per-image reconstruction numbers on the seen test examples (and for
    VAEs the ELBO terms, one posterior sample per image in BATCH-row chunks)."""

    def __init__(self, model):
        self.model, self.per = model, []
        self.variational = scoring.is_variational(model)
        self.recon_nats, self.kl = [], []
        self.elbo = _Chunks(BATCH, self._elbo)

    def add(self, x_in, target, recon) -> None:
        self.per.append(M.per_image(target, recon))
        if self.variational:
            self.elbo.push(x_in, target)

    def _elbo(self, x_in, target) -> None:
        r, k = self.model.elbo_terms(tf.constant(x_in), tf.constant(target))
        self.recon_nats.append(np.asarray(r, np.float64))
        self.kl.append(np.asarray(k, np.float64))

    def result(self) -> dict:
        self.elbo.close()
        out = {"per_image": _concat(self.per)}
        if self.variational:
            out["recon_nats"], out["kl"] = np.concatenate(self.recon_nats), np.concatenate(self.kl)
        return out


def _concat(per: list[dict]) -> dict[str, np.ndarray]:
    keys = ("bce", "bce_floor", "mse", "psnr")
    return {k: np.concatenate([p[k] for p in per]) if per else np.zeros([0]) for k in keys}


def _summary(measured: dict, info: dict, variational: bool) -> dict:
    """The test-split numbers the gate compares, the same way for candidate and baseline."""
    result = M.summarize(measured["per_image"])
    if not variational:
        return result
    recon_nats, kl = measured["recon_nats"], measured["kl"]
    return {**result,
            "neg_elbo": float((recon_nats + kl).mean()),
            "neg_elbo_reconstruction": float(recon_nats.mean()),
            "kl": float(kl.mean()),
            "beta": float(info["beta"]),
            "beta_weighted_loss": float((recon_nats + float(info["beta"]) * kl).mean())}


def _test_pass(model, forward, base, examples, params, denoising, variational, probes,
               seed) -> dict:
    """Everything evaluate needs from the test split, in one streamed pass: per-image
    reconstruction numbers of the candidate (and the baseline) on the seen classes and of
    the held-out ones, anomaly scores, probe hits, the reconstruction grid's first images
    and the t-SNE sample. Memory: one batch plus a few numbers per example."""
    holdout = params.holdout_labels
    n_test = examples_io.split_count(examples, "test")
    tsne_idx = probe.subsample(n_test, params.tsne_points, seed)
    k = params.grid_images
    keras.utils.set_random_seed(seed)  # one posterior sample per image: the same draws
    candidate = _Measured(model)
    baseline = None if base is None else _Measured(base)
    base_forward = None if base is None else (lambda x: predict(base.reconstruct, x))
    held_out, noisy_input = [], []
    scores, held_flags, grid, tsne = [], [], [], []
    hits = {"probe_correct": 0, "probe_raw_correct": 0, "probe_seconds": 0.0}
    start = 0
    for batch in examples_io.iter_split(examples, "test", noisy=denoising):
        clean, labels = batch[F.IMAGE], batch[F.LABEL]
        x_in = batch[F.NOISY_IMAGE] if denoising else clean
        out = forward(clean)  # code and score of the clean image
        recon = forward(x_in)["reconstruction"] if denoising else out["reconstruction"]
        held = ~examples_io.kept_mask(labels, holdout)
        seen = ~held
        candidate.add(x_in[seen], clean[seen], recon[seen])
        if baseline is not None:
            baseline.add(x_in[seen], clean[seen], base_forward(x_in[seen]))
        if held.any():
            held_out.append(M.per_image(clean[held], recon[held]))
        if denoising:
            noisy_input.append(M.per_image(clean[seen], x_in[seen]))
        scores.append(out["score"])
        held_flags.append(held)
        if probes is not None:
            t0 = time.perf_counter()
            hits["probe_correct"] += probe.correct(probes["code"], out["code"], labels)
            hits["probe_raw_correct"] += probe.correct(probes["raw"], clean, labels)
            hits["probe_seconds"] += time.perf_counter() - t0
        end = start + len(labels)
        if start < k:
            grid.append((x_in[:k - start], recon[:k - start], clean[:k - start]))
        pick = tsne_idx[(tsne_idx >= start) & (tsne_idx < end)] - start
        if len(pick):
            tsne.append((clean[pick], out["code"][pick], labels[pick]))
        start = end
    return {
        "candidate": candidate.result(),
        "baseline": None if baseline is None else baseline.result(),
        "held_out": _concat(held_out), "noisy_input": _concat(noisy_input),
        "scores": np.concatenate(scores), "held": np.concatenate(held_flags),
        "grid_input": np.concatenate([g[0] for g in grid]),
        "grid_recon": np.concatenate([g[1] for g in grid]),
        "grid_clean": np.concatenate([g[2] for g in grid]),
        "tsne": tuple(np.concatenate([t[i] for t in tsne]) for i in range(3)),
        **hits,
    }


def _load_baseline(baseline_model, log):
    """(model, model.json, None) of the blessed baseline, or (None, None, why it does not
    load), or (None, None, None) without one."""
    if baseline_model is None:
        return None, None, None
    try:
        return (model_io.load_model(baseline_model), model_io.read_model_json(baseline_model),
                None)
    except Exception as e:  # noqa: BLE001 - e.g. models/ changed since it was trained
        log.debug("baseline model %s does not load", baseline_model.uri, exc_info=True)
        return None, None, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def _gate(params, variational, candidate, baseline_model, baseline, unusable, log) -> dict:
    """Decide against the blessed baseline's numbers on this same test split (if any)."""
    metric = gate.main_metric(variational)
    decision = gate.decide(metric, candidate, baseline, params.thresholds)
    if unusable:  # fail closed: never bless what could not be compared
        decision.update(blessed=False, reason=(
            f"the blessed baseline (run {baseline_model.properties.get('run_id')}) could not be "
            f"loaded ({unusable}); not blessed. After a deliberate model change, start the "
            "lineage afresh with --set gate.baseline=none"))
    decision["lineage"] = params.lineage()
    decision["baseline_model"] = None if baseline_model is None else {
        "run_id": baseline_model.properties.get("run_id"), "artifact_id": baseline_model.id,
        "metrics": baseline}
    log.info("evaluate: %s: %s", "BLESSED" if decision["blessed"] else "not blessed",
             decision["reason"])
    return decision


def _write_blessing(blessing: Artifact, decision: dict, params) -> None:
    """TFX's layout (an empty BLESSED or NOT_BLESSED file) plus blessing.json with the
    decision; the decision is also the artifact's properties, so ML Metadata holds it."""
    marker = "BLESSED" if decision["blessed"] else "NOT_BLESSED"
    with gfile.GFile(posixpath.join(blessing.uri, marker), "w") as f:
        f.write("")
    with gfile.GFile(posixpath.join(blessing.uri, BLESSING_JSON), "w") as f:
        json.dump(decision, f, indent=2, sort_keys=True)
    blessing.properties.update({
        "blessed": decision["blessed"], "reason": decision["reason"],
        "lineage": decision["lineage"], "metric": decision["metric"],
        "candidate_value": decision["candidate"], "baseline_value": decision["baseline"],
        "baseline_run_id": (decision["baseline_model"] or {}).get("run_id"),
        "baseline_artifact_id": (decision["baseline_model"] or {}).get("artifact_id"),
        "thresholds": decision["thresholds"]})


def _fit_probes(encode, examples, params, seed, log) -> dict | None:
    """The linear probes' classifiers (code of the clean image; raw pixels), fitted on
    evaluate.probe_max_train train examples picked while the split streams by; None when
    the sample has a single class."""
    t0 = time.perf_counter()
    n_train = examples_io.split_count(examples, "train")
    idx = probe.subsample(n_train, params.probe_max_train, seed)
    images, labels, start = [], [], 0
    for batch in examples_io.iter_split(examples, "train"):
        end = start + len(batch[F.LABEL])
        pick = idx[(idx >= start) & (idx < end)] - start
        images.append(batch[F.IMAGE][pick])
        labels.append(batch[F.LABEL][pick])
        start = end
    train_x, train_y = np.concatenate(images), np.concatenate(labels)
    if len(np.unique(train_y)) < 2:
        log.warning("evaluate: train split has a single class, skipping the linear probe")
        return None
    train_z = np.concatenate([encode(train_x[i:i + BATCH]) for i in range(0, len(train_x), BATCH)])
    code, raw = probe.side_by_side(lambda: probe.fit(train_z, train_y, seed),
                                   lambda: probe.fit(train_x, train_y, seed))
    return {"code": code, "raw": raw, "examples": int(len(idx)),
            "seconds": time.perf_counter() - t0}


def _finetune(model_artifact, train, examples, test, params, seed, log) -> dict:
    from components.evaluate import classifier

    t0 = time.perf_counter()
    fresh = model_io.load_model(model_artifact)  # fine-tuning must not touch the evaluated model
    val = examples_io.load_split(examples, "validation", noisy=False)
    out = classifier.finetune_accuracy(
        fresh.encoder, train[F.IMAGE], train[F.LABEL], val[F.IMAGE], val[F.LABEL],
        test[F.IMAGE], test[F.LABEL], params.finetune_epochs, seed=seed)
    log.info("evaluate: encoder + softmax head fine-tuned for up to %d epochs: %.4f test "
             "accuracy in %.1fs", out["finetune_epochs"], out["finetune_accuracy"],
             time.perf_counter() - t0)
    return out


def _latent_scatter(sample, params, seed, out_uri, log) -> str:
    """sample: (images, codes, labels) of evaluate.tsne_points test examples."""
    images, z, labels = sample
    if z.shape[1] == 2:
        panels = [("code (2-D), test split", z)]
    else:
        t0 = time.perf_counter()
        of_code, of_pixels = probe.side_by_side(lambda: probe.tsne_2d(z, seed),
                                                lambda: probe.tsne_2d(images, seed))
        panels = [(f"t-SNE of the {z.shape[1]}-D code", of_code),
                  ("t-SNE of raw pixels", of_pixels)]
        log.info("evaluate: t-SNE of %d test points in %.1fs", len(labels),
                 time.perf_counter() - t0)
    plots.scatter_panels(panels, labels, posixpath.join(out_uri, "latent_scatter.png"),
                         F.CLASS_NAMES[params.dataset])
    return "latent_scatter.png"


def _vae_plots(model, info, grid_k, seed, out_uri) -> list[str]:
    pngs = []
    n = grid_k * grid_k
    samples = np.asarray(model.sample(n, seed=seed), np.float32)
    plots.image_tiles(samples, grid_k, grid_k, posixpath.join(out_uri, "prior_samples.png"),
                      title=f"{n} decodings of z ~ N(0, I)")
    pngs.append("prior_samples.png")
    latent = int(model.latent_dim)
    if latent == 2:
        # Gaussian quantiles, so the grid covers the prior's mass evenly; top row = high z1.
        q = [statistics.NormalDist().inv_cdf(p) for p in np.linspace(0.005, 0.995, 15)]
        grid = np.array([[x, y] for y in reversed(q) for x in q], np.float32)
        decoded = predict(model.decode, grid)
        plots.image_tiles(decoded, 15, 15, posixpath.join(out_uri, "latent_manifold.png"),
                          title="decoded 2-D latent manifold (Gaussian quantiles 0.005..0.995)",
                          xlabel="z[0]", ylabel="z[1]",
                          extent=(q[0], q[-1], q[0], q[-1]))
        pngs.append("latent_manifold.png")
    if info["variant"] == "vae_tril" and latent >= 2:
        steps = np.linspace(-2.5, 2.5, 25)
        grid = np.zeros((25 * 25, latent), np.float32)
        grid[:, :2] = [[x, y] for y in reversed(steps) for x in steps]
        decoded = predict(model.decode, grid)
        plots.image_tiles(decoded, 25, 25, posixpath.join(out_uri, "code_sweep.png"),
                          title="sweep of code dims 0 and 1 over [-2.5, 2.5] (others 0)",
                          xlabel="z[0]", ylabel="z[1]", extent=(-2.5, 2.5, -2.5, 2.5))
        pngs.append("code_sweep.png")
    return pngs
