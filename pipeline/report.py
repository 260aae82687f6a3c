"""HTML views of ML Metadata for people: one page per run and an index of the root.

    <root>/runs/<run_id>/report.html   status, timings, config changes, metrics, plots, data
                                       statistics and anomalies, lineage, blessing and push
    <root>/index.html                  every run, newest first, and the main metric across runs

Built from `summary.render` (the run view of ML Metadata), the store's lineage and files
inside committed artifact directories; summary.json is never read back. Every link and
image source is relative to the page and points inside the root, so a root copied
elsewhere or served from a bucket keeps working. Nothing is fetched from the network:
TFDV's statistics views (which load Facets from the web) are linked, not embedded.

Kept light on purpose: a fully cached rerun writes these pages, so nothing here imports
TensorFlow, Keras, Beam, TFDV or matplotlib. The index's chart is SVG written by hand; the
TFDV protos are parsed with tensorflow_metadata's generated modules (protobuf only).
"""

from __future__ import annotations

import html
import json
import math
import os
import tempfile
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Container, Iterable

from tensorflow_metadata.proto.v0 import anomalies_pb2, statistics_pb2

from pipeline import summary

if TYPE_CHECKING:
    from pipeline.metadata import MetadataStore

REPORT_FILE = "report.html"
INDEX_FILE = "index.html"
SPLIT_ORDER = ("train", "validation", "test")
# The evaluation's PNGs in reading order, with what each shows; any other PNG follows.
PLOT_CAPTIONS = {
    "reconstructions.png": "test images over their reconstructions",
    "loss_curves.png": "train and validation loss per epoch",
    "latent_scatter.png": "test codes in 2-D, coloured by class",
    "prior_samples.png": "decodings of z ~ N(0, I)",
    "latent_manifold.png": "the decoded 2-D latent manifold",
    "code_sweep.png": "a sweep of code dims 0 and 1",
    "score_histogram.png": "anomaly scores of test examples, held-out classes apart, and the threshold",
    "pixel_maps.png": "per-pixel mean and standard deviation of each split (validate)",
}
# Matplotlib's tab10, so series colours look like the PNGs'.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
STYLE = """
body{font:14px/1.45 system-ui,sans-serif;color:#222;max-width:1150px;margin:1.5em auto;
padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd}
h3{font-size:1em}table{border-collapse:collapse;margin:.4em 0 1em}
th,td{border:1px solid #ccc;padding:.2em .55em;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#17692c;font-weight:600}.bad{color:#b00020;font-weight:600}
.warn{color:#8a5a00;font-weight:600}
.error{border-left:4px solid #b00020;background:#fff3f3;padding:.5em .8em;white-space:pre-wrap}
.bar{display:inline-block;height:.7em;background:#4e79a7;vertical-align:middle}
pre,code{background:#f6f6f6}pre{padding:.5em;white-space:pre-wrap}
figure{margin:1em 0}img{max-width:100%;border:1px solid #ddd}figcaption{color:#555}
ul{margin:0;padding-left:1.2em}.muted{color:#777}
"""
_STATUS_CLASS = {"succeeded": "ok", "ran": "ok", "cached": "ok", "failed": "bad",
                 "interrupted": "bad", "abandoned": "bad"}


# -- public ---------------------------------------------------------------------------
def report_path(root: str, run_id: str) -> str:
    return os.path.join(root, "runs", run_id, REPORT_FILE)


def write_run(store: MetadataStore, run_id: str) -> str:
    """Write <root>/runs/<run_id>/report.html (atomically); returns its path."""
    view = summary.render(store, run_id)
    target = report_path(store.root, run_id)
    page = _Page(store.root, os.path.dirname(target))
    sections = [_header(view, page), _decision(view, page), _timings(view, page),
                _config(view), _metrics(view), _plots(view, page),
                _data(view, page, _layout(store, view)),
                _lineage(store, view, page), _stage_metrics(view)]
    _write(target, _document(f"run {run_id}", "".join(sections)))
    return target


def write_index(store: MetadataStore) -> str:
    """Write <root>/index.html (atomically): every run newest first, and the main metric
    across runs; returns its path."""
    runs = sorted(store.list_runs(), key=lambda r: (float(r.get("started") or 0), r["run_id"]))
    views = [summary.render(store, r["run_id"]) for r in runs]  # oldest first
    target = os.path.join(store.root, INDEX_FILE)
    page = _Page(store.root, store.root)
    body = (f"<h1>Runs under {_e(os.path.basename(os.path.abspath(store.root)))}</h1>"
            + _runs_table(reversed(views), page) + _charts(views))
    _write(target, _document("runs", body))
    return target


