"""Blocks that learn: a design grown one block at a time while it runs, each further block chosen from what the
blocks before it left open, until the blocks its budget buys have run or every main effect is as precise as asked.

A blind design (`search.space.design`) draws every block at once over every level. Here the first block is drawn so,
then, once every point of the recorded blocks is complete, the effects model is fitted (`analysis.effects`, the
same fit the report prints: main effects and the interactions it names) and the next block is balanced over the
levels of the configurations that could still be the best (`analysis.effects.open_levels`: each one's interval
reaches the highest lower bound, in some dataset × architecture). A block over fewer levels is a smaller block: the
runs go where the answer is still open — the levels near the predicted best, every level of an axis whose effect
is unclear, and the levels an interaction the fit named points to; a level some family could still want stays.
This is sequential experimentation in the sense of response-surface practice (Box & Wilson, JRSS B 13, 1951: a
first design, a fit, the next runs where the fit points) with a balanced, minimum-A2 block as each step; at equal
cost it is compared with the blind design, random subsets, successive halving and Optuna's TPE in
`bench/design.py`.

Each decision is recorded in the study's space before its points run, so a rerun keeps it: a design changes only
by a block being added, never by one being redrawn.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
from optuna.trial import FrozenTrial

from analysis.effects import FamilyEffects, fit_families, open_levels, widest_halfwidth
from analysis.gains import gain_caveats, paired_gains
from search.records.trialtable import trial_table
from search.space.design import configurations, design_factors, extend_design
from search.space.grid import GridSpec


def study_fit(
    spec: GridSpec, complete: pd.DataFrame, top: int = 3, interactions: bool = True
) -> dict[tuple, FamilyEffects]:
    """The effects model of every (dataset, architecture) of a study of `spec` from its `complete` trials (rows of
    `search.records.trialtable.trial_table`), over the grid's design factors, its predicted best chosen among every
    configuration of the grid (`analysis.effects.fit_families`). The report's fit and a learning design's are this
    one."""
    if not len(complete):
        return {}
    whole = spec.with_design(None)
    configs = configurations(whole.points)
    factors = [f.name for f in design_factors(configs)]
    gains = paired_gains(complete, spec.axes, spec.objective.maximize)
    fitted = fit_families(gains, factors, list(configs.values()), top, interactions)
    for family, caveats in gain_caveats(complete, gains).items():
        fitted.setdefault(
            family, FamilyEffects(note="no proxy trial has a matched baseline on its seed")
        ).caveats = caveats
    return fitted


def trials_fit(
    spec: GridSpec, trials: list[FrozenTrial], top: int = 3, interactions: bool = True
) -> dict[tuple, FamilyEffects]:
    """`study_fit` of a study of `spec` from its Optuna `trials` (their complete ones, as a trial table)."""
    frame, _, _ = trial_table(spec, trials)
    return study_fit(spec, frame[frame["state"] == "COMPLETE"] if len(frame) else frame, top, interactions)


def next_design(spec: GridSpec, trials: list[FrozenTrial]) -> tuple[dict | None, str]:
    """The recorded design of `spec` (one that learns, every block complete in `trials`) with its next block, or
    None when it is done; and a line saying which and why."""
    design = spec.design or {}
    decided, planned, precision = len(design["blocks"]), design["planned"], design.get("precision")
    families = trials_fit(spec, trials)
    widest = widest_halfwidth(families)
    reached = f"every main effect within ±{widest:.2f} pp" if widest < float("inf") else "no effects fitted yet"
    if precision is not None and widest <= precision:
        return None, f"design: precision ±{precision:g} pp reached after {decided} blocks ({reached}): done"
    if decided >= planned:
        return None, f"design: the {planned} blocks of budget {design.get('budget')} have run ({reached}): done"
    whole = spec.with_design(None)
    configs = configurations(whole.points)
    focus = open_levels(families, design["factors"])
    grown = extend_design(configs, spec.fixed, design, decided + 1, design["seed"], spec.seeds, focus)
    if len(grown["blocks"]) == decided:
        return None, f"design: every configuration of the grid has run ({reached}): done"
    grown = {**design, "blocks": grown["blocks"]}
    left = grown["blocks"][-1].get("focus") or {}
    aimed = (
        "; ".join(f"{k} at {', '.join(map(str, v))}" for k, v in left.items())
        if left
        else "every level (none ruled out yet)"
    )
    return grown, f"design: block {decided + 1} of at most {planned} ({reached} so far), over {aimed}"


def run_learning(spec: GridSpec, run: Callable[[GridSpec], int], trials: Callable[[], list[FrozenTrial]]) -> int:
    """Run a design that learns: `run` the recorded blocks (a `search run` of `spec`; its exit code), then, while
    they all completed and `next_design` adds one, record it and run again. Returns the last run's code."""
    while True:
        code = run(spec)
        if code != 0:
            return code
        design, line = next_design(spec, trials())
        print(line)
        if design is None:
            return code
        spec = spec.with_design(design)
