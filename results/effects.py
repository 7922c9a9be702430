"""The effects model of a study, as the report says it: `analysis.effects` fitted to every (dataset,
architecture) of a study's paired gains (`study_effects`), flat tables of it, a plain sentence per family, and the
model's picks for `search confirm --select model`.
"""

from __future__ import annotations

import math

import pandas as pd

from analysis.effects import FamilyEffects
from search.planning.adaptive import study_fit
from search.records.trialtable import StudyData
from search.space.grid import GridSpec


def study_effects(data: StudyData, top: int = 3, interactions: bool = True) -> dict[tuple, FamilyEffects]:
    """The effects model of every (dataset, architecture) of a study (`search.planning.adaptive.study_fit`): over the
    design's factors (or the grid's when it ran whole), the predicted best chosen among every configuration."""
    fitted = study_fit(data.spec, data.complete, top, interactions)
    if data.foreign:  # trials no point of the grid made, or a non-finite objective: `search.records.tally.of_the_grid`
        for family in fitted.values():
            family.caveats.append(f"{len(data.foreign)} trials of the study left out (not a try of a grid point)")
    return fitted


def effects_tables(effects: dict[tuple, FamilyEffects]) -> dict[str, pd.DataFrame]:
    """The analysis as flat tables, each row led by its dataset and architecture: `effects` (each level's effect
    and interval, pp), `effect_axes` (each factor's test and share), `interactions` (the two-way ones the runs
    carry), `predicted_best`."""
    levels, axes, pairs, best = [], [], [], []
    for (dataset, arch), family in effects.items():
        lead = {"dataset": dataset, "architecture": arch}
        levels += [{**lead, **row} for row in family.levels.to_dict("records")]
        axes += [{**lead, **row} for row in family.axes.to_dict("records")]
        supported = family.interactions[family.interactions["supported"]] if len(family.interactions) else []
        pairs += [{**lead, **row} for row in pd.DataFrame(supported).to_dict("records")]
        for rank, entry in enumerate(family.best, start=1):
            settings = ", ".join(f"{k}={v}" for k, v in sorted(entry["settings"].items()))
            best.append(
                {
                    **lead,
                    "rank": rank,
                    "configuration": settings,
                    "predicted_pp": entry["predicted_pp"],
                    "low_pp": entry["low_pp"],
                    "high_pp": entry["high_pp"],
                    "p_best": entry["p_best"],
                }
            )
    return {
        "effects": pd.DataFrame(levels),
        "effect_axes": pd.DataFrame(axes),
        "interactions": pd.DataFrame(pairs),
        "predicted_best": pd.DataFrame(best),
    }


def effect_sentences(effects: dict[tuple, FamilyEffects], spec: GridSpec) -> list[str]:
    """What the effects show, a plain sentence per (dataset, architecture): which axes move the gain and their
    best level, what is not ruled out for the others, and the predicted best configuration to confirm."""
    design = spec.design
    what = (
        f"a designed fraction ({len({k for b in design['blocks'] for k in b['configs']})} configurations in "
        f"{len(design['blocks'])} blocks)"
        if design and design.get("blocks")
        else "the grid as run"
    )
    lines = []
    for (dataset, arch), family in effects.items():
        caveat = f" Caveats: {'; '.join(family.caveats)}." if family.caveats else ""
        if family.note:
            lines.append(f"{dataset} × {arch}: no effects fitted ({family.note}).{caveat}")
            continue
        named = family.axes[family.axes["named"]]
        said = []
        for row in named.itertuples():
            top = family.levels[family.levels["factor"] == row.factor].sort_values("effect_pp").iloc[-1]
            said.append(
                f"{row.factor} (p = {row.p_holm:.2g}, {row.share:.0%} of the variance; best {top.level}: "
                f"{top.effect_pp:+.2f} pp [{top.low_pp:+.2f}, {top.high_pp:+.2f}] against the mean)"
            )
        others = family.levels[~family.levels["factor"].isin(named["factor"])]
        bound = max(others["high_pp"].abs().max(), others["low_pp"].abs().max()) if len(others) else math.nan
        rest = (
            f"; no effect of {', '.join(sorted(set(others['factor'])))} is shown (level effects up to ±{bound:.2f} pp "
            "are not ruled out)"
            if len(others)
            else ""
        )
        moves = f"{' and '.join(said)} move the gain" if said else "no axis is shown to move the gain"
        best = family.best[0] if family.best else None
        predicted = (
            f" Predicted best: {', '.join(f'{k}={v}' for k, v in sorted(best['settings'].items()))} at "
            f"{best['predicted_pp']:+.2f} pp [{best['low_pp']:+.2f}, {best['high_pp']:+.2f}] over the matched baseline"
            f" (an interval that holds after taking the best of every prediction; best in {best['p_best']:.0%} of "
            "the fit's draws; biased upward by the choice) — the confirmation on fresh seeds, not this prediction, is "
            "the result (search confirm --select model)."
            if best
            else ""
        )
        shifting = family.axes[family.axes["reference_changes"].astype(bool)]["factor"].tolist()
        reference = (
            f" {', '.join(shifting)}: its levels are compared with different baselines (budget-matched), so its "
            "effect is also a difference between those baselines, and its interval includes their own noise."
            if shifting
            else ""
        )
        lines.append(
            f"{dataset} × {arch}, from {what}, {family.runs} paired gains (exploratory, Holm over every axis of the "
            f"study): {moves}{rest}.{reference}{predicted}{caveat}"
        )
    return lines