# -- page plumbing ------------------------------------------------------------------------
@dataclass(frozen=True)
class _Page:
    """Where a page lives, so its links can be made relative to it."""

    root: str
    here: str

    def href(self, path: str) -> str | None:
        """`path` relative to the page, URL-quoted (a run id may hold ':'); None unless it
        exists inside the root: a link must survive a copy of the root and never dangle."""
        if "://" in path or not os.path.exists(path):
            return None
        root = os.path.abspath(self.root)
        if os.path.commonpath([root, os.path.abspath(path)]) != root:
            return None
        rel = os.path.relpath(path, self.here).replace(os.sep, "/")
        return urllib.parse.quote(rel) + ("/" if os.path.isdir(path) else "")

    def link(self, path: str, text: str) -> str:
        url = self.href(path)
        return f'<a href="{_e(url)}">{_e(text)}</a>' if url else _e(text)

    def run_link(self, run_id: str | None) -> str:
        if not run_id:
            return "-"
        return self.link(report_path(self.root, run_id), run_id)


def _write(path: str, text: str) -> None:
    """Readers (a browser, a bucket sync) never see half a page: temp file, then rename."""
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; pages are meant to be served
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _document(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{STYLE}</style></head>"
            f"<body>{body}</body></html>\n")


def _e(value: Any) -> str:
    return html.escape(str(value))


def _table(headers: Iterable[str], rows: Iterable[Iterable[str]],
           numeric: Container[int] = ()) -> str:
    """Cells are HTML already (escaped by the caller); columns in `numeric` align right."""
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td class="n">{c}</td>' if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fields(rows: Iterable[tuple[str, str]]) -> str:
    """A two-column table of name / HTML value."""
    body = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _status(status: str | None) -> str:
    return f'<span class="{_STATUS_CLASS.get(status, "warn")}">{_e(status or "-")}</span>'


def _fmt(value: Any, spec: str = ".4g") -> str:
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: "-"}[value]
    if isinstance(value, float):
        return format(value, spec)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _yes_no(decision: dict | None, key: str) -> str:
    if not decision:
        return '<span class="muted">-</span>'
    return '<span class="ok">yes</span>' if decision.get(key) else '<span class="bad">no</span>'


# -- what a view says ---------------------------------------------------------------------
def _main_metric(view: dict) -> dict | None:
    """The run's main metric when it is a finite number (a NaN would blank the chart)."""
    main = view.get("main_metric") or {}
    value = main.get("value")
    finite = isinstance(value, (int, float)) and math.isfinite(value)
    return main if finite else None


def _layout(store: MetadataStore, view: dict) -> dict:
    """The example layout and class names, as ingest recorded them on its Examples
    artifact in ML Metadata (the pipeline's runner and views know no component)."""
    uri = ((view["stages"].get("ingest") or {}).get("artifacts") or {}).get("examples")
    found = store.artifact_by_uri(uri) if uri else None
    return found[0].properties if found else {}


def _class_name(names, label: int) -> str:
    return names[label] if 0 <= label < len(names or ()) else str(label)


def _splits(uri: str) -> list[str]:
    """The Split-<name> folders of a split-aware artifact, train / validation / test first."""
    found = [d[len("Split-"):] for d in os.listdir(uri) if d.startswith("Split-")] \
        if os.path.isdir(uri) else []
    return sorted(found, key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else 99, s))


# -- run page sections ------------------------------------------------------------------
def _header(view: dict, page: _Page) -> str:
    owner = view.get("owner") or {}
    rows = [("status", _status(view["status"])),
            ("exit code", _e(_fmt(view.get("exit_code")))),
            ("dataset", _e(_fmt(view.get("dataset")))),
            ("variant", _e(_fmt(view.get("variant")))),
            ("preset", _e(view.get("preset") or "(defaults)")),
            ("started", _e(_fmt(view.get("started")))),
            ("finished", _e(_fmt(view.get("finished")))),
            ("duration", _e(f"{view['duration_s']:.1f} s"
                            if view.get("duration_s") is not None else "-")),
            ("owner", _e(f"pid {owner.get('pid')} on {owner.get('host')}, last heartbeat "
                         f"{owner.get('heartbeat')}")),
            ("command", f"<code>{_e(view.get('command') or '-')}</code>")]
    error = view.get("error")
    box = (f'<div class="error"><b>{_e(error.get("kind", "error"))}</b>: '
           f'{_e(error.get("message", ""))}</div>' if error else "")
    # Not checked for existence like other links: the index is written with every report.
    index = urllib.parse.quote(os.path.relpath(os.path.join(page.root, INDEX_FILE), page.here))
    return (f'<p><a href="{_e(index)}">all runs</a></p><h1>Run {_e(view["run_id"])}</h1>'
            f"{box}{_fields(rows)}")


