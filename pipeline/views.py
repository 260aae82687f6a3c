"""What a component declares for the views of a run (summary.json, `runs`, `show`, `diff`
and the HTML report), so that nothing under pipeline/ names a stage or a metric: its main
metric, its headline metrics, its decision, its metrics table, its pictures and its data
outputs. `Views` is a pipeline's declarations in stage order, handed to those views.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class MainMetric:
    """The number that compares runs (`runs`, the index's chart): the first of `names` the
    stage reported; the last when it reported none (it did not run)."""

    names: tuple[str, ...]
    lower_is_better: bool = True

    def pick(self, metrics: Mapping[str, Any]) -> str:
        return next((n for n in self.names if n in metrics), self.names[-1])

    @property
    def direction(self) -> str:
        return "lower is better" if self.lower_is_better else "higher is better"


@dataclass(frozen=True)
class Decision:
    """A yes/no outcome recorded as the properties of one of the stage's outputs (a
    blessing, a push). `key` names it in the run view."""

    key: str
    output: str
    fields: tuple[str, ...]  # the properties the view keeps, in order
    flag: str  # the yes/no property: a column of `runs`, a row of `diff`
    title: str  # the report's heading
    # `show`'s line: "<flag>: yes<detail>: <reason>"; `detail` formats the fields.
    detail: str = ""
    detail_only_if_yes: bool = False
    version: str = ""  # a field `runs` shows after a yes: "yes (v3)"
    paths: tuple[str, ...] = ()  # fields holding a path, which the report links to
    # The view adds `cached`: whether this run reused an earlier run's outcome.
    says_if_reused: bool = False


@dataclass(frozen=True)
class Row:
    """A line of a metrics table. `value` (and `label`) are format strings over the stage's
    metrics, e.g. "{psnr:.2f} dB"; the row is shown when the first metric `value` names
    was reported. With `prefix`: a row per metric whose name starts so, named as it is."""

    label: str = ""
    value: str = ""
    prefix: str = ""


@dataclass(frozen=True)
class MetricTable:
    """The report's section of the stage's headline numbers, each with what it is."""

    heading: str
    scope: str = ""  # what the numbers cover, e.g. "test split"
    rows: tuple[Row, ...] = ()
    # PNGs of the stage's Pictures output shown in this section (not under the plots).
    pictures: tuple[str, ...] = ()


@dataclass(frozen=True)
class Pictures:
    """PNG files in one output directory, shown in the report with their captions."""

    output: str
    captions: Mapping[str, str] = field(default_factory=dict)  # in reading order; others follow
    rank: int = 0  # the report shows lower ranks first, then in stage order


@dataclass(frozen=True)
class Sweep:
    """Runs that differ in one config key (a sweep, e.g. one run per held-out class), side
    by side in the index: a table per setting of the other keys, a row per value of `key`
    (its newest run that reported the metrics), a column per (header, metric), then the
    mean and standard deviation over the rows."""

    heading: str
    key: str  # a config key, e.g. "data.holdout_labels"
    columns: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class DataOutputs:
    """TFDV statistics and anomalies outputs the report tabulates per split."""

    statistics: str
    anomalies: str
    # Whether its label counts fill the report's examples-per-class table.
    class_counts: bool = False


@dataclass(frozen=True)
class View:
    """Everything a component declares for the views; all optional."""

    main_metric: MainMetric | None = None
    headline: tuple[str, ...] = ()  # metrics `show` and `run` print on the stage's line
    decision: Decision | None = None
    metrics: MetricTable | None = None
    sections: tuple[MetricTable, ...] = ()  # more report sections of the stage's metrics
    pictures: Pictures | None = None
    sweep: Sweep | None = None
    data: DataOutputs | None = None
    # The output whose ML Metadata properties give the example layout (image_feature,
    # label_feature) and the class names.
    examples: str = ""


@dataclass(frozen=True)
class Views:
    """A pipeline's declarations: (stage name, View) in stage order."""

    stages: tuple[tuple[str, View], ...] = ()

    @classmethod
    def of(cls, components: Iterable) -> Views:
        return cls(tuple((c.name, c.view) for c in components))

    def view(self, stage: str) -> View:
        return dict(self.stages).get(stage, View())

    def declaring(self, what: str) -> list[tuple[str, Any]]:
        """(stage, declaration) of every stage that declares `what` (a View field)."""
        return [(name, getattr(v, what)) for name, v in self.stages if getattr(v, what)]

    def tables(self) -> list[tuple[str, MetricTable]]:
        """(stage, table) of every metrics table and section, in stage order."""
        return [
            (name, t)
            for name, v in self.stages
            for t in ((v.metrics,) if v.metrics else ()) + v.sections
        ]

    def main_metric(self) -> tuple[str, MainMetric] | None:
        """The first stage's that declares one."""
        found = self.declaring("main_metric")
        return found[0] if found else None

    def decisions(self) -> list[tuple[str, Decision]]:
        return self.declaring("decision")

    def direction(self, metric: str) -> str | None:
        """ "lower is better" or "higher is better" for a main-metric name."""
        main = self.main_metric()
        return main[1].direction if main and metric in main[1].names else None
