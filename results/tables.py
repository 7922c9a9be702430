"""Comparison tables from a trial table: pure functions of data frames, plus CSV / Markdown / LaTeX writers.

Statistics use COMPLETE trials only. A 95% confidence interval is mean ± t(0.975, n-1)·sd/√n over seeds. A proxy
configuration is paired with each baseline configuration that shares its dataset, architecture, augmentation and
every other non-CAM axis, seed by seed (the same seed means the same split); the verdict is "better" or "worse" only
when the CI of the paired differences excludes zero and there are at least three pairs, else "no evidence".
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from results.load import StudyData
from search.space import CAM_AXES
from trainer.files import atomic_write_bytes

PAIRING_ALWAYS = ("dataset", "architecture", "augmentation")
# With two seeds the t quantile is 12.7 and identical differences give a zero-width interval: too little to call.
MIN_PAIRS_FOR_VERDICT = 3


def memory_metric(trials: pd.DataFrame) -> str:
    """`peak_gpu_mem_mb` when any trial ran on a GPU, else `peak_rss_mb`."""
    gpu = trials.get("peak_gpu_mem_mb")
    return "peak_gpu_mem_mb" if gpu is not None and gpu.notna().any() else "peak_rss_mb"


def mean_ci(values: pd.Series | np.ndarray) -> dict[str, float]:
    """n, mean, sample sd and the 95% t-interval of the mean (NaN bounds when n < 2)."""
    x = np.asarray(pd.Series(values).dropna(), dtype=float)
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    sd = float(x.std(ddof=1)) if n > 1 else math.nan
    half = float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)) if n > 1 else math.nan
    return {"n": n, "mean": mean, "sd": sd, "ci_low": mean - half, "ci_high": mean + half}


def summarize(trials: pd.DataFrame, by: list[str], metrics: list[str]) -> pd.DataFrame:
    """One row per group of `by`: n, and mean / sd / CI bounds of each metric."""
    rows = []
    for key, group in trials.groupby(by, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key))
        row["n"] = len(group)
        for metric in metrics:
            summary = mean_ci(group[metric]) if metric in group else mean_ci([])
            row.update({f"{metric}_{k}": v for k, v in summary.items() if k != "n"})
        rows.append(row)
    return pd.DataFrame(rows)


def summary_metrics(trials: pd.DataFrame) -> list[str]:
    return ["test_accuracy", "test_f1_macro", "train_seconds", memory_metric(trials)]


def axis_tables(data: StudyData) -> dict[str, pd.DataFrame]:
    """Per axis: the summary of each value. CAM axes use proxy trials only (a baseline has no threshold); other
    axes are split into proxy and baseline trials."""
    complete = data.complete
    metrics = summary_metrics(complete)
    tables = {}
    for axis in data.axes:
        column = f"setting_{axis}"
        if axis in CAM_AXES:
            table = summarize(complete[complete["baseline"] != True], [column], metrics)  # noqa: E712
        else:
            table = summarize(complete, [column, "baseline"], metrics)
        tables[f"by_{axis}"] = table.rename(columns={column: axis})
    return tables


def dataset_architecture_table(data: StudyData) -> pd.DataFrame:
    """The summary per (dataset, architecture, baseline or not)."""
    complete = data.complete
    table = summarize(complete, ["setting_dataset", "setting_architecture", "baseline"], summary_metrics(complete))
    return table.rename(columns={"setting_dataset": "dataset", "setting_architecture": "architecture"})


def pairing_columns(data: StudyData) -> list[str]:
    """What a configuration and its baseline must share: every non-CAM axis except proxy_steps."""
    axes = set(PAIRING_ALWAYS) | {a for a in data.axes if a not in CAM_AXES and a != "proxy_steps"}
    return [f"setting_{a}" for a in sorted(axes) if f"setting_{a}" in data.trials]


def paired_comparisons(data: StudyData, metric: str = "test_accuracy") -> pd.DataFrame:
    """Each proxy configuration against each matching baseline configuration, paired by seed: mean difference,
    its 95% CI, paired t-test and Wilcoxon p-values, and the verdict."""
    complete = data.complete
    keys = pairing_columns(data)
    baselines = complete[complete["baseline"] == True]  # noqa: E712
    proxies = complete[complete["baseline"] != True]  # noqa: E712
    rows = []
    for config, group in proxies.groupby("config", sort=True):
        shared = group.iloc[0][keys]
        match = baselines[(baselines[keys] == shared).all(axis=1)] if keys else baselines
        for base_config, base in match.groupby("config", sort=True):
            paired = group.set_index("seed")[metric].to_frame("config").join(
                base.set_index("seed")[metric].to_frame("baseline"), how="inner").dropna()
            diffs = paired["config"] - paired["baseline"]
            rows.append({"configuration": config, "baseline": base_config,
                         **_paired_stats(paired["config"], paired["baseline"], diffs)})
    table = pd.DataFrame(rows)
    return table.sort_values("mean_diff", ascending=False, ignore_index=True) if len(table) else table


def _paired_stats(config: pd.Series, baseline: pd.Series, diffs: pd.Series) -> dict:
    summary = mean_ci(diffs)
    n = summary["n"]
    t_p = float(stats.ttest_1samp(diffs, 0).pvalue) if n > 1 and diffs.std() > 0 else math.nan
    wilcoxon_p = float(stats.wilcoxon(diffs).pvalue) if n > 0 and (diffs != 0).any() else math.nan
    if n < MIN_PAIRS_FOR_VERDICT:
        verdict = "no evidence"
    elif summary["ci_low"] > 0:
        verdict = "better"
    elif summary["ci_high"] < 0:
        verdict = "worse"
    else:
        verdict = "no evidence"
    return {"n": n, "mean_config": float(config.mean()) if n else math.nan,
            "mean_baseline": float(baseline.mean()) if n else math.nan, "mean_diff": summary["mean"],
            "ci_low": summary["ci_low"], "ci_high": summary["ci_high"], "t_p": t_p, "wilcoxon_p": wilcoxon_p,
            "verdict": verdict}


def best_configurations(data: StudyData, top: int = 10) -> pd.DataFrame:
    """The configurations with the highest mean validation accuracy (never chosen by test accuracy), with their
    test accuracy and its CI."""
    rows = []
    for config, group in data.complete.groupby("config", sort=True):
        val, test = mean_ci(group["val_accuracy"]), mean_ci(group["test_accuracy"])
        rows.append({"configuration": config, "n": val["n"], "val_accuracy_mean": val["mean"],
                     "test_accuracy_mean": test["mean"], "test_accuracy_ci_low": test["ci_low"],
                     "test_accuracy_ci_high": test["ci_high"]})
    table = pd.DataFrame(rows)
    if not len(table):
        return table
    return table.sort_values("val_accuracy_mean", ascending=False, ignore_index=True).head(top)


# -- writers ---------------------------------------------------------------------------------------------------
def _cell(value: object) -> str:
    if isinstance(value, (float, np.floating)):
        return "–" if math.isnan(value) else f"{value:.4f}"
    return "–" if value is None else str(value)


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table."""
    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(_cell(v).replace("|", "\\|") for v in row) + " |"
            for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters."""
    return "".join(LATEX_ESCAPES.get(ch, ch) for ch in text)


def to_latex(table: pd.DataFrame) -> str:
    """A booktabs `tabular` a thesis can `\\input` (needs `\\usepackage{booktabs}`)."""
    align = "".join("r" if pd.api.types.is_numeric_dtype(table[c]) else "l" for c in table.columns)
    lines = [f"\\begin{{tabular}}{{{align}}}", r"\toprule",
             " & ".join(latex_escape(str(c)) for c in table.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(_cell(v)) for v in row) + r" \\" for row in table.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def write_table(table: pd.DataFrame, out_dir: Path, name: str) -> list[Path]:
    """Write `name`.csv, .md and .tex under `out_dir`; return the paths."""
    paths = [out_dir / f"{name}.{ext}" for ext in ("csv", "md", "tex")]
    atomic_write_bytes(paths[0], table.to_csv(index=False).encode())
    atomic_write_bytes(paths[1], to_markdown(table).encode())
    atomic_write_bytes(paths[2], to_latex(table).encode())
    return paths
