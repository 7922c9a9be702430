"""plotly figures of a study: pure functions from the tables of `search.records.trialtable` to `go.Figure`s.

Every figure uses the same look: a white, print-friendly template, human axis titles, one fixed colour per kind of
configuration (baseline, control, proxy attention), per CAM method and per architecture, numeric axes in numeric
order and whole epochs. Each returns None when the study has nothing to draw for it.
"""

from __future__ import annotations

import optuna
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState

from results.present import header
from results.tables import axis_trials, memory_metric
from search.records import record
from search.records.trialtable import StudyData
from trainer.config import PROXY_METHODS
from trainer.prefix import PointKind

TEMPLATE = "plotly_white"
KIND_COLOURS = {"baseline": "#4c78a8", "control": "#54a24b", "proxy": "#f58518"}
KIND_NAMES = {"baseline": "baseline", "control": "control", "proxy": "proxy attention"}
PALETTE = px.colors.qualitative.D3 + px.colors.qualitative.Set2
CAM_COLOURS = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(PROXY_METHODS)}
MIN_IMPORTANCE_TRIALS, MIN_IMPORTANCE_SEEDS = 30, 3


def _style(fig: go.Figure, title: str, x: str | None = None, y: str | None = None) -> go.Figure:
    return fig.update_layout(
        template=TEMPLATE,
        title=title,
        xaxis_title=x,
        yaxis_title=y,
        font={"family": "sans-serif", "size": 13},
        legend_title_text="",
    )


def _order(values: pd.Series) -> list:
    """Distinct values, numbers in numeric order."""
    distinct = list(values.dropna().unique())
    try:
        return sorted(distinct, key=float)
    except (TypeError, ValueError):
        return sorted(distinct, key=str)


def accuracy_by_axis(data: StudyData, axis: str) -> go.Figure | None:
    """Test accuracy for each value of `axis`: a box per value and kind, with every seed's point."""
    trials = axis_trials(data.complete, axis).copy()
    trials = trials[trials[f"setting_{axis}"].notna()]
    if trials.empty:
        return None
    order = _order(trials[f"setting_{axis}"])
    trials["kind"] = trials["kind"].map(KIND_NAMES)
    trials[axis] = trials[f"setting_{axis}"].astype(str)
    fig = px.box(
        trials,
        x=axis,
        y="test_accuracy",
        color="kind",
        points="all",
        hover_data=["number", "seed", "label"],
        color_discrete_map={KIND_NAMES[k]: c for k, c in KIND_COLOURS.items()},
        category_orders={axis: [str(v) for v in order], "kind": list(KIND_NAMES.values())},
    )
    return _style(fig.update_layout(boxmode="group"), f"Test accuracy by {header(axis)}", header(axis), "test accuracy")


def parallel_coordinates(data: StudyData) -> go.Figure | None:
    """Every axis that varies among the proxy trials, against test accuracy."""
    trials = data.proxy_trials
    axes = [a for a in data.axes if f"setting_{a}" in trials and trials[f"setting_{a}"].nunique(dropna=True) > 1]
    if trials.empty or not axes:
        return None
    dimensions = []
    for axis in axes:
        values = trials[f"setting_{axis}"]
        order = _order(values)
        codes = values.map({v: i for i, v in enumerate(order)})
        dimensions.append(
            {
                "label": header(axis),
                "values": codes,
                "tickvals": list(range(len(order))),
                "ticktext": [f"{v:.3g}" if isinstance(v, float) else str(v) for v in order],
            }
        )
    dimensions.append({"label": "test accuracy", "values": trials["test_accuracy"], "tickformat": ".3f"})
    fig = go.Figure(
        go.Parcoords(
            line={"color": trials["test_accuracy"], "colorscale": "Viridis", "showscale": True}, dimensions=dimensions
        )
    )
    # Room for the tick labels of the outer axes, which plotly centres on the axis: half the longest each side.
    longest = max((len(t) for d in dimensions for t in d.get("ticktext", [])), default=0)
    side = max(80, 4 * longest + 20)
    fig.update_layout(margin={"l": side, "r": side, "t": 110})
    return _style(fig, "Proxy-attention settings against test accuracy (constant settings left out)")


def importances(trials: list[FrozenTrial], data: StudyData) -> go.Figure | None:
    """Optuna's parameter importances for the objective over the proxy trials' axes, with n and a caveat when the
    study is too small for them to mean much."""
    proxy = data.proxy_trials
    params = [
        a
        for a in data.axes
        if f"setting_{a}" in proxy and proxy[f"setting_{a}"].notna().all() and proxy[f"setting_{a}"].nunique() > 1
    ]
    if len(proxy) < 4 or not params:
        return None
    # In memory: the evaluator reads the study again and again.
    study = optuna.create_study(direction=optuna.study.StudyDirection[data.spec.objective.direction.upper()])
    study.add_trials([t for t in trials if t.state == TrialState.COMPLETE and record.kind_of(t) == PointKind.PROXY])
    try:
        scores = optuna.importance.get_param_importances(study, params=params)
    except (RuntimeError, ValueError):  # too few distinct trials for the evaluator
        return None
    seeds = proxy["seed"].nunique()
    caveat = (
        ""
        if len(proxy) >= MIN_IMPORTANCE_TRIALS and seeds >= MIN_IMPORTANCE_SEEDS
        else f"<br><sub>few trials: read as a hint, not a finding (needs ≥ {MIN_IMPORTANCE_TRIALS} trials, ≥ "
        f"{MIN_IMPORTANCE_SEEDS} seeds)</sub>"
    )
    fig = go.Figure(
        go.Bar(
            x=list(scores.values()), y=[header(k) for k in scores], orientation="h", marker_color=KIND_COLOURS["proxy"]
        )
    )
    fig.update_layout(yaxis={"autorange": "reversed"})
    return _style(
        fig,
        f"Parameter importances for {header(data.spec.objective.metric)} (fANOVA; n = {len(proxy)} trials, "
        f"{seeds} seeds){caveat}",
        "importance",
    )


