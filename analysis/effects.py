"""The effects model: how each proxy setting moves the paired gain (`analysis.gains`), per (dataset,
architecture), from a designed fraction (`search.space.design`) or a full grid alike.

The model regresses the gain on the design's factors, sum-coded (a level's effect is its departure from the mean
over levels), with each seed a block (`analysis.coding`). Gains that subtract the same baseline trial share its
noise — with the thesis' two budget-matched baselines every configuration of a schedule shares one per seed — so the
model is generalised least squares with that covariance (`analysis.gains.reference_cov`), and tests use classical t
and F on the residual degrees of freedom (statsmodels; clustering single runs was HC1 with more degrees of freedom
than the data has). Each axis is tested as a whole (Wald F); the axes of every family of the study are
Holm-adjusted together (`name_study_wide`); an axis whose levels change the reference is flagged. An axis's share
is its type-II sum of squares over the total (a description). The two-way interactions the design can estimate are
tested one at a time against the main-effects model. The predicted best configuration is the model's best over
every configuration of the grid, run or not, with an interval that holds after the maximum was taken — a
prediction to confirm on fresh seeds, never a verdict. `widest_halfwidth` and `FamilyEffects.chances` are what a
design learns from a fit: how precise its main effects are, and how likely each configuration is to be the best
(`search.planning.adaptive`).
Everything here reads the objective (a validation metric): choosing from it never reads the test set.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from analysis import stats
from analysis.coding import factor_table, model_formula
from analysis.gains import FAMILY, changes_reference, reference_cov


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
    # Every candidate's chance of being the best under the hedged fit (`_predicted`): {"settings", "p_best",
    # "upper_pp"}, most likely first; what a design that learns draws its next block from.
    chances: list[dict[str, Any]] = field(default_factory=list)
    caveats: list[str] = field(default_factory=list)  # what the gains leave out or rest on (`gain_caveats`)


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
    # Two predictions: with the interactions the family's test named (Holm), and with every interaction at p < alpha
    # unadjusted. The second hedges against an interaction too weak to be named (a gain under one CAM method only:
    # the bench's grouped truth); the confirmation on fresh seeds, not either model, decides between them.
    named = pairs[pairs["named"].astype(bool)] if len(pairs) else pairs
    loose = pairs[pairs["p"] < alpha] if len(pairs) else pairs
    best, chances = _predicted(
        _with(fit, formula, table, omega, named), table, columns, candidates, factors, top, alpha
    )
    if len(loose) > len(named):
        hedge, chances = _predicted(
            _with(fit, formula, table, omega, loose), table, columns, candidates, factors, top, alpha
        )
        best = _interleave(best, hedge, top)
    spread = math.sqrt(fit.scale * float(np.mean(np.diag(omega))))  # a paired gain's own spread, its baseline's in
    return FamilyEffects(levels, axes, pairs, best, len(table), spread_pp=spread, chances=chances)


def _with(plain: Any, formula: str, table: pd.DataFrame, omega: np.ndarray, pairs: pd.DataFrame) -> Any:
    """The main-effects fit `plain` refitted with the interactions of `pairs` (itself when there are none)."""
    import statsmodels.formula.api as smf

    terms = [f'C(Q("{a}"), Sum):C(Q("{b}"), Sum)' for a, b in pairs[["a", "b"]].values]
    return plain if not terms else smf.gls(formula + " + " + " + ".join(terms), table, sigma=omega).fit()


def _interleave(first: list[dict], second: list[dict], top: int) -> list[dict]:
    """The `top` of two rankings taken in turn (`first`'s leading), each configuration once; each entry says
    which model ranked it."""
    out: list[dict] = []
    tagged = [[{**e, "model": name} for e in ranking] for name, ranking in (("named", first), ("hedge", second))]
    for entry in (e for pair in itertools.zip_longest(*tagged) for e in pair if e is not None):
        if len(out) < top and all(entry["settings"] != kept["settings"] for kept in out):
            out.append(entry)
    return out


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
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The `top` candidates by the model's prediction averaged over seeds (pp), and every candidate's chance of
    being the best (`FamilyEffects.chances`: `p_best` and its pointwise upper bound). Each interval holds after the
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
        return [], []
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
    upper = mean + float(scipy_stats.t.ppf(1 - alpha / 2, fit.df_resid)) * se  # orders those no draw chose
    chances = [
        {"settings": kept[i], "p_best": float(winners[i]), "upper_pp": float(upper[i])}
        for i in np.lexsort((-upper, -winners))
    ]
    best = [
        {
            "settings": kept[i],
            "predicted_pp": float(mean[i]),
            "low_pp": float(mean[i] - critical * se[i]),
            "high_pp": float(mean[i] + critical * se[i]),
            "p_best": float(winners[i]),
        }
        for i in order
    ]
    return best, chances


def _coefficient_draws(cov: np.ndarray, df: float, draws: int = 4000) -> np.ndarray:
    """Draws of the coefficients' error from a multivariate t with the fit's covariance and residual degrees of
    freedom (fixed seed: the same fit gives the same band)."""
    rng = np.random.default_rng(0)
    values, vectors = np.linalg.eigh(cov)
    root = vectors * np.sqrt(np.clip(values, 0, None))
    normal = rng.standard_normal((draws, len(cov))) @ root.T
    scale = np.sqrt(max(df, 1.0) / rng.chisquare(max(df, 1.0), (draws, 1)))
    return normal * scale


def name_study_wide(families: dict[tuple, FamilyEffects], alpha: float = stats.ALPHA) -> None:
    """Holm over every test of every family of the study — each axis and each two-way interaction the runs
    carry (the thesis grid: 15 families of ~5 axes and ~10 pairs) — so that a study with no real effect names
    none, axis or interaction, at the stated rate, as its claims do (`results.claims`); each family's own
    adjustment would name something in most null studies. Sets `p_holm` and `named` in place (the prediction keeps
    the interactions its family's own test chose: it is exploratory)."""
    fitted = [f for f in families.values() if len(f.axes)]
    tests = [(f.axes, i) for f in fitted for i in range(len(f.axes))]
    tests += [(f.interactions, i) for f in fitted for i in range(len(f.interactions))]
    adjusted = stats.adjust([float(frame["p"].iloc[i]) for frame, i in tests], "holm")
    for frame in {id(frame): frame for frame, _ in tests}.values():
        frame["p_holm"] = math.nan
    for (frame, i), p in zip(tests, adjusted, strict=True):
        frame.iloc[i, frame.columns.get_loc("p_holm")] = p
    for family in fitted:
        for frame in (family.axes, family.interactions):
            if len(frame):
                frame["named"] = frame["p_holm"] < alpha


def fit_families(
    gains: pd.DataFrame, factors: list[str], candidates: list[dict[str, Any]], top: int = 3, interactions: bool = True
) -> dict[tuple, FamilyEffects]:
    """`analyse_family` for every (dataset, architecture) of `gains` (`analysis.gains.paired_gains`), named
    study-wide (`name_study_wide`)."""
    out: dict[tuple, FamilyEffects] = {}
    if not len(gains):
        return out
    for family, group in gains.groupby(list(FAMILY), sort=True):
        out[family] = analyse_family(group.reset_index(drop=True), factors, candidates, top, interactions=interactions)
    name_study_wide(out)
    return out


def widest_halfwidth(families: dict[tuple, FamilyEffects]) -> float:
    """The widest 95% half-width (pp) of any level's main effect in any fitted family: what `--precision` asks to
    bring under its bound (infinite while a family cannot be fitted)."""
    widths = [
        float(((f.levels["high_pp"] - f.levels["low_pp"]) / 2).max()) if len(f.levels) else math.inf
        for f in families.values()
    ]
    return max(widths, default=math.inf)
