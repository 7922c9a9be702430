"""Tables for people: readable headers, `mean ± sd` and `[lo, hi]` columns, rounding per column, `--` where there is
nothing, and notes; written as Markdown and as LaTeX that drops into a thesis (booktabs, `\\caption`, `\\label`,
fitted to the text width). The CSVs beside them keep every raw number.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from trainer.files import atomic_write_bytes

MISSING = "--"
BOUNDED = ("accuracy", "f1", "precision", "recall", "fraction")  # metrics in [0, 1]
WIDE = 7  # a LaTeX table with more columns is scaled to the text width
HEADERS = {
    "test_accuracy": "test accuracy",
    "test_f1_macro": "test F1 (macro)",
    "train_seconds": "train s",
    "peak_gpu_mem_mb": "peak GPU memory (MB)",
    "peak_rss_mb": "peak memory (MB)",
    "val_accuracy": "val. accuracy",
    "val_accuracy_best": "best val. accuracy",
    "val_loss": "val. loss",
    "proxy_images": "proxies",
    "proxy_unchanged": "unchanged",
    "proxy_unchanged_fraction": "unchanged share",
    "proxy_zero_maps": "all-zero maps",
    "proxy_hot_fraction": "pixels at/above t",
    "proxy_changed_fraction": "pixels changed",
    "images_seen": "images seen",
}


@dataclass
class Shown:
    """A table as people read it: display strings, a caption, and the notes printed under it."""

    name: str
    frame: pd.DataFrame
    caption: str
    notes: list[str] = field(default_factory=list)


def header(name: str) -> str:
    """A column name as people read it."""
    return HEADERS.get(name, name.replace("_", " "))


def number(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, (int, bool)) or (isinstance(value, float) and value.is_integer() and abs(value) >= 100):
        return f"{int(value)}"
    return f"{value:.{digits}f}"


def p_value(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def digits_for(metric: str) -> int:
    if metric.endswith("_mb") or "seconds" in metric or metric == "images_seen":
        return 0 if metric.endswith("_mb") or metric == "images_seen" else 1
    return 3


def _bounded(metric: str) -> bool:
    return any(word in metric for word in BOUNDED)


def mean_sd(row: pd.Series, metric: str) -> str:
    mean, sd = row.get(f"{metric}_mean"), row.get(f"{metric}_sd")
    d = digits_for(metric)
    return MISSING if _missing(mean) else number(mean, d) + ("" if _missing(sd) else f" ± {number(sd, d)}")


def interval(low, high, metric: str, clipped: list[bool]) -> str:
    if _missing(low) or _missing(high):
        return MISSING
    if _bounded(metric) and (low < 0 or high > 1):
        clipped.append(True)
        low, high = max(low, 0.0), min(high, 1.0)
    d = digits_for(metric)
    return f"[{number(low, d)}, {number(high, d)}]"


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def summary(name: str, table: pd.DataFrame, caption: str) -> Shown:
    """A summary table (`results.tables.summarize_over_seeds`): keys, seeds, then `mean ± sd` and the 95%
    interval of each metric."""
    metrics = [c[: -len("_mean")] for c in table.columns if c.endswith("_mean")]
    keys = [c for c in table.columns if not any(c.startswith(m + "_") for m in metrics)]
    clipped: list[bool] = []
    rows = []
    for _, row in table.iterrows():
        shown = {header(k): MISSING if _missing(row[k]) else str(row[k]) for k in keys}
        for m in metrics:
            shown[header(m)] = mean_sd(row, m)
            shown[f"{header(m)} 95% CI"] = interval(row[f"{m}_ci_low"], row[f"{m}_ci_high"], m, clipped)
        rows.append(shown)
    notes = [
        "n (seeds) is the unit: each seed's value is the mean of its trials with that setting; intervals are "
        "95% t-intervals over seeds."
    ]
    if clipped:
        notes.append("Intervals of metrics bounded to [0, 1] are clipped to that range.")
    return Shown(name, pd.DataFrame(rows), caption, notes)


def verdicts(table: pd.DataFrame, correction: str, stage: str = "exploration") -> Shown:
    """The paired comparisons, with family size, raw and adjusted p, the adjusted interval and each family's
    minimum detectable effect; titled by the study's stage, so an exploratory table is never read as a finding."""
    clipped: list[bool] = []
    rows = []
    for _, r in table.iterrows():
        rows.append(
            {
                "dataset": r["dataset"],
                "architecture": r["architecture"],
                "config.": r["configuration"],
                "reference": r["reference"],
                "n": number(r["n"]),
                "accuracy": f"{number(r['mean_config'])} vs {number(r['mean_reference'])}",
                "difference": number(r["mean_diff"]),
                "adjusted CI": interval(r["ci_low"], r["ci_high"], "difference", clipped),
                "p": p_value(r["t_p"]),
                "p adjusted": p_value(r["p_adjusted"]),
                "family": number(r["family_size"], 0),
                "MDE": number(r["mde"]),
                "Wilcoxon p": p_value(r["wilcoxon_p"]),
                "epochs": f"{number(r['epochs_config'], 0)} vs {number(r['epochs_reference'], 0)}",
                "verdict": r["verdict"] + (" †" if r["budget_note"] else ""),
            }
        )
    notes = [
        f"Test accuracy, paired by seed. p: paired t-test; adjusted within each family (dataset, "
        f"architecture, kind of reference) by {_correction_name(correction)}; the interval is the "
        f"{'Bonferroni' if correction == 'holm' else 'false-coverage' if correction == 'bh' else '95%'} "
        "interval of the difference. A verdict needs the adjusted p below 0.05, the adjusted interval clear of "
        "zero, 3 seeds and some variance; Wilcoxon p only from 6 pairs (below that it cannot reach 0.05).",
        "MDE: the family's minimum detectable effect, the smallest true difference it calls with 80% power at "
        "its size, seeds and observed spread (a difference below it going uncalled is no evidence of no effect).",
        "† the two sides trained on budgets more than 5% apart (epochs or images seen).",
    ]
    if stage == "confirmation":
        caption = "Confirmatory verdicts: each selected configuration on fresh seeds against its matched references"
    else:
        caption = (
            "Exploratory comparisons (selected on validation, not findings): each configuration against its references"
        )
        notes.insert(
            0, "Exploration: confirm the best configurations on fresh seeds (`search confirm`) before claiming."
        )
    return Shown("verdicts", pd.DataFrame(rows), caption, notes)


