"""`search report`: the tables (CSV, Markdown, LaTeX) and one self-contained HTML report of plotly figures.

The HTML inlines plotly.js once, so it opens with no network. Sections: the grid and what ran (and any warning),
what failed and why, the verdicts (how many comparisons, in which families, how corrected), successive halving, the
best configurations, what the proxy steps made, the figures, then the per-axis tables and the legend of labels.
"""

from __future__ import annotations

import html
import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import pandas as pd
import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState
from plotly.offline import get_plotlyjs

from results import plots, present, tables
from results.claims import CLAIM, claim_sentences, claims
from results.effects import effect_sentences, effects_tables, study_effects
from results.methods import methods_text
from search.planning.progress import chance_warnings
from search.records import record
from search.records.tally import foreign_note
from search.records.trialtable import StudyData, flatten, folder_of, load_curves, load_study_data
from trainer.files import atomic_write_bytes
from trainer.prefix import PointKind

STYLE = (
    "body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em;color:#222;background:#fff}"
    "table{border-collapse:collapse;font-size:12px;width:100%;table-layout:auto}"
    "td,th{padding:2px 6px;border-bottom:1px solid #ddd;overflow-wrap:normal;word-break:normal;hyphens:none;"
    "text-align:left}"
    ".scroll{overflow-x:auto;max-width:100%;margin-bottom:1.5em}"
    ".figure{max-width:100%;overflow:hidden}.note{color:#555;font-size:12px}.warning{color:#a40000}"
    ".caption{font-weight:bold;margin:1em 0 0.3em}.stage{background:#f3f3f3;padding:0.5em}"
)


@dataclass
class Report:
    """What `build_report` made."""

    html: Path
    tables: dict[str, pd.DataFrame]
    figures: list[tuple[str, go.Figure]]
    notes: list[str] = field(default_factory=list)


TEST_PARTS = {
    "official": "the dataset's official test part",
    "held_out": "one stratified part held out for every trial (split.test_seed): no trial selects on it",
    "random": "a stratified random part per seed (another seed's trial may have trained or selected on it)",
}


def build_report(
    study: optuna.Study,
    trials: list[FrozenTrial],
    out_dir: Path,
    to_dashboard: bool = False,
    correction: str = "holm",
    say: Callable[[str], None] = print,
    storage: str | None = None,
) -> Report:
    """Write the tables and `report.html` of `study` (whose trials are `trials`) under `out_dir`, and push the
    figures to optuna-dashboard when `to_dashboard`; return what was written."""
    if not trials:  # a study created but not run yet: say so instead of tables of nothing
        path, name = out_dir / "report.html", html.escape(study.study_name)
        page = (
            f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{name} report</title></head>"
            f"<body><h1>Study {name}</h1><p>No trial has run yet.</p></body></html>"
        )
        atomic_write_bytes(path, page.encode())
        say(f"{study.study_name}: no trial has run yet")
        return Report(path, {}, [])
    data = load_study_data(study, trials)
    notes: list[str] = [TEST_OVERLAP] if data.spec.test_overlap else []
    if data.foreign:
        notes.append(foreign_note(data.foreign))
        trials = [t for t in trials if t.number not in set(data.foreign)]  # Optuna's importances read them too
    verdicts = tables.paired_comparisons(data, correction=correction)
    effects = study_effects(data) if data.stage == "exploration" else {}
    raw = {
        "claims": claims(verdicts, correction),
        "verdicts": verdicts,
        "families": tables.family_summary(verdicts),
        "best_configurations": tables.best_configurations(data),
        "proxy_statistics": tables.proxy_statistics(data),
        "halving": tables.halving_table(data),
        **(effects_tables(effects) if effects else {}),
        "legend": data.legend,
        "by_dataset_architecture": tables.dataset_architecture_table(data),
        **tables.axis_tables(data),
    }
    shown = _presented(raw, correction, data.stage)
    for name, table in raw.items():
        if not present.write(shown[name], table, out_dir / "tables", data.name):
            notes.append(f"tables/{name}.*: not written, no rows ({shown[name].caption.lower()})")
    figures = _figures(trials, data, notes)
    _static_images(figures, out_dir / "figures", notes)
    if to_dashboard:
        from optuna_dashboard import save_plotly_graph_object

        for title, fig in figures:
            save_plotly_graph_object(study, fig, graph_object_id=_slug(title))
        notes.append(f"{len(figures)} figures saved to optuna-dashboard")
    path = out_dir / "report.html"
    page = _html(data, raw, shown, figures, notes, trials, correction, effect_sentences(effects, data.spec))
    if data.stage == "exploration" and record.confirmations(study):
        made = _table(confirmations_made(study, storage, correction))
        page = page.replace("<h2>Figures</h2>", f"<h2>Confirmations made from this study</h2>{made}<h2>Figures</h2>", 1)
    atomic_write_bytes(path, page.encode())
    for note in notes:
        say(note)
    return Report(path, raw, figures, notes)