def _decision(view: dict, page: _Page) -> str:
    """The main metric, the blessing and the push, each with every field the view has."""
    main = _main_metric(view)
    out = "<h2>Decision</h2>" + _fields(
        [("main metric", _e(f"{main['name']} = {_fmt(main['value'])}" if main else "-"))])
    for title, key, flag in (("Blessing", "blessing", "blessed"), ("Push", "push", "pushed")):
        decision = view.get(key)
        if decision:
            rows = [(flag, f"{_yes_no(decision, flag)} {_e(decision.get('reason') or '')}")]
            rows += [(k, _value(k, v, page)) for k, v in decision.items()
                     if k not in (flag, "reason")]
            out += f"<h3>{title}</h3>" + _fields(rows)
    return out


def _value(key: str, value: Any, page: _Page) -> str:
    """A decision field as HTML: run ids link to their reports, a destination inside the
    root to its directory, a dict (candidate, baseline, thresholds) inline."""
    if isinstance(value, dict):
        return ", ".join(f"{_e(k)} {_value(k, v, page)}" for k, v in value.items()) or "-"
    if key.endswith("run_id") and value:
        return page.run_link(str(value))
    if key == "destination" and value:
        return page.link(str(value), str(value))
    return _e(_fmt(value))


def _timings(view: dict, page: _Page) -> str:
    longest = max([st.get("duration_s") or 0.0 for st in view["stages"].values()] + [1e-9])
    rows = []
    for name, st in view["stages"].items():
        seconds = st.get("duration_s") or 0.0
        source = st.get("cached_from")
        reused = (f"run {page.run_link(source.get('run_id'))} (execution "
                  f"{_e(source.get('execution_id'))})" if source else "")
        error = (st.get("error") or {}).get("message", "")
        rows.append([_e(name), _status(st["status"]), f"{seconds:.1f}",
                     f'<span class="bar" style="width:{120 * seconds / longest:.0f}px"></span>',
                     reused, _e(error)])
    return "<h2>Stages</h2>" + _table(["stage", "status", "seconds", "", "cached from", "error"],
                                      rows, numeric={2})


def _config(view: dict) -> str:
    changed = view.get("config_changed") or {}
    rows = [[f"<code>{_e(k)}</code>", _e(_fmt(v))] for k, v in changed.items()]
    table = _table(["key", "value"], rows) if rows else "<p>nothing changed from the defaults</p>"
    full = _e(json.dumps(view.get("config") or {}, indent=2, sort_keys=True))
    return (f"<h2>Config: changes from the defaults</h2><p>preset: "
            f"{_e(view.get('preset') or '(none)')}</p>{table}"
            f"<details><summary>the whole config</summary><pre>{full}</pre></details>")


