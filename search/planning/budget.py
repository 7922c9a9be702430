"""A budget -> the design it buys (`search.space.design`), priced with the same model as every plan
(`search.planning.price`).

`search run SPACE --budget 5%` (or `design: {budget: 5%}` in the space) adds blocks while the points they run — the
blocks' configurations in every dataset × architecture, with the baselines on each block's seed — cost at most the
budget, with shared stems and halving as the run would use them. The design is recorded in the study's space, so a
resume, a report and a later run see the same one; a larger budget extends it, a smaller one removes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from optuna.trial import FrozenTrial

from analysis.coding import expected_halfwidth
from search.planning.plan import build_plan
from search.planning.price import price
from search.planning.progress import format_hours
from search.planning.status import halving_bound
from search.space.design import (
    Budget,
    DesignError,
    block_size,
    configurations,
    design_factors,
    extend_design,
    parse_budget,
    parse_precision,
)
from search.space.grid import GridSpec, Point, designed
from trainer.prefix import PointKind

CONFIRM_TOP, CONFIRM_SEEDS = 3, 10  # search confirm's defaults: what the dry-run prices on top of the design
ASSUMED_SPREAD_PP = 1.0  # seed-to-seed sd of a paired gain, in pp, until a study has measured its own


@dataclass(frozen=True)
class Cost:
    """What a set of points costs as the run would compute it: epochs, device-hours of the (dataset,
    architecture) groups whose rate is known, how many are not (their data is not there to count), the unit."""

    epochs: int
    hours: float
    unknown: int
    unit: str

    def measure(self, by_epochs: bool) -> float:
        """The figure a budget is spent in: hours, or epochs where some group's hours cannot be known."""
        return float(self.epochs) if by_epochs else self.hours


def cost_of(
    spec: GridSpec, points: list[Point], share: bool, trials: list[FrozenTrial], resources: dict[str, float]
) -> Cost:
    """The cost of running `points` of `spec`: with shared stems when `share`, at most that with halving."""
    plan = build_plan(points, spec.fixed, share)
    halving_epochs = halving_bound(spec, points, plan) if spec.halving else None
    priced = price(spec, points, plan, trials, halving_epochs, resources)
    if halving_epochs is not None:
        epochs, hours = halving_epochs, priced["hours_halving"]
    else:
        epochs = plan.shared_epochs if share else plan.naive_epochs
        hours = priced["hours_shared"] if share else priced["hours_naive"]
    return Cost(epochs, hours, priced["unknown"], priced["unit"])


@dataclass(frozen=True)
class DesignPlan:
    """The space to run (with its design recorded, or whole) and what to say about it."""

    spec: GridSpec
    lines: list[str]


