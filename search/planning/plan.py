"""Shared-prefix execution: the tree of stems under a grid's points (pure; nothing here runs anything).

Points that agree on every setting acting from the start, on the schedule's shape up to epoch `e` and on the proxy
settings of the steps before `e` train bit-for-bit the same up to `e` (`trainer.prefix` defines that key; this module
computes the same grouping from the points' params, which is all that differs between points of one space). For every
epoch `e` at which some point has a proxy step, the points that agree up to `e` form a node; a node of two or more
points is a *stem*: it trains that prefix once, in its own folder (`stems/<key>`), and computes the inputs of the
proxy step due at `e` (wrong images and CAMs) once per CAM group that two of its points share. Stems nest (a stem
of stems) where the tree is deeper; a stem with a single child and no point of its own is merged into that child.
Each point starts from its deepest stem's checkpoint.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from search.records.paths import stem_folder
from search.space.grid import DEFAULTS, Point, lasting_objects
from trainer.prefix import CAM_GROUP_FIELDS, PROGRESS_SCHEDULERS, cam_group, prefix_signature
from trainer.schedule import Schedule, parse_schedule


@dataclass(frozen=True)
class Stem:
    """A shared prefix: `epochs` of training that every point in `members` does identically. It starts from
    `parent`'s checkpoint (or from scratch), trains `representative`'s config, and computes the proxy-step inputs
    of each CAM group in `groups` (one member's grid key per group)."""

    key: str
    epochs: int
    parent: str | None
    representative: str
    groups: tuple[str, ...]
    members: frozenset[str]

    @property
    def folder(self) -> str:
        return stem_folder(self.key)


@dataclass
class Plan:
    """The stems (parents before children) and, per point, the stem it starts from."""

    stems: dict[str, Stem] = field(default_factory=dict)
    stem_of: dict[str, str | None] = field(default_factory=dict)  # point -> the stem it starts from
    naive_epochs: int = 0
    shared_epochs: int = 0

    def start_epoch(self, grid_key: str) -> int:
        stem = self.stem_of.get(grid_key)
        return self.stems[stem].epochs if stem else 0

    def depth(self, key: str) -> int:
        depth, stem = 0, self.stems[key]
        while stem.parent is not None:
            depth, stem = depth + 1, self.stems[stem.parent]
        return depth


def _unique_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of an integer table and, per row, the index of its distinct row (np.unique(axis=0),
    but through one int64 per row: each column ranked densely, the ranks combined)."""
    combined = np.zeros(len(rows), np.int64)
    for column in rows.T:
        values, rank = np.unique(column, return_inverse=True)
        combined = combined * len(values) + rank.reshape(-1)
    _, first, inverse = np.unique(combined, return_index=True, return_inverse=True)
    return rows[first], inverse.reshape(-1)


def build_plan(points: list[Point], fixed: dict, share: bool = True) -> Plan:
    """The stems under `points` (all from one space, whose `fixed:` is `fixed`); none when not `share`."""
    with lasting_objects():
        return _build_plan(points, fixed, share)


def _build_plan(points: list[Point], fixed: dict, share: bool) -> Plan:
    columns = _Columns(points, {**DEFAULTS, **fixed})
    schedules = [parse_schedule(str(text)) for text in columns.values("proxy_steps")]
    schedule = columns.codes("proxy_steps")
    total = np.asarray([s.epochs for s in schedules], np.int64)[schedule]
    plan = Plan(naive_epochs=int(total.sum()))
    if not share or not points:
        return _unshared(plan, columns.keys)
    progress = (fixed.get("scheduler") or {}).get("name", "none") in PROGRESS_SCHEDULERS
    table = _node_rows(columns, schedules, progress)
    if table is None:
        return _unshared(plan, columns.keys)
    nodes, node_of = _unique_rows(table[:, 1:])
    kept = np.bincount(node_of)[node_of] >= 2
    if not kept.any():  # nothing two points share
        return _unshared(plan, columns.keys)
    order = np.lexsort((table[kept, 1], table[kept, 0]))  # by point, then epoch
    chains = _Chains(table[kept, 0][order], node_of[kept][order], nodes[:, 0].tolist(), columns.rank)
    names = {node: _stem_name(columns, schedules, progress, node, chains) for node in chains.parent_of}
    groups_of = _shared_groups(columns, schedules, chains)
    for node in sorted(chains.parent_of, key=lambda k: (chains.epoch[k], names[k])):  # parents before children
        a, b = chains.span[node]
        parent = chains.parent_of[node]
        members = columns.key_array[chains.member[a:b]].tolist()
        plan.stems[names[node]] = Stem(
            names[node],
            chains.epoch[node],
            None if parent is None else names[parent],
            members[0],
            tuple(sorted(groups_of[node])),
            frozenset(members),
        )
    # Each point starts from the last node of its chain (never one merged away: a point ends there).
    last_node = np.full(len(points), -1, np.int64)
    last_node[chains.points[chains.last]] = chains.nodes[chains.last]
    stem_names = _objects([None, *(names.get(k) for k in range(len(nodes)))])
    plan.stem_of = dict(zip(columns.keys, stem_names[last_node + 1].tolist(), strict=True))
    plan.shared_epochs = sum(
        st.epochs - (plan.stems[st.parent].epochs if st.parent else 0) for st in plan.stems.values()
    )
    start_epochs = np.where(last_node >= 0, nodes[np.maximum(last_node, 0), 0], 0)
    plan.shared_epochs += int((total - start_epochs).sum())
    return plan


class _Columns:
    """Every setting of the points as a column of integer codes, one code per distinct value (a point that lacks
    an axis has the fixed value or default there: the value its trial trains with). Values are validated scalars
    of one type per axis: hashable, and compared, as they are."""

    def __init__(self, points: list[Point], base: dict) -> None:
        self.points, self.base, self.n = points, base, len(points)
        self.keys = [p.grid_key for p in points]
        self.key_array = _objects(self.keys)
        # each point's place in grid_key order: a node's first member is its stem's representative
        self.rank = np.empty(self.n, np.int64)
        self.rank[sorted(range(self.n), key=self.keys.__getitem__)] = np.arange(self.n)
        import pandas as pd  # here, not at the top: every `search` command imports this module, few plan (1 s)

        frame = pd.DataFrame([p.params for p in points])  # a missing axis reads NaN, which factorize codes as -1
        self._zeros = np.zeros(self.n, np.int64)
        self._codes: dict[str, np.ndarray] = {}
        self._values: dict[str, list] = {}
        for axis in frame.columns:
            codes, uniques = pd.factorize(frame[axis])
            values = [*uniques, base.get(axis)]  # the last: the value of a point without the axis
            canonical, distinct = pd.factorize(pd.Series([json.dumps(v, sort_keys=True, default=str) for v in values]))
            self._codes[axis] = canonical[np.where(codes < 0, len(uniques), codes)].astype(np.int64)
            self._values[axis] = [values[list(canonical).index(k)] for k in range(len(distinct))]

    def codes(self, name: str) -> np.ndarray:
        """The code of `name`'s value at every point (all 0 where no point sets it)."""
        return self._codes.get(name, self._zeros)

    def values(self, name: str) -> list:
        """The value of each code of `name`."""
        return self._values[name] if name in self._values else [self.base.get(name)]

    def setting(self, i: int) -> Callable[[str], Any]:
        """Point `i`'s value of a field, by name."""

        def value(name: str) -> Any:
            return self._values[name][self._codes[name][i]] if name in self._codes else self.base.get(name)

        return value


def _node_rows(columns: _Columns, schedules: list[Schedule], progress: bool) -> np.ndarray | None:
    """One row per (point, epoch at which some point that agrees with it from the start has a proxy step, before
    its own end): the point, the epoch, then the leaves of `prefix_signature` there, as codes (-1: no such leaf).
    Points agree up to that epoch exactly where the rows agree after the first column."""
    schedule = columns.codes("proxy_steps")
    encode = _Encoder(columns, progress)
    start = [
        (np.flatnonzero(schedule == k), 0, encode(np.flatnonzero(schedule == k), s, 0)) for k, s in enumerate(schedules)
    ]
    klass = np.empty(columns.n, np.int64)
    klass[np.concatenate([idx for idx, _, _ in start])] = _unique_rows(_stack(start, encode.width)[:, 2:])[1]
    pairs, pair_of = _unique_rows(np.column_stack([klass, schedule]))  # (class, schedule) of each point
    class_epochs: dict[int, set[int]] = defaultdict(set)
    for c, k in pairs.tolist():
        class_epochs[c].update(schedules[k].boundaries)
    by_pair = np.argsort(pair_of, kind="stable")
    cuts = np.flatnonzero(np.r_[True, np.diff(pair_of[by_pair]) != 0, True])
    pieces = []
    for (c, k), (lo, hi) in zip(pairs.tolist(), itertools.pairwise(cuts.tolist()), strict=True):
        idx = by_pair[lo:hi]
        for e in sorted(class_epochs[c]):
            if e >= schedules[k].epochs:
                break
            pieces.append((idx, e, encode(idx, schedules[k], schedules[k].steps_before(e))))
    return _stack(pieces, encode.width) if pieces else None


class _Encoder:
    """`prefix_signature` over many points at once, as integer columns: each leaf of the signature has its column
    (the same leaf, the same column, in every call), a value that is the same for all the points its code."""

    def __init__(self, columns: _Columns, progress: bool) -> None:
        self.columns, self.progress = columns, progress
        self.constants: dict[str, int] = {}
        self.leaf_at: dict[str, int] = {}

    @property
    def width(self) -> int:
        return len(self.leaf_at)

    def __call__(self, idx: np.ndarray, schedule: Schedule, steps_done: int) -> dict[int, np.ndarray]:
        signature = prefix_signature(lambda name: self.columns.codes(name)[idx], schedule, steps_done, self.progress)
        leaves = {}
        for leaf, value in _leaves(signature).items():
            if not isinstance(value, np.ndarray):
                value = np.full(len(idx), self.constants.setdefault(json.dumps(value), len(self.constants)))
            leaves[self.leaf_at.setdefault(leaf, len(self.leaf_at))] = value
        return leaves


def _stack(pieces: list[tuple[np.ndarray, int, dict[int, np.ndarray]]], width: int) -> np.ndarray:
    """Rows (point, epoch, leaf codes…) of every piece, -1 where a piece has no such leaf."""
    table = np.full((sum(len(idx) for idx, _, _ in pieces), 2 + width), -1, np.int64)
    row = 0
    for idx, e, leaves in pieces:
        block = table[row : row + len(idx)]
        block[:, 0], block[:, 1] = idx, e
        for at, value in leaves.items():
            block[:, 2 + at] = value
        row += len(idx)
    return table


def _leaves(signature: dict[str, Any]) -> dict[str, Any]:
    """A signature's nested parts as one flat mapping ("proxy.threshold": ...)."""
    flat = {}
    for name, value in signature.items():
        if isinstance(value, dict):
            flat.update({f"{name}.{k}": v for k, v in value.items()})
        else:
            flat[name] = value
    return flat


class _Chains:
    """Each point's chain of kept nodes (by epoch), the tree they make, and each node's members.

    A kept node's parent is the node before it in any member's chain (a node has one parent, whoever holds it);
    a node with one child and no point of its own is merged into that child."""

    def __init__(self, points: np.ndarray, nodes: np.ndarray, epoch: list[int], rank: np.ndarray) -> None:
        self.points, self.nodes, self.epoch = points, nodes, epoch
        first = np.r_[True, points[1:] != points[:-1]]
        self.last = np.r_[points[1:] != points[:-1], True]
        previous = np.where(first, -1, np.r_[-1, nodes[:-1]])
        unique_nodes, where = np.unique(nodes, return_index=True)
        self.parent_of: dict[int, int | None] = {
            int(k): (None if previous[w] < 0 else int(previous[w]))
            for k, w in zip(unique_nodes.tolist(), where.tolist(), strict=True)
        }
        self._merge_single_children(dict(zip(points[self.last].tolist(), nodes[self.last].tolist(), strict=True)))
        self._members(rank)

    def _merge_single_children(self, last_of: dict[int, int]) -> None:
        children: dict = defaultdict(set)
        direct: dict = defaultdict(int)
        for node, parent in self.parent_of.items():
            children[parent].add(node)
        for node in last_of.values():
            direct[node] += 1
        for node in sorted(self.parent_of, key=self.epoch.__getitem__):  # shallow epochs first
            if direct[node] == 0 and len(children[node]) == 1:
                (child,) = children[node]
                parent = self.parent_of.pop(node)
                self.parent_of[child] = parent
                children[parent].discard(node)
                children[parent].add(child)

    def _members(self, rank: np.ndarray) -> None:
        """Each node's members in `rank` order, as spans (`span`) of one array (`member`, `member_node`)."""
        order = np.lexsort((rank[self.points], self.nodes))
        self.member_node, self.member = self.nodes[order], self.points[order]
        cuts = np.flatnonzero(np.r_[True, self.member_node[1:] != self.member_node[:-1], True])
        self.span = {int(self.member_node[a]): (a, b) for a, b in itertools.pairwise(cuts.tolist())}


def _stem_name(columns: _Columns, schedules: list[Schedule], progress: bool, node: int, chains: _Chains) -> str:
    """What the node means, read off its first member: its epoch and prefix signature (the same stem in every run,
    whichever points are left)."""
    i = int(chains.member[chains.span[node][0]])
    schedule = schedules[columns.codes("proxy_steps")[i]]
    e = chains.epoch[node]
    signature = prefix_signature(columns.setting(i), schedule, schedule.steps_before(e), progress)
    text = json.dumps([e, signature], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _shared_groups(columns: _Columns, schedules: list[Schedule], chains: _Chains) -> dict[int, list[str]]:
    """Per node, one member's grid key for each CAM group (`trainer.prefix.cam_group`) that two or more members
    with a proxy step due at the node's epoch share: the proxy-step inputs its stem computes."""
    combo = _unique_rows(np.column_stack([columns.codes(name) for name in CAM_GROUP_FIELDS]))[1]
    _, first = np.unique(combo, return_index=True)
    texts = [json.dumps(cam_group(columns.setting(i)), sort_keys=True) for i in first.tolist()]
    import pandas as pd

    group = pd.factorize(pd.Series(texts))[0][combo]
    schedule = columns.codes("proxy_steps")
    due_table = np.zeros((len(schedules), max(chains.epoch) + 1), bool)
    for k, s in enumerate(schedules):
        for b in s.boundaries:
            if b < due_table.shape[1]:
                due_table[k, b] = True
    node_epoch = np.asarray(chains.epoch, np.int64)
    due = due_table[schedule[chains.member], node_epoch[chains.member_node]]
    due_node, due_member = chains.member_node[due], chains.member[due]
    _, first, counts = np.unique(
        due_node * (int(group.max()) + 1) + group[due_member], return_index=True, return_counts=True
    )
    groups_of: dict[int, list[str]] = defaultdict(list)
    shared = first[counts >= 2]
    for node, key in zip(due_node[shared].tolist(), columns.key_array[due_member[shared]].tolist(), strict=True):
        groups_of[node].append(key)
    return groups_of


def _objects(values: list) -> np.ndarray:
    """A 1-D object array of `values` (tuples stay whole)."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _unshared(plan: Plan, keys: list[str]) -> Plan:
    plan.stem_of = dict.fromkeys(keys)
    plan.shared_epochs = plan.naive_epochs
    return plan
