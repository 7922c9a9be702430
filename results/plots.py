"""plotly figures of a study: pure functions from the tables of `results.load` to `go.Figure`s.

Each returns None when the study has nothing to draw for it (e.g. importances need several complete trials).
"""

from __future__ import annotations

import optuna
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState

from results.load import StudyData
from results.tables import memory_metric
from search.space import CAM_AXES


def _kind(trials: pd.DataFrame) -> pd.Series:
    return trials["baseline"].map(lambda b: "baseline" if b is True else "proxy attention")


def accuracy_by_axis(data: StudyData, axis: str) -> go.Figure | None:
    """Test accuracy for each value of `axis`: a box per value with every seed's point."""
    trials = data.complete.copy()
    if axis in CAM_AXES:
        trials = trials[trials["baseline"] != True]  # noqa: E712  (a baseline has no CAM setting)
    if trials.empty:
        return None
    trials["kind"] = _kind(trials)
    trials[axis] = trials[f"setting_{axis}"].astype(str)
    fig = px.box(trials, x=axis, y="test_accuracy", color="kind", points="all", hover_data=["number", "seed"],
                 title=f"Test accuracy by {axis}")
    return fig.update_layout(boxmode="group")


def parallel_coordinates(data: StudyData) -> go.Figure | None:
    """Every axis of the proxy trials against test accuracy."""
    trials = data.complete[data.complete["baseline"] != True]  # noqa: E712
    axes = [a for a in data.axes if f"setting_{a}" in trials]
    if trials.empty or not axes:
        return None
    dimensions = []
    for axis in axes:
        values = trials[f"setting_{axis}"].astype(str)
        labels = sorted(values.unique())
        codes = values.map({v: i for i, v in enumerate(labels)})
        dimensions.append({"label": axis, "values": codes, "tickvals": list(range(len(labels))), "ticktext": labels})
    dimensions.append({"label": "test_accuracy", "values": trials["test_accuracy"]})
    fig = go.Figure(go.Parcoords(line={"color": trials["test_accuracy"], "colorscale": "Viridis",
                                       "showscale": True}, dimensions=dimensions))
    return fig.update_layout(title="Proxy-attention settings against test accuracy")


def importances(trials: list[FrozenTrial], data: StudyData) -> go.Figure | None:
    """Optuna's parameter importances for the objective, over the proxy trials' axes (`trials` are the study's)."""
    proxy = data.complete[data.complete["baseline"] != True]  # noqa: E712
    params = [a for a in data.axes if a in proxy and proxy[a].notna().all() and proxy[a].nunique() > 1]
    if len(proxy) < 4 or not params:
        return None
    # An in-memory copy of the finished trials: the evaluator would otherwise read the whole study again.
    study = optuna.create_study(direction=data.spec.objective[1])
    study.add_trials([t for t in trials if t.state == TrialState.COMPLETE])
    try:
        scores = optuna.importance.get_param_importances(study, params=params)
    except (RuntimeError, ValueError):  # too few distinct trials for the evaluator
        return None
    fig = go.Figure(go.Bar(x=list(scores.values()), y=list(scores.keys()), orientation="h"))
    return fig.update_layout(title=f"Parameter importances for {data.spec.objective[0]} (Optuna, fANOVA)",
                             yaxis={"autorange": "reversed"})


def learning_curves(curves: pd.DataFrame, data: StudyData, numbers: list[int]) -> go.Figure | None:
    """Validation accuracy per epoch of the given trials, with each proxy step marked."""
    if curves.empty:
        return None
    fig = go.Figure()
    for number in numbers:
        rows = curves[curves["number"] == number]
        if rows.empty:
            continue
        label = f"trial {number}: {rows['config'].iloc[0]}"
        fig.add_trace(go.Scatter(x=rows["epoch"], y=rows["val_accuracy"], mode="lines+markers", name=label))
        steps = rows[rows["proxy_images"] > 0]["epoch"] - 0.5
        for epoch in steps:
            fig.add_vline(x=epoch, line_dash="dot", line_color="grey")
    return fig.update_layout(title="Validation accuracy per epoch (dotted: proxy steps)", xaxis_title="epoch",
                             yaxis_title="val_accuracy", legend={"orientation": "h", "y": -0.3})


def cost(data: StudyData) -> list[go.Figure]:
    """Test accuracy against training seconds and against peak memory."""
    trials = data.complete.copy()
    if trials.empty:
        return []
    trials["kind"] = _kind(trials)
    figures = []
    for x in ("train_seconds", memory_metric(trials)):
        if x in trials and trials[x].notna().any():
            figures.append(px.scatter(trials, x=x, y="test_accuracy", color="kind", hover_data=["number", "config"],
                                      title=f"Test accuracy against {x}"))
    return figures


def proxy_counts(curves: pd.DataFrame) -> go.Figure | None:
    """How many proxy images each proxy step made, over the trials."""
    if curves.empty or "proxy_images" not in curves:
        return None
    steps = curves[curves["proxy_images"] > 0].copy()
    if steps.empty:
        return None
    steps["proxy step"] = steps.groupby("number").cumcount()
    fig = px.box(steps, x="proxy step", y="proxy_images", points="all", hover_data=["number", "config"],
                 title="Proxy images made per proxy step")
    return fig

