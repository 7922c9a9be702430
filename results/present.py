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
HEADERS = {
    "test_accuracy": "test accuracy",
    "test_f1_macro": "test F1 (macro)",
    "train_seconds": "train seconds",
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
    keys: list[str] | None = None  # the columns that say which row is which: every part of a split table repeats
    # them (None: the leading text columns)
    printed: list[str] | None = None  # the columns the LaTeX table prints, to stay on a portrait page (None: all);
    # the others are in the CSV and Markdown, and a note under it says which


def header(name: str) -> str:
    """A column name as people read it."""
    return HEADERS.get(name, name.replace("_", " "))


COUNTS = ("n", "seeds", "trials", "comparisons", "family", "family_size", "better", "worse", "no evidence")


def number(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, (int, bool)) or (isinstance(value, float) and value.is_integer() and abs(value) >= 100):
        return f"{int(value):,}" if abs(value) >= 10000 else f"{int(value)}"
    return f"{value:.{digits}f}"


def p_value(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def digits_for(metric: str) -> int:
    if metric in COUNTS or metric.startswith(("no verdict", "proxy_images")):
        return 0
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
    if number(low, d) == number(high, d):  # every seed gave the same value: no spread to make an interval of
        return "no spread"
    return f"[{number(low, d)}, {number(high, d)}]"


def _pp(value) -> str:
    """A difference of accuracies in percentage points, signed."""
    return MISSING if _missing(value) else f"{100 * value:+.1f}"


def interval_pp(low, high, clipped: list[bool]) -> str:
    """The interval of a difference of accuracies in percentage points, clipped to [-100, 100] where it lies."""
    if _missing(low) or _missing(high):
        return MISSING
    if low < -1 or high > 1:
        clipped.append(True)
        low, high = max(low, -1.0), min(high, 1.0)
    if _pp(low) == _pp(high):
        return "no spread"
    return f"[{_pp(low)}, {_pp(high)}]"


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
    shown_keys = [header(k) for k in keys if k != "trials"]
    first = [header(metrics[0]), f"{header(metrics[0])} 95% CI"] if metrics else []
    return Shown(name, pd.DataFrame(rows), caption, notes, shown_keys, [*shown_keys, *first])


def effects(name: str, table: pd.DataFrame, caption: str) -> Shown:
    """An effects table (`results.effects.effects_tables`): each `X_pp` with its `low_pp`/`high_pp` as one signed
    figure and one interval, in percentage points; p-values and shares rounded."""
    rows = []
    for _, row in table.iterrows():
        shown: dict[str, str] = {}
        for column, value in row.items():
            if column in ("low_pp", "high_pp"):
                continue
            if str(column).endswith("_pp"):
                shown[f"{str(column)[:-3]} (pp)"] = f"{value:+.2f}"
                if "low_pp" in row:
                    shown["95% CI (pp)"] = f"[{row['low_pp']:+.2f}, {row['high_pp']:+.2f}]"
            elif column in ("p", "p_holm"):
                shown["p (Holm)" if column == "p_holm" else "p"] = p_value(value)
            elif column == "share":
                shown["share of variance"] = f"{value:.0%}"
            elif column == "p_best":
                shown["P(best)"] = f"{value:.0%}"
            elif isinstance(value, bool):
                shown[header(str(column))] = "yes" if value else "no"
            else:
                shown[header(str(column))] = MISSING if _missing(value) else str(value)
        rows.append(shown)
    frame = pd.DataFrame(rows)
    return Shown(name, frame, caption, keys=[c for c in frame.columns if c in EFFECT_KEYS])


EFFECT_KEYS = ("dataset", "architecture", "rank", "configuration", "factor", "level", "a", "b")  # what names a row


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
                "verdict": r["verdict"] + (" †" if r["budget_note"] else ""),
                "n": number(r["n"]),
                "accuracy": f"{number(r['mean_config'])} vs {number(r['mean_reference'])}",
                "difference (pp)": _pp(r["mean_diff"]),
                "adjusted CI (pp)": interval_pp(r["ci_low"], r["ci_high"], clipped),
                "p": p_value(r["t_p"]),
                "p adjusted": p_value(r["p_adjusted"]),
                "family": number(r["family_size"], 0),
                "MDE (pp)": number(r["mde_pp"], 1),
                "Wilcoxon p": p_value(r["wilcoxon_p"]),
                "epochs": f"{number(r['epochs_config'], 0)} vs {number(r['epochs_reference'], 0)}",
                "images seen": f"{number(r['images_config'], 0)} vs {number(r['images_reference'], 0)}",
            }
        )
    notes = [
        f"Test accuracy, paired by seed. p: paired t-test; adjusted within each family (dataset, "
        f"architecture, kind of reference) by {_correction_name(correction)}; the interval is the "
        f"{'Bonferroni' if correction == 'holm' else 'false-coverage' if correction == 'bh' else '95%'} "
        "interval of the difference. A verdict needs the adjusted p below 0.05, the adjusted interval clear of "
        "zero, 3 seeds and some variance; Wilcoxon p only from 6 pairs (below that it cannot reach 0.05).",
        "MDE (pp): the family's minimum detectable effect in percentage points, the smallest true difference it "
        "calls with 80% power at its size, seeds and observed spread (a difference below it going uncalled is no "
        "evidence of no effect).",
        "† the two sides trained on budgets more than 5% apart (epochs or images seen).",
    ]
    if clipped:
        notes.append("Intervals of a difference of accuracies are clipped to [-100, 100] pp, where it lies.")
    if stage == "confirmation":
        caption = "Confirmatory verdicts: each selected configuration on fresh seeds against its matched references"
    else:
        caption = (
            "Exploratory comparisons (selected on validation, not findings): each configuration against its references"
        )
        notes.insert(
            0, "Exploration: confirm the best configurations on fresh seeds (`search confirm`) before claiming."
        )
    keys = ["dataset", "architecture", "config.", "reference", "verdict"]  # a verdict stays with its row's numbers
    return Shown("verdicts", pd.DataFrame(rows), caption, notes, keys)


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
    "<": r"\textless{}",  # without fontenc's T1, a bare < prints as ¡
    ">": r"\textgreater{}",
    "±": r"$\pm$",
    "†": r"\dag{}",
    "–": "--",
    "≤": r"$\leq$",
    "×": r"$\times$",
    "Δ": r"$\Delta$",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters (and write the few non-ASCII symbols tables use as LaTeX)."""
    return "".join(LATEX_ESCAPES.get(ch, ch) for ch in str(text))


PACKAGES = r"\usepackage{booktabs,rotating}"
CAPTIONED = ("dataset", "architecture")  # said once in the caption when every row has the same
# Widths in points at \footnotesize (cmr8: about 4.6 pt a character, 12 pt of padding a column), against an
# article's text width (345 pt) and text height (592 pt, the width of a landscape page).
CHAR_PT, COLUMN_PT, TEXT_WIDTH_PT, LANDSCAPE_PT = 4.6, 12.0, 345.0, 592.0
# Rows a float holds on one page at \footnotesize (9.5 pt a row), with its caption, header and rules: a float cannot
# break across pages, so a longer table is split by rows, its header and key columns repeated in every part.
ROWS_PORTRAIT, ROWS_LANDSCAPE = 45, 22


def to_latex(shown: Shown, study: str = "") -> str:
    """`table` floats that drop into a thesis unedited: booktabs, `\\caption`, `\\label{tab:<study>-<name>}` (two
    studies in one thesis never clash), the dataset or architecture said once in the caption when every row has the
    same, headers
    broken over lines (`\\shortstack`), only the `printed` columns when a table names them (the rest said in a
    note), the body at \\footnotesize, on a landscape page (`sidewaystable`) when too
    wide for the text, and split into parts (the leading text columns repeated) when too wide for that too; the notes
    under the last part in its own width (the tabular is measured in a box). Nothing is scaled, so no text prints
    below the footnote size. Needs PACKAGES."""
    frame = shown.frame
    notes = list(shown.notes)
    if shown.printed is not None:
        left = [c for c in frame.columns if c not in shown.printed]
        if left:
            frame = frame[[c for c in frame.columns if c in shown.printed]]
            notes.append(f"Also in {shown.name}.csv and {shown.name}.md: {', '.join(left)}.")
    constant = [c for c in CAPTIONED if c in frame.columns and len(frame) > 1 and frame[c].nunique(dropna=False) == 1]
    caption = shown.caption
    if constant and len(constant) < len(frame.columns):
        caption = f"{shown.caption} ({'; '.join(f'{c}: {frame[c].iloc[0]}' for c in constant)})"
        frame = frame.drop(columns=constant)
    columns = list(frame.columns)
    widths = {
        c: max([*(len(line) for line in _header_lines(c)), *(len(str(v)) for v in frame[c])]) * CHAR_PT + COLUMN_PT
        for c in columns
    }
    keys = [c for c in shown.keys if c in columns] if shown.keys is not None else []
    for c in columns[:3] if shown.keys is None else []:
        if _numeric(frame[c]):
            break
        keys.append(c)
    rest = [c for c in columns if c not in keys]
    parts: list[list[str]] = [[]]
    for c in rest:  # greedily, each part as wide as a landscape page allows
        if parts[-1] and sum(widths[k] for k in [*keys, *parts[-1], c]) > LANDSCAPE_PT:
            parts.append([])
        parts[-1].append(c)
    label = re.sub(r"[^a-z0-9]+", "-", f"{study}-{shown.name}".lower()).strip("-")
    pieces = []  # (columns, first row, end row, notes) of each float
    for j, part in enumerate(parts):
        chosen = [*keys, *part] if part else keys
        width = sum(widths[c] for c in chosen)
        said = notes if j == len(parts) - 1 else []
        note_rows = sum(math.ceil(len(n) * CHAR_PT / max(width, 200.0)) for n in said)
        per_page = ROWS_PORTRAIT if width <= TEXT_WIDTH_PT else ROWS_LANDSCAPE
        chunks = row_chunks(len(frame), per_page, note_rows)
        pieces += [(chosen, lo, hi, said if hi == len(frame) else []) for lo, hi in chunks]
    out = []
    for i, (chosen, lo, hi, said) in enumerate(pieces, start=1):
        rows = f"; rows {lo + 1}–{hi} of {len(frame)}" if hi - lo < len(frame) else ""
        title = caption if len(pieces) == 1 else f"{caption} (part {i} of {len(pieces)}{rows})"
        out.append(_float(frame[chosen].iloc[lo:hi], title, label if i == 1 else f"{label}-{i}", said, widths))
    return "\n".join(out)


def row_chunks(total: int, per_page: int, note_rows: int = 0) -> list[tuple[int, int]]:
    """[first, end) row ranges of at most `per_page` rows, the last leaving `note_rows` for the notes under it."""
    chunks = [(lo, min(lo + per_page, total)) for lo in range(0, max(total, 1), per_page)]
    lo, hi = chunks[-1]
    room = max(1, per_page - note_rows)
    if hi - lo > room:
        chunks[-1:] = [(lo, hi - room), (hi - room, hi)] if hi - room > lo else [(lo, hi)]
    return chunks


def _header_lines(name: str, width: int = 12) -> list[str]:
    """A header broken at spaces into lines of about `width` characters."""
    lines: list[str] = []
    for word in str(name).split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines or [""]


def _float(frame: pd.DataFrame, caption: str, label: str, notes: list[str], widths: dict[str, float]) -> str:
    width = sum(widths[c] for c in frame.columns)
    env = "sidewaystable" if width > TEXT_WIDTH_PT else "table"
    align = "".join("r" if _numeric(frame[c]) else "l" for c in frame.columns) or "l"
    head = " & ".join(
        r"\shortstack["
        + ("r" if _numeric(frame[c]) else "l")
        + "]{"
        + r"\\".join(latex_escape(x) for x in _header_lines(c))
        + "}"
        for c in frame.columns
    )
    lines = [
        rf"\begin{{{env}}}[htbp]",
        r"\centering",
        rf"\caption{{{latex_escape(caption)}}}",
        rf"\label{{tab:{label}}}",
        r"\footnotesize",
        r"\setbox0\hbox{%",
        rf"\begin{{tabular}}{{{align}}}",
        r"\toprule",
        head + r" \\",
        r"\midrule",
        *(" & ".join(latex_escape(v) for v in row) + r" \\" for row in frame.itertuples(index=False)),
        r"\bottomrule",
        r"\end{tabular}}",
        r"\usebox0",
    ]
    if notes:
        lines += [
            r"\par\smallskip",
            r"\begin{minipage}{\wd0}\raggedright",
            *(rf"{latex_escape(note)}\par" for note in notes),
            r"\end{minipage}",
        ]
    lines.append(rf"\end{{{env}}}")
    return "\n".join(lines) + "\n"


def _numeric(column: pd.Series) -> bool:
    values = [v for v in column if v != MISSING]
    return bool(values) and all(re.fullmatch(r"[<+\-]?[\d.]+", str(v)) for v in values)


def write(shown: Shown, raw: pd.DataFrame, folder, study: str = "") -> list:
    """`<name>.csv` (raw numbers), `.md` and `.tex` (for people) under `folder`; nothing for a table without rows
    (the report says why there is none)."""
    if not len(raw):
        return []
    paths = [folder / f"{shown.name}.{ext}" for ext in ("csv", "md", "tex")]
    atomic_write_bytes(paths[0], raw.to_csv(index=False).encode())
    atomic_write_bytes(paths[1], to_markdown(shown).encode())
    atomic_write_bytes(paths[2], to_latex(shown, study).encode())
    return paths
