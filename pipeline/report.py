"""HTML views of ML Metadata for people: one page per run and an index of the root.

    <root>/runs/<run_id>/report.html   status, timings, config changes, metrics, plots, data
                                       statistics and anomalies, lineage, decisions
    <root>/index.html                  every run, newest first, and the main metric across runs

Built from `summary.render` (the run view of ML Metadata), the store's lineage, files
inside committed artifact directories and what the components declare for the views
(pipeline/views.py); summary.json is never read back. Python gathers the content; the
markup is Jinja2 templates (pipeline/templates/, autoescaped). Every link and image
source is relative to the page and points inside the root, so a root copied elsewhere
or served from a bucket keeps working. Nothing is fetched from the network: TFDV's
statistics views (which load Facets from the web) are linked, not embedded.

Kept light on purpose: a fully cached rerun writes these pages, so nothing here imports
TensorFlow, Keras, Beam, TFDV or matplotlib (pipeline/report_data.py reads TFDV's protos
with protobuf only; the index's chart is an SVG template). What a cell of a page holds:
pipeline/report_cells.py.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import tempfile
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline import report_data, summary
from pipeline.report_cells import (
    Bar,
    Code,
    Items,
    Joined,
    Link,
    Pairs,
    Status,
    YesNo,
    environment,
    first_field,
    fmt,
    metric_format,
)
from pipeline.views import MetricTable, Views

if TYPE_CHECKING:
    from pipeline.metadata import MetadataStore

REPORT_FILE = "report.html"
INDEX_FILE = "index.html"
# Matplotlib's tab10, so series colours look like the PNGs'.
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
_ENV = environment()


# -- public ---------------------------------------------------------------------------
def report_path(root: str, run_id: str) -> str:
    return os.path.join(root, "runs", run_id, REPORT_FILE)


def write_run(store: MetadataStore, run_id: str, views: Views) -> str:
    """Write <root>/runs/<run_id>/report.html (atomically); returns its path."""
    view = summary.render(store, run_id, views)
    target = report_path(store.root, run_id)
    page = _Page(store.root, os.path.dirname(target))
    index = urllib.parse.quote(os.path.relpath(os.path.join(page.root, INDEX_FILE), page.here))
    _write(
        target,
        _ENV.get_template("run.html").render(
            title=f"run {run_id}",
            view=view,
            index=index,  # the index is written with each report
            header=_header(view),
            main=_main_text(view),
            decisions=_decision_tables(view, views, page),
            stages=_timings(view, page),
            config=_config(view),
            tables=[_metric_table(view, views, stage, t, page) for stage, t in views.tables()],
            figures=_figures(view, views, page),
            data=_data(store, view, views, page),
            lineage=_lineage(store, view, page),
            stage_metrics=_stage_metrics(view),
        ),
    )
    return target


def write_index(store: MetadataStore, views: Views) -> str:
    """Write <root>/index.html (atomically): every run newest first, and the main metric
    across runs; returns its path."""
    runs = sorted(store.list_runs(), key=lambda r: (float(r.get("started") or 0), r["run_id"]))
    rendered = [summary.render(store, r["run_id"], views) for r in runs]  # oldest first
    target = os.path.join(store.root, INDEX_FILE)
    page = _Page(store.root, store.root)
    _write(
        target,
        _ENV.get_template("index.html").render(
            title="runs",
            root_name=os.path.basename(os.path.abspath(store.root)),
            runs=_runs_table(reversed(rendered), views, page),
            charts=charts(rendered, views),
            sweeps=sweeps(rendered, views, page),
        ),
    )
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

    def link(self, path: str, text: str) -> Link:
        return Link(self.href(path), text)

    def run_link(self, run_id: str | None) -> Link | str:
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


def _main_metric(view: dict) -> dict | None:
    """The run's main metric when it is a finite number (a NaN would blank the chart)."""
    main = view.get("main_metric") or {}
    value = main.get("value")
    finite = isinstance(value, (int, float)) and math.isfinite(value)
    return main if finite else None


def _artifact_dir(view: dict, stage: str, output: str) -> str:
    return ((view["stages"].get(stage) or {}).get("artifacts") or {}).get(output) or ""


# -- run page sections ------------------------------------------------------------------
def _header(view: dict) -> list[tuple[str, Any]]:
    owner = view.get("owner") or {}
    took = f"{view['duration_s']:.1f} s" if view.get("duration_s") is not None else "-"
    return [
        ("status", Status(view["status"])),
        ("exit code", fmt(view.get("exit_code"))),
        ("dataset", fmt(view.get("dataset"))),
        ("variant", fmt(view.get("variant"))),
        ("preset", view.get("preset") or "(defaults)"),
        ("started", fmt(view.get("started"))),
        ("finished", fmt(view.get("finished"))),
        ("duration", took),
        (
            "owner",
            f"pid {owner.get('pid')} on {owner.get('host')}, last heartbeat "
            f"{owner.get('heartbeat')}",
        ),
        ("command", Code(view.get("command") or "-")),
    ]


