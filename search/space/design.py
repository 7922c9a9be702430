"""A designed fraction of a grid: balanced blocks of proxy configurations, chosen once and recorded in the study.

A full grid crosses every proxy setting with every other (the thesis grid: 900 configurations per dataset ×
architecture, 3 seeds each). What a thesis reports is how each setting moves the gain over the matched baseline, and
which configuration is best: main effects, which a balanced fraction estimates at a small part of the cost (Shi, Chiu
& Xu, "Evaluating Designs for Hyperparameter Tuning in Deep Neural Networks", NEJSDS 2023).

A design is a sequence of *blocks*. Each block is a balanced array over the design's factors (the grid axes that vary
among proxy configurations, dataset and architecture aside): every level of a factor appears equally often (within
one where the block size does not divide), and pairs of factors are made as close to orthogonal as the size allows
by column swaps that keep the balance (the J2 criterion of Xu, "An algorithm for constructing orthogonal and nearly
orthogonal arrays with mixed levels and small runs", Technometrics 44, 2002). A union of balanced blocks is
balanced, so a study stopped after any whole block is a balanced design; a larger budget adds blocks and never
changes those recorded. Each block runs on one seed (seeds taken in turn), beside the grid's baselines on that seed;
the same configurations run in every (dataset, architecture). Unmatched controls are left to `search confirm`,
which runs controls matched to each configuration it confirms.

Why by hand: pyDOE3's generalized subset designs stop balancing past a reduction of 5 on the thesis' levels (3 × 5
× 5 × 2 × 4 × 2: unbalanced at 10, refused at 20), no strength-2 orthogonal array of those levels has fewer than 300
runs, and oapackage's `Doptimize` (its D-criterion is the two-level one) takes ~2 s per restart and repeats rows.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from search.space.grid import DEFAULTS, Point, config_key
from trainer.errors import ProxySearchError
from trainer.prefix import DECIDERS, PointKind, irrelevant

SWAP_TRIES = 20000  # column swaps tried per block: the thesis' 60-run block reaches A2 ≤ 0.064 (0.09 s)
BUDGET = re.compile(r"(?P<amount>[0-9]+(?:\.[0-9]+)?)(?P<unit>%|h|configs)?\Z")


class DesignError(ProxySearchError, ValueError):
    """A budget or design that cannot be planned; the message says why and what would work."""


@dataclass(frozen=True)
class Budget:
    """What a user gives to spend: `fraction` of the full grid's cost, device-`hours`, or `configs` per (dataset,
    architecture)."""

    amount: float
    unit: str  # "fraction" | "hours" | "configs"
    text: str


def parse_budget(text: str) -> Budget:
    """`5%` (of the full grid's cost), `1200` or `1200h` (GPU-hours, or CPU-slot-hours on CPUs), `120configs`
    (configurations per dataset × architecture). Refuse anything else, zero and below."""
    match = BUDGET.match(str(text).strip()) if isinstance(text, (str, int, float)) else None
    if match is None or isinstance(text, bool):
        hint = " (no space: 5%)" if isinstance(text, str) and re.fullmatch(r"\s*[0-9.]+\s+%\s*", text) else ""
        raise DesignError(
            f"budget {text!r}: expected a share of the full grid's cost (5%){hint}, device-hours (1200 or 1200h) "
            "or configurations per dataset × architecture (120configs)"
        )
    amount, unit = float(match["amount"]), {"%": "fraction", "h": "hours", "configs": "configs"}[match["unit"] or "h"]
    if amount <= 0 or not math.isfinite(amount):
        raise DesignError(f"budget {text!r}: expected more than nothing")
    if unit == "fraction":
        amount /= 100
    if unit == "configs" and amount != int(amount):
        raise DesignError(f"budget {text!r}: a number of configurations is a whole number")
    return Budget(amount, unit, str(text).strip())


PRECISION = re.compile(r"(?P<amount>[0-9]+(?:\.[0-9]+)?)pp\Z")
FINEST_PRECISION = 0.01  # pp: below a validation set's resolution (1 image in 10,000) and never bought by any budget


def parse_precision(text: Any) -> float:
    """`--precision`: the widest 95% half-width (pp) a designed study's main effects may keep, as `0.5pp`."""
    match = PRECISION.match(str(text)) if isinstance(text, (str, int, float)) else None
    amount = float(match["amount"]) if match else math.nan
    if not match or not FINEST_PRECISION <= amount < 100:
        raise DesignError(
            f"expected a half-width in percentage points from {FINEST_PRECISION}pp to below 100pp, written like "
            f"0.5pp (no space), got {text!r}"
        )
    return amount


@dataclass(frozen=True)
class Factor:
    """One axis of the design and its levels, in the space's order."""

    name: str
    levels: tuple[Any, ...]


def configurations(points: list[Point]) -> dict[str, dict[str, Any]]:
    """Each proxy configuration's key -> its settings (`Configuration`: without dataset, architecture and seed)."""
    return {c.key: c.settings for c in (p.configuration for p in points if p.kind == PointKind.PROXY)}


def _levels(configs: dict[str, dict[str, Any]]) -> dict[str, list]:
    """Each axis of the proxy configurations -> its levels, in the order the space lists them."""
    values: dict[str, list] = {}
    for settings in configs.values():
        for axis, value in settings.items():
            seen = values.setdefault(axis, [])
            if value not in seen:
                seen.append(value)
    return values


def design_factors(configs: dict[str, dict[str, Any]]) -> list[Factor]:
    """The axes that vary among the proxy configurations, with their levels in the order the space lists them."""
    return [Factor(axis, tuple(levels)) for axis, levels in sorted(_levels(configs).items()) if len(levels) > 1]


def design_constants(configs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The axes with one level among the proxy configurations (a fixed schedule written as an axis, a one-valued
    `label_smoothing`, `control: [none]`): constants of the design, part of every configuration's key."""
    return {axis: levels[0] for axis, levels in sorted(_levels(configs).items()) if len(levels) == 1}


def block_size(factors: list[Factor]) -> int:
    """The runs of one block: the least common multiple of the level counts (every level equally often) when it
    leaves room for the main effects, else twice their parameter count (levels within one of equal)."""
    parameters = 1 + sum(len(f.levels) - 1 for f in factors)
    size = math.lcm(*(len(f.levels) for f in factors))
    if parameters + 4 <= size <= 4 * (parameters + 4):
        return size
    return max(2 * parameters, max(len(f.levels) for f in factors))


def _row_key(factors: list[Factor], row: tuple[int, ...], base: dict[str, Any], constants: dict[str, Any]) -> str:
    """The configuration a design row stands for: its settings, less those it cannot feel (`irrelevant`)."""
    settings = {**constants, **{f.name: f.levels[i] for f, i in zip(factors, row, strict=True)}}
    deciders = {**base, **settings}
    drop, _ = irrelevant(*(str(deciders.get(n)) for n in DECIDERS))
    return config_key({k: v for k, v in settings.items() if k not in drop})


class _Block:
    """One block being built: balanced columns, and each pair of factors' cell counts kept up to date under swaps.
    What a swap lowers is Xu's weighted J2: the sum over pairs of factors (a, b) of s_a·s_b times their squared
    cell counts, s the level counts. For balanced columns it is N²·A2 plus a constant (A2 = Σ (s_a·s_b/N²)·Σ n² − 1
    over pairs: `aberration`), so it is least exactly where the generalized aberration A2 is (Xu, Technometrics 44,
    2002, section 2); unweighted, pairs of many-level factors (threshold × multiply_weight) kept most of it."""

    def __init__(self, levels: list[int], size: int, rng: np.random.Generator) -> None:
        self.levels, self.size = levels, size
        # Plain lists: a block is built by ~10,000 tried swaps, and numpy's per-element indexing is slower than lists'.
        self.rows = np.stack([rng.permutation(np.arange(size) % n) for n in levels], axis=1).tolist()
        factors = range(len(levels))
        # cells[a][b][u][v]: rows with level u of factor a and v of factor b (both orders kept, a ≠ b).
        self.cells = [[[[0] * levels[b] for _ in range(levels[a])] for b in factors] for a in factors]
        for row in self.rows:
            for a, b in itertools.permutations(factors, 2):
                self.cells[a][b][row[a]][row[b]] += 1

    @property
    def columns(self) -> np.ndarray:
        """The block's rows as an array (a column per factor, level indices)."""
        return np.array(self.rows, dtype=np.int64)

    def swap_delta(self, column: int, i: int, k: int) -> float:
        """The change in weighted J2 if rows `i` and `k` swapped their values in `column`."""
        row_i, row_k = self.rows[i], self.rows[k]
        x, y, delta = row_i[column], row_k[column], 0
        for other, table in enumerate(self.cells[column]):
            u, v = row_i[other], row_k[other]
            if other == column or u == v:
                continue
            # Row i moves from cell (x, u) to (y, u), row k from (y, v) to (x, v): Σ n² changes by this.
            change = 2 * (table[y][u] + table[x][v] - table[x][u] - table[y][v]) + 4
            delta += change * self.levels[column] * self.levels[other]
        return float(delta)

    def swap(self, column: int, i: int, k: int) -> None:
        """Swap rows `i` and `k`'s values in `column`, keeping the cell counts."""
        row_i, row_k = self.rows[i], self.rows[k]
        x, y = row_i[column], row_k[column]
        for other in range(len(self.levels)):
            if other == column:
                continue
            u, v = row_i[other], row_k[other]
            for level, cell, step in ((x, u, -1), (y, u, 1), (y, v, -1), (x, v, 1)):
                self.cells[column][other][level][cell] += step
                self.cells[other][column][cell][level] += step
        row_i[column], row_k[column] = y, x


def balanced_block(
    factors: list[Factor],
    size: int,
    rng: np.random.Generator,
    allowed: set[str],
    taken: set[str],
    base: dict,
    constants: dict[str, Any] | None = None,
) -> tuple[list[str], np.ndarray]:
    """A balanced, nearly orthogonal block of `size` rows over `factors`, as configuration keys, and its rows (level
    indices, a column per factor): each key in `allowed`, none in `taken`, none twice (a row that breaks one of
    these is penalised like `size` non-orthogonal cells of the most-levelled pair, so swaps move it away while they
    can)."""
    block = _Block([len(f.levels) for f in factors], size, rng)
    row_key = functools.lru_cache(maxsize=None)(lambda row: _row_key(factors, row, base, constants or {}))
    keys = [row_key(tuple(r)) for r in block.rows]
    counts = Counter(keys)
    penalty = float(size * size * max(block.levels) ** 2)

    def clashes(key: str, count: int) -> float:
        return max(count - 1, 0) + (key in taken or key not in allowed) * count

    def tried(column: int, i: int, k: int) -> None:
        """Swap rows `i` and `k` in `column` unless that raises weighted J2 plus clashes (ties are taken: a walk
        over a plateau finds its way down)."""
        row_i, row_k = list(block.rows[i]), list(block.rows[k])
        if row_i[column] == row_k[column]:
            return
        row_i[column], row_k[column] = row_k[column], row_i[column]
        key_i, key_k = row_key(tuple(row_i)), row_key(tuple(row_k))
        delta = block.swap_delta(column, i, k)
        if (key_i, key_k) != (keys[i], keys[k]):
            change: dict[str, int] = {}  # a dict, not a Counter: this runs 20,000 times a block
            for key, n in ((key_i, 1), (key_k, 1), (keys[i], -1), (keys[k], -1)):
                change[key] = change.get(key, 0) + n
            for key, n in change.items():
                if n:
                    delta += penalty * (clashes(key, counts[key] + n) - clashes(key, counts[key]))
        if delta > 0:
            return
        block.swap(column, i, k)
        counts.subtract([keys[i], keys[k]])
        counts.update([key_i, key_k])
        keys[i], keys[k] = key_i, key_k

    columns = rng.integers(len(factors), size=SWAP_TRIES).tolist()
    firsts = rng.integers(size, size=SWAP_TRIES).tolist()
    seconds = ((np.array(firsts) + rng.integers(1, size, size=SWAP_TRIES)) % size).tolist()
    for column, i, k in zip(columns, firsts, seconds, strict=True):
        tried(column, i, k)
    return keys, block.columns


def aberration(rows: np.ndarray, levels: list[int]) -> float:
    """The generalized aberration A2 of balanced columns `rows` (level indices) with `levels` levels each (Xu & Wu,
    Annals of Statistics 29, 2001): over pairs of columns, (s_a·s_b/N²)·Σ n_uv² − 1, n_uv the pair's cell counts;
    0 for an orthogonal array, 1 for two two-level columns that are one."""
    total = 0.0
    for a, b in itertools.combinations(range(len(levels)), 2):
        table = np.zeros((levels[a], levels[b]))
        np.add.at(table, (rows[:, a], rows[:, b]), 1)
        total += levels[a] * levels[b] / len(rows) ** 2 * float((table**2).sum()) - 1
    return total


def block_rng(seed: int, block: int) -> np.random.Generator:
    """The generator block number `block` of a design drawn with `seed` is drawn from: the same block on every
    rerun."""
    return np.random.default_rng(int(hashlib.sha256(f"{seed}:{block}".encode()).hexdigest()[:8], 16))


def extend_design(
    configs: dict[str, dict[str, Any]],
    fixed: dict[str, Any],
    recorded: dict | None,
    blocks: int,
    seed: int,
    seeds: Sequence[int],
) -> dict:
    """The design with at least `blocks` blocks: the recorded one (kept as it is) plus new blocks, each drawn
    from its own seeded generator (the design's seed and the block's number) and avoiding every configuration
    already chosen. Block b runs on the space's seeds in turn (`seeds[b mod len(seeds)]`)."""
    factors = design_factors(configs)
    if not factors:
        raise DesignError(
            "a design needs proxy configurations that differ in at least one setting: this grid has "
            + ("one proxy configuration" if configs else "no proxy configuration")
            + " per dataset × architecture (run it whole)"
        )
    known, base = configs, {**DEFAULTS, **fixed}  # what `irrelevant` reads, as the grid reads it
    constants = design_constants(configs)  # one-level axes: in every configuration's key, never a factor
    done = list((recorded or {}).get("blocks", []))
    size = block_size(factors)  # new blocks over the grid's levels now (recorded ones are kept as they are)
    taken = {key for b in done for key in b["configs"]}
    while len(done) < blocks:
        drawn = balanced_block(factors, size, block_rng(seed, len(done)), set(known), taken, base, constants)[0]
        keys = [k for k in dict.fromkeys(drawn) if k in known and k not in taken]
        if not keys:
            break  # every configuration is chosen: the design is the grid
        done.append({"seed": seeds[len(done) % len(seeds)], "configs": sorted(keys)})
        taken.update(keys)
    return {
        "seed": seed,
        "size": size,
        "factors": {f.name: list(f.levels) for f in factors},
        "blocks": done,
        **({"budget": recorded["budget"]} if recorded and "budget" in recorded else {}),
    }


DESIGN_KEYS = {"budget", "seed", "adapt", "precision", "size", "factors", "blocks", "planned", "step", "seeds"}


def design_problems(raw: Any) -> list[tuple[str, str]]:
    """What is wrong with a space's `design:` block, as (key, message) pairs: `{budget: 5%, seed: 0}` as a user
    writes it (`adapt`, `precision` too), with `size`, `factors`, `blocks` and `planned` as a study records it."""
    if not isinstance(raw, dict) or set(raw) - DESIGN_KEYS:
        return [("design", "expected {budget: 5% | 1200h | 120configs, seed: INTEGER, adapt: BOOL, precision: 0.5pp}")]
    problems = []
    if "precision" in raw:
        try:
            parse_precision(raw["precision"])
        except DesignError as exc:
            problems.append(("design.precision", str(exc)))
    if not isinstance(raw.get("adapt", False), bool):
        problems.append(("design.adapt", f"expected true or false, got {raw['adapt']!r}"))
    if "budget" in raw:
        try:
            parse_budget(raw["budget"])
        except DesignError as exc:
            problems.append(("design.budget", str(exc)))
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        problems.append(("design.seed", f"expected an integer from 0 to 2**32 - 1, got {seed!r}"))
    blocks = raw.get("blocks", [])
    if not isinstance(blocks, list) or any(
        not isinstance(b, dict)
        or set(b) - {"focus"} != {"seed", "configs"}  # "focus": the levels an earlier version's block was over
        or not isinstance(b["configs"], list)
        or not all(isinstance(k, str) and re.fullmatch(r"[0-9a-f]{16}", k) for k in b["configs"])
        or not isinstance(b["seed"], int)
        for b in blocks
    ):
        problems.append(("design.blocks", "expected the blocks a study recorded ([{seed: N, configs: [KEY, …]}])"))
    return problems


def block_progress(design: dict, points: list[Point], done: set[str]) -> str:
    """`search status`'s line on a design: how many blocks, from the first, have every point complete (a study
    stopped there is a balanced design), and whether their runs can estimate every main effect yet."""
    complete = 0
    for block in design["blocks"]:
        chosen = set(block["configs"])
        keys = [
            p.grid_key
            for p in points
            if p.params["seed"] == block["seed"] and (p.kind == PointKind.BASELINE or p.configuration.key in chosen)
        ]
        if not all(key in done for key in keys):
            break
        complete += 1
    runs = sum(len(b["configs"]) for b in design["blocks"][:complete])
    parameters = 1 + sum(len(levels) - 1 for levels in design["factors"].values()) + max(complete - 1, 0)
    can = (
        f"enough for every main effect ({parameters} parameters from {runs} configurations per dataset × "
        "architecture: search report gives them)"
        if runs >= parameters + 2
        else f"not yet enough for the main effects ({parameters} parameters)"
    )
    return f"design: {complete} of {len(design['blocks'])} blocks complete; {can}"