def learning_curves(curves: pd.DataFrame, numbers: list[int]) -> go.Figure | None:
    """Validation accuracy per epoch of the given trials, with each proxy step marked."""
    if curves.empty:
        return None
    fig = go.Figure()
    for number in numbers:
        rows = curves[curves["number"] == number]
        if rows.empty:
            continue
        kind = rows["kind"].iloc[0]
        fig.add_trace(
            go.Scatter(
                x=rows["epoch"],
                y=rows["val_accuracy"],
                mode="lines+markers",
                name=f"trial {number} ({rows['label'].iloc[0]}, {KIND_NAMES.get(kind, kind)})",
                line={"color": KIND_COLOURS.get(kind)},
            )
        )
        for epoch in rows[rows["proxy_images"].notna()]["epoch"] - 0.5:
            fig.add_vline(x=epoch, line_dash="dot", line_color="grey")
    fig.update_xaxes(dtick=1).update_layout(legend={"orientation": "h", "y": -0.3})
    return _style(fig, "Validation accuracy per epoch (dotted: proxy steps)", "epoch", "validation accuracy")


def halving_curves(curves: pd.DataFrame, data: StudyData) -> go.Figure | None:
    """The objective of every proxy trial by epoch, the halving rungs, and where each stopped trial stopped."""
    halving = data.spec.halving
    if not halving or curves.empty:
        return None
    metric = data.spec.objective.metric
    column = "val_loss" if metric == "val_loss" else "val_accuracy"
    fig = go.Figure()
    for number, rows in curves[curves["kind"] == PointKind.PROXY].groupby("number"):
        stopped = rows["state"].iloc[0] == "PRUNED"
        fig.add_trace(
            go.Scatter(
                x=rows["epoch"],
                y=rows[column],
                mode="lines",
                showlegend=False,
                line={"color": "#bbbbbb" if stopped else KIND_COLOURS["proxy"], "width": 1},
                hovertext=f"trial {number} ({rows['label'].iloc[0]})",
            )
        )
        if stopped:
            last = rows.iloc[-1]
            fig.add_trace(
                go.Scatter(
                    x=[last["epoch"]],
                    y=[last[column]],
                    mode="markers",
                    showlegend=False,
                    marker={"symbol": "x", "color": "#d62728", "size": 8},
                )
            )
    for rung in halving["rungs"]:
        fig.add_vline(x=rung, line_dash="dash", line_color="black", annotation_text=f"rung {rung}")
    fig.update_xaxes(dtick=1)
    return _style(
        fig,
        f"Successive halving: {header(column)} by epoch (grey and ×: stopped; orange: went on)",
        "epoch",
        header(column),
    )


def cost(data: StudyData) -> list[go.Figure]:
    """Test accuracy against training seconds and against peak memory."""
    trials = data.complete.copy()
    if trials.empty:
        return []
    trials["kind"] = trials["kind"].map(KIND_NAMES)
    figures = []
    for x in ("train_seconds", memory_metric(trials)):
        if x in trials and trials[x].notna().any():
            fig = px.scatter(
                trials,
                x=x,
                y="test_accuracy",
                color="kind",
                hover_data=["number", "label"],
                color_discrete_map={KIND_NAMES[k]: c for k, c in KIND_COLOURS.items()},
            )
            figures.append(_style(fig, f"Test accuracy against {header(x)}", header(x), "test accuracy"))
    return figures


def proxy_counts(curves: pd.DataFrame) -> go.Figure | None:
    """Per proxy step, proxies made and proxies identical to their source."""
    if curves.empty or "proxy_images" not in curves:
        return None
    steps = curves[curves["proxy_images"].notna()].copy()
    if steps.empty:
        return None
    steps["proxy step"] = steps.groupby("number").cumcount()
    long = steps.melt(
        id_vars=["number", "label", "proxy step"],
        value_vars=["proxy_images", "proxy_unchanged"],
        var_name="what",
        value_name="images",
    )
    long["what"] = long["what"].map({"proxy_images": "proxies in training", "proxy_unchanged": "unchanged by the map"})
    fig = px.box(
        long,
        x="proxy step",
        y="images",
        color="what",
        points="all",
        hover_data=["number", "label"],
        color_discrete_map={"proxies in training": KIND_COLOURS["proxy"], "unchanged by the map": "#999999"},
    )
    fig.update_xaxes(dtick=1)
    return _style(fig, "Proxy images per proxy step", "proxy step", "images")