def _main_text(view: dict) -> str:
    main = _main_metric(view)
    return f"{main['name']} = {fmt(main['value'])}" if main else "-"


def _decision_tables(view: dict, views: Views, page: _Page) -> list[dict]:
    """Each declared decision the run made, with every field the view has."""
    out = []
    for _, d in views.decisions():
        found = view.get(d.key)
        if found:
            yes = YesNo(bool(found.get(d.flag)))
            flag = (d.flag, Joined((yes, " ", found.get("reason") or "")))
            rows = [
                (k, _value(k, v, page, d.paths))
                for k, v in found.items()
                if k not in (d.flag, "reason")
            ]
            out.append({"title": d.title, "rows": [flag, *rows]})
    return out


def _value(key: str, value: Any, page: _Page, paths: tuple[str, ...]) -> Any:
    """A decision field: run ids link to their reports, a declared path inside the root to
    its directory, a dict (candidate, baseline, thresholds) inline."""
    if isinstance(value, dict):
        return Pairs(tuple((k, _value(k, v, page, paths)) for k, v in value.items()))
    if key.endswith("run_id") and value:
        return page.run_link(str(value))
    if key in paths and value:
        return page.link(str(value), str(value))
    return fmt(value)


def _timings(view: dict, page: _Page) -> list[list[Any]]:
    longest = max([st.get("duration_s") or 0.0 for st in view["stages"].values()] + [1e-9])
    rows = []
    for name, st in view["stages"].items():
        seconds = st.get("duration_s") or 0.0
        source = st.get("cached_from")
        reused = (
            Joined(
                (
                    "run ",
                    page.run_link(source.get("run_id")),
                    f" (execution {source.get('execution_id')})",
                )
            )
            if source
            else ""
        )
        rows.append(
            [
                name,
                Status(st["status"]),
                f"{seconds:.1f}",
                Bar(f"{120 * seconds / longest:.0f}"),
                reused,
                (st.get("error") or {}).get("message", ""),
            ]
        )
    return rows


def _config(view: dict) -> dict:
    return {
        "changed": [(Code(k), fmt(v)) for k, v in (view.get("config_changed") or {}).items()],
        "preset": view.get("preset") or "(none)",
        "full": json.dumps(view.get("config") or {}, indent=2, sort_keys=True),
    }


def _metric_table(view: dict, views: Views, stage: str, table: MetricTable, page) -> dict:
    metrics = (view["stages"].get(stage) or {}).get("metrics") or {}
    pictures = views.view(stage).pictures
    figures = []
    if table.pictures and pictures:
        uri = _artifact_dir(view, stage, pictures.output)
        for name in table.pictures:
            path = os.path.join(uri, name) if uri else ""
            src = page.href(path) if path and os.path.isfile(path) else None
            if src:
                caption = f"{name}: {pictures.captions.get(name, '')}".rstrip(": ")
                figures.append({"src": src, "alt": name, "caption": caption})
    return {
        "heading": table.heading,
        "scope": table.scope,
        "rows": metric_rows(table, metrics) if metrics else None,
        "figures": figures,
    }


def metric_rows(table: MetricTable, metrics: dict) -> list[tuple[str, str]]:
    """The table's rows the metrics have, each (what it is, its value)."""
    rows = []
    for row in table.rows:
        if row.prefix:
            rows += [(k, fmt(v)) for k, v in sorted(metrics.items()) if k.startswith(row.prefix)]
        elif first_field(row.value) in metrics:
            rows.append((metric_format(row.label, metrics), metric_format(row.value, metrics)))
    return rows


def _figures(view: dict, views: Views, page: _Page) -> list[dict]:
    """Every declared picture of the run, lowest rank first, captions in reading order;
    a run rejected for its data has the data's pictures too."""
    figures = []
    declared = sorted(views.declaring("pictures"), key=lambda sp: sp[1].rank)  # stable
    in_sections = {(stage, name) for stage, t in views.tables() for name in t.pictures}
    for stage, pictures in declared:
        uri = _artifact_dir(view, stage, pictures.output)
        if not (uri and os.path.isdir(uri)):
            continue
        order = list(pictures.captions)
        pngs = sorted(
            (f for f in os.listdir(uri) if f.endswith(".png")),
            key=lambda f: (order.index(f) if f in order else len(order), f),
        )
        for name in pngs:
            if (stage, name) in in_sections:
                continue
            src = page.href(os.path.join(uri, name))
            if src:
                caption = f"{name}: {pictures.captions.get(name, '')}".rstrip(": ")
                figures.append({"src": src, "alt": name, "caption": caption})
    return figures


