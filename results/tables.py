"""Comparison tables from a study's trial table: pure functions of data frames (the writers are `results.present`).

Statistics use COMPLETE trials only. Seeds are the units: trials that share a seed share the split and the initial
weights, so a summary first averages within each (seed, setting) and then takes its interval over seeds, within one
dataset and architecture. Each proxy configuration is paired seed by seed with each *reference* that matches it:
every baseline (no proxies) that shares its dataset, architecture, augmentation and other non-CAM settings, and every
control (`randomcam`: the same steps with random maps; `duplicate`: the same wrong images, unmasked) that shares all
its settings the control has. A family is every comparison of one kind of reference within one (dataset,
architecture): the claims a thesis makes there ("on CIFAR-100 with ResNet-18, these configurations beat the
baseline"). See `analysis.stats` for the tests, the corrections and the verdict.
"""

from __future__ import annotations

import math

import pandas as pd

from analysis import stats
from analysis.gains import is_missing, matches
from search.records.trialtable import StudyData
from trainer.metrics import PROXY_METRICS
from trainer.prefix import CAM_AXES, PointKind

BUDGET_TOLERANCE = 0.05  # paired budgets further apart than this are flagged


def memory_metric(trials: pd.DataFrame) -> str:
    """`peak_gpu_mem_mb` when any trial ran on a GPU, else `peak_rss_mb`."""
    gpu = trials.get("peak_gpu_mem_mb")
    return "peak_gpu_mem_mb" if gpu is not None and gpu.notna().any() else "peak_rss_mb"


def summary_metrics(trials: pd.DataFrame) -> list[str]:
    return ["test_accuracy", "test_f1_macro", "train_seconds", memory_metric(trials)]


