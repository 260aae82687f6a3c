"""The HTML reports (pipeline/report.py) on a real root made through the CLI: a blessed and
pushed run, a rerun of it from the cache, and a run whose data TFDV rejects. The pages say
what ML Metadata says, every link is relative and resolves (also in a copy of the root),
and a real headless Chromium renders them without a broken image, a console error or a
failed request.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import urllib.parse
from html.parser import HTMLParser

import numpy as np
import pytest

import run_pipeline
from components.evaluate.component import EVALUATE
from components.features import CLASS_NAMES
from pipeline import inspection, report, summary
from pipeline.artifacts import Artifact
from pipeline.errors import EXIT_DATA, EXIT_OK
from pipeline.metadata import MetadataStore
from pipeline.views import Decision, MainMetric, MetricTable, Row, Sweep, View, Views
from tests.helpers import (
    blessed_small_run,
    copy_root,
    set_args,
    small_run,
    synthetic_images,
    user_env,
    write_idx,
)

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = "/usr/bin/chromium"
# Headless and offline: no first-run UI, no background fetches the pages did not ask for.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HEAVY = ("tensorflow", "keras", "apache_beam", "tensorflow_data_validation", "matplotlib")
VIEWS = Views.of(run_pipeline.create_pipeline())


def _run(root, run_id, settings):
    return run_pipeline.main(["run", "--root", str(root), "--run-id", run_id, *set_args(settings)])


@pytest.fixture(scope="module")
def root(tmp_path_factory, idx_dir, small_root):
    """r1 (the session's small_root, copied; blessed: the ceiling is lifted for a one-epoch
    model, so it is pushed), r2 (the same config: reused from the cache) and r3 (every
    test label 0: TFDV's label drift check rejects it), each with its report, and the
    index."""
    root = tmp_path_factory.mktemp("report") / "root"
    drifted = tmp_path_factory.mktemp("idx_drifted")
    write_idx(drifted, "train", *synthetic_images(300, 1))
    images, labels = synthetic_images(120, 2)
    write_idx(drifted, "t10k", images, np.zeros_like(labels))
    copy_root(small_root, root)
    assert _run(root, "r2", blessed_small_run(idx_dir)) == EXIT_OK
    assert _run(root, "r3", small_run(drifted)) == EXIT_DATA
    # the runner wrote each run's page when it ended, whatever the outcome, and the index
    for run_id in ("r1", "r2", "r3"):
        assert os.path.exists(report.report_path(str(root), run_id)), run_id
    assert os.path.exists(os.path.join(root, report.INDEX_FILE))
    return root


def _page(root, *parts):
    with open(os.path.join(root, *parts), encoding="utf-8") as f:
        return f.read()


class _Links(HTMLParser):
    """Every href and src of a page."""

    def __init__(self):
        super().__init__()
        self.urls = []

    def handle_starttag(self, tag, attrs):
        self.urls += [v for k, v in attrs if k in ("href", "src") and v is not None]


def _urls(path):
    parser = _Links()
    parser.feed(_page(path))
    return parser.urls


def _pages(root):
    return [os.path.join(root, "index.html")] + [
        os.path.join(root, "runs", r, "report.html") for r in ("r1", "r2", "r3")
    ]


def _resolve(page, url):
    return os.path.normpath(os.path.join(os.path.dirname(page), urllib.parse.unquote(url)))


@pytest.mark.slow
def test_run_page_shows_status_metrics_plots_data_and_lineage(root):
    store = MetadataStore(str(root))
    view = summary.render(store, "r1", VIEWS)
    page = os.path.join(root, "runs", "r1", "report.html")
    text = _page(page)
    assert "<h1>Run r1</h1>" in text and "succeeded" in text
    # nothing half-written left beside the page
    assert not [f for f in os.listdir(os.path.dirname(page)) if ".tmp" in f]
    ev = view["stages"]["evaluate"]["metrics"]
    assert (
        f"{ev['bce']:.4f} = {ev['bce_floor']:.4f} (floor) + {ev['bce_excess']:.4f} (excess)" in text
    )
    assert f"{ev['psnr']:.2f} dB" in text
    assert f"{ev['probe_accuracy']:.3f} (raw pixels {ev['probe_accuracy_raw_pixels']:.3f})" in text
    # the synthetic IDX data is labelled as the configured data set, Fashion-MNIST
    for name in CLASS_NAMES["fashion_mnist"]:
        assert f"<th>{name}</th>" in text, name
    urls = [_resolve(page, u) for u in _urls(page)]
    evaluation = view["stages"]["evaluate"]["artifacts"]["evaluation"]
    pngs = sorted(f for f in os.listdir(evaluation) if f.endswith(".png"))
    assert {"reconstructions.png", "loss_curves.png", "latent_scatter.png"} <= set(pngs)
    for png in pngs:
        assert os.path.join(evaluation, png) in urls, png
    # the novelty section: the served score's threshold, and its picture inside the section
    novelty = text.split("<h2>Novelty detection")[1].split("<h2>")[0]
    assert f"served score {ev['anomaly_score']}: threshold" in novelty
    assert (
        "score_histogram.png" in novelty
        and "score_histogram.png" not in text.split("<h2>Plots</h2>")[1].split("<h2>")[0]
    )
    for stage in ("validate", "transform"):
        stats = view["stages"][stage]["artifacts"]["statistics"]
        for split in ("train", "validation", "test"):
            assert os.path.join(stats, f"Split-{split}", "statistics.html") in urls
    # lineage: every artifact of every stage, by ML Metadata id and directory
    for e in store.run_executions("r1"):
        for a in [*e["inputs"].values(), *e["outputs"].values()]:
            assert a.uri in urls, (e["stage"], a.uri)
            assert f'<td>{a.type}</td><td class="n">{a.id}</td>' in text
    assert view["blessing"]["blessed"] and view["push"]["pushed"]
    assert view["push"]["destination"] in urls  # the served copy, inside the root


@pytest.mark.slow
def test_cached_run_names_the_run_it_reused(root):
    view = summary.render(MetadataStore(str(root)), "r2", VIEWS)
    text = _page(root, "runs", "r2", "report.html")
    cached = [n for n, st in view["stages"].items() if st["status"] == "cached"]
    assert {"ingest", "validate", "transform", "train"} <= set(cached)
    assert text.count('run <a href="../r1/report.html">r1</a> (execution') == len(cached)
    # lineage: the reused artifacts were made by r1
    assert (
        '<td><a href="../r1/report.html">r1</a></td><td><a href="../../artifacts/train/r1/model/">'
    ) in text


@pytest.mark.slow
def test_rejected_run_shows_the_anomaly_and_no_evaluation(root):
    view = summary.render(MetadataStore(str(root)), "r3", VIEWS)
    text = _page(root, "runs", "r3", "report.html")
    assert view["exit_code"] == EXIT_DATA
    assert f"<th>exit code</th><td>{EXIT_DATA}</td>" in text
    assert '<div class="error">' in text
    assert "label: L_INFTY" in text  # the drift, with its threshold, from SchemaDiff.pb
    assert "no evaluation in this run" in text
    # the class table counts the rejected test split too: all of it is class 0
    assert "<th>T-shirt/top</th>" in text


@pytest.mark.slow
def test_index_lists_runs_newest_first_with_the_main_metric_chart(root):
    text = _page(root, "index.html")
    links = [f'<a href="runs/{r}/report.html">{r}</a>' for r in ("r3", "r2", "r1")]
    assert all(link in text for link in links)
    assert text.index(links[0]) < text.index(links[1]) < text.index(links[2])
    svg = text[text.index("<svg") : text.index("</svg>")]
    assert svg.count("<circle") == 2  # r1 and r2; r3 has no main metric
    assert "fashion_mnist / dense" in svg and "run (in start order)" in svg
    assert "bce_excess" in svg


@pytest.mark.slow
def test_links_are_relative_and_resolve_also_in_a_copy_of_the_root(root, tmp_path):
    copy = tmp_path / "elsewhere" / "root"
    shutil.copytree(root, copy)
    for base in (str(root), str(copy)):
        for page in _pages(base):
            urls = _urls(page)
            assert urls, page
            for url in urls:
                parts = urllib.parse.urlsplit(url)
                assert not parts.scheme and not url.startswith("/"), (page, url)
                target = _resolve(page, url)
                assert os.path.exists(target), (page, url)
                assert target.startswith(base + os.sep), (page, url)


@pytest.mark.slow
def test_writing_the_pages_imports_no_heavy_module(root):
    """A fully cached rerun writes the pages: they must not cost a TensorFlow import."""
    script = (
        "import json, sys\n"
        "from pipeline.metadata import MetadataStore\n"
        "from pipeline import report\n"
        "from pipeline.views import Views\n"
        "import run_pipeline\n"
        f"store = MetadataStore({str(root)!r})\n"
        "views = Views.of(run_pipeline.create_pipeline())\n"
        "report.write_run(store, 'r1', views); report.write_index(store, views)\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=PROJECT,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.splitlines()[-1]) == []


def test_vae_and_denoising_metrics_are_shown_when_present():
    rows = dict(
        report.metric_rows(
            EVALUATE.view.metrics,
            {
                "bce": 0.3,
                "bce_floor": 0.25,
                "bce_excess": 0.05,
                "neg_elbo": 251.26,
                "kl": 12.345,
                "beta": 4.0,
                "noisy_input_bce": 1.4751,
                "noisy_input_bce_excess": 1.2329,
                "noisy_input_mse": 0.0812,
                "noisy_input_psnr": 11.02,
                "denoise_mse_reduction": 0.81,
            },
        )
    )
    assert rows["bce = bce_floor + bce_excess"] == "0.3000 = 0.2500 (floor) + 0.0500 (excess)"
    assert rows["neg_elbo"] == "251.3 nats/image" and rows["kl"] == "12.35 nats"
    assert rows["beta"] == "4"
    assert rows["noisy input: bce (excess), mse, psnr"] == "1.4751 (1.2329), 0.0812, 11.02 dB"
    assert rows["denoise_mse_reduction"] == "0.81"


def test_chart_per_main_metric_with_a_series_per_dataset_and_variant():
    def view(run_id, dataset, variant, name, value):
        return {
            "run_id": run_id,
            "dataset": dataset,
            "variant": variant,
            "main_metric": {"name": name, "value": value},
        }

    html = report.charts_html(
        [
            view("a", "mnist", "dense", "bce_excess", 0.05),
            view("b", "mnist", "vae_mlp", "neg_elbo", 160.0),
            view("c", "mnist", "dense", "bce_excess", None),  # failed: skipped
            view("d", "fashion_mnist", "dense", "bce_excess", 0.03),
            view("e", "mnist", "dense", "bce_excess", 0.04),
        ],
        VIEWS,
    )
    bce, elbo = html.split("<h3>neg_elbo</h3>")  # one chart each: their units differ
    assert "<h3>bce_excess</h3>" in bce
    assert bce.count("<circle") == 3 and bce.count("<polyline") == 2
    assert "mnist / dense" in bce and "fashion_mnist / dense" in bce and "vae_mlp" not in bce
    assert elbo.count("<circle") == 1 and "mnist / vae_mlp" in elbo
    assert "run (in start order)" in bce


@pytest.mark.slow
def test_pages_render_in_headless_chromium(root, tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.skip(
            f"{CHROMIUM} is absent (Debian's chromium; `make test` installs it where apt is usable)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            shown = {
                os.path.relpath(page, root): _check_in_browser(browser, page, tmp_path)
                for page in _pages(root)
            }
        finally:
            browser.close()
    assert shown[os.path.join("runs", "r1", "report.html")] >= 3  # the evaluation's PNGs


def _check_in_browser(browser, page_path, shots) -> int:
    """Open one page from disk; every image loaded, no console error, no failed request,
    a full-page screenshot saved. Returns how many images it shows."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    problems = []

    def on_console(message):
        if message.type == "error":
            problems.append(f"console error: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"failed request: {r.url}"))
    page.goto(pathlib.Path(page_path).as_uri(), wait_until="load")
    images = page.evaluate(
        "Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])"
    )
    assert problems == [], (page_path, problems)
    assert all(complete and width > 0 for _, complete, width in images), (page_path, images)
    assert len(images) == len([u for u in _urls(page_path) if u.endswith(".png")]), page_path
    if page_path.endswith("index.html"):
        assert page.evaluate("document.querySelector('svg').getBBox().width") > 0
    run_id = os.path.basename(os.path.dirname(page_path))
    shot = shots / ("index.png" if page_path.endswith("index.html") else f"{run_id}-report.png")
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000, shot
    page.close()
    return len(images)


def _scored_root(tmp_path, message: str):
    """A root with one run of a stage no component of this project has: `score`, whose
    `verdict` output records an approval, and an error message holding markup."""
    store = MetadataStore(str(tmp_path))
    store.start_run(
        "s1",
        {
            "status": "failed",
            "started": 1.0,
            "finished": 2.0,
            "exit_code": 4,
            "stages": ["score"],
            "error": {"kind": "stage", "message": message},
        },
    )
    uri = tmp_path / "artifacts" / "score" / "s1" / "verdict"
    uri.mkdir(parents=True)
    verdict = Artifact(
        type="Verdict",
        uri=str(uri),
        properties={"approved": True, "reason": "<b>fine</b>", "run_id": "s1"},
    )
    store.put_execution(
        "s1", "score", "complete", {"metrics": {"auc": 0.91, "n": 3}}, outputs={"verdict": verdict}
    )
    return store


SCORE_VIEWS = Views(
    (
        (
            "score",
            View(
                main_metric=MainMetric(("auc",), lower_is_better=False),
                headline=("auc",),
                decision=Decision(
                    key="approval",
                    output="verdict",
                    fields=("approved", "reason"),
                    flag="approved",
                    title="Approval",
                ),
                metrics=MetricTable("Scores", rows=(Row("area under the curve", "{auc:.2f}"),)),
            ),
        ),
    )
)


def test_a_new_stage_is_shown_by_what_it_declares(tmp_path):
    """The core names no stage: a component's declarations alone put its main metric, its
    decision and its metrics into summary.json, `runs`, `show` and the report."""
    store = _scored_root(tmp_path, "failed")
    view = summary.render(store, "s1", SCORE_VIEWS)
    assert view["main_metric"] == {"name": "auc", "value": 0.91}
    assert view["approval"] == {"approved": True, "reason": "<b>fine</b>"}
    assert "blessing" not in view and "push" not in view
    row = inspection.run_row(view, SCORE_VIEWS)
    assert row["approved"] is True and row["metric"] == "auc"
    assert inspection.runs_text([row], SCORE_VIEWS).splitlines()[0].endswith("approved")
    shown = inspection.show_text(view, str(tmp_path), SCORE_VIEWS)
    assert "  approved: yes: <b>fine</b>" in shown and "metrics: auc=0.91" in shown
    assert inspection.diff(view, view, SCORE_VIEWS)["outcome"]["approved"] == [True, True]
    text = _page(report.write_run(store, "s1", SCORE_VIEWS))
    assert "<h3>Approval</h3>" in text and "<h2>Scores</h2>" in text
    assert "<tr><th>area under the curve</th><td>0.91</td></tr>" in text
    index = _page(report.write_index(store, SCORE_VIEWS))
    assert "auc (higher is better)" in index and "<th>approved</th>" in index


def test_pages_escape_what_they_show(tmp_path):
    """Autoescaped templates: markup in an error message or a decision field is text."""
    store = _scored_root(tmp_path, "<script>alert(1)</script>")
    text = _page(report.write_run(store, "s1", SCORE_VIEWS))
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<b>fine</b>" not in text and "&lt;b&gt;fine&lt;/b&gt;" in text


def test_a_sweep_is_one_table_per_setting_a_row_per_value(tmp_path):
    """A stage declaring a Sweep: its runs that set the key are tabulated in the index, a
    table per setting of the other keys, the newest run per value, then mean and sd."""
    store = MetadataStore(str(tmp_path))
    runs = [  # (run, held-out classes, other changes, auc)
        ("a0", [0], {}, 0.5),
        ("a1", [1], {}, 0.9),
        ("a1-again", [1], {}, 0.7),  # newer: replaces a1
        ("b0", [0], {"model.variant": "dense"}, 0.8),
        ("plain", None, {}, 0.99),  # not part of a sweep
    ]
    for i, (run_id, held, changed, auc) in enumerate(runs):
        config_changed = {**changed, **({"data.holdout_labels": held} if held else {})}
        store.start_run(
            run_id,
            {
                "status": "succeeded",
                "started": float(i),
                "finished": i + 0.5,
                "stages": ["score"],
                "config_changed": config_changed,
            },
        )
        store.put_execution(run_id, "score", "complete", {"metrics": {"auc": auc}})
    views = Views(
        (("score", View(sweep=Sweep("AUC per class", "data.holdout_labels", (("auc", "auc"),)))),)
    )
    index = _page(report.write_index(store, views))
    assert "<h2>AUC per class: (defaults)</h2>" in index
    assert "<h2>AUC per class: model.variant=dense</h2>" in index
    defaults = index.split("<h2>AUC per class: (defaults)</h2>")[1].split("</table>")[0]
    assert "0.700" in defaults and "0.900" not in defaults and "0.99" not in defaults
    assert "mean ± sd (2)" in defaults and "0.600 ± 0.100" in defaults