def _data(store: MetadataStore, view: dict, views: Views, page: _Page) -> dict:
    """Per split of each declared data output: examples, pixel range, TFDV views,
    anomalies and drift; and the examples per class of those that count classes."""
    layout = _layout(store, view, views)
    rows: list[list[Any]] = []
    classes: dict[str, dict[int, int]] = {}
    for stage, data in views.declaring("data"):
        stats_uri = _artifact_dir(view, stage, data.statistics)
        anomalies_uri = _artifact_dir(view, stage, data.anomalies)
        for split in report_data.splits(stats_uri) or report_data.splits(anomalies_uri):
            stats = report_data.split_stats(stats_uri, split, layout)
            if data.class_counts:
                classes[split] = stats["labels"]
            problems, drift = report_data.anomalies(anomalies_uri, split)
            files = Joined(
                (
                    page.link(
                        os.path.join(stats_uri, f"Split-{split}", "statistics.html"),
                        "statistics (TFDV view)",
                    ),
                    " ",
                    page.link(
                        os.path.join(anomalies_uri, f"Split-{split}", "anomalies.pbtxt"),
                        "anomalies.pbtxt",
                    ),
                )
            )
            rows.append(
                [
                    stage,
                    split,
                    fmt(stats["examples"]),
                    stats["pixels"] or "-",
                    Items(tuple(problems), YesNo(True, "none")),
                    Items(tuple(drift), "-"),
                    files,
                ]
            )
    return {
        "rows": rows,
        "classes": _class_table(classes, view.get("dataset"), layout.get("class_names")),
    }


def _layout(store: MetadataStore, view: dict, views: Views) -> dict:
    """The example layout and class names, as the declaring stage recorded them on its
    output artifact in ML Metadata."""
    for stage, output in views.declaring("examples"):
        uri = _artifact_dir(view, stage, output)
        found = store.artifact_by_uri(uri) if uri else None
        if found:
            return found[0].properties
    return {}


def _class_table(
    counts: dict[str, dict[int, int]], dataset: str | None, class_names
) -> dict | None:
    """Examples per class (by name) and split."""
    labels = sorted({label for c in counts.values() for label in c})
    if not labels:
        return None
    names = [class_names[i] if 0 <= i < len(class_names or ()) else str(i) for i in labels]
    rows = [
        [split] + [str(c.get(label, 0)) for label in labels] + [str(sum(c.values()))]
        for split, c in counts.items()
    ]
    return {
        "dataset": dataset,
        "headers": ["split", *names, "total"],
        "rows": rows,
        "numeric": list(range(1, len(labels) + 2)),
    }


def _lineage(store: MetadataStore, view: dict, page: _Page) -> list[list[Any]]:
    """Each stage's input and output artifacts: ML Metadata ids, types, directories and the
    run that made them (for a cached stage, the run it reused)."""
    latest = {}
    for e in store.run_executions(view["run_id"]):
        latest[e["stage"]] = e  # ordered by id: the last attempt wins, as in the view
    rows = []
    for name, e in latest.items():
        for direction, key, a in [("in", k, a) for k, a in e["inputs"].items()] + [
            ("out", k, a) for k, a in e["outputs"].items()
        ]:
            rows.append(
                [
                    name,
                    e["execution_id"],
                    direction,
                    key,
                    a.type,
                    a.id,
                    page.run_link(a.properties.get("run_id")),
                    page.link(a.uri, os.path.relpath(a.uri, store.root)),
                ]
            )
    return rows