TEST_OVERLAP = (
    "Made with --allow-test-overlap: the exploration drew its test part per seed, so this confirmation's test "
    "images include images the exploration's trials were selected on (their validation part); its test accuracies "
    "are optimistic, and its claims rest on the validation objective only."
)


def confirmations_made(study: optuna.Study, storage: str | None, correction: str) -> present.Shown:
    """Every confirmation made from an exploration (recorded on it by `search confirm`), the seeds it took and its
    outcome: how many of its configurations are claimed, read from the confirmation study itself."""
    from search.planning.status import load_study, load_trials
    from search.records.paths import default_storage
    from search.records.storage import StudyError

    rows = []
    entries = record.confirmations(study)
    for i, entry in enumerate(entries):
        name, outcome = str(entry.get("name")), "not found in this storage or runs/"
        for url in [u for u in (storage, default_storage(name)) if u]:
            try:
                confirmation, trials = load_study(name, url), load_trials(name, url)
            except StudyError:
                continue
            complete = [t for t in trials if t.state == TrialState.COMPLETE]
            if not complete:
                outcome = "no trial complete yet"
                break
            claimed = claims(tables.paired_comparisons(load_study_data(confirmation, trials), correction=correction))
            shown = int((claimed["verdict"] == CLAIM).sum()) if len(claimed) else 0
            outcome = f"{len(complete)} trials complete; {shown} of {len(claimed)} configurations claimed {CLAIM}"
            break
        first, count = int(entry.get("seeds_from", 0)), int(entry.get("seeds", 0))
        if any(later.get("name") == name for later in entries[i + 1 :]):
            outcome = "chosen again later (these seeds stay spent)"
        elif entry.get("test_overlap"):
            outcome += " (--allow-test-overlap: its test images include ones this study selected on)"
        rows.append({"confirmation": name, "seeds": f"{first}–{first + count - 1}", "outcome": outcome})
    return present.plain("confirmations", pd.DataFrame(rows), "Confirmations made from this exploration")


