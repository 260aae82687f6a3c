"""What `runs`, `show`, `lineage` and `diff` print: views of ML Metadata (through
pipeline/summary.py's run view), as text for people and as plain data for `--json`. The
decisions and headline metrics shown are those the components declare (pipeline/views.py).

Nothing here writes; nothing here imports TensorFlow or Beam (inspection is instant).
"""

from __future__ import annotations

import json
import os
from typing import Any

from pipeline.metadata import MetadataStore
from pipeline.views import Views

# -- runs ----------------------------------------------------------------------------------


def run_row(view: dict, views: Views) -> dict[str, Any]:
    """One line of `runs`: the columns a scheduler or a person scans for."""
    row = {
        "run_id": view["run_id"],
        "status": view["status"],
        "exit_code": view["exit_code"],
        "started": view["started"],
        "duration_s": view["duration_s"],
        "dataset": view.get("dataset"),
        "variant": view.get("variant"),
        "metric": view["main_metric"]["name"],
        "value": view["main_metric"]["value"],
    }
    for _, d in views.decisions():
        row[d.flag] = (view.get(d.key) or {}).get(d.flag)
    for _, d in views.decisions():
        if d.version:
            row[f"{d.key}_{d.version}"] = (view.get(d.key) or {}).get(d.version)
    return {
        **row,
        "stages": {n: st["status"] for n, st in view["stages"].items()},
        "error": (view.get("error") or {}).get("message"),
    }


def filter_rows(
    rows: list[dict], status=None, dataset=None, variant=None, limit=None, **flags: bool | None
) -> list[dict]:
    """`flags`: decision flags (a column of the rows) that must be yes or no; None: any."""
    keep = [
        r
        for r in rows
        if (status is None or r["status"] == status)
        and (dataset is None or r["dataset"] == dataset)
        and (variant is None or r["variant"] == variant)
        and all(want is None or bool(r.get(flag)) == want for flag, want in flags.items())
    ]
    return keep[:limit] if limit else keep


def _yes_no(v) -> str:
    return "-" if v is None else ("yes" if v else "no")


def runs_text(rows: list[dict], views: Views) -> str:
    decisions = [d for _, d in views.decisions()]
    # Each decision's column is as wide as its name; the last one is not padded.
    widths = [len(d.flag) for d in decisions[:-1]] + [0]
    # As wide as the longest id (an Airflow run's is long), at least 24.
    w_id = max([24, *(len(r["run_id"]) for r in rows)])
    head = (
        f"{'run id':<{w_id}} {'status':<11} {'started':<20} {'took':>6}  {'dataset':<13} "
        f"{'variant':<10} {'main metric':<22}"
        + "".join(f" {d.flag:<{w}}" for d, w in zip(decisions, widths))
    )
    lines = [head.rstrip()]
    for r in rows:
        took = "-" if r["duration_s"] is None else f"{r['duration_s']:.0f}s"
        metric = "-" if r["value"] is None else f"{r['metric']} {r['value']:.4g}"
        started = (r["started"] or "-").replace("T", " ")[:19]
        line = (
            f"{r['run_id']:<{w_id}} {r['status']:<11} {started:<20} {took:>6}  "
            f"{r['dataset'] or '-':<13} {r['variant'] or '-':<10} {metric:<22}"
        )
        for d, w in zip(decisions, widths):
            version = r.get(f"{d.key}_{d.version}") if d.version else None
            line += f" {_yes_no(r.get(d.flag)) + (f' (v{version})' if version else ''):<{w}}"
        lines.append(line)
    return "\n".join(lines)


# -- show ----------------------------------------------------------------------------------


def headline(metrics: dict | None, keys: tuple[str, ...]) -> str:
    """The stage's declared headline metrics it reported, as `key=value`."""
    metrics = metrics or {}
    return " ".join(f"{k}={_num(metrics[k])}" for k in keys if metrics.get(k) is not None)