def plan_design(
    spec: GridSpec,
    budget: Budget | None,
    recorded: dict | None,
    trials: list[FrozenTrial],
    share: bool,
    resources: dict[str, float],
    stored: GridSpec | None = None,
    precision: float | None = None,
    adapt: bool = False,
) -> DesignPlan:
    """The design `budget` (`--budget`, parsed once by the caller; else the space's `design.budget`) buys for
    `spec`, on top of the design the study `recorded` (never less); no budget: the recorded design as it is, or
    `spec` unchanged when there is none.
    `stored`: the space the study recorded, whose `trials` measure the paired gain's spread (`measured_spread`).
    `adapt` (or a `precision`, pp): a design that learns — its first block recorded now, each further one chosen
    when the one before is done (`search.planning.adaptive`), up to the blocks the budget buys or until every main
    effect's half-width is within `precision`."""
    asked, chosen, precision, adapt = _asked(spec, budget, precision, adapt, recorded)
    text = chosen.text if chosen is not None else None
    spread = measured_spread(stored, trials) if stored is not None else None
    if text is None and not recorded:
        return DesignPlan(spec, [])
    whole = spec.with_design(None)
    points, seeds = whole.points, spec.seeds
    configs, fixed = configurations(points), whole.fixed
    seed = int((recorded or {}).get("seed", asked.get("seed", 0)) or 0)
    naive = cost_of(whole, points, False, trials, resources)
    full = cost_of(whole, points, share, trials, resources)
    lines = _unchanged_by(recorded, asked, seed)
    if recorded and text == recorded.get("budget"):
        text = None  # the same command again: the design chosen when this budget was given, never re-priced
    if text is None or chosen is None:  # a recorded design, run again without a new budget: kept as it is
        design = blind = dict(recorded or {})
        lines.append(f"design: the study's {len(design['blocks'])} blocks (budget {design.get('budget')}) kept")
    else:
        budget = chosen
        factors = design_factors(configs)
        if not factors:
            extend_design(configs, fixed, None, 1, seed, seeds)  # raises the error that says why
        size = block_size(factors)
        recorded_blocks = len((recorded or {}).get("blocks", []))
        # A share of the grid is of its cost from scratch: in hours, or in epochs where a group's rate is unknown
        # (the design takes the same share of every group, so the two agree within the groups' spread).
        by_epochs = budget.unit == "fraction" and naive.unknown > 0
        target = {
            "configs": math.inf,
            "fraction": budget.amount * naive.measure(by_epochs),
            "hours": budget.amount,
        }[budget.unit]
        design, fitted = _affordable(
            whole, configs, recorded, seed, seeds, budget, target, by_epochs, share, trials, resources
        )
        # Every configuration on every seed: the grid itself.
        whole_fits = (
            budget.amount >= len(configs) * len(seeds)
            if budget.unit == "configs"
            else full.measure(by_epochs) <= target
        )
        if whole_fits and not adapt:
            return DesignPlan(whole, [f"budget {text}: the whole grid fits ({_said(full, naive)}): running it whole"])
        if fitted is None and not recorded_blocks:
            one_block = designed(points, extend_design(configs, fixed, None, 1, seed, seeds))
            raise DesignError(
                f"budget {text} buys no balanced block: the smallest design (1 block of {size} configurations per "
                f"dataset × architecture on seed {seeds[0]}, with its baselines) costs "
                f"{_said(cost_of(whole, one_block, share, trials, resources), naive)}"
            )
        if not design.get("blocks"):
            raise DesignError(f"budget {text}: no configuration of the grid could be chosen")
        lines += _what_changed(recorded, design, configs, text, budget, fitted)
        design["budget"] = text
        blind = design
        if adapt:
            sd = (spread or (ASSUMED_SPREAD_PP, ""))[0]
            design = learning(design, len((recorded or {}).get("blocks", [])), precision, sd, configs)
    designed_spec = whole.with_design(design)
    run = cost_of(whole, designed(points, blind), share, trials, resources)  # a design that learns: at most this
    lines += describe(designed_spec, points, configs, run, naive, full, spread, blind)
    return DesignPlan(designed_spec, lines)


def _affordable(
    whole: GridSpec,
    configs: dict[str, dict],
    recorded: dict | None,
    seed: int,
    seeds: range,
    budget: Budget,
    target: float,
    by_epochs: bool,
    share: bool,
    trials: list[FrozenTrial],
    resources: dict[str, float],
) -> tuple[dict, int | None]:
    """The `recorded` design of the grid `whole` (its proxy `configs`) with as many more blocks as cost at most
    `target` (a budget in configurations: until it holds that many), and how many blocks that is (None: not one)."""
    points, fixed = whole.points, whole.fixed
    taken = {k for b in (recorded or {}).get("blocks", []) for k in b["configs"]}
    available = len((recorded or {}).get("blocks", [])) + math.ceil(
        len(set(configs) - taken) / block_size(design_factors(configs))
    )
    unbounded = budget.unit == "fraction" and budget.amount >= 1  # no design costs more than its grid
    design, fitted = dict(recorded or {}), None
    for blocks in range(1, available + 1):
        trial_design = extend_design(configs, fixed, design, blocks, seed, seeds)
        if (
            not unbounded
            and cost_of(whole, designed(points, trial_design), share, trials, resources).measure(by_epochs) > target
        ):
            break
        design, fitted = trial_design, blocks
        if budget.unit == "configs" and sum(len(b["configs"]) for b in design["blocks"]) >= budget.amount:
            break
    return design, fitted