def _metric_rows(m: dict) -> list[tuple[str, str]]:
    """The headline numbers of evaluate, each with what it is beside it."""
    rows = []
    if "bce" in m:
        rows.append(("bce = bce_floor + bce_excess",
                     f"{m['bce']:.4f} = {_fmt(m.get('bce_floor'), '.4f')} (floor) + "
                     f"{_fmt(m.get('bce_excess'), '.4f')} (excess)"))
    for key, spec, unit in (("mse", ".4g", ""), ("psnr", ".2f", " dB")):
        if key in m:
            rows.append((key, f"{m[key]:{spec}}{unit}"))
    if "probe_accuracy" in m:
        raw = _fmt(m.get("probe_accuracy_raw_pixels"), ".3f")
        rows.append(("probe_accuracy (raw-pixel probe)",
                     f"{m['probe_accuracy']:.3f} (raw pixels {raw})"))
    if "finetune_accuracy" in m:
        rows.append(("finetune_accuracy", f"{m['finetune_accuracy']:.3f}"))
    for key, spec, unit in (("neg_elbo", ".1f", " nats/image"), ("kl", ".2f", " nats"),
                            ("beta", ".3g", "")):
        if key in m:
            rows.append((key, f"{m[key]:{spec}}{unit}"))
    if "noisy_input_bce" in m:  # denoising: how far the input itself is from the target
        rows.append(("noisy input: bce (excess), mse, psnr",
                     f"{m['noisy_input_bce']:.4f} ({_fmt(m.get('noisy_input_bce_excess'), '.4f')})"
                     f", {_fmt(m.get('noisy_input_mse'))}, "
                     f"{_fmt(m.get('noisy_input_psnr'), '.2f')} dB"))
    rows += [(k, _fmt(v)) for k, v in sorted(m.items()) if k.startswith("denoise_")]
    if "anomaly_threshold" in m:
        rows.append((f"anomaly threshold ({m.get('anomaly_score')}, validation quantile "
                     f"{_fmt(m.get('anomaly_threshold_quantile'))})",
                     f"{_fmt(m['anomaly_threshold'])}; flagged "
                     f"{_fmt(m.get('anomaly_flagged_fraction'), '.2%')} of test"))
    if "anomaly_auroc" in m:
        rows.append(("held-out classes: AUROC, precision / recall at the threshold",
                     f"{_fmt(m['anomaly_auroc'], '.3f')}, {_fmt(m.get('anomaly_precision'), '.3f')}"
                     f" / {_fmt(m.get('anomaly_recall'), '.3f')}"))
    return rows


def _metrics(view: dict) -> str:
    m = (view["stages"].get("evaluate") or {}).get("metrics")
    if not m:
        return "<h2>Evaluation</h2><p class=\"muted\">no evaluation in this run</p>"
    return "<h2>Evaluation (test split)</h2>" + _fields(
        (k, _e(v)) for k, v in _metric_rows(m))


def _plots(view: dict, page: _Page) -> str:
    """The evaluation's PNGs, then the pictures of the data (validate's statistics), which
    a run rejected for its data has too."""
    order = list(PLOT_CAPTIONS)
    figures = []
    for stage, output in (("evaluate", "evaluation"), ("validate", "statistics")):
        uri = ((view["stages"].get(stage) or {}).get("artifacts") or {}).get(output)
        if not (uri and os.path.isdir(uri)):
            continue
        pngs = sorted((f for f in os.listdir(uri) if f.endswith(".png")),
                      key=lambda f: (order.index(f) if f in order else len(order), f))
        for name in pngs:
            src = page.href(os.path.join(uri, name))
            if src:
                caption = f"{name}: {PLOT_CAPTIONS.get(name, '')}".rstrip(": ")
                figures.append(f'<figure><img src="{_e(src)}" alt="{_e(name)}">'
                               f"<figcaption>{_e(caption)}</figcaption></figure>")
    return "<h2>Plots</h2>" + ("".join(figures) or '<p class="muted">no plots in this run</p>')


def _split_stats(stats_uri: str, split: str, layout: dict) -> dict[str, Any]:
    """Examples, pixel min / mean / max and examples per label of one split, from TFDV's
    statistics (so a rejected run has them too). The label is categorical in the schema,
    so its counts are its top values."""
    out: dict[str, Any] = {"examples": None, "pixels": None, "labels": {}}
    path = os.path.join(stats_uri, f"Split-{split}", "FeatureStats.pb")
    if not os.path.exists(path):
        return out
    with open(path, "rb") as f:
        stats = statistics_pb2.DatasetFeatureStatisticsList.FromString(f.read())
    for dataset in stats.datasets:
        out["examples"] = int(dataset.num_examples)
        for feature in dataset.features:
            step = list(feature.path.step)
            if step == [layout.get("image_feature")] and feature.HasField("num_stats"):
                n = feature.num_stats
                out["pixels"] = f"{n.min:.4g} / {n.mean:.4g} / {n.max:.4g}"
            elif step == [layout.get("label_feature")]:
                out["labels"] = {int(v.value): int(v.frequency)
                                 for v in feature.string_stats.top_values}
    return out


def _anomalies(anomalies_uri: str, split: str) -> tuple[list[str], list[str]]:
    """(anomalies, drift measurements) of one split, as readable lines."""
    path = os.path.join(anomalies_uri, f"Split-{split}", "SchemaDiff.pb")
    if not os.path.exists(path):
        return [], []
    with open(path, "rb") as f:
        a = anomalies_pb2.Anomalies.FromString(f.read())
    problems = [f"{feature}: " + ("; ".join(f"{r.short_description}: {r.description}"
                                            for r in info.reason) or info.description)
                for feature, info in sorted(a.anomaly_info.items())]
    if a.HasField("dataset_anomaly_info"):
        problems.append("(dataset): " + "; ".join(r.description
                                                  for r in a.dataset_anomaly_info.reason))
    kind = anomalies_pb2.DriftSkewInfo.Measurement.Type.Name
    drift = [f"{'/'.join(d.path.step)}: {kind(m.type)} {m.value:.4f} (threshold {m.threshold:g})"
             for d in a.drift_skew_info for m in d.drift_measurements]
    return problems, drift