def _presented(raw: dict[str, pd.DataFrame], correction: str, stage: str) -> dict[str, present.Shown]:
    captions = {
        "families": f"{'Confirmatory' if stage == 'confirmation' else 'Exploratory'} comparisons, per family, with "
        "the minimum detectable effect (MDE)",
        "best_configurations": "Best configurations by the "
        "study's objective (a validation metric), with their test accuracy",
        "proxy_statistics": "What the proxy steps made (means over seeds)",
        "halving": "Successive halving: seeds complete and stopped, per configuration",
        "legend": "Configuration labels",
        "claims": f"The study's claims: each configuration {CLAIM} (one-sided paired t-tests, the largest of their "
        f"p-values; {correction} over every configuration of the study)",
        "by_dataset_architecture": "Per dataset and architecture",
        "effects": "Each setting's effect on the paired gain over the matched baseline (exploratory: validation "
        "objective, pp, against the mean over the setting's levels)",
        "effect_axes": "Each setting tested as a whole (Wald F; Holm over every setting of every dataset × "
        "architecture of the study)",
        "interactions": "Two-way interactions the runs can estimate, each tested against the main-effects model (F; "
        "Holm over those tested)",
        "predicted_best": "The configurations the effects model predicts best (run or not), with intervals that hold "
        "after the choice (max-t over every prediction) and how often each is best: to confirm on fresh seeds",
    }
    shown = {
        "verdicts": present.verdicts(raw["verdicts"], correction, stage)
        if len(raw["verdicts"])
        else present.plain("verdicts", raw["verdicts"], "Each proxy-attention configuration against its references")
    }
    for name, table in raw.items():
        if name == "verdicts":
            continue
        if name.startswith("by_"):
            shown[name] = present.summary(name, table, captions.get(name, f"By {name[3:].replace('_', ' ')}"))
        elif name == "best_configurations":
            clipped = table.drop(columns=[c for c in table.columns if c.startswith("test_accuracy_ci")])
            if "test_accuracy_ci_low" in table:  # one `[lo, hi]` column, as in every other table
                ci = [
                    present.interval(lo, hi, "test_accuracy", [])
                    for lo, hi in zip(table["test_accuracy_ci_low"], table["test_accuracy_ci_high"], strict=True)
                ]
                clipped["test accuracy 95% CI"] = ci
            shown[name] = present.plain(
                name,
                clipped,
                captions[name],
                [
                    "Ranked by the validation objective, never by test accuracy; the test "
                    "interval is a 95% t-interval over seeds, clipped to [0, 1]."
                ],
            )
        elif name in ("effects", "effect_axes", "interactions", "predicted_best"):
            shown[name] = present.effects(name, table, captions[name])
        else:
            shown[name] = present.plain(name, table, captions.get(name, name))
    return shown


def _figures(trials: list[FrozenTrial], data: StudyData, notes: list[str]) -> list[tuple[str, go.Figure]]:
    figures: list[tuple[str, go.Figure | None]] = [(f"by {a}", plots.accuracy_by_axis(data, a)) for a in data.axes]
    figures.append(("parallel coordinates", plots.parallel_coordinates(data)))
    figures.append(("importances", plots.importances(trials, data)))
    picked = _best_pair(data)
    curves = load_curves(data, states=("COMPLETE", "PRUNED"))
    complete_curves = curves[curves["state"] == "COMPLETE"] if len(curves) else curves
    figures.append(("learning curves", plots.learning_curves(complete_curves, [n for n in picked if n is not None])))
    figures.append(("successive halving", plots.halving_curves(curves, data)))
    figures += [(f"cost {i}", fig) for i, fig in enumerate(plots.cost(data))]
    figures.append(("proxy images per step", plots.proxy_counts(complete_curves)))
    if all(n is not None for n in picked):
        baseline, proxy = (folder_of(data, data.complete[data.complete["number"] == n].iloc[0]) for n in picked)
        try:
            from results.visual import cam_comparison  # loads torch: only when there is something to compare

            figures.append(("CAMs of two trained models", cam_comparison(baseline, proxy)))
        except (OSError, KeyError) as exc:  # checkpoints removed from the store
            notes.append(f"CAM comparison skipped: {exc}")
    else:
        notes.append("CAM comparison skipped: it needs a complete baseline and a complete proxy trial")
    skipped = [title for title, fig in figures if fig is None and title != "successive halving"]
    if skipped:
        notes.append(f"not enough data for: {', '.join(skipped)}")
    return [(title, fig) for title, fig in figures if fig is not None]