def measured_spread(stored: GridSpec, trials: list[FrozenTrial]) -> tuple[float, str] | None:
    """The paired gain's spread the study of `stored` has measured in `trials` (the median over its dataset ×
    architecture families of the effects model's residual sd, `search.planning.adaptive.trials_fit`), or None before it
    can
    be fitted."""
    import statistics

    from search.planning.adaptive import trials_fit  # pandas and statsmodels: only once a study has trials

    if not any(t.state.name == "COMPLETE" for t in trials):
        return None
    fitted = trials_fit(stored, trials, interactions=False)
    spreads = [f.spread_pp for f in fitted.values() if not math.isnan(f.spread_pp)]
    if not spreads:
        return None
    return statistics.median(spreads), f"measured: this study's effects model, median over {len(spreads)} families"


def _asked(
    spec: GridSpec, budget: Budget | None, precision: float | None, adapt: bool, recorded: dict | None
) -> tuple[dict, Budget | None, float | None, bool]:
    """What the command line, else the space's `design:`, asks: the space's design block, the budget, the
    precision, whether the design learns (a precision implies it; a precision alone is a budget of the grid)."""
    asked = dict(spec.design or {})
    if budget is None and asked.get("budget") is not None:
        budget = parse_budget(asked["budget"])
    if precision is None and "precision" in asked:
        precision = parse_precision(asked["precision"])
    if budget is None and precision is not None and not recorded:
        budget = parse_budget("100%")  # a precision alone: blocks until it is reached, at most the whole grid's
    return asked, budget, precision, adapt or bool(asked.get("adapt")) or precision is not None


def learning(design: dict, recorded_blocks: int, precision: float | None, sd: float, configs: dict) -> dict:
    """The record of a design that learns, from the blind `design` a budget buys: the blocks decided so far (the
    recorded ones, else the first), the `step` (configurations per further block: with a precision, a balanced
    block's; else a sixth of the first, at least 2), `planned` (the blocks that spend the configurations the budget
    buys: the most it will run), the `seeds` its further blocks take in turn (those of the budget's blocks: no more
    baselines than priced) and the `precision` it stops at. A precision the budget cannot buy even at the `sd`
    assumed is refused, with what it would take."""
    if precision is not None:
        finest = expected_halfwidth(design, configs, sd)  # after every block: a block added never widens an interval
        if finest > precision:
            raise DesignError(
                f"--precision {precision:g}pp: the budget ({design['budget']}, {len(design['blocks'])} blocks) buys "
                f"±{finest:.2f} pp at a paired-gain spread of {sd:.2g} pp; ask a coarser precision or a larger "
                "budget"
            )
    kept = design["blocks"][: max(recorded_blocks, 1)]
    # A precision is bought fastest by balanced blocks (every level alike); the best is found by aiming at it.
    step = design.get("step") or (design["size"] if precision else max(2, math.ceil(len(kept[0]["configs"]) / 6)))
    return {
        **design,
        "blocks": kept,
        "planned": learning_blocks(design["blocks"], kept, step),
        "step": step,
        "seeds": list(dict.fromkeys(b["seed"] for b in design["blocks"])),
        "adapt": True,
        **({"precision": precision} if precision else {}),
    }


def learning_blocks(bought: list[dict], kept: list[dict], step: int) -> int:
    """The blocks of a design that learns which spend the configurations of the blocks `bought`: those `kept`, then
    blocks of `step`."""
    left = sum(len(b["configs"]) for b in bought) - sum(len(b["configs"]) for b in kept)
    return len(kept) + math.ceil(max(left, 0) / step)


