"""The paired gain: what every effect, claim and verdict is made of. A proxy trial's objective minus its matched
baseline's on the same seed (the baselines sharing its settings, those with as many epochs when there are: the
budget-matched ones), in percentage points, better positive; and the covariance gains share when they subtract the
same baseline trial (`reference_cov`). Pure functions of the trial table `search.records.trialtable` reads.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from trainer.prefix import CAM_AXES, PointKind

FAMILY = ("dataset", "architecture")


def matches(reference: pd.Series, config: pd.Series, axes: list[str]) -> bool:
    """Whether `reference` (a baseline or control configuration) is the one to compare `config` with. A matched
    control (`control:` random_location, matched_duplicate) must share every setting, its CAM method included."""
    matched = not is_missing(reference.get("setting_control")) and reference.get("setting_control") != "none"
    for axis in axes:
        mine, theirs = config[f"setting_{axis}"], reference[f"setting_{axis}"]
        if axis == "control" or (axis == "cam_method" and not matched):
            continue
        if reference["kind"] == PointKind.BASELINE and (axis in CAM_AXES or axis == "proxy_steps"):
            continue
        if is_missing(theirs):  # a setting the reference does not have (a control without a mask)
            continue
        if mine != theirs:
            return False
    return True


def is_missing(value: Any) -> bool:
    """Whether a setting is absent from a trial-table cell (None, or pandas' NaN for it)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def paired_gains(complete: pd.DataFrame, axes: list[str], maximize: bool) -> pd.DataFrame:
    """One row per complete proxy trial of `complete` (a study's complete trials, as `search.records.trialtable` reads
    them: kind, label, seed, value, epochs, `setting_<axis>`) that has a matched baseline on its seed: dataset,
    architecture, config (its label), seed, every one of `axes`' settings, `gain` in pp (objective over the
    baseline's, better positive) and `baselines` (the baseline trials it subtracts)."""
    axes = [a for a in sorted(set(axes) | set(FAMILY)) if f"setting_{a}" in complete]
    baselines = complete[complete["kind"] == PointKind.BASELINE]
    first = {label: group.iloc[0] for label, group in baselines.groupby("label", sort=True)}
    sign = 100.0 if maximize else -100.0
    rows = []
    for _, group in complete[complete["kind"] == PointKind.PROXY].groupby("label", sort=True):
        head = group.iloc[0]
        refs = [label for label, ref in first.items() if matches(ref, head, axes)]
        same = [label for label in refs if first[label].get("epochs") == head.get("epochs")] or refs
        matched = baselines[baselines["label"].isin(same)]
        reference = matched.groupby("seed")["value"].mean()
        settings = {a: _plain(head[f"setting_{a}"]) for a in axes}
        key = head["label"]
        for trial in group.itertuples():
            if trial.seed in reference.index and trial.value is not None and not math.isnan(trial.value):
                gain = sign * (float(trial.value) - float(reference[trial.seed]))
                # The baseline trials this gain subtracts: gains sharing one share its noise (`reference_cov`).
                on_seed = tuple(
                    sorted(f"{label}@{trial.seed}" for label in matched[matched["seed"] == trial.seed]["label"])
                )
                rows.append({**settings, "config": key, "seed": trial.seed, "gain": gain, "baselines": on_seed})
    return pd.DataFrame(rows)


def reference_cov(gains: pd.DataFrame) -> np.ndarray:
    """The covariance of the paired gains, up to the trial noise σ²: I + Z Zᵀ, Z[i, b] = 1/k when gain i subtracts
    the mean of k baseline trials, b among them. A proxy trial's noise is its own; a baseline trial's is shared by
    every gain that subtracts it (all the configurations of a schedule on that seed, when each schedule has its
    budget-matched baseline), so a setting whose levels change the reference carries that reference's noise.
    Assumes a baseline trial is as noisy as a proxy trial (the same training, the same seeds)."""
    if "baselines" not in gains:
        return np.eye(len(gains))
    ids = {b: j for j, b in enumerate(sorted({b for refs in gains["baselines"] for b in refs}))}
    z = np.zeros((len(gains), len(ids)))
    for i, refs in enumerate(gains["baselines"]):
        for b in refs:
            z[i, ids[b]] = 1.0 / len(refs)
    return np.eye(len(gains)) + z @ z.T


def changes_reference(gains: pd.DataFrame, column: str) -> bool:
    """Whether the levels of `column` are compared with different baselines (a schedule with its budget-matched
    one): then its effect is also a difference of baselines, measured by their few trials."""
    if "baselines" not in gains or column not in gains:
        return False
    labels = gains.assign(refs=[tuple(sorted(b.rsplit("@", 1)[0] for b in refs)) for refs in gains["baselines"]])
    return labels.groupby(column, dropna=False)["refs"].agg(lambda r: frozenset(r)).nunique() > 1


def _plain(value: Any) -> Any:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def gain_caveats(complete: pd.DataFrame, gains: pd.DataFrame) -> dict[tuple, list[str]]:
    """Per (dataset, architecture) of `complete` (as `paired_gains` reads it), what its paired `gains` leave out
    or rest on, in words: proxy trials with no matched baseline on their seed (or no finite objective), baselines
    at chance accuracy (validation accuracy ≤ 1.5 / classes: a gain over a reference that learned
    nothing measures the reference)."""
    out: dict[tuple, list[str]] = {}
    if not len(complete) or not {"setting_dataset", "setting_architecture"} <= set(complete):
        return out
    used = gains.groupby(list(FAMILY)).size().to_dict() if len(gains) else {}
    for family, group in complete.groupby(["setting_dataset", "setting_architecture"], sort=True):
        proxies, baselines = group[group["kind"] == PointKind.PROXY], group[group["kind"] == PointKind.BASELINE]
        notes = []
        if unpaired := len(proxies) - used.get(tuple(family), 0):
            notes.append(f"{unpaired} proxy trials with no matched baseline on their seed left out")
        if len(baselines) and {"val_accuracy", "num_classes"} <= set(baselines):
            accuracy = pd.to_numeric(baselines["val_accuracy"], errors="coerce")
            chance = accuracy <= 1.5 / pd.to_numeric(baselines["num_classes"], errors="coerce")
            if chance.all():
                notes.append(
                    "every baseline is at chance accuracy: these gains measure a reference that learned nothing"
                )
            elif chance.any():
                notes.append(f"{int(chance.sum())} of {len(baselines)} baselines at chance accuracy")
        if notes:
            out[tuple(family)] = notes
    return out
