"""The claim a thesis makes, one per configuration: "better than its baseline *and* than both of its matched
controls", with its error controlled across every configuration of the study.

A configuration's paired comparisons (`results.tables.paired_comparisons`) each test one null. The claim needs all
of them: it is an intersection–union test (Berger, "Multiparameter hypothesis testing and acceptance sampling",
Technometrics 24, 1982), whose p-value is the largest of the one-sided p-values of its parts, at level α with no
correction among them. Across configurations the claims are one family, for the whole study: Holm's step-down
adjustment over the configurations' claim p-values keeps the chance of even one false claim anywhere in the study
at α (Holm 1979). A family per (dataset, architecture) would let each of them spend α again (with 5 architectures ×
top 5 and a null effect, a false "better" against some baseline came out in 12 % of simulated studies). Pure
functions of the verdicts table.
"""

from __future__ import annotations

import math

import pandas as pd

from analysis import stats
from trainer.config import MATCHED_CONTROLS

CLAIM = "better than its baseline and both matched controls"
PARTS = ("baseline", *(f"control ({c})" for c in MATCHED_CONTROLS))


def one_sided(mean_diff: float, two_sided: float) -> float:
    """The one-sided p-value of "the configuration is better" from the paired t-test's two-sided one."""
    if math.isnan(two_sided):
        return math.nan
    return two_sided / 2 if mean_diff > 0 else 1 - two_sided / 2


def claims(verdicts: pd.DataFrame, correction: str = "holm", alpha: float = stats.ALPHA) -> pd.DataFrame:
    """One row per configuration: the one-sided p against each part of the claim (its baselines, the worst of them;
    each matched control), the claim's p (the largest), the same adjusted across every configuration of the study
    by `correction`, and the claim's verdict with why when there is none."""
    if not len(verdicts):
        return pd.DataFrame()
    rows = []
    for (dataset, arch, config), rows_of in verdicts.groupby(["dataset", "architecture", "configuration"], sort=True):
        row: dict = {"dataset": dataset, "architecture": arch, "configuration": config}
        missing, parts = [], []
        for part in PARTS:
            found = rows_of[rows_of["reference_kind"] == part]
            if not len(found):
                missing.append(part)
                continue
            p = max(one_sided(r.mean_diff, r.t_p) for r in found.itertuples())  # every baseline it matches
            row[f"p {part}"] = p
            row[f"diff {part}"] = float(found["mean_diff"].min())
            parts.append((p, found))
        row["_spread"] = max((float(f["sd_diff"].max()) for _, f in parts), default=math.nan)
        row["n"] = int(rows_of["n"].min())
        enough = not missing and row["n"] >= stats.MIN_PAIRS
        row["p_claim"] = max((p for p, _ in parts), default=math.nan) if enough else math.nan
        row["_why"] = (
            f"no verdict (no {', '.join(missing)})"
            if missing
            else "no verdict (fewer than 3 seeds)"
            if row["n"] < stats.MIN_PAIRS
            else "no verdict (no variance)"
            if math.isnan(row["p_claim"])
            else ""
        )
        rows.append(row)
    table = pd.DataFrame(rows)
    table["p_adjusted"] = stats.adjust(table["p_claim"].tolist(), correction)
    size = int(table["p_claim"].notna().sum())
    table["claims_in_family"] = size
    # The smallest gain over every part the claim detects with 80 % power (at Holm's first step, two-sided: a
    # bound): a gain below it going unclaimed is no evidence of no gain.
    table["mde_pp"] = [
        100 * stats.minimum_detectable_effect(spread, n, size, correction, alpha)
        for spread, n in zip(table["_spread"], table["n"], strict=True)
    ]
    table["verdict"] = [
        why or (CLAIM if p < alpha else "not shown")
        for why, p in zip(table["_why"], table["p_adjusted"].fillna(1.0), strict=True)
    ]
    return table.drop(columns=["_why", "_spread"])


def claim_sentences(table: pd.DataFrame, correction: str, alpha: float = stats.ALPHA) -> list[str]:
    """Per (dataset, architecture), one plain sentence of what may be claimed and at which level."""
    if not len(table):
        return []
    size = int(table["claims_in_family"].iloc[0])
    level = f"{correction} over the {size} configurations of the study, familywise error ≤ {alpha:g}"
    out = []
    for (dataset, arch), group in table.groupby(["dataset", "architecture"], sort=True):
        shown = group[group["verdict"] == CLAIM]["configuration"].tolist()
        if shown:
            line = f"{dataset} × {arch}: {', '.join(shown)} {CLAIM} ({level})."
        else:
            line = f"{dataset} × {arch}: no configuration is shown {CLAIM} ({level})."
        unshown = group[group["verdict"] != CLAIM]["mde_pp"].dropna()
        if len(unshown):
            low, high = unshown.min(), unshown.max()
            bound = f"{low:.1f} pp" if round(low, 1) == round(high, 1) else f"{low:.1f}–{high:.1f} pp"
            line += f" For the others, gains below {bound} are not ruled out (the claim's 80 % power)."
        out.append(line)
    return out