def _unchanged_by(recorded: dict | None, asked: dict, seed: int) -> list[str]:
    """What a space's `design:` asks that a recorded design does not take: another seed (said, not obeyed)."""
    if recorded and "seed" in asked and asked["seed"] != seed:
        return [
            f"design.seed {asked['seed']} not used: the study's design was drawn with seed {seed} and is kept (a new "
            "seed is a new design: run it as a new study, --study NAME)"
        ]
    return []


def _what_changed(
    recorded: dict | None, design: dict, configs: dict, text: str, budget: Budget, fitted: int | None
) -> list[str]:
    """What a new budget did to the design, in words: grown from N to M blocks, over levels the grid gained, not
    shrunk, bought nothing more (and what would spend it), or more configurations than asked (a block is the
    smallest balanced unit)."""
    lines = []
    before, after = len((recorded or {}).get("blocks", [])), len(design["blocks"])
    if recorded and recorded.get("factors") and recorded["factors"] != design["factors"]:
        gained = {
            k: [v for v in levels if v not in recorded["factors"].get(k, [])] for k, levels in design["factors"].items()
        }
        said = "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in gained.items() if v)
        lines.append(
            f"design: the grid gained levels ({said or 'its factors changed'}); new blocks are drawn over them"
        )
    if before and after > before:
        was = f", was {recorded['budget']}" if recorded and recorded.get("budget") else ""
        lines.append(f"design: {before} → {after} blocks (budget {text}{was})")
    elif before and before > (fitted or 0):
        lines.append(f"design: the study already holds {before} blocks; budget {text} removes none")
    chosen = {k for b in design["blocks"] for k in b["configs"]}
    if before and after == before and chosen >= set(configs):
        lines.append(
            f"design: budget {text} buys nothing more: the design already holds every configuration of the grid on "
            "its block seeds; more would buy more seeds of them (raise repeats) or a confirmation (search confirm)"
        )
    if budget.unit == "configs" and len(chosen) > budget.amount:
        lines.append(
            f"design: {len(chosen)} configurations per dataset × architecture, more than the {budget.amount:g} asked: "
            f"a block ({design['size']}) is the smallest balanced unit"
        )
    return lines


def _said(cost: Cost, naive: Cost) -> str:
    """A cost beside the whole grid's from scratch: hours where known, epochs beside them."""
    known = f" ({naive.unknown} groups whose data is not there left out)" if naive.unknown else ""
    return (
        f"{format_hours(cost.hours)} {cost.unit}{known}, {cost.epochs:,} epochs: "
        f"{cost.epochs / naive.epochs:.2%} of the whole grid's epochs from scratch ({naive.epochs:,}), "
        f"{cost.hours / naive.hours:.2%} of its hours"
    )