def summarize_over_seeds(trials: pd.DataFrame, by: list[str], metrics: list[str]) -> pd.DataFrame:
    """One row per group of `by`: seeds (n), trials, and mean / sd / 95% CI of each metric over seeds (each seed's
    value being the mean of its trials in the group)."""
    rows = []
    for key, group in trials.groupby(by, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        row = {**dict(zip(by, key, strict=True)), "seeds": group["seed"].nunique(), "trials": len(group)}
        for metric in metrics:
            per_seed = group.groupby("seed")[metric].mean() if metric in group else pd.Series(dtype=float)
            summary = stats.mean_ci(per_seed.tolist())
            row.update({f"{metric}_{k}": v for k, v in summary.items() if k != "n"})
        rows.append(row)
    return pd.DataFrame(rows)


def axis_trials(complete: pd.DataFrame, axis: str) -> pd.DataFrame:
    """The trials a table or figure by `axis` compares: a CAM setting among proxy trials (a baseline has none, a
    control would mix in), the `control` axis among the configurations and their matched controls, any other axis
    among all."""
    if axis == "control":
        return complete[complete["kind"] != PointKind.BASELINE]
    if axis in CAM_AXES:
        return complete[complete["kind"] == PointKind.PROXY]
    return complete


def axis_tables(data: StudyData) -> dict[str, pd.DataFrame]:
    """Per axis, per (dataset, architecture): the summary of each value over seeds (`axis_trials`); axes that span
    kinds keep proxy trials and references apart."""
    complete = data.complete
    metrics = summary_metrics(complete)
    place = ["setting_dataset", "setting_architecture"]
    tables = {}
    for axis in data.axes:
        if axis in ("dataset", "architecture"):
            continue
        column = f"setting_{axis}"
        trials = axis_trials(complete, axis)
        if axis in CAM_AXES and axis != "control":
            table = summarize_over_seeds(trials, [*place, column], metrics)
        else:
            table = summarize_over_seeds(trials, [*place, column, "kind"], metrics)
        tables[f"by_{axis}"] = table.rename(
            columns={column: axis, "setting_dataset": "dataset", "setting_architecture": "architecture"}
        )
    return tables


def dataset_architecture_table(data: StudyData) -> pd.DataFrame:
    """The summary per (dataset, architecture, kind of configuration), over seeds."""
    table = summarize_over_seeds(
        data.complete, ["setting_dataset", "setting_architecture", "kind"], summary_metrics(data.complete)
    )
    return table.rename(columns={"setting_dataset": "dataset", "setting_architecture": "architecture"})


def paired_comparisons(
    data: StudyData, metric: str = "test_accuracy", correction: str = "holm", alpha: float = stats.ALPHA
) -> pd.DataFrame:
    """Each proxy configuration against each matching baseline and control, paired by seed, with the budgets of
    both sides, the family it belongs to, raw and adjusted p-values, the adjusted interval and the verdict."""
    complete = data.complete
    axes = [a for a in sorted(set(data.axes) | {"dataset", "architecture"}) if f"setting_{a}" in complete]
    proxies, references = data.proxy_trials, data.reference_trials
    columns = [metric, "epochs", "images_seen"]
    # Each label's seed-indexed columns and its trials stopped by halving, once: a thesis family pairs thousands.
    by_seed = {label: group.set_index("seed")[columns] for label, group in references.groupby("label", sort=True)}
    first = {label: group.iloc[0] for label, group in references.groupby("label", sort=True)}
    trials = data.trials
    pruned = trials[trials["state"] == "PRUNED"]["label"].value_counts() if len(trials) else pd.Series(dtype=int)
    rows = []
    for label, group in proxies.groupby("label", sort=True):
        head, mine = group.iloc[0], group.set_index("seed")[columns]
        for ref_label, ref_head in first.items():
            if not matches(ref_head, head, axes):
                continue
            paired = mine.join(by_seed[ref_label], how="inner", rsuffix="_ref").dropna(subset=[metric, f"{metric}_ref"])
            comparison = stats.paired(paired[metric] - paired[f"{metric}_ref"])
            rows.append(
                {
                    "dataset": head["setting_dataset"],
                    "architecture": head["setting_architecture"],
                    "configuration": label,
                    "reference": ref_label,
                    "reference_kind": _reference_kind(ref_head),
                    "n": comparison.n,
                    "mean_config": paired[metric].mean(),
                    "mean_reference": paired[f"{metric}_ref"].mean(),
                    "mean_diff": comparison.mean_diff,
                    "sd_diff": comparison.sd,
                    "t_p": comparison.t_p,
                    "wilcoxon_p": comparison.wilcoxon_p,
                    "epochs_config": paired["epochs"].mean(),
                    "epochs_reference": paired["epochs_ref"].mean(),
                    "images_config": paired["images_seen"].mean(),
                    "images_reference": paired["images_seen_ref"].mean(),
                    "pruned_config": int(pruned.get(label, 0)),
                    "_comparison": comparison,
                }
            )
    table = pd.DataFrame(rows)
    if not len(table):
        return table
    table["budget_note"] = [_budget_note(r) for r in table.itertuples()]
    table.insert(0, "stage", data.stage)
    return _correct(table, correction, alpha)


def _reference_kind(row: pd.Series) -> str:
    if row["kind"] == PointKind.BASELINE:
        return "baseline"
    control = row.get("setting_control")
    return f"control ({control if not is_missing(control) and control != 'none' else row['setting_cam_method']})"


def _budget_note(row) -> str:
    notes = []
    for what, mine, theirs in (
        ("epochs", row.epochs_config, row.epochs_reference),
        ("images seen", row.images_config, row.images_reference),
    ):
        if theirs and abs(mine - theirs) > BUDGET_TOLERANCE * theirs:
            notes.append(f"{what} {mine:.0f} vs {theirs:.0f}")
    return "budgets differ: " + ", ".join(notes) if notes else ""


def _correct(table: pd.DataFrame, correction: str, alpha: float) -> pd.DataFrame:
    """Adjust within each family (dataset, architecture, kind of reference) and call each comparison."""
    table = table.copy()
    table["family_size"] = 0
    table["p_adjusted"] = math.nan
    table["ci_low"] = math.nan
    table["ci_high"] = math.nan
    table["ci_level"] = math.nan
    table["verdict"] = ""
    table["mde_pp"] = math.nan  # percentage points of the metric: the unit the dry-run and the report say
    for _, family in table.groupby(["dataset", "architecture", "reference_kind"], sort=False):
        index = family.index
        size = int(family["t_p"].notna().sum())
        spread = family["sd_diff"].dropna()
        table.loc[index, "mde_pp"] = 100 * stats.minimum_detectable_effect(
            float(spread.median()) if len(spread) else math.nan, int(family["n"].median()), size, correction, alpha
        )
        adjusted = stats.adjust(family["t_p"].tolist(), correction)
        called = sum(1 for p in adjusted if not math.isnan(p) and p < alpha)
        level = stats.interval_level(correction, size, called, alpha)
        intervals = [c.interval(level) for c in family["_comparison"]]
        table.loc[index, "family_size"] = size
        table.loc[index, "p_adjusted"] = adjusted
        table.loc[index, "ci_low"] = [low for low, _ in intervals]
        table.loc[index, "ci_high"] = [high for _, high in intervals]
        table.loc[index, "ci_level"] = level
        table.loc[index, "verdict"] = [
            stats.verdict(c, p if not math.isnan(p) else 1.0, low, high, alpha)
            for c, p, (low, high) in zip(family["_comparison"], adjusted, intervals, strict=True)
        ]
    table = table.drop(columns=["_comparison"])
    return table.sort_values(["dataset", "architecture", "mean_diff"], ascending=[True, True, False], ignore_index=True)


def best_configurations(data: StudyData, top: int = 10) -> pd.DataFrame:
    """Per (dataset, architecture), the configurations with the highest mean of the study's objective (a
    validation metric, never a test one), with both validation accuracies and the test accuracy and its CI."""
    metric = data.spec.objective.metric
    rows = []
    for (dataset, arch, label), group in data.complete.groupby(
        ["setting_dataset", "setting_architecture", "label"], sort=True
    ):
        test = stats.mean_ci(group["test_accuracy"].tolist())
        rows.append(
            {
                "dataset": dataset,
                "architecture": arch,
                "configuration": label,
                "kind": group["kind"].iloc[0],
                "seeds": group["seed"].nunique(),
                f"{metric}_mean": group[metric].mean(),
                "val_accuracy_mean": group["val_accuracy"].mean(),
                "val_accuracy_best_mean": group["val_accuracy_best"].mean(),
                "test_accuracy_mean": test["mean"],
                "test_accuracy_ci_low": test["ci_low"],
                "test_accuracy_ci_high": test["ci_high"],
            }
        )
    table = pd.DataFrame(rows)
    if not len(table):
        return table
    table = table.sort_values(
        ["dataset", "architecture", f"{metric}_mean"],
        ascending=[True, True, not data.spec.objective.maximize],
        ignore_index=True,
    )
    return table.groupby(["dataset", "architecture"], sort=False).head(top).reset_index(drop=True)


def proxy_statistics(data: StudyData) -> pd.DataFrame:
    """What the proxy steps made, per configuration: proxies, the share identical to their source (dropped or
    kept), all-zero maps, and the shares of the trained proxies' pixels at or above the threshold and changed
    (means over seeds)."""
    columns = list(PROXY_METRICS)
    trials = data.complete[data.complete["kind"] != PointKind.BASELINE]
    present = [c for c in columns if c in trials]
    if not len(trials) or not present:
        return pd.DataFrame()
    table = trials.groupby(["setting_dataset", "setting_architecture", "label"], sort=True)[present].mean()
    table = table.reset_index().rename(
        columns={"setting_dataset": "dataset", "setting_architecture": "architecture", "label": "configuration"}
    )
    return table


def halving_table(data: StudyData) -> pd.DataFrame:
    """Per configuration: seeds complete, and seeds stopped by successive halving at each rung."""
    trials = data.trials
    if not len(trials) or "pruned_at" not in trials or not trials["pruned_at"].notna().any():
        return pd.DataFrame()
    rows = []
    for label, group in trials.groupby("label", sort=True):
        row = {"configuration": label, "complete": int((group["state"] == "COMPLETE").sum())}
        stopped = group[group["state"] == "PRUNED"]["pruned_at"].dropna()
        row.update({f"stopped at epoch {int(r)}": int((stopped == r).sum()) for r in sorted(stopped.unique())})
        rows.append(row)
    return pd.DataFrame(rows).fillna(0)


def family_summary(verdicts: pd.DataFrame) -> pd.DataFrame:
    """Per family: comparisons made, seeds, the minimum detectable effect (the smallest true difference the family
    calls with 80 % power at its size, seeds and observed spread), and how many came out better / worse / without
    evidence or verdict."""
    if not len(verdicts):
        return pd.DataFrame()
    rows = []
    for (dataset, arch, kind), family in verdicts.groupby(["dataset", "architecture", "reference_kind"], sort=True):
        counts = family["verdict"].value_counts()
        rows.append(
            {
                "dataset": dataset,
                "architecture": arch,
                "reference": kind,
                "comparisons": len(family),
                "seeds": int(family["n"].median()),
                "mde_pp": float(family["mde_pp"].iloc[0]),
                "better": int(counts.get("better", 0)),
                "worse": int(counts.get("worse", 0)),
                "no evidence": int(counts.get("no evidence", 0)),
                "no verdict": int(sum(v for k, v in counts.items() if k.startswith("no verdict"))),
            }
        )
    return pd.DataFrame(rows)