def _best_pair(data: StudyData) -> tuple[int | None, int | None]:
    """The best baseline trial and the best proxy trial by the objective, the baseline on the proxy's dataset,
    architecture and seed when there is one."""
    metric = data.spec.objective.metric
    ascending = not data.spec.objective.maximize
    proxies = data.proxy_trials.sort_values(metric, ascending=ascending)
    baselines = data.complete[data.complete["kind"] == PointKind.BASELINE].sort_values(metric, ascending=ascending)
    if proxies.empty or baselines.empty:
        return None, None
    best = proxies.iloc[0]
    keys = ["setting_dataset", "setting_architecture", "seed"]
    same = baselines[(baselines[keys] == best[keys]).all(axis=1)]
    return int((same if len(same) else baselines).iloc[0]["number"]), int(best["number"])


def _static_images(figures: list[tuple[str, go.Figure]], folder: Path, notes: list[str]) -> None:
    if importlib.util.find_spec("kaleido") is None:
        notes.append("PNG/SVG figures skipped: no static exporter (pip install kaleido to get them)")
        return
    folder.mkdir(parents=True, exist_ok=True)
    for title, fig in figures:
        for ext in ("png", "svg"):
            fig.write_image(folder / f"{_slug(title)}.{ext}")


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def _table(shown: present.Shown) -> str:
    if shown.frame.empty:
        return "<p><em>nothing to show</em></p>"
    notes = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in shown.notes)
    caption = f"<p class='caption'>{html.escape(shown.caption)}</p>"  # the LaTeX table's caption, word for word
    # Cells never break inside a word; a table wider than the page scrolls in its own box.
    table = shown.frame.to_html(index=False, border=0, classes="table", escape=True)
    return caption + f"<div class='scroll'>{table}</div>" + notes


def _fixed_settings(data: StudyData) -> present.Shown:
    """The space's fixed settings as a two-column table (nested ones dotted)."""
    flat = flatten(data.spec.fixed)
    frame = pd.DataFrame({"setting": list(flat), "value": [str(v) for v in flat.values()]})
    return present.Shown("fixed", frame, "Fixed settings (every point; defaults in the README's field table)")


EXPLORATORY_ROWS = 60  # more exploratory comparisons than this stay in tables/verdicts.csv


def _verdict_section(
    data: StudyData, raw: dict[str, pd.DataFrame], shown: dict[str, present.Shown], correction: str, effects: list[str]
) -> list[str]:
    """Confirmatory verdicts as they are; an exploration's comparisons labelled as such, with what halving left
    out, what its families could detect, and what to confirm."""
    verdicts = raw["verdicts"]
    stopped = int(verdicts["pruned_config"].sum()) if len(verdicts) else 0
    counts = (
        f"{len(verdicts)} comparisons in {len(raw['families'])} families (one per dataset, architecture and kind of "
        f"reference), corrected by {html.escape(correction)}; complete trials only"
    )
    if data.stage == "confirmation":
        confirms = html.escape(str(data.spec.confirms))
        sentences = "".join(f"<li>{html.escape(line)}</li>" for line in claim_sentences(raw["claims"], correction))
        return [
            "<h2>Verdicts (confirmation)</h2>",
            f"<p class='stage'>Confirmation of <b>{confirms}</b>: its selected configurations on fresh seeds, at full "
            f"budget, without halving, beside their matched baselines and controls.</p>",
            *([f"<p class='warning'>{html.escape(TEST_OVERLAP)}</p>"] if data.spec.test_overlap else []),
            f"<h3>What may be claimed</h3><ul>{sentences}</ul>",
            _table(shown["claims"]),
            f"<h3>Each comparison</h3><p>{counts}.</p>",
            _table(shown["families"]),
            _table(shown["verdicts"]),
        ]
    sentences = "".join(f"<li>{html.escape(line)}</li>" for line in effects)
    parts = [
        "<h2>Effects of each setting (exploratory)</h2>",
        "<p>The paired gain (validation objective over the matched baseline on the same seed, pp) modelled on "
        "every setting at once: main effects with 95% intervals whose variance includes the matched baselines' own "
        "noise (gains that subtract one baseline trial share it), each axis tested as a whole, Holm over every "
        "axis of the study (results.effects). The confirmation, not this model, is the result.</p>",
        f"<ul>{sentences}</ul>",
        *(
            _table(shown[name])
            for name in ("effect_axes", "effects", "interactions", "predicted_best")
            if name in shown
        ),
        "<h2>Exploratory comparisons</h2>",
        "<p class='stage'>Exploration: configurations are selected on validation only, and these comparisons are "
        f"exploratory, not findings. {counts}"
        + (
            f"; successive halving stopped {stopped} trials of these configurations (whole configurations, on all "
            "their seeds), so the comparisons are among the survivors"
            if stopped
            else ""
        )
        + ". Each family's MDE says the smallest difference it could call. Confirm the best configurations on fresh "
        f"seeds with <code>search confirm --study {html.escape(data.name)}</code>.</p>",
        _table(shown["families"]),
        "<h3>What to confirm</h3>",
        _table(shown["best_configurations"]),
    ]
    if len(verdicts) <= EXPLORATORY_ROWS:
        parts.append(_table(shown["verdicts"]))
    else:
        parts.append(f"<p>All {len(verdicts)} exploratory comparisons: <code>tables/verdicts.csv</code>.</p>")
    return parts


