"""evaluate: test-split metrics, embedding probe and plots for a trained model.

Output `evaluation`: metrics.json (every number, plus notes on how each was computed) and
the PNGs: reconstructions.png, loss_curves.png, latent_scatter.png, score_histogram.png,
and for VAEs prior_samples.png, latent_manifold.png (2-D codes), code_sweep.png (vae_tril).
Output `blessing`: the gate's decision against the blessed baseline (gate.py): an empty
BLESSED or NOT_BLESSED file, as TFX writes them, and blessing.json.

Metric definitions: components/evaluate/metrics.py (docs/stages.md, "Metrics").

Novelty detection: every test example is scored with every novelty score
(components/novelty/scores.py, on the clean image) with the novelty stage's constants
(the `scorer` input, fitted on train and validation); the served score (export.score) is
flagged against its threshold from the scorer. With held-out classes
(data.holdout_labels): each score's AUROC, AUPRC and TPR at 5% FPR for held-out vs seen
test classes, and the served score's precision / recall at the threshold
(components/evaluate/detection.py). The
reconstruction metrics and the gate are then measured on the test examples of the seen
classes only: the held-out ones are meant to reconstruct badly, so counting them would
blur the gate's question (how well does the model reconstruct what it was trained to) and
penalize a better detector; their own reconstruction error is reported as held_out_*.
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import keras
import numpy as np
import tensorflow as tf
from tensorflow.io import gfile

from components import examples_io, scoring
from components import features as F
from components.evaluate import classifier, detection, gate, plots, probe
from components.evaluate import metrics as M
from components.novelty.component import SCORES
from components.novelty.scores import Fitted, compiled
from components.train import model_io
from pipeline.errors import StageError

if TYPE_CHECKING:
    from components.evaluate.component import EvaluateParams
    from pipeline.artifacts import Artifact
    from pipeline.component import ExecutionContext

BATCH = 512
METRICS_JSON = "metrics.json"
BLESSING_JSON = "blessing.json"
RECONSTRUCTIONS = "reconstructions.png"
LOSS_CURVES = "loss_curves.png"
LATENT_SCATTER = "latent_scatter.png"
SCORE_HISTOGRAM = "score_histogram.png"
NOVELTY_ROC = "novelty_roc.png"
PRIOR_SAMPLES = "prior_samples.png"
LATENT_MANIFOLD = "latent_manifold.png"
CODE_SWEEP = "code_sweep.png"
# The metrics the evaluation artifact's properties repeat (those measured), so ML Metadata
# holds them.
PROPERTY_METRICS = ("bce", "bce_excess", "psnr", "anomaly_threshold", "anomaly_auroc")
NOTES = {
    "bce": "mean per-pixel binary cross-entropy vs the clean target, predictions clipped "
    f"to [{M.EPS}, 1-{M.EPS}]",
    "bce_floor": "mean per-pixel entropy of the targets (the BCE of a perfect model)",
    "psnr": f"per image with MAX=1, averaged; capped at {M.PSNR_CAP_DB:g} dB",
}
VAE_NOTES = {
    "reconstruction": "VAE: reconstruct() decodes the posterior mean",
    "neg_elbo": (
        "nats/image = 784-pixel BCE sum of the clean target under the decoding of ONE "
        "posterior sample z ~ q(z|x) (the training estimator) + ANALYTIC "
        "KL(q(z|x) || N(0, I)); beta not applied (beta_weighted_loss applies it)"
    ),
}


def predict(fn, x: np.ndarray, batch: int = BATCH) -> np.ndarray:
    """fn over x in batches, as one float32 numpy array (eager: a few dozen batches at most,
    not worth tracing a graph for)."""
    out = [
        np.asarray(fn(tf.constant(x[i : i + batch])), np.float32) for i in range(0, len(x), batch)
    ]
    return np.concatenate(out)


def read_history(model_run: Artifact) -> dict[str, list]:
    """The training history train wrote to the ModelRun (model_io's layout); {} without one."""
    json_path = posixpath.join(model_run.uri, model_io.HISTORY_JSON)
    if gfile.exists(json_path):
        with gfile.GFile(json_path) as f:
            return json.load(f)
    csv_path = posixpath.join(model_run.uri, model_io.HISTORY_CSV)
    if not gfile.exists(csv_path):
        return {}
    with gfile.GFile(csv_path) as f:
        rows = list(csv.DictReader(io.StringIO(f.read())))
    return {k: [float(r[k]) for r in rows] for k in (rows[0] if rows else {})}


def run(
    params: EvaluateParams,
    ctx: ExecutionContext,
    *,
    model: Artifact,
    model_run: Artifact,
    examples: Artifact,
    scorer: Artifact,
    baseline_model: Artifact | None,
    evaluation: Artifact,
    blessing: Artifact,
) -> dict:
    t_start, log, out_uri = time.perf_counter(), ctx.log, evaluation.uri
    candidate = _load_candidate(model, scorer, params, log)
    baseline = _load_baseline(baseline_model, log)
    # Bounded memory: the probes are fitted on a train subsample (evaluate.probe_max_train)
    # read in batches, and the test split passes once, a batch at a time; only per-example
    # numbers are kept.
    probes = _fit_probes(candidate, examples, params, log)
    test = _test_pass(candidate, baseline, probes, examples, params)

    report = _reconstruction_report(candidate, test, params)
    decision = _gate(params, report.metrics, candidate.variational, baseline, test.baseline, log)
    _write_blessing(blessing, decision)
    report.add({"blessed": decision["blessed"]})
    keras.utils.set_random_seed(params.seed)  # the plots as without a baseline
    report.add(*_detection(candidate, test, params, log))
    if test.probe is not None:  # None: no probes (a train sample of one class)
        report.add(_probe_accuracy(test.probe, log))
    if params.finetune_epochs > 0:  # opt-in; holds the splits in memory (docs/scale-out.md)
        report.add(_finetune(model, examples, params, log))

    report.plots.append(_reconstruction_grid(test, out_uri))
    report.plots += _loss_curves(model_run, candidate, out_uri, log)
    report.plots.append(_latent_scatter(test.sample, params, out_uri, log))
    report.plots += _novelty_plots(candidate, test, params, out_uri)
    if candidate.variational:
        report.plots += _vae_plots(candidate, params, out_uri)
    report.add({"eval_seconds": round(time.perf_counter() - t_start, 2)})
    return _write_evaluation(evaluation, report, candidate, params, log)


# --- The models ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Candidate:
    """The model under evaluation: its model.json, the rebuilt network, the novelty stage's
    scorer and the compiled forward pass (novelty.scores.compiled: code, reconstruction
    and every novelty score of a batch)."""

    info: dict
    net: keras.Model
    scorer: Artifact
    fitted: Fitted
    forward: Callable[[np.ndarray], dict[str, Any]]

    @property
    def denoising(self) -> bool:  # trained to reconstruct the clean image from a noisy one
        return self.info["input_feature"] == F.NOISY_IMAGE

    @property
    def variational(self) -> bool:
        return scoring.is_variational(self.net)

    @property
    def reconstruction_score(self) -> str:  # what the reconstruction score measures
        return scoring.score_name(self.net)


@dataclass(frozen=True)
class _Baseline:
    """The lineage's blessed model the gate compares with, as loaded (net and info), or why
    it does not load (unusable)."""

    artifact: Artifact
    net: keras.Model | None = None
    info: dict = field(default_factory=dict)
    unusable: str | None = None

    @property
    def run_id(self) -> str | None:
        return self.artifact.properties.get("run_id")


def _load_candidate(model: Artifact, scorer: Artifact, params: EvaluateParams, log) -> _Candidate:
    """The model, refused when it was trained without other classes than those
    data.holdout_labels holds out now."""
    info = model_io.read_model_json(model)
    net = model_io.load_model(model)
    trained_without, holdout = sorted(model_io.holdout_labels(info)), params.holdout_labels
    if trained_without != sorted(holdout):
        raise StageError(
            f"the model at {model.uri} was trained without classes {trained_without} (its "
            f"model.json), but data.holdout_labels is {sorted(holdout)}; expected the same "
            "classes"
        )
    fitted = Fitted.load(scorer.uri)
    candidate = _Candidate(info, net, scorer, fitted, compiled(net, fitted))
    log.info(
        "evaluate: %s (latent_dim %d%s) on the test split%s",
        info["variant"],
        net.latent_dim,
        ", denoising" if candidate.denoising else "",
        f", classes {list(holdout)} held out of training" if holdout else "",
    )
    return candidate


def _load_baseline(baseline_model: Artifact | None, log) -> _Baseline | None:
    """None without a baseline."""
    if baseline_model is None:
        return None
    try:
        return _Baseline(
            baseline_model,
            model_io.load_model(baseline_model),
            model_io.read_model_json(baseline_model),
        )
    except Exception as e:  # noqa: BLE001 - e.g. models/ changed since it was trained
        log.debug("baseline model %s does not load", baseline_model.uri, exc_info=True)
        return _Baseline(
            baseline_model,
            unusable=(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"),
        )


# --- The linear probes, fitted on train --------------------------------------------------


@dataclass(frozen=True)
class _Probes:
    """The linear probes' classifiers: on the code of the clean image, on raw pixels."""

    code: object
    raw: object
    examples: int  # train examples they were fitted on
    seconds: float


def _fit_probes(
    candidate: _Candidate, examples: Artifact, params: EvaluateParams, log
) -> _Probes | None:
    """Fitted on evaluate.probe_max_train train examples picked while the split streams
    by; None when the sample has a single class."""
    t0 = time.perf_counter()
    train_x, train_y = examples_io.sample_split(
        examples, "train", params.probe_max_train, params.seed
    )
    if len(np.unique(train_y)) < 2:
        log.warning("evaluate: train split has a single class, skipping the linear probe")
        return None
    encode = scoring.encoder(candidate.net)
    train_z = np.concatenate(
        [encode(train_x[i : i + BATCH]) for i in range(0, len(train_x), BATCH)]
    )
    code, raw = probe.side_by_side(
        lambda: probe.fit(train_z, train_y, params.seed),
        lambda: probe.fit(train_x, train_y, params.seed),
    )
    return _Probes(code, raw, int(len(train_y)), time.perf_counter() - t0)


# --- The test pass: one stream of batches, a set of accumulators -------------------------


@dataclass(frozen=True)
class _TestBatch:
    """One batch of the test split as every accumulator sees it."""

    start: int  # the index of its first example in the split
    clean: np.ndarray  # the clean images: the target, and what is scored and encoded
    x_in: np.ndarray  # the model's input: the noisy images for denoising models, else clean
    labels: np.ndarray
    code: np.ndarray  # of the clean images
    scores: dict[str, np.ndarray]  # every novelty score of the clean images
    recon: np.ndarray  # the candidate's reconstruction of x_in
    held: np.ndarray  # bool: of a class held out of training

    @property
    def seen(self) -> np.ndarray:
        return ~self.held

    @property
    def end(self) -> int:
        return self.start + len(self.labels)


@dataclass(frozen=True)
class _TestResults:
    """What the test pass measured, every accumulator's result."""

    candidate: dict  # the gate's numbers (_Measured.result) on the seen classes
    baseline: dict | None  # the same for the baseline; None without a usable one
    held_out: dict | None  # held_out_* reconstruction metrics; None without such examples
    noisy_input: dict | None  # noisy_input_* metrics of denoising models; else None
    scores: dict[str, np.ndarray]  # every novelty score of every test example
    held: np.ndarray  # bool: the example is of a held-out class
    probe: _ProbeAccuracy | None  # None without probes
    grid: list[tuple[str, np.ndarray]]  # the reconstruction grid's rows
    sample: tuple[np.ndarray, np.ndarray, np.ndarray]  # (images, codes, labels), for t-SNE


def _test_pass(
    candidate: _Candidate,
    baseline: _Baseline | None,
    probes: _Probes | None,
    examples: Artifact,
    params: EvaluateParams,
) -> _TestResults:
    """Everything evaluate needs from the test split, in one streamed pass: each batch is
    handed to every accumulator, each accumulator gives its result at the end. Memory: one
    batch plus a few numbers per example."""
    n_test = examples_io.split_count(examples, "test")
    measured = _Measured(candidate.net, candidate.info)
    against = (
        None
        if baseline is None or baseline.net is None
        else _Measured(baseline.net, baseline.info, reconstructs=True)
    )
    held_out = _PerImage(lambda b: (b.clean[b.held], b.recon[b.held]) if b.held.any() else None)
    noisy = _PerImage(lambda b: (b.clean[b.seen], b.x_in[b.seen])) if candidate.denoising else None
    scores, held = _Scores(), _Column("held")
    hits = None if probes is None else _ProbeHits(probes)
    grid = _Grid(params.grid_images, candidate.denoising)
    sample = _Sample(examples_io.subsample(n_test, params.tsne_points, params.seed))
    accumulators: list[_Accumulator] = [
        a
        for a in (measured, against, held_out, noisy, scores, held, hits, grid, sample)
        if a is not None
    ]
    keras.utils.set_random_seed(params.seed)  # one posterior sample per image: the same draws
    for batch in _test_batches(candidate, examples, params.holdout_labels):
        for accumulator in accumulators:
            accumulator.add(batch)
    return _TestResults(
        candidate=measured.result(),
        baseline=None if against is None else against.result(),
        held_out=held_out.result("held_out_"),
        noisy_input=None if noisy is None else noisy.result("noisy_input_"),
        scores=scores.result(),
        held=held.result(),
        probe=None if hits is None else hits.result(),
        grid=grid.result(),
        sample=sample.result(),
    )


class _Accumulator(Protocol):
    """What the test pass hands every batch to; each kind has its own `result()`."""

    def add(self, batch: _TestBatch) -> None: ...


def _test_batches(candidate: _Candidate, examples: Artifact, holdout):
    """The test split streamed through the candidate's forward pass, as _TestBatch."""
    start = 0
    for batch in examples_io.iter_split(examples, "test", noisy=candidate.denoising):
        clean, labels = batch[F.IMAGE], batch[F.LABEL]
        x_in = batch[F.NOISY_IMAGE] if candidate.denoising else clean
        out = candidate.forward(clean)  # code and score of the clean image
        recon = (
            candidate.forward(x_in)["reconstruction"]
            if candidate.denoising
            else out["reconstruction"]
        )
        yield _TestBatch(
            start,
            clean,
            x_in,
            labels,
            out["code"],
            out["scores"],
            recon,
            ~examples_io.kept_mask(labels, holdout),
        )
        start += len(labels)


class _Chunks:
    """Rows pushed in batches of any size, handed to `fn` in chunks of exactly `size` (the
    last one shorter): the slices a loop over the whole arrays would take, so a sampling
    estimate (the VAE's one posterior draw per chunk) is the same as on whole arrays."""

    def __init__(self, size: int, fn):
        self.size, self.fn = size, fn
        self.pending: list[tuple[np.ndarray, ...]] = []

    def push(self, *arrays) -> None:
        self.pending.append(arrays)
        held = sum(len(p[0]) for p in self.pending)
        if held < self.size:
            return
        joined = [np.concatenate(cols) for cols in zip(*self.pending)]
        cut = held - held % self.size
        for i in range(0, cut, self.size):
            self.fn(*(a[i : i + self.size] for a in joined))
        self.pending = [tuple(a[cut:] for a in joined)] if cut < held else []

    def close(self) -> None:
        if self.pending:
            self.fn(*(np.concatenate(cols) for cols in zip(*self.pending)))
            self.pending = []


class _Measured:
    """One model's reconstruction numbers on the seen test examples, the same way for
    candidate and baseline (and for VAEs the ELBO terms, one posterior sample per image in
    BATCH-row chunks). `reconstructs`: the model reconstructs the inputs itself (the
    baseline); else the batch's reconstruction is its own (the candidate's)."""

    def __init__(self, net, info: dict, *, reconstructs: bool = False):
        self.net, self.info, self.reconstructs = net, info, reconstructs
        self.variational = scoring.is_variational(net)
        self.per: list[dict] = []
        self.recon_nats: list[np.ndarray] = []
        self.kl: list[np.ndarray] = []
        self.elbo = _Chunks(BATCH, self._elbo)

    def add(self, batch: _TestBatch) -> None:
        x_in, target = batch.x_in[batch.seen], batch.clean[batch.seen]
        if self.reconstructs:
            recon = predict(self.net.reconstruct, x_in)
        else:
            recon = batch.recon[batch.seen]
        self.per.append(M.per_image(target, recon))
        if self.variational:
            self.elbo.push(x_in, target)

    def _elbo(self, x_in, target) -> None:
        r, k = self.net.elbo_terms(tf.constant(x_in), tf.constant(target))
        self.recon_nats.append(np.asarray(r, np.float64))
        self.kl.append(np.asarray(k, np.float64))

    def result(self) -> dict:
        """The test-split numbers the gate compares."""
        self.elbo.close()
        result = M.summarize(_concat(self.per))
        if not self.variational:
            return result
        recon_nats, kl = np.concatenate(self.recon_nats), np.concatenate(self.kl)
        beta = float(self.info["beta"])
        return {
            **result,
            "neg_elbo": float((recon_nats + kl).mean()),
            "neg_elbo_reconstruction": float(recon_nats.mean()),
            "kl": float(kl.mean()),
            "beta": beta,
            "beta_weighted_loss": float((recon_nats + beta * kl).mean()),
        }


class _PerImage:
    """Per-image reconstruction numbers of some test examples: `pick(batch)` gives their
    (target, prediction), or None to skip the batch."""

    def __init__(self, pick: Callable[[_TestBatch], tuple | None]):
        self.pick = pick
        self.per: list[dict[str, np.ndarray]] = []

    def add(self, batch: _TestBatch) -> None:
        picked = self.pick(batch)
        if picked is not None:
            self.per.append(M.per_image(*picked))

    def result(self, prefix: str) -> dict | None:
        """Their metrics, keys prefixed; None when no batch had any."""
        return M.summarize(_concat(self.per), prefix=prefix) if self.per else None


def _concat(per: list[dict]) -> dict[str, np.ndarray]:
    keys = ("bce", "bce_floor", "mse", "psnr")
    return {k: np.concatenate([p[k] for p in per]) if per else np.zeros([0]) for k in keys}


class _Scores:
    """Every novelty score of every batch, concatenated per score."""

    def __init__(self):
        self.parts: dict[str, list[np.ndarray]] = {k: [] for k in SCORES}

    def add(self, batch: _TestBatch) -> None:
        for k in SCORES:
            self.parts[k].append(batch.scores[k])

    def result(self) -> dict[str, np.ndarray]:
        return {k: np.concatenate(v) for k, v in self.parts.items()}


class _Column:
    """One per-example field of every batch (a _TestBatch attribute), concatenated."""

    def __init__(self, name: str):
        self.name = name
        self.parts: list[np.ndarray] = []

    def add(self, batch: _TestBatch) -> None:
        self.parts.append(getattr(batch, self.name))

    def result(self) -> np.ndarray:
        return np.concatenate(self.parts)


@dataclass(frozen=True)
class _ProbeAccuracy:
    """The linear probes' test accuracy."""

    code: float  # of the probe on the code
    raw: float  # of the probe on raw pixels
    train_examples: int  # they were fitted on
    seconds: float  # fitting and classifying

    def metrics(self) -> dict:
        return {
            "probe_accuracy": self.code,
            "probe_accuracy_raw_pixels": self.raw,
            "probe_train_examples": self.train_examples,
        }


class _ProbeHits:
    """The linear probes' test accuracy, counted a batch at a time."""

    def __init__(self, probes: _Probes):
        self.probes, self.examples, self.correct, self.correct_raw = probes, 0, 0, 0
        self.seconds = probes.seconds

    def add(self, batch: _TestBatch) -> None:
        t0 = time.perf_counter()
        self.correct += probe.correct(self.probes.code, batch.code, batch.labels)
        self.correct_raw += probe.correct(self.probes.raw, batch.clean, batch.labels)
        self.seconds += time.perf_counter() - t0
        self.examples += len(batch.labels)

    def result(self) -> _ProbeAccuracy:
        return _ProbeAccuracy(
            self.correct / self.examples,
            self.correct_raw / self.examples,
            self.probes.examples,
            self.seconds,
        )


class _Grid:
    """The first `k` test examples' input, reconstruction and clean image: the rows of the
    reconstruction grid."""

    def __init__(self, k: int, denoising: bool):
        self.k, self.denoising = k, denoising
        self.parts: list[tuple[np.ndarray, ...]] = []

    def add(self, batch: _TestBatch) -> None:
        if batch.start < self.k:
            n = self.k - batch.start
            self.parts.append((batch.x_in[:n], batch.recon[:n], batch.clean[:n]))

    def result(self) -> list[tuple[str, np.ndarray]]:
        x_in, recon, clean = (np.concatenate([p[i] for p in self.parts]) for i in range(3))
        if self.denoising:
            return [("noisy", x_in), ("reconstruction", recon), ("clean", clean)]
        return [("original", clean), ("reconstruction", recon)]


class _Sample:
    """The test examples at the sorted indices `idx` (the latent scatter's points): their
    images, codes and labels."""

    def __init__(self, idx: np.ndarray):
        self.idx = idx
        self.parts: list[tuple[np.ndarray, ...]] = []

    def add(self, batch: _TestBatch) -> None:
        pick = self.idx[(self.idx >= batch.start) & (self.idx < batch.end)] - batch.start
        if len(pick):
            self.parts.append((batch.clean[pick], batch.code[pick], batch.labels[pick]))

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        images, codes, labels = (np.concatenate([p[i] for p in self.parts]) for i in range(3))
        return images, codes, labels


# --- The metrics, the gate and the blessing ------------------------------------------------


@dataclass
class _Report:
    """What metrics.json holds: the metrics, notes on how they were computed, the plots."""

    metrics: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)

    def add(self, metrics: dict, notes: dict | None = None) -> None:
        self.metrics.update(metrics)
        self.notes.update(notes or {})


def _reconstruction_report(
    candidate: _Candidate, test: _TestResults, params: EvaluateParams
) -> _Report:
    """The reconstruction metrics: on the seen classes, of the held-out ones, of the noisy
    input for denoising models."""
    holdout = params.holdout_labels
    report = _Report(
        {"test_examples": int(len(test.held)), "latent_dim": int(candidate.net.latent_dim)},
        dict(NOTES),
    )
    report.add(test.candidate)
    if holdout:
        report.add({"reconstruction_test_examples": int((~test.held).sum())})
        if test.held_out is not None:
            report.add({k: v for k, v in test.held_out.items() if k != "held_out_bce_floor"})
        report.notes["reconstruction_test_examples"] = (
            f"reconstruction metrics and the gate: the test examples of the classes seen in "
            f"training only (classes {list(holdout)} held out); held_out_*: the others"
        )
    if test.noisy_input is not None:  # denoising models
        report.add(
            M.denoising_summary(test.noisy_input, test.candidate),
            {"denoise_mse_reduction": "1 - mse(model) / mse(noisy input)"},
        )
    if candidate.variational:
        report.notes.update(VAE_NOTES)
    return report


def _gate(
    params: EvaluateParams,
    metrics: dict,
    variational: bool,
    baseline: _Baseline | None,
    measured: dict | None,
    log,
) -> dict:
    """Decide against the blessed baseline's numbers `measured` on this same test split
    (None: no usable baseline)."""
    metric = gate.main_metric(variational)
    numbers = None if measured is None else M.rounded(measured)
    decision = gate.decide(metric, M.rounded(metrics), numbers, params.thresholds)
    # Fail closed: never bless what could not be compared.
    if baseline is not None and baseline.unusable:
        decision.update(
            blessed=False,
            reason=(
                f"the blessed baseline (run {baseline.run_id}) could not be loaded "
                f"({baseline.unusable}); not blessed. After a deliberate model change, start the "
                "lineage afresh with --set gate.baseline=none"
            ),
        )
    decision["lineage"] = params.lineage()
    decision["baseline_model"] = (
        None
        if baseline is None
        else {"run_id": baseline.run_id, "artifact_id": baseline.artifact.id, "metrics": numbers}
    )
    log.info(
        "evaluate: %s: %s", "BLESSED" if decision["blessed"] else "not blessed", decision["reason"]
    )
    return decision


def _write_blessing(blessing: Artifact, decision: dict) -> None:
    """TFX's layout (an empty BLESSED or NOT_BLESSED file) plus blessing.json with the
    decision; the decision is also the artifact's properties, so ML Metadata holds it."""
    marker = "BLESSED" if decision["blessed"] else "NOT_BLESSED"
    with gfile.GFile(posixpath.join(blessing.uri, marker), "w") as f:
        f.write("")
    with gfile.GFile(posixpath.join(blessing.uri, BLESSING_JSON), "w") as f:
        json.dump(decision, f, indent=2, sort_keys=True)
    blessing.properties.update(
        {
            "blessed": decision["blessed"],
            "reason": decision["reason"],
            "lineage": decision["lineage"],
            "metric": decision["metric"],
            "candidate_value": decision["candidate"],
            "baseline_value": decision["baseline"],
            "baseline_run_id": (decision["baseline_model"] or {}).get("run_id"),
            "baseline_artifact_id": (decision["baseline_model"] or {}).get("artifact_id"),
            "thresholds": decision["thresholds"],
        }
    )


# --- Anomaly detection, probes, fine-tuning ----------------------------------------------


def _detection(
    candidate: _Candidate, test: _TestResults, params: EvaluateParams, log
) -> tuple[dict, dict]:
    """The served novelty score (export.score) on test against its threshold from the
    scorer, every score's ranking of the held-out classes when there are any (AUROC,
    AUPRC, TPR at 5% FPR). Returns (metrics, notes)."""
    holdout, served = params.holdout_labels, params.score
    threshold, scores = candidate.fitted.thresholds[served], test.scores[served]
    quantile = candidate.scorer.properties["threshold_quantile"]
    out = {
        "anomaly_score": served,
        "anomaly_threshold": threshold,
        "anomaly_threshold_quantile": quantile,
        "anomaly_validation_examples": candidate.scorer.properties["validation_examples"],
        **detection.flagged(scores, threshold),
        **{f"novelty_{k}_threshold": candidate.fitted.thresholds[k] for k in SCORES},
    }
    if holdout:
        out.update(detection.held_out_detection(scores, test.held, threshold))
        for k in SCORES:
            out.update(detection.ranking(test.scores[k], test.held, f"novelty_{k}_"))
        if out["anomaly_auroc"] is None:
            log.warning(
                "evaluate: no AUROC: the test split has %d examples of the held-out "
                "classes %s and %d of the others; both are needed",
                out["anomaly_held_out_examples"],
                list(holdout),
                out["anomaly_seen_examples"],
            )
    log.info(
        "evaluate: novelty score %s (served), threshold %.4g (validation quantile %g) flags "
        "%.1f%% of test%s",
        served,
        threshold,
        quantile,
        100 * (out["anomaly_flagged_fraction"] or 0.0),
        f"; held-out classes: precision {_opt(out['anomaly_precision'])}, recall "
        f"{_opt(out['anomaly_recall'])}; AUROC "
        + ", ".join(f"{k} {_opt(out[f'novelty_{k}_auroc'])}" for k in SCORES)
        if holdout
        else "",
    )
    return out, _detection_notes(candidate, params, quantile)


def _detection_notes(candidate: _Candidate, params: EvaluateParams, quantile: float) -> dict:
    holdout = params.holdout_labels
    notes = {
        "anomaly_score": f"the novelty score export serves (export.score = {params.score}), "
        "per test example, of its clean image (components/novelty/scores.py); its "
        "reconstruction score is "
        + (
            "the deterministic negative ELBO in nats (decoding of the posterior mean + "
            "analytic KL) minus 784 x the image's mean pixel entropy"
            if candidate.variational
            else "its mean per-pixel BCE minus its mean pixel entropy (its bce_excess)"
        ),
        "anomaly_threshold": (
            f"the {quantile:g} quantile of the served score on the "
            f"{candidate.scorer.properties['validation_examples']} validation examples"
            + (f" not of classes {list(holdout)}" if holdout else "")
            + " (the novelty stage's scorer); flagged: score > threshold"
        ),
    }
    if holdout:
        notes["anomaly_auroc"] = (
            f"AUROC of the served score for test examples of classes "
            f"{list(holdout)} (held out of training; positive) vs the "
            "other test examples; precision / recall: of the flag"
        )
        notes["novelty_"] = (
            "novelty_<score>_auroc, _auprc, _tpr_at_5fpr: each score's ranking of the "
            "held-out test examples (positive) above the others"
        )
    return notes


def _opt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _probe_accuracy(accuracy: _ProbeAccuracy, log) -> dict:
    """Embedding quality: a linear probe on the code of clean images vs on raw pixels."""
    log.info(
        "evaluate: linear probe on %d train codes: %.4f test accuracy (raw pixels %.4f) in %.1fs",
        accuracy.train_examples,
        accuracy.code,
        accuracy.raw,
        accuracy.seconds,
    )
    return accuracy.metrics()


def _finetune(model: Artifact, examples: Artifact, params: EvaluateParams, log) -> dict:
    """The encoder plus a softmax head fine-tuned end to end (classifier.py), on a fresh
    copy of the model."""
    train = examples_io.load_split(examples, "train", noisy=False)
    test = examples_io.load_split(examples, "test", noisy=False)
    t0 = time.perf_counter()
    fresh = model_io.load_model(model)  # fine-tuning must not touch the evaluated model
    val = examples_io.load_split(examples, "validation", noisy=False)
    out = classifier.finetune_accuracy(
        fresh.encoder,
        (train[F.IMAGE], train[F.LABEL]),
        (val[F.IMAGE], val[F.LABEL]),
        (test[F.IMAGE], test[F.LABEL]),
        params.finetune_epochs,
        seed=params.seed,
    )
    log.info(
        "evaluate: encoder + softmax head fine-tuned for up to %d epochs: %.4f test "
        "accuracy in %.1fs",
        out["finetune_epochs"],
        out["finetune_accuracy"],
        time.perf_counter() - t0,
    )
    return out


# --- Plots and metrics.json ----------------------------------------------------------------


def _reconstruction_grid(test: _TestResults, out_uri: str) -> str:
    plots.reconstruction_grid(test.grid, posixpath.join(out_uri, RECONSTRUCTIONS))
    return RECONSTRUCTIONS


def _loss_curves(model_run: Artifact, candidate: _Candidate, out_uri: str, log) -> list[str]:
    """The training history's curves; none (a warning) without a history."""
    history = read_history(model_run)
    if not history.get("loss"):
        log.warning("evaluate: no history in %s, skipping loss curves", model_run.uri)
        return []
    plots.loss_curves(
        history, posixpath.join(out_uri, LOSS_CURVES), title=candidate.info["variant"]
    )
    return [LOSS_CURVES]


def _latent_scatter(sample, params: EvaluateParams, out_uri: str, log) -> str:
    """sample: (images, codes, labels) of evaluate.tsne_points test examples."""
    images, z, labels = sample
    seed = params.seed
    if z.shape[1] == 2:
        panels = [("code (2-D), test split", z)]
    else:
        t0 = time.perf_counter()
        of_code, of_pixels = probe.side_by_side(
            lambda: probe.tsne_2d(z, seed), lambda: probe.tsne_2d(images, seed)
        )
        panels = [
            (f"t-SNE of the {z.shape[1]}-D code", of_code),
            ("t-SNE of raw pixels", of_pixels),
        ]
        log.info(
            "evaluate: t-SNE of %d test points in %.1fs", len(labels), time.perf_counter() - t0
        )
    plots.scatter_panels(
        panels, labels, posixpath.join(out_uri, LATENT_SCATTER), F.CLASS_NAMES[params.dataset]
    )
    return LATENT_SCATTER


def _novelty_plots(
    candidate: _Candidate, test: _TestResults, params: EvaluateParams, out_uri: str
) -> list[str]:
    """Every score's histogram on test (held-out classes apart) with its threshold, and with
    held-out classes every score's ROC curve."""
    names = F.CLASS_NAMES[params.dataset]
    held = ", ".join(f"{c} {names[c]}" for c in sorted(params.holdout_labels))
    panels = []
    for k in SCORES:
        values = test.scores[k]
        groups = (
            [("seen classes", values[~test.held]), (f"held out ({held})", values[test.held])]
            if params.holdout_labels
            else [("test", values)]
        )
        panels.append((k + (" (served)" if k == params.score else ""), groups))
    plots.score_histograms(
        panels,
        [candidate.fitted.thresholds[k] for k in SCORES],
        posixpath.join(out_uri, SCORE_HISTOGRAM),
    )
    if not params.holdout_labels or test.held.all() or not test.held.any():
        return [SCORE_HISTOGRAM]
    plots.roc_curves(
        {k: test.scores[k] for k in SCORES}, test.held, posixpath.join(out_uri, NOVELTY_ROC)
    )
    return [SCORE_HISTOGRAM, NOVELTY_ROC]


def _vae_plots(candidate: _Candidate, params: EvaluateParams, out_uri: str) -> list[str]:
    """Decodings of prior samples; of the 2-D latent plane (2-D codes); of a sweep of two
    code dimensions (vae_tril)."""
    net, k, latent = candidate.net, params.grid_images, int(candidate.net.latent_dim)
    samples = np.asarray(net.sample(k * k, seed=params.seed), np.float32)
    plots.image_tiles(
        samples,
        k,
        k,
        posixpath.join(out_uri, PRIOR_SAMPLES),
        title=f"{k * k} decodings of z ~ N(0, I)",
    )
    pngs = [PRIOR_SAMPLES]
    if latent == 2:
        # Gaussian quantiles, so the grid covers the prior's mass evenly; top row = high z1.
        q = [statistics.NormalDist().inv_cdf(p) for p in np.linspace(0.005, 0.995, 15)]
        grid = np.array([[x, y] for y in reversed(q) for x in q], np.float32)
        title = "decoded 2-D latent manifold (Gaussian quantiles 0.005..0.995)"
        _decoded_grid(net, grid, 15, posixpath.join(out_uri, LATENT_MANIFOLD), title, q)
        pngs.append(LATENT_MANIFOLD)
    if candidate.info["variant"] == "vae_tril" and latent >= 2:
        steps = np.linspace(-2.5, 2.5, 25)
        grid = np.zeros((25 * 25, latent), np.float32)
        grid[:, :2] = [[x, y] for y in reversed(steps) for x in steps]
        title = "sweep of code dims 0 and 1 over [-2.5, 2.5] (others 0)"
        _decoded_grid(net, grid, 25, posixpath.join(out_uri, CODE_SWEEP), title, steps)
        pngs.append(CODE_SWEEP)
    return pngs


def _decoded_grid(net, grid: np.ndarray, side: int, path: str, title: str, axis) -> None:
    """The decodings of a side x side grid of codes over code dims 0 and 1, as tiles whose
    axes span `axis` (its first and last values)."""
    plots.image_tiles(
        predict(net.decode, grid),
        side,
        side,
        path,
        title=title,
        xlabel="z[0]",
        ylabel="z[1]",
        extent=(axis[0], axis[-1], axis[0], axis[-1]),
    )


def _write_evaluation(
    evaluation: Artifact, report: _Report, candidate: _Candidate, params: EvaluateParams, log
) -> dict:
    """metrics.json and the artifact's properties; returns the metrics, rounded."""
    metrics = M.rounded(report.metrics)
    with gfile.GFile(posixpath.join(evaluation.uri, METRICS_JSON), "w") as f:
        json.dump(
            {
                "metrics": metrics,
                "notes": report.notes,
                "plots": report.plots,
                "model": candidate.info,
            },
            f,
            indent=2,
            sort_keys=True,
        )
    evaluation.properties.update(
        {
            "plots": report.plots,
            "holdout_labels": list(params.holdout_labels),
            **{k: metrics[k] for k in PROPERTY_METRICS if metrics.get(k) is not None},
        }
    )
    holdout = params.holdout_labels
    log.info(
        "evaluate: bce %.4f (floor %.4f, excess %.4f), mse %.5f, psnr %.2f dB%s%s%s",
        metrics["bce"],
        metrics["bce_floor"],
        metrics["bce_excess"],
        metrics["mse"],
        metrics["psnr"],
        f", neg_elbo {metrics['neg_elbo']:.1f} nats (kl {metrics['kl']:.2f})"
        if candidate.variational
        else "",
        f", probe {metrics['probe_accuracy']:.3f} vs raw pixels "
        f"{metrics['probe_accuracy_raw_pixels']:.3f}"
        if "probe_accuracy" in metrics
        else "",
        f", anomaly auroc {metrics['anomaly_auroc']:.3f} (held-out classes "
        f"{list(holdout)} vs the rest of test)"
        if metrics.get("anomaly_auroc") is not None
        else "",
    )
    return metrics
