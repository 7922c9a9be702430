"""`search report`: the tables (CSV, Markdown, LaTeX) and one self-contained HTML report of plotly figures.

The HTML inlines plotly.js once, so it opens with no network. Sections: the grid and what ran, what failed and why,
the verdict table, the best configurations, the figures, then the per-axis tables.
"""

from __future__ import annotations

import html
import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import optuna
import pandas as pd
import plotly.graph_objects as go
from optuna.trial import FrozenTrial
from plotly.offline import get_plotlyjs

from results import plots, tables
from results.load import StudyData, load_curves, load_study_data, workdir_of
from trainer.files import atomic_write_bytes


@dataclass
class Report:
    """What `build_report` made."""

    html: Path
    tables: dict[str, pd.DataFrame]
    figures: list[tuple[str, go.Figure]]
    notes: list[str] = field(default_factory=list)


def build_report(study: optuna.Study, trials: list[FrozenTrial], out_dir: Path, to_dashboard: bool = False,
                 say: Callable[[str], None] = print) -> Report:
    """Write the tables and `report.html` of `study` (whose trials are `trials`) under `out_dir`, and push the
    figures to optuna-dashboard when `to_dashboard`; return what was written."""
    data = load_study_data(study, trials)
    notes: list[str] = []
    made = {"verdicts": tables.paired_comparisons(data), "best_configurations": tables.best_configurations(data),
            "by_dataset_architecture": tables.dataset_architecture_table(data), **tables.axis_tables(data)}
    for name, table in made.items():
        tables.write_table(table, out_dir / "tables", name)
    figures = _figures(trials, data, notes)
    _static_images(figures, out_dir / "figures", notes)
    if to_dashboard:
        from optuna_dashboard import save_plotly_graph_object

        for title, fig in figures:
            save_plotly_graph_object(study, fig, graph_object_id=_slug(title))
        notes.append(f"{len(figures)} figures saved to optuna-dashboard")
    path = out_dir / "report.html"
    atomic_write_bytes(path, _html(data, made, figures, notes).encode())
    for note in notes:
        say(note)
    return Report(path, made, figures, notes)


def _figures(trials: list[FrozenTrial], data: StudyData, notes: list[str]) -> list[tuple[str, go.Figure]]:
    figures: list[tuple[str, go.Figure | None]] = [(f"by {a}", plots.accuracy_by_axis(data, a)) for a in data.axes]
    figures.append(("parallel coordinates", plots.parallel_coordinates(data)))
    figures.append(("importances", plots.importances(trials, data)))
    picked = _best_pair(data)
    curves = load_curves(data)
    figures.append(("learning curves", plots.learning_curves(curves, data, [n for n in picked if n is not None])))
    figures += [(f"cost {i}", fig) for i, fig in enumerate(plots.cost(data))]
    figures.append(("proxy images per step", plots.proxy_counts(curves)))
    if all(n is not None for n in picked):
        baseline_dir, proxy_dir = (workdir_of(data, data.complete[data.complete["number"] == n].iloc[0])
                                   for n in picked)
        try:
            from results.visual import cam_comparison  # loads torch: only when there is something to compare

            figures.append(("CAMs of two trained models", cam_comparison(baseline_dir, proxy_dir)))
        except (OSError, KeyError) as exc:  # checkpoints on another node, or removed
            notes.append(f"CAM comparison skipped: {exc}")
    else:
        notes.append("CAM comparison skipped: it needs a complete baseline and a complete proxy trial")
    skipped = [title for title, fig in figures if fig is None]
    if skipped:
        notes.append(f"not enough data for: {', '.join(skipped)}")
    return [(title, fig) for title, fig in figures if fig is not None]


def _best_pair(data: StudyData) -> tuple[int | None, int | None]:
    """The best baseline trial and the best proxy trial by validation accuracy, the baseline on the proxy's
    dataset, architecture and seed when there is one."""
    complete = data.complete
    proxies = complete[complete["baseline"] != True].sort_values("val_accuracy", ascending=False)  # noqa: E712
    baselines = complete[complete["baseline"] == True].sort_values("val_accuracy", ascending=False)  # noqa: E712
    if proxies.empty or baselines.empty:
        return None, None
    best = proxies.iloc[0]
    keys = tables.pairing_columns(data) + ["seed"]
    same = baselines[(baselines[keys] == best[keys]).all(axis=1)]
    baseline = (same if len(same) else baselines).iloc[0]
    return int(baseline["number"]), int(best["number"])


def _static_images(figures: list[tuple[str, go.Figure]], folder: Path, notes: list[str]) -> None:
    if importlib.util.find_spec("kaleido") is None:
        notes.append("PNG/SVG figures skipped: no static exporter (pip install kaleido to get them)")
        return
    folder.mkdir(parents=True, exist_ok=True)
    for title, fig in figures:
        for ext in ("png", "svg"):
            fig.write_image(folder / f"{_slug(title)}.{ext}")


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def _table_html(table: pd.DataFrame) -> str:
    if table.empty:
        return "<p><em>nothing to show</em></p>"
    return table.to_html(index=False, na_rep="–", float_format=lambda v: f"{v:.4f}", border=0, classes="table")


def _html(data: StudyData, made: dict[str, pd.DataFrame], figures: list[tuple[str, go.Figure]],
          notes: list[str]) -> str:
    trials = data.trials
    states = trials["state"].value_counts().to_dict() if len(trials) else {}
    failed = trials[trials["state"] == "FAIL"][["number", "config", "attempt", "fail_reason"]] if len(trials) \
        else pd.DataFrame()
    metric, direction = data.spec.objective
    parts = [
        f"<h1>Study {html.escape(data.name)}</h1>",
        "<h2>The grid and what ran</h2>",
        f"<p>{len(data.spec.points)} points ({data.spec.data['repeats']} seeds each); objective: {direction} "
        f"{html.escape(metric)}. Trials: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())) + ".</p>",
        f"<p>Axes: {html.escape(', '.join(data.axes))}. Fixed: <code>{html.escape(str(data.spec.data['fixed']))}"
        "</code></p>",
        "<h2>What failed and why</h2>", _table_html(failed),
        "<h2>Verdicts: each proxy configuration against its baseline (paired by seed, test accuracy)</h2>",
        "<p>“better” or “worse” only when the 95% CI of the paired differences excludes zero, over at least "
        f"{tables.MIN_PAIRS_FOR_VERDICT} seeds.</p>",
        _table_html(made["verdicts"]),
        "<h2>Best configurations by validation accuracy</h2>", _table_html(made["best_configurations"]),
        "<h2>Figures</h2>",
    ]
    for title, fig in figures:
        parts.append(f"<div class='figure' id='{_slug(title)}'>"
                     + fig.to_html(full_html=False, include_plotlyjs=False) + "</div>")
    parts.append("<h2>Per dataset and architecture</h2>" + _table_html(made["by_dataset_architecture"]))
    for name, table in made.items():
        if name.startswith("by_") and name != "by_dataset_architecture":
            parts.append(f"<h2>By {html.escape(name[3:])}</h2>" + _table_html(table))
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    style = ("body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}"
             "table{border-collapse:collapse;font-size:13px}td,th{padding:2px 8px;border-bottom:1px solid #ddd}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(data.name)} report</title>"
            f"<style>{style}</style><script type='text/javascript'>{get_plotlyjs()}</script></head>"
            f"<body>{''.join(parts)}</body></html>")