def describe(
    spec: GridSpec,
    points: list[Point],
    configs: dict[str, dict],
    run: Cost,
    naive: Cost,
    full: Cost,
    spread: tuple[float, str] | None = None,
    blind: dict | None = None,
) -> list[str]:
    """The design in words: its blocks and seeds, what it runs of the grid, its price beside the grid's, and the
    precision of its main effects at the `spread` measured so far (else an assumed one). A design that learns is
    described by the `blind` one its budget buys (the most it runs), then how it learns."""
    recorded = spec.design or {}
    design = blind or recorded
    chosen = [key for b in design["blocks"] for key in b["configs"]]
    seeds = sorted({b["seed"] for b in design["blocks"]})
    controls = sum(p.kind == PointKind.CONTROL for p in points)
    sd, basis = spread or (ASSUMED_SPREAD_PP, "assumed; the report's effects table gives the measured intervals")
    width = expected_halfwidth(design, configs, sd)
    # Every level equally often in a block only when the block's size is a multiple of each factor's level count.
    even = all(design["size"] % len(levels) == 0 for levels in design["factors"].values())
    balance = "balanced " if even else "nearly balanced (a level at most once more than another) "
    lines = [
        f"design (budget {design.get('budget')}, seed {design['seed']}): {len(design['blocks'])} {balance}"
        f"block{'s' if len(design['blocks']) > 1 else ''} of "
        f"{design['size']} configurations: {len(chosen):,} of the {len(configs):,} proxy configurations per "
        f"dataset × architecture, block by block on seeds {', '.join(str(b['seed']) for b in design['blocks'])}, with "
        "the baselines on those "
        f"seeds: {len(designed(points, design)):,} of the grid's {len(points):,} points",
        f"  price: the whole grid {format_hours(naive.hours)} {run.unit} from scratch, {format_hours(full.hours)} with "
        "shared stems; "
        f"this design {_said(run, naive)}",
        f"  expected precision: each main effect's 95% interval ±{width:.2f} pp at a paired-gain spread of "
        f"{sd:.2g} pp ({basis})",
    ]
    if recorded.get("adapt"):
        lines += _learning_lines(recorded, design, configs, sd)
    families = len({(p.params.get("dataset"), p.params.get("architecture")) for p in spec.points})
    baselines = sum(p.kind == PointKind.BASELINE for p in spec.points) / max(len(seeds) * families, 1)
    confirm = families * CONFIRM_SEEDS * (CONFIRM_TOP * 3 + baselines)  # each with its two matched controls
    confirm_hours = confirm * run.hours / max(len(spec.points), 1)
    lines.append(
        f"  then `search confirm --select model` (its top {CONFIRM_TOP} per dataset × architecture on "
        f"{CONFIRM_SEEDS} fresh seeds, each beside its matched baselines and two controls): ≈ {confirm:,.0f} "
        f"trials, ≈ {format_hours(confirm_hours)} {run.unit} more; "
        + (
            f"{(run.hours + confirm_hours) / naive.hours:.2%} of the whole grid's naive cost in all"
            if naive.hours
            else ""
        )
    )
    if controls:
        lines.append(
            f"  {controls:,} unmatched control points left out: `search confirm` runs controls matched to each "
            "configuration it confirms"
        )
    return lines


def halfwidths_by_blocks(design: dict, configs: dict[str, dict], sd: float) -> Iterator[float]:
    """The widest main-effect half-width (pp) after each of `design`'s blocks, at a paired-gain spread `sd`, one
    block at a time (a reader that stops at the first narrow enough computes no more)."""
    for b in range(1, len(design["blocks"]) + 1):
        yield expected_halfwidth({**design, "blocks": design["blocks"][:b]}, configs, sd)


def _learning_lines(recorded: dict, blind: dict, configs: dict[str, dict], sd: float) -> list[str]:
    """How a design that learns goes on: the blocks decided so far of the most it runs, and when it stops."""
    decided, planned = len(recorded["blocks"]), recorded.get("planned", len(recorded["blocks"]))
    precision = recorded.get("precision")
    how = (
        "balanced, the next of the budget's"
        if precision is not None
        else "drawn by each configuration's chance of being the best under their fit"
    )
    lines = [
        f"  learns: {decided} of at most {planned} blocks decided; each further block ({recorded.get('step')} "
        f"configurations, {how}) is chosen when the ones before are complete (search.planning.adaptive), and "
        "recorded"
    ]
    if precision is not None:
        widths = halfwidths_by_blocks(blind, configs, sd)
        expected = next((b for b, w in enumerate(widths, start=1) if w <= precision), planned)
        lines.append(
            f"  stops when every main effect's 95% half-width is within ±{precision:g} pp: expected after {expected} "
            f"block{'s' if expected > 1 else ''} at a paired-gain spread of {sd:.2g} pp (at most {planned})"
        )
    return lines