def _data(view: dict, page: _Page, layout: dict) -> str:
    """Per split: examples per class, pixel range, TFDV views and anomalies, for the raw
    (validate) and the normalized (transform) data."""
    rows, classes = [], {}
    for stage in ("validate", "transform"):
        arts = (view["stages"].get(stage) or {}).get("artifacts") or {}
        stats_uri, anomalies_uri = arts.get("statistics", ""), arts.get("anomalies", "")
        for split in _splits(stats_uri) or _splits(anomalies_uri):
            stats = _split_stats(stats_uri, split, layout)
            if stage == "validate":
                classes[split] = stats["labels"]  # the raw data's labels
            problems, drift = _anomalies(anomalies_uri, split)
            files = " ".join([
                page.link(os.path.join(stats_uri, f"Split-{split}", "statistics.html"),
                          "statistics (TFDV view)"),
                page.link(os.path.join(anomalies_uri, f"Split-{split}", "anomalies.pbtxt"),
                          "anomalies.pbtxt")])
            rows.append([_e(stage), _e(split), _e(_fmt(stats["examples"])),
                         _e(stats["pixels"] or "-"),
                         _items(problems, '<span class="ok">none</span>'), _items(drift, "-"),
                         files])
    out = "<h2>Data</h2>" + _class_table(classes, view.get("dataset"), layout.get("class_names"))
    if rows:
        out += ("<h3>Statistics and anomalies</h3>"
                + _table(["stage", "split", "examples", "pixels min / mean / max", "anomalies",
                          "drift", "files"], rows, numeric={2})
                + '<p class="muted">TFDV\'s statistics views load Facets from the web.</p>')
    return out


def _items(lines: list[str], empty: str) -> str:
    return "<ul>" + "".join(f"<li>{_e(x)}</li>" for x in lines) + "</ul>" if lines else empty


def _class_table(counts: dict[str, dict[int, int]], dataset: str | None, class_names) -> str:
    """Examples per class (by name) and split."""
    labels = sorted({label for c in counts.values() for label in c})
    if not labels:
        return ""
    rows = [[_e(split)] + [str(c.get(label, 0)) for label in labels] + [str(sum(c.values()))]
            for split, c in counts.items()]
    names = [_e(_class_name(class_names, label)) for label in labels]
    return (f"<h3>Examples per class ({_e(dataset)})</h3>"
            + _table(["split", *names, "total"], rows, numeric=range(1, len(labels) + 2)))


def _lineage(store: MetadataStore, view: dict, page: _Page) -> str:
    """Each stage's input and output artifacts: ML Metadata ids, types, directories and the
    run that made them (for a cached stage, the run it reused)."""
    latest = {}
    for e in store.run_executions(view["run_id"]):
        latest[e["stage"]] = e  # ordered by id: the last attempt wins, as in the view
    rows = []
    for name, e in latest.items():
        for direction, key, a in ([("in", k, a) for k, a in e["inputs"].items()]
                                  + [("out", k, a) for k, a in e["outputs"].items()]):
            rows.append([_e(name), _e(e["execution_id"]), direction, _e(key), _e(a.type),
                         _e(a.id), page.run_link(a.properties.get("run_id")),
                         page.link(a.uri, os.path.relpath(a.uri, store.root))])
    if not rows:
        return ""
    return ("<h2>Lineage (ML Metadata)</h2><p>A cached stage's outputs are those of the run "
            "that made them (see Stages).</p>"
            + _table(["stage", "execution", "", "key", "type", "artifact id", "made by run",
                      "directory"], rows, numeric={1, 5}))