def _flat(d: dict, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for k, v in d.items():
        out += _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [(f"{prefix}{k}", v)]
    return out


def _stage_metrics(view: dict) -> list[tuple[str, list[tuple[str, str]]]]:
    return [
        (name, [(k, fmt(v, ".6g")) for k, v in _flat(st["metrics"])])
        for name, st in view["stages"].items()
        if st.get("metrics")
    ]


# -- index ------------------------------------------------------------------------------
def _runs_table(rendered: Iterable[dict], views: Views, page: _Page) -> dict:
    decisions = [d for _, d in views.decisions()]
    rows = []
    for v in rendered:
        main = _main_metric(v)
        took = f"{v['duration_s']:.0f} s" if v.get("duration_s") is not None else "-"
        row = [
            page.run_link(v["run_id"]),
            Status(v["status"]),
            v.get("started") or "-",
            took,
            fmt(v.get("dataset")),
            fmt(v.get("variant")),
            f"{main['name']} {fmt(main['value'])}" if main else "-",
        ]
        for d in decisions:
            found = v.get(d.key)
            yes = YesNo(bool(found.get(d.flag)) if found else None)
            version = (found or {}).get(d.version) if d.version else None
            row.append(Joined((yes, f" v{version}")) if version is not None else yes)
        rows.append(row)
    return {
        "headers": [
            "run",
            "status",
            "started",
            "took",
            "dataset",
            "variant",
            "main metric",
            *[d.flag for d in decisions],
        ],
        "rows": rows,
    }


def sweeps(rendered: list[dict], views: Views, page: _Page) -> list[dict]:
    """Each declared Sweep's tables (views.Sweep): the runs (oldest first) whose stage
    reported its metrics and whose config sets its key, grouped by their other config
    changes; in each group the newest run per value of the key."""
    tables = []
    for stage, sweep in views.declaring("sweep"):
        groups: dict[str, dict[str, tuple[str, dict]]] = {}
        for v in rendered:
            metrics = ((v.get("stages") or {}).get(stage) or {}).get("metrics") or {}
            changed = dict(v.get("config_changed") or {})
            value = changed.pop(sweep.key, None)
            if value in (None, [], "") or not any(m in metrics for _, m in sweep.columns):
                continue
            setting = ", ".join(f"{k}={fmt(x)}" for k, x in sorted(changed.items()))
            groups.setdefault(setting or "(defaults)", {})[fmt(value)] = (v["run_id"], metrics)
        for setting, rows in groups.items():
            columns = [[m.get(name) for _, name in sweep.columns] for _, m in rows.values()]
            summary = []
            for i in range(len(sweep.columns)):
                values = [float(x) for c in columns if isinstance(x := c[i], (int, float))]
                summary.append(
                    f"{statistics.mean(values):.3f} ± {statistics.pstdev(values):.3f}"
                    if values
                    else "-"
                )
            tables.append(
                {
                    "heading": f"{sweep.heading}: {setting}",
                    "headers": [sweep.key, "run", *(h for h, _ in sweep.columns)],
                    "rows": [
                        [value, page.run_link(run_id), *(_number(x) for x in c)]
                        for (value, (run_id, _)), c in zip(rows.items(), columns)
                    ]
                    + [[f"mean ± sd ({len(rows)})", "", *summary]],
                }
            )
    return tables


def _number(x) -> str:
    return f"{x:.3f}" if isinstance(x, float) else fmt(x)


def charts(rendered: list[dict], views: Views) -> list[dict]:
    """One chart per main-metric name (their units differ), one series per (dataset,
    variant); x is the run's place in start order."""
    by_metric: dict[str, dict[str, list[tuple[int, float, str]]]] = {}
    for x, v in enumerate(rendered, start=1):
        main = _main_metric(v)
        if main:
            series = f"{v.get('dataset')} / {v.get('variant')}"
            by_metric.setdefault(main["name"], {}).setdefault(series, []).append(
                (x, float(main["value"]), v["run_id"])
            )
    return [
        _chart(name, views.direction(name), series, len(rendered))
        for name, series in by_metric.items()
    ]


def charts_html(rendered: list[dict], views: Views) -> str:
    """The index's chart section alone."""
    return _ENV.get_template("charts.html").render(charts=charts(rendered, views))


def _chart(
    metric: str, direction: str | None, series: dict[str, list[tuple[int, float, str]]], runs: int
) -> dict:
    """The geometry of one SVG line chart; the markup is templates/charts.html."""
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

    ticks = [lo + (hi - lo) * i / 4 for i in range(5)]
    step = max(1, -(-runs // 10))  # at most about ten run ticks
    lines = [
        {
            "name": name,
            "color": PALETTE[i % len(PALETTE)],
            "legend_y": top + 10 + 18 * i,
            "points": " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y, _ in points),
            "dots": [
                {"x": f"{sx(x):.1f}", "y": f"{sy(y):.1f}", "title": f"{run_id}: {metric} {y:.6g}"}
                for x, y, run_id in points
            ],
        }
        for i, (name, points) in enumerate(sorted(series.items()))
    ]
    return {
        "metric": metric,
        "axis": f"{metric} ({direction})" if direction else metric,
        "width": width,
        "height": height,
        "left": left,
        "top": top,
        "plot_w": plot_w,
        "plot_h": plot_h,
        "legend_x": width - right,
        "y_ticks": [
            {"y": f"{sy(t):.1f}", "text_y": f"{sy(t) + 4:.1f}", "label": f"{t:.4g}"} for t in ticks
        ],
        "x_ticks": [{"x": f"{sx(x):.1f}", "label": x} for x in range(1, runs + 1, step)],
        "series": lines,
    }
