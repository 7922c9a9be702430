"""The methods paragraph of a report, written from what the study recorded and what ran: how many trials of how
many configurations of each kind, on how many seeds, and for a designed fraction its blocks and whether the levels
that ran are balanced on each seed. Never from the space's intentions (`repeats` is not what a designed
configuration ran on)."""

from __future__ import annotations

import pandas as pd

from search.records.trialtable import StudyData
from trainer.prefix import PointKind

KIND_WORDS = {"proxy": "proxy", "baseline": "baseline", "control": "control"}


def methods_text(data: StudyData) -> str:
    """One paragraph: the grid, the completed trials per kind with their configurations and seeds, the design."""
    done = data.complete
    parts = [f"The grid has {len(data.spec.points):,} points; {len(done):,} trials completed"]
    kinds = []
    for kind in PointKind:
        rows = done[done["kind"] == kind] if len(done) else done
        if len(rows):
            seeds = rows.groupby("config")["seed"].nunique()
            each = f"{seeds.min()} seed{'s' if seeds.min() > 1 else ''}" + (
                " each" if seeds.min() == seeds.max() else f" to {seeds.max()}"
            )
            kinds.append(f"{len(rows):,} {KIND_WORDS[kind]} trials of {len(seeds):,} configurations ({each})")
    text = parts[0] + (": " + "; ".join(kinds) if kinds else "") + "."
    design = data.spec.design
    if design and design.get("blocks"):
        text += " " + _design_text(design, done, data)
    return text


def _design_text(design: dict, done: pd.DataFrame, data: StudyData) -> str:
    blocks = design["blocks"]
    distinct = len({key for block in blocks for key in block["configs"]})
    sizes = sorted({len(block["configs"]) for block in blocks}, reverse=True)
    seeds = ", ".join(str(block["seed"]) for block in blocks)
    text = (
        f"A designed fraction: {len(blocks)} block{'s' if len(blocks) > 1 else ''} of "
        f"{' or '.join(map(str, sizes))} proxy configurations per dataset × architecture (block seeds {seeds}; "
        f"{distinct} distinct configurations)."
    )
    uneven = _uneven_levels(done[done["kind"] == PointKind.PROXY] if len(done) else done, data)
    if uneven:
        return text + " Among the proxy trials that completed, levels are not balanced on " + "; ".join(uneven) + "."
    return text + " Among the proxy trials that completed, every setting's levels are equally often on each seed."


def _uneven_levels(proxy: pd.DataFrame, data: StudyData) -> list[str]:
    """Per seed, the axes whose levels did not complete equally often, as `seed 0: threshold 15/12/14`."""
    said = []
    for seed, rows in proxy.groupby("seed") if len(proxy) else []:
        for axis in data.axes:
            column = f"setting_{axis}"
            if column not in rows or rows[column].nunique() < 2:
                continue
            counts = rows.groupby(["setting_dataset", "setting_architecture", column]).size()
            per_family = counts.groupby(level=[0, 1]).nunique()
            if (per_family > 1).any():
                said.append(f"seed {seed}: {axis} " + "/".join(str(n) for n in counts.tolist()))
    return said