def _num(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _rel(root: str, uri: str) -> str:
    return os.path.relpath(uri, root) if uri.startswith(root) else uri


def outcome_lines(view: dict, views: Views) -> list[str]:
    """Each declared decision (e.g. whether the run's model was blessed and pushed) and
    why: `show` and the end of `run`."""
    lines = []
    for _, d in views.decisions():
        found = view.get(d.key)
        if not found:
            continue
        flag = found.get(d.flag)
        detail = d.detail.format(**found) if flag or not d.detail_only_if_yes else ""
        reused = " (reused from an earlier run)" if found.get("cached") else ""
        lines.append(f"  {d.flag}: {_yes_no(flag)}{detail}{reused}: {found.get('reason')}")
    return lines


def _owner_line(view: dict) -> str:
    owner = view["owner"]
    if view.get("mode") != "stages":
        return f"  owner pid {owner['pid']} on {owner['host']}, last heartbeat {owner['heartbeat']}"
    stages = ", ".join(f"{s} {o['process']}" for s, o in view.get("stage_owners", {}).items())
    return f"  a process per stage (started by pid {owner['pid']} on {owner['host']}): " + (
        stages or "none has joined yet"
    )


def show_text(view: dict, root: str, views: Views) -> str:
    took = "" if view["duration_s"] is None else f", took {view['duration_s']:.1f}s"
    lines = [
        f"run {view['run_id']}: {view['status']} (exit {view['exit_code']})",
        f"  started {view['started']}, finished {view['finished'] or '-'}{took}",
        _owner_line(view),
        f"  command: {view.get('command') or '-'}",
        f"  config: preset {view.get('preset') or '(defaults)'}; changed from the defaults: "
        + (
            ", ".join(f"{k}={json.dumps(v)}" for k, v in view["config_changed"].items())
            or "nothing"
        ),
    ]
    if view.get("error"):
        lines.append(f"  error: [{view['error'].get('kind')}] {view['error'].get('message')}")
    lines += outcome_lines(view, views)
    if view.get("gc"):
        lines.append(f"  gc: {view['gc'].get('artifacts')} artifact(s) of this run deleted")
    lines.append("  stages:")
    for name, st in view["stages"].items():
        lines += _stage_lines(name, st, root, views.view(name).headline)
    return "\n".join(lines)


def _stage_lines(name: str, st: dict, root: str, keys: tuple[str, ...]) -> list[str]:
    cached = st.get("cached_from")
    source = f" from run {cached['run_id']} (execution {cached['execution_id']})" if cached else ""
    duration = f" in {st['duration_s']:.1f}s" if st.get("duration_s") is not None else ""
    lines = [f"    {name:<10} {st['status']}{source}{duration}"]
    if headline(st.get("metrics"), keys):
        lines.append(f"        metrics: {headline(st['metrics'], keys)}")
    for warning in (st.get("metrics") or {}).get("warnings", []):  # a stage's own notices
        lines.append(f"        warning: {warning}")
    for k, uri in (st.get("artifacts") or {}).items():
        lines.append(f"        {k}: {_rel(root, uri)}")
    if st.get("error"):
        lines.append(f"        error: {st['error']['message']}")
    return lines


# -- lineage -------------------------------------------------------------------------------


def find_artifact(store: MetadataStore, target: str):
    """An artifact id, or a path to an artifact directory or to a file inside one."""
    if target.isdigit():
        return store.artifact(int(target))
    path = os.path.abspath(target)
    while path.startswith(store.root.rstrip("/") + "/"):
        if (found := store.artifact_by_uri(path)) is not None:
            return found
        path = os.path.dirname(path)
    return None


def lineage(store: MetadataStore, artifact, state: str, _seen: set | None = None) -> dict:
    """The artifact, the execution that made it, its inputs back to the source data, and
    the runs that reused it from the cache or consumed it."""
    seen = set() if _seen is None else _seen
    node = {
        "artifact_id": artifact.id,
        "type": artifact.type,
        "uri": _rel(store.root, artifact.uri),
        "state": state,
        "run_id": artifact.properties.get("run_id"),
        "fingerprint": (artifact.properties.get("fingerprint") or "")[:16],
    }
    if artifact.id in seen:
        return {**node, "see_above": True}
    seen.add(artifact.id)
    uses = store.uses(artifact.id)
    made = [(run, e) for kind, run, e in uses if kind == "output" and e["state"] != "cached"]
    node["reused_by"] = [
        {"run_id": run, "stage": e["stage"], "execution_id": e["execution_id"]}
        for kind, run, e in uses
        if kind == "output" and e["state"] == "cached"
    ]
    node["consumed_by"] = [
        {"run_id": run, "stage": e["stage"], "execution_id": e["execution_id"]}
        for kind, run, e in uses
        if kind == "input"
    ]
    if made:
        run, e = made[0]
        node["made_by"] = {
            "stage": e["stage"],
            "execution_id": e["execution_id"],
            "run_id": run,
            "state": e["state"],
            "duration_s": e.get("duration_s"),
            "params": e.get("params"),
        }
        source = (e.get("params") or {}).get("source")
        if isinstance(source, dict):  # a stage that reads external data names it by content
            node["source"] = source
        node["inputs"] = {
            k: lineage(store, a, _state(store, a), seen) for k, a in e["inputs"].items()
        }
    return node


def _state(store: MetadataStore, artifact) -> str:
    found = store.artifact(artifact.id)
    assert found is not None, artifact.id  # it was read from this store
    return found[1]


def lineage_text(node: dict, depth: int = 0, key: str = "") -> str:
    pad = "  " * depth
    label = f"{key}: " if key else ""
    lines = [
        f"{pad}{label}artifact {node['artifact_id']} {node['type']} {node['uri']} "
        f"[{node['state']}]" + (" (see above)" if node.get("see_above") else "")
    ]
    if node.get("see_above"):
        return "\n".join(lines)
    made = node.get("made_by")
    if made:
        took = f", {made['duration_s']:.1f}s" if made.get("duration_s") is not None else ""
        lines.append(
            f"{pad}  made by {made['stage']} (execution {made['execution_id']}) in run "
            f"{made['run_id']}, {made['state']}{took}, fingerprint {node['fingerprint']}"
        )
    if node.get("source"):
        src = node["source"]
        for name, sha in (src.get("files") or {}).items():
            lines.append(f"{pad}  source file {name} sha256 {sha}")
        if src.get("kind") == "tfds":
            lines.append(
                f"{pad}  source tensorflow_datasets {src.get('dataset')} (tfds {src.get('tfds')})"
            )
    reused = sorted({r["run_id"] for r in node.get("reused_by", [])})
    if reused:
        lines.append(f"{pad}  reused from the cache by runs: {', '.join(reused)}")
    consumers = sorted({f"{c['stage']}@{c['run_id']}" for c in node.get("consumed_by", [])})
    if consumers:
        lines.append(f"{pad}  consumed by: {', '.join(consumers)}")
    for k, child in (node.get("inputs") or {}).items():
        lines.append(lineage_text(child, depth + 2, k))
    return "\n".join(lines)


# -- diff ----------------------------------------------------------------------------------


def _flat_config(view: dict) -> dict[str, Any]:
    return {f"{s}.{k}": v for s, table in view["config"].items() for k, v in table.items()}


def diff(a: dict, b: dict, views: Views) -> dict:
    """Config keys that differ, and every metric of either run, side by side."""
    ca, cb = _flat_config(a), _flat_config(b)
    config = {
        k: [ca.get(k), cb.get(k)] for k in sorted(set(ca) | set(cb)) if ca.get(k) != cb.get(k)
    }
    metrics = {}
    for stage in dict.fromkeys([*a["stages"], *b["stages"]]):
        ma = (a["stages"].get(stage) or {}).get("metrics") or {}
        mb = (b["stages"].get(stage) or {}).get("metrics") or {}
        for k in dict.fromkeys([*ma, *mb]):
            metrics[f"{stage}.{k}"] = [ma.get(k), mb.get(k)]
    outcome = {
        "status": [a["status"], b["status"]],
        **{
            d.flag: [(a.get(d.key) or {}).get(d.flag), (b.get(d.key) or {}).get(d.flag)]
            for _, d in views.decisions()
        },
    }
    return {
        "runs": [a["run_id"], b["run_id"]],
        "outcome": outcome,
        "config": config,
        "metrics": metrics,
    }


def diff_text(d: dict) -> str:
    a, b = d["runs"]
    width = max([len(k) for k in [*d["config"], *d["metrics"], *d["outcome"]]] + [10])
    lines = [f"{'':<{width}}  {a:>24}  {b:>24}  change"]

    def row(k, va, vb):
        change = ""
        if (
            isinstance(va, (int, float))
            and isinstance(vb, (int, float))
            and va != vb
            and not isinstance(va, bool)
        ):
            change = f"{vb - va:+.4g}" + (f" ({(vb - va) / abs(va):+.1%})" if va else "")
        lines.append(f"{k:<{width}}  {_cell(va):>24}  {_cell(vb):>24}  {change}")

    for k, (va, vb) in d["outcome"].items():
        row(k, va, vb)
    lines.append("config (keys that differ):" if d["config"] else "config: identical")
    for k, (va, vb) in d["config"].items():
        row(k, va, vb)
    lines.append("metrics:")
    for k, (va, vb) in d["metrics"].items():
        if isinstance(va, (dict, list)) or isinstance(vb, (dict, list)):
            continue  # nested notes and lists: see `show --json`
        row(k, va, vb)
    return "\n".join(lines)


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return _num(v)[:24]