def _html(
    data: StudyData,
    raw: dict[str, pd.DataFrame],
    shown: dict[str, present.Shown],
    figures: list[tuple[str, go.Figure]],
    notes: list[str],
    trials: list[FrozenTrial],
    correction: str,
    effects: list[str],
) -> str:
    frame = data.trials
    states = frame["state"].value_counts().to_dict() if len(frame) else {}
    metric, direction = data.spec.objective
    failed = (
        frame[frame["state"] == "FAIL"][["number", "label", "attempt", "fail_reason"]] if len(frame) else pd.DataFrame()
    )
    split = sorted(data.complete["test_part"].dropna().unique()) if "test_part" in data.complete else []
    warnings = chance_warnings(data.spec, trials)
    parts = [
        f"<h1>Study {html.escape(data.name)}</h1>",
        "<h2>The grid and what ran</h2>",
        f"<p>{html.escape(methods_text(data))} Objective: {direction} {html.escape(metric)}. Trials by state: "
        + ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
        + ". Test set: "
        + (", ".join(TEST_PARTS.get(s, s) for s in split) or "–")
        + ".</p>",
        f"<p>Axes: {html.escape(', '.join(data.axes))}.</p>",
        _table(_fixed_settings(data)),
        *(f"<p class='warning'>{html.escape(warning)}</p>" for warning in warnings),
        "<h2>What failed and why</h2>",
        _table(present.plain("failed", failed, "Failed tries")),
        *_verdict_section(data, raw, shown, correction, effects),
    ]
    if len(raw["halving"]):
        parts += ["<h2>Successive halving</h2>", _table(shown["halving"])]
    if data.stage == "confirmation":  # an exploration shows them as "what to confirm", above
        parts += ["<h2>Best configurations</h2>", _table(shown["best_configurations"])]
    parts += [
        "<h2>What the proxy steps made</h2>",
        _table(shown["proxy_statistics"]),
        "<h2>Figures</h2>",
    ]
    for title, fig in figures:
        parts.append(
            f"<div class='figure' id='{_slug(title)}'>"
            + fig.to_html(full_html=False, include_plotlyjs=False, config={"responsive": True})
            + "</div>"
        )
    parts.append("<h2>Per dataset and architecture</h2>" + _table(shown["by_dataset_architecture"]))
    for name in raw:
        if name.startswith("by_") and name != "by_dataset_architecture":
            parts.append(f"<h2>By {html.escape(name[3:].replace('_', ' '))}</h2>" + _table(shown[name]))
    parts.append("<h2>Configuration labels</h2>" + _table(shown["legend"]))
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(data.name)} report</title>"
        f"<style>{STYLE}</style><script type='text/javascript'>{get_plotlyjs()}</script></head>"
        f"<body>{''.join(parts)}</body></html>"
    )
