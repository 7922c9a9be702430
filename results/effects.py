"""How each proxy setting moves the gain over the matched baseline: main effects with intervals, per (dataset,
architecture), from a designed fraction (`search.design`) or a full grid alike.

The response is the *paired gain*: a proxy trial's objective minus its matched baseline's on the same seed (the
baselines sharing its settings, those with as many epochs when there are: the budget-matched ones), in percentage
points, signed so that better is positive. The model regresses the gain on the design's factors,
sum-coded (a level's effect is its departure from the mean over levels), with each seed a block. Gains that subtract
the same baseline trial share its noise — with the thesis' two budget-matched baselines every configuration of a
schedule shares one per seed — so the model is generalised least squares with that covariance (`reference_cov`), and
tests use classical t and F on the residual degrees of freedom (statsmodels; clustering single runs was HC1 with
more degrees of freedom than the data has). Each axis is tested as a whole (Wald F); the axes of every family of the
study are Holm-adjusted together (`name_study_wide`); an axis whose levels change the reference is flagged
(`reference_changes`). An axis's share is its type-II sum of squares over the total (a description). The two-way
interactions the design can estimate are tested one at a time against the main-effects model. The predicted best
configuration is the model's best over every configuration of the grid, run or not, with its interval — a prediction
to confirm on fresh seeds (`search confirm --select model`), never a verdict. Everything here reads the objective (a
validation metric): choosing from it never reads the test set.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from results import stats
from results.load import StudyData
from results.tables import matches
from search.design import configurations, design_factors, factor_table, model_formula
from search.grid import GridSpec, config_key

FAMILY = ("dataset", "architecture")


@dataclass
class FamilyEffects:
    """The analysis of one (dataset, architecture): `levels` (each factor level's effect and interval, pp), `axes`
    (each factor's test, Holm-adjusted, its share of the variance and whether it is named), `interactions` (the
    two-way interactions the design supports), `best` (the predicted best configurations), `note` (why nothing
    could be fitted, or empty)."""

    levels: pd.DataFrame = field(default_factory=pd.DataFrame)
    axes: pd.DataFrame = field(default_factory=pd.DataFrame)
    interactions: pd.DataFrame = field(default_factory=pd.DataFrame)
    best: list[dict[str, Any]] = field(default_factory=list)
    runs: int = 0
    note: str = ""
    spread_pp: float = math.nan  # the residual standard deviation of a paired gain under the model


def paired_gains(data: StudyData) -> pd.DataFrame:
    """One row per complete proxy trial that has a matched baseline on its seed: dataset, architecture, config
    (its `config_key`), seed, every design axis's setting, and `gain` in pp (objective over the baseline's, better
    positive)."""
    complete = data.complete
    axes = [a for a in sorted(set(data.axes) | set(FAMILY)) if f"setting_{a}" in complete]
    baselines = complete[complete["kind"] == "baseline"]
    first = {label: group.iloc[0] for label, group in baselines.groupby("label", sort=True)}
    sign = 100.0 if data.spec.objective[1] == "maximize" else -100.0
    rows = []
    for _, group in data.proxy_trials.groupby("label", sort=True):
        head = group.iloc[0]
        refs = [label for label, ref in first.items() if matches(ref, head, axes)]
        same = [label for label in refs if first[label].get("epochs") == head.get("epochs")] or refs
        matched = baselines[baselines["label"].isin(same)]
        reference = matched.groupby("seed")["value"].mean()
        settings = {a: _plain(head[f"setting_{a}"]) for a in axes}
        key = config_key({a: v for a, v in settings.items() if v is not None})
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


def analyse_family(
    gains: pd.DataFrame,
    factors: list[str],
    candidates: list[dict[str, Any]],
    top: int = 3,
    alpha: float = stats.ALPHA,
    interactions: bool = True,
) -> FamilyEffects:
    """The main effects of `factors` on `gains` (rows of one family: the factors' settings, config, seed, gain),
    the interactions the runs support (unless not `interactions`), and the `top` of `candidates` (settings of every
    configuration of the grid) by the model's prediction."""
    import statsmodels.api as sm
    import statsmodels.formula.api as smf

    table = factor_table(gains.to_dict("records"), factors)
    columns = [c for c in table.columns if table[c].nunique() > 1]
    table["gain"], table["seed"] = gains["gain"].to_numpy(float), gains["seed"].astype(str).to_numpy()
    seeds = table["seed"].nunique()
    parameters = 1 + sum(table[c].nunique() - 1 for c in columns) + max(seeds - 1, 0)
    if not columns or len(table) < parameters + 2:
        return FamilyEffects(runs=len(table), note=f"{len(table)} paired gains: too few for {parameters} parameters")
    formula = model_formula(columns, "gain", seeds)
    omega = reference_cov(gains)
    fit = smf.gls(formula, table, sigma=omega).fit()  # classical t and F on the residual degrees of freedom
    total = float(((table["gain"] - table["gain"].mean()) ** 2).sum())
    anova = sm.stats.anova_lm(smf.ols(formula, table).fit(), typ=2)  # the shares: a description, not a test
    terms = fit.wald_test_terms(skip_single=False, scalar=True).table
    axes = pd.DataFrame(
        [
            {
                "factor": c,
                "levels": table[c].nunique(),
                "p": float(terms.loc[f'C(Q("{c}"), Sum)', "pvalue"]),
                "share": float(anova.loc[f'C(Q("{c}"), Sum)', "sum_sq"]) / total if total else math.nan,
                "reference_changes": changes_reference(gains, c),
            }
            for c in columns
        ]
    )
    axes["p_holm"] = stats.adjust(axes["p"].tolist(), "holm")
    axes["named"] = axes["p_holm"] < alpha
    levels = _level_effects(fit, table, columns, alpha)
    pairs = (
        _interactions(table, columns, formula, fit, omega)
        if interactions
        else pd.DataFrame(columns=["a", "b", "named"])
    )
    kept = [f'C(Q("{a}"), Sum):C(Q("{b}"), Sum)' for a, b in pairs.loc[pairs["named"].astype(bool), ["a", "b"]].values]
    model = fit if not kept else smf.gls(formula + " + " + " + ".join(kept), table, sigma=omega).fit()
    best = _predicted(model, table, columns, candidates, factors, top, alpha)
    spread = math.sqrt(fit.scale * float(np.mean(np.diag(omega))))  # a paired gain's own spread, its baseline's in
    return FamilyEffects(levels, axes, pairs, best, len(table), spread_pp=spread)


def _level_effects(fit: Any, table: pd.DataFrame, columns: list[str], alpha: float) -> pd.DataFrame:
    """Each level's effect (sum coding: the last level's is minus the sum of the others') with its interval."""
    names = list(fit.model.exog_names)
    rows = []
    for column in columns:
        levels = sorted(table[column].unique())
        index = [names.index(f'C(Q("{column}"), Sum)[S.{level}]') for level in levels[:-1]]
        for i, level in enumerate(levels):
            contrast = np.zeros(len(names))
            if i < len(index):
                contrast[index[i]] = 1.0
            else:
                contrast[index] = -1.0
            test = fit.t_test(contrast)
            low, high = np.asarray(test.conf_int(alpha=alpha)).reshape(-1)
            rows.append(
                {
                    "factor": column,
                    "level": level,
                    "effect_pp": float(np.asarray(test.effect).reshape(-1)[0]),
                    "low_pp": float(low),
                    "high_pp": float(high),
                    "runs": int((table[column] == level).sum()),
                }
            )
    return pd.DataFrame(rows)


def _interactions(table: pd.DataFrame, columns: list[str], formula: str, plain: Any, omega: np.ndarray) -> pd.DataFrame:
    """Each two-way interaction the runs can estimate (all its parameters, with residual degrees of freedom to
    spare), tested against the main-effects model (F, under the same covariance), Holm-adjusted over those tested."""
    import statsmodels.formula.api as smf

    rows = []
    for a, b in itertools.combinations(columns, 2):
        wanted = (table[a].nunique() - 1) * (table[b].nunique() - 1)
        if plain.df_resid - wanted < 3:
            rows.append({"a": a, "b": b, "df": wanted, "supported": False, "p": math.nan})
            continue
        bigger = smf.gls(f'{formula} + C(Q("{a}"), Sum):C(Q("{b}"), Sum)', table, sigma=omega).fit()
        supported = round(bigger.df_model - plain.df_model) == wanted and bigger.df_resid >= 3
        p = float(bigger.compare_f_test(plain)[1]) if supported else math.nan
        rows.append({"a": a, "b": b, "df": wanted, "supported": supported, "p": p})
    frame = pd.DataFrame(rows, columns=["a", "b", "df", "supported", "p"])
    frame["p_holm"] = stats.adjust(frame["p"].tolist(), "holm") if len(frame) else []
    frame["named"] = frame["p_holm"] < stats.ALPHA
    return frame


def _predicted(
    fit: Any,
    table: pd.DataFrame,
    columns: list[str],
    candidates: list[dict],
    factors: list[str],
    top: int,
    alpha: float,
) -> list[dict[str, Any]]:
    """The `top` candidates by the model's prediction averaged over seeds (pp). Each interval holds after the
    maximum was taken: it is the simultaneous (max-t) band over every predicted candidate at 1 − `alpha`, so the
    selected one's covers its true gain whichever was selected (a pointwise interval covered 46–55 % after taking the
    best of up to 900). `p_best`: how often each is the best when the fit's coefficients are drawn from their
    sampling distribution (a parametric bootstrap, as Bayesian optimisation tools report a posterior of the argmax).
    The prediction is biased upward by the selection; the confirmation, not the prediction, is the result. A
    candidate with a level the runs never saw cannot be predicted and is left out."""
    import patsy

    frame = factor_table(candidates, factors)
    seen = np.ones(len(frame), bool)
    for column in columns:
        seen &= frame[column].isin(set(table[column])).to_numpy()
    rows = frame[seen].reset_index(drop=True)
    if not len(rows):
        return []
    rows["gain"], rows["seed"] = 0.0, table["seed"].iloc[0]
    exog = np.asarray(patsy.build_design_matrices([fit.model.data.model_spec], rows)[0], float)
    for i, name in enumerate(fit.model.exog_names):
        if name.startswith("C(seed, Sum)"):
            exog[:, i] = 0.0  # the mean over seeds
    mean = exog @ np.asarray(fit.params, float)
    cov = np.asarray(fit.cov_params(), float)
    se = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", exog, cov, exog), 1e-300))
    draws = _coefficient_draws(cov, fit.df_resid)
    spread = draws @ exog.T  # each draw's departure of every candidate's prediction
    critical = float(np.quantile(np.abs(spread / se).max(axis=1), 1 - alpha))
    winners = np.bincount(np.argmax(mean + spread, axis=1), minlength=len(mean)) / len(draws)
    order = np.argsort(-mean, kind="stable")[:top]
    kept = [c for c, ok in zip(candidates, seen, strict=True) if ok]
    return [
        {
            "settings": kept[i],
            "predicted_pp": float(mean[i]),
            "low_pp": float(mean[i] - critical * se[i]),
            "high_pp": float(mean[i] + critical * se[i]),
            "p_best": float(winners[i]),
        }
        for i in order
    ]


def _coefficient_draws(cov: np.ndarray, df: float, draws: int = 4000) -> np.ndarray:
    """Draws of the coefficients' error from a multivariate t with the fit's covariance and residual degrees of
    freedom (fixed seed: the same fit gives the same band)."""
    rng = np.random.default_rng(0)
    values, vectors = np.linalg.eigh(cov)
    root = vectors * np.sqrt(np.clip(values, 0, None))
    normal = rng.standard_normal((draws, len(cov))) @ root.T
    scale = np.sqrt(max(df, 1.0) / rng.chisquare(max(df, 1.0), (draws, 1)))
    return normal * scale


def study_effects(data: StudyData, top: int = 3, interactions: bool = True) -> dict[tuple, FamilyEffects]:
    """`analyse_family` for every (dataset, architecture) of a study, over the design's factors (or the grid's
    when it ran whole), the predicted best chosen among every configuration of the grid."""
    whole = GridSpec(data.spec.name, {k: v for k, v in data.spec.data.items() if k != "design"})
    configs = configurations(whole.points)
    factors = [f.name for f in design_factors(configs)]
    gains = paired_gains(data)
    out: dict[tuple, FamilyEffects] = {}
    if not len(gains):
        return out
    for family, group in gains.groupby(list(FAMILY), sort=True):
        rows = group.reset_index(drop=True)
        out[family] = analyse_family(rows, factors, list(configs.values()), top, interactions=interactions)
    name_study_wide(out)
    return out


def name_study_wide(families: dict[tuple, FamilyEffects], alpha: float = stats.ALPHA) -> None:
    """Holm over every axis of every family of the study (the thesis grid: 15 families of ~5 axes), so that a study
    with no real effect names none at the stated rate, as its claims do (`results.claims`); each family's own
    adjustment would name some axis in most null studies. Sets `p_holm` and `named` in place."""
    fitted = [f for f in families.values() if len(f.axes)]
    adjusted = iter(stats.adjust([p for f in fitted for p in f.axes["p"].tolist()], "holm"))
    for family in fitted:
        family.axes["p_holm"] = [next(adjusted) for _ in range(len(family.axes))]
        family.axes["named"] = family.axes["p_holm"] < alpha


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
    design = spec.data.get("design")
    what = (
        f"a designed fraction ({len({k for b in design['blocks'] for k in b['configs']})} configurations in "
        f"{len(design['blocks'])} blocks)"
        if design and design.get("blocks")
        else "the grid as run"
    )
    lines = []
    for (dataset, arch), family in effects.items():
        if family.note:
            lines.append(f"{dataset} × {arch}: no effects fitted ({family.note}).")
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
            f"study): {moves}{rest}.{reference}{predicted}"
        )
    return lines


def model_selection(data: StudyData, top: int) -> dict[tuple, list[dict[str, Any]]]:
    """The `top` configurations per (dataset, architecture) the effects model predicts best, run or not, in the
    form `search.confirm.select` gives (`_predicted`: the predicted gain, pp; `_spread`: the fit's paired-gain
    spread, what a confirmation of picks run on one seed plans its power from)."""
    out: dict[tuple, list[dict[str, Any]]] = {}
    for (dataset, arch), family in study_effects(data, top).items():
        group = tuple((a, v) for a, v in (("dataset", dataset), ("architecture", arch)) if a in data.spec.axes)
        spread = family.spread_pp / 100  # the fit's paired-gain spread, in the objective's units
        out[group] = [
            {**dict(group), **e["settings"], "_predicted": e["predicted_pp"], "_spread": spread} for e in family.best
        ]
    return out