def _correction_name(correction: str) -> str:
    return {
        "holm": "Holm's method (family-wise error)",
        "bh": "Benjamini–Hochberg (false discovery rate)",
        "none": "nothing (no correction)",
    }[correction]


def plain(
    name: str,
    table: pd.DataFrame,
    caption: str,
    notes: list[str] | None = None,
    formats: dict[str, Callable] | None = None,
) -> Shown:
    """Any other table: headers made readable, numbers rounded per column, `--` for missing."""
    formats = formats or {}
    rows = []
    for _, row in table.iterrows():
        rows.append(
            {
                header(c): formats[c](row[c])
                if c in formats
                else (
                    number(row[c], digits_for(c))
                    if isinstance(row[c], (int, float)) and not isinstance(row[c], bool)
                    else MISSING
                    if _missing(row[c])
                    else str(row[c])
                )
                for c in table.columns
            }
        )
    return Shown(name, pd.DataFrame(rows, columns=[header(c) for c in table.columns]), caption, notes or [])


def to_markdown(shown: Shown) -> str:
    """A GitHub-flavoured Markdown table with its caption and notes."""
    frame = shown.frame
    lines = [f"**{shown.caption}**", ""]
    if len(frame.columns):
        lines += ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "|".join("---" for _ in frame.columns) + "|"]
        lines += [
            "| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in frame.itertuples(index=False)
        ]
    lines += [""] + [f"_{note}_" for note in shown.notes]
    return "\n".join(lines) + "\n"


LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "†": r"$^\dagger$",
    "–": "--",
    "≤": r"$\leq$",
    "×": r"$\times$",
    "Δ": r"$\Delta$",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters (and write the few non-ASCII symbols tables use as LaTeX)."""
    return "".join(LATEX_ESCAPES.get(ch, ch) for ch in str(text))


def to_latex(shown: Shown) -> str:
    """A `table` float with a booktabs `tabular`, `\\caption` and `\\label{tab:<name>}`, scaled to the text width
    when wide. Needs `\\usepackage{booktabs,graphicx}`."""
    frame = shown.frame
    align = "".join("r" if _numeric(frame[c]) else "l" for c in frame.columns) or "l"
    body = [
        rf"\begin{{tabular}}{{{align}}}",
        r"\toprule",
        " & ".join(latex_escape(c) for c in frame.columns) + r" \\",
        r"\midrule",
    ]
    body += [" & ".join(latex_escape(v) for v in row) + r" \\" for row in frame.itertuples(index=False)]
    body += [r"\bottomrule", r"\end{tabular}"]
    if len(frame.columns) > WIDE:
        body = [r"\resizebox{\textwidth}{!}{%", *body, "}"]
    label = re.sub(r"[^a-z0-9]+", "-", shown.name.lower()).strip("-")
    lines = [
        r"\begin{table}[htbp]",
        r"\centering",
        rf"\caption{{{latex_escape(shown.caption)}}}",
        rf"\label{{tab:{label}}}",
        *body,
    ]
    lines += [rf"\par\smallskip\footnotesize {latex_escape(note)}" for note in shown.notes]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def _numeric(column: pd.Series) -> bool:
    values = [v for v in column if v != MISSING]
    return bool(values) and all(re.fullmatch(r"[<\-]?[\d.]+", str(v)) for v in values)


def write(shown: Shown, raw: pd.DataFrame, folder) -> list:
    """`<name>.csv` (raw numbers), `.md` and `.tex` (for people) under `folder`."""
    paths = [folder / f"{shown.name}.{ext}" for ext in ("csv", "md", "tex")]
    atomic_write_bytes(paths[0], raw.to_csv(index=False).encode())
    atomic_write_bytes(paths[1], to_markdown(shown).encode())
    atomic_write_bytes(paths[2], to_latex(shown).encode())
    return paths