def _flat(d: dict, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for k, v in d.items():
        out += _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [(f"{prefix}{k}", v)]
    return out


def _stage_metrics(view: dict) -> str:
    parts = [f"<details><summary>{_e(name)}</summary>"
             + _fields((k, _e(_fmt(v, ".6g"))) for k, v in _flat(st["metrics"])) + "</details>"
             for name, st in view["stages"].items() if st.get("metrics")]
    return "<h2>Every stage metric</h2>" + "".join(parts) if parts else ""


# -- index ------------------------------------------------------------------------------
def _runs_table(views: Iterable[dict], page: _Page) -> str:
    rows = []
    for v in views:
        main = _main_metric(v)
        took = f"{v['duration_s']:.0f} s" if v.get("duration_s") is not None else "-"
        pushed = v.get("push") or {}
        version = f" v{_e(pushed['version'])}" if pushed.get("version") is not None else ""
        rows.append([page.run_link(v["run_id"]), _status(v["status"]),
                     _e(v.get("started") or "-"), _e(took), _e(_fmt(v.get("dataset"))),
                     _e(_fmt(v.get("variant"))),
                     _e(f"{main['name']} {_fmt(main['value'])}" if main else "-"),
                     _yes_no(v.get("blessing"), "blessed"),
                     _yes_no(v.get("push"), "pushed") + version])
    return _table(["run", "status", "started", "took", "dataset", "variant", "main metric",
                   "blessed", "pushed"], rows, numeric={3})


def _charts(views: list[dict]) -> str:
    """One chart per main-metric name (bce_excess and neg_elbo have different units), one
    series per (dataset, variant); x is the run's place in start order."""
    by_metric: dict[str, dict[str, list[tuple[int, float, str]]]] = {}
    for x, v in enumerate(views, start=1):
        main = _main_metric(v)
        if main:
            series = f"{v.get('dataset')} / {v.get('variant')}"
            by_metric.setdefault(main["name"], {}).setdefault(series, []).append(
                (x, float(main["value"]), v["run_id"]))
    charts = "".join(_svg_chart(name, series, len(views)) for name, series in by_metric.items())
    return "<h2>Main metric across runs</h2>" + (
        charts or '<p class="muted">no run has a main metric yet</p>')


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    return [lo + (hi - lo) * i / (n - 1) for i in range(n)]


def _svg_chart(metric: str, series: dict[str, list[tuple[int, float, str]]], runs: int) -> str:
    width, height, left, right, top, bottom = 820, 300, 70, 230, 20, 45
    values = [y for points in series.values() for _, y, _ in points]
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.08 or abs(hi) * 0.1 or 1.0  # a flat series still gets a y range
    lo, hi = lo - pad, hi + pad
    plot_w, plot_h = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (plot_w / 2 if runs == 1 else (x - 1) / (runs - 1) * plot_w)

    def sy(y: float) -> float:
        return top + (hi - y) / (hi - lo) * plot_h

    parts = [f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" '
             f'stroke="#999"/>']
    for y in _ticks(lo, hi):
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" '
                     f'stroke="#e5e5e5"/><text x="{left - 6}" y="{sy(y) + 4:.1f}" '
                     f'text-anchor="end">{_e(format(y, ".4g"))}</text>')
    step = max(1, -(-runs // 10))  # at most about ten run ticks
    for x in range(1, runs + 1, step):
        parts.append(f'<text x="{sx(x):.1f}" y="{top + plot_h + 16}" '
                     f'text-anchor="middle">{x}</text>')
    parts.append(f'<text x="{left + plot_w / 2}" y="{height - 6}" text-anchor="middle">'
                 f"run (in start order)</text>")
    parts.append(f'<text transform="translate(16 {top + plot_h / 2}) rotate(-90)" '
                 f'text-anchor="middle">{_e(metric)}</text>')
    for i, (name, points) in enumerate(sorted(series.items())):
        color = PALETTE[i % len(PALETTE)]
        xy = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y, _ in points)
        parts.append(f'<polyline points="{xy}" fill="none" stroke="{color}" stroke-width="1.5"/>')
        parts += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3.5" fill="{color}">'
                  f"<title>{_e(run_id)}: {_e(metric)} {_e(format(y, '.6g'))}</title></circle>"
                  for x, y, run_id in points]
        ly = top + 10 + 18 * i
        parts.append(f'<rect x="{width - right + 15}" y="{ly - 9}" width="12" height="12" '
                     f'fill="{color}"/><text x="{width - right + 33}" y="{ly + 1}">'
                     f"{_e(name)}</text>")
    return (f'<h3>{_e(metric)}</h3><svg width="{width}" height="{height}" font-size="12" '
            f'font-family="system-ui,sans-serif" role="img" '
            f'aria-label="{_e(metric)} across runs">{"".join(parts)}</svg>')
