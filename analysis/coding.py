"""The effects model's design matrices: a design's factors as model columns (`factor_table`), the main-effects
model (`model_formula`, sum-coded, seeds as blocks) and what precision a design buys before it runs
(`expected_halfwidth`). Pure functions of settings; `search` (which plans designs) and `results` (which fits
them) both import them from here, below both.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


def factor_table(settings: list[dict[str, Any]], names: list[str]) -> pd.DataFrame:
    """The design's factors of each configuration as text columns, ready for a model. A setting some
    configurations cannot feel (`clear_every_step` under one proxy step) is nested in the axis that decides it:
    one column `proxy_steps × clear_every_step` whose levels say both, as its effect exists only there."""
    import pandas as pd  # here, not at the top: every `search` command imports this module, few need pandas (1 s)

    frame = pd.DataFrame([{n: s.get(n) for n in names} for s in settings], columns=names).astype(object)
    columns: dict[str, pd.Series] = {}
    nested: dict[str, str] = {}
    for name in names:
        missing = frame[name].isna()
        if not missing.any():
            continue
        for decider in names:
            decides = decider != name and not frame[decider].isna().any()
            if decides and (missing.groupby(frame[decider].astype(str)).nunique() == 1).all():
                nested[name] = decider
                break
    for name in names:
        if name in nested:
            continue
        column = frame[name].map(lambda v: "n/a" if v is None or v != v else str(v))
        title = name
        for inner, decider in nested.items():
            if decider == name:
                title += f" × {inner}"
                column = column + frame[inner].map(
                    lambda v, inner=inner: "" if v is None or v != v else f" · {inner}={v}"
                )
        columns[title] = column
    return pd.DataFrame(columns)


def model_formula(columns: list[str], response: str, seeds: int) -> str:
    """The main-effects model of a design: each factor sum-coded (its levels' effects are departures from the
    mean over levels), and each seed a block effect when there are several."""
    terms = [f'C(Q("{c}"), Sum)' for c in columns] + (["C(seed, Sum)"] if seeds > 1 else [])
    return f'Q("{response}") ~ ' + " + ".join(terms)


def expected_halfwidth(design: dict, configs: dict[str, dict[str, Any]], spread: float) -> float:
    """The widest 95% half-width of a level's main effect the design's configurations allow (ordinary least
    squares of `model_formula`'s model, seeds as blocks), when a paired gain varies by `spread` between seeds:
    σ·t·√((XᵀX)⁻¹) at its widest. (Coded here with numpy: the dry-run must not wait for patsy and statsmodels.)"""
    from scipy.special import stdtrit

    rows = [(configs[k], b["seed"]) for b in design["blocks"] for k in b["configs"] if k in configs]
    table = factor_table([r for r, _ in rows], list(design["factors"]))
    table["seed"] = [str(s) for _, s in rows]
    columns = [np.ones(len(table))]
    for name in table.columns:
        levels = sorted(set(table[name]))
        for level in levels[:-1]:  # sum coding: +1 at the level, -1 at the last one
            columns.append((table[name] == level).to_numpy(float) - (table[name] == levels[-1]).to_numpy(float))
    matrix = np.stack(columns, axis=1)
    dof = len(matrix) - np.linalg.matrix_rank(matrix)
    if dof < 1:
        return math.inf
    variances = np.diag(np.linalg.pinv(matrix.T @ matrix))[1:]
    return float(stdtrit(dof, 0.975) * spread * math.sqrt(variances.max()))
