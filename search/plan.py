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

import functools
import hashlib
import itertools
import json
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from search.grid import DEFAULTS, Point, lasting_objects, schedule_epochs
from trainer.config import CONTROL_METHODS, proxy_step_epochs
from trainer.prefix import CAM_GROUP_FIELDS, FIRST_PROXY_STEP, PROGRESS_SCHEDULERS, SCOPES, START


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
        return f"stems/{self.key}"


@dataclass
class Plan:
    """The stems (parents before children) and, per point, the stem it starts from."""

    stems: dict[str, Stem] = field(default_factory=dict)
    parent: dict[str, str | None] = field(default_factory=dict)
    naive_epochs: int = 0
    shared_epochs: int = 0

    def start_epoch(self, grid_key: str) -> int:
        stem = self.parent.get(grid_key)
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


@functools.lru_cache(maxsize=4096)
def _boundaries(proxy_steps: str) -> tuple[int, ...]:
    return tuple(proxy_step_epochs(proxy_steps))


def build_plan(points: list[Point], fixed: dict, share: bool = True) -> Plan:
    """The stems under `points` (all from one space, whose `fixed:` is `fixed`); none when not `share`."""
    with lasting_objects():
        return _build_plan(points, fixed, share)


def _build_plan(points: list[Point], fixed: dict, share: bool) -> Plan:
    base = {**DEFAULTS, **fixed}
    progress = (fixed.get("scheduler") or {}).get("name", "none") in PROGRESS_SCHEDULERS
    n, keys = len(points), [p.grid_key for p in points]
    # Every axis as a column of integer codes, with its distinct values (_ABSENT where a point lacks the axis);
    # a part of a signature is the distinct rows of some columns. (Values are validated scalars of one type per
    # axis: hashable, and compared, as they are.)
    frame = pd.DataFrame([p.params for p in points])  # a missing axis reads NaN, which factorize codes as -1
    axes = sorted(frame.columns)
    column, uniques = {}, {}
    for a in axes:
        codes, values = pd.factorize(frame[a])
        column[a], uniques[a] = codes, list(values)
        if (codes < 0).any():
            column[a] = np.where(codes < 0, len(values), codes)
            uniques[a].append(_ABSENT)

    def resolved(axis: str) -> tuple[np.ndarray, list]:  # codes and the value of each code, defaults filled in
        if axis not in column:
            return np.zeros(n, np.int64), [base[axis]]
        return column[axis], [base[axis] if v is _ABSENT else v for v in uniques[axis]]

    codes, texts = resolved("proxy_steps")
    schedules = [str(t) for t in texts]
    schedule = codes
    totals = np.asarray([schedule_epochs(text) for text in schedules], np.int64)
    total = totals[schedule] if n else np.zeros(0, np.int64)
    plan = Plan(naive_epochs=int(total.sum()))
    if not share or not n:
        return _unshared(plan, keys)

    start_axes = [a for a in axes if a == "dataset" or SCOPES.get(a) == START]
    proxy_axes = [a for a in axes if SCOPES.get(a) == FIRST_PROXY_STEP]
    start, proxy = (
        _unique_rows(np.column_stack([column[a] for a in names]))[1] if names else np.zeros(n, np.int64)
        for names in (start_axes, proxy_axes)
    )
    codes, values = resolved("clear_every_step")
    clear = np.asarray([int(bool(v)) for v in values], np.int64)[codes]
    # The CAM group of each distinct combination of the CAM group's axes, read off one point that has it.
    cam_axes = [a for a in CAM_GROUP_FIELDS if a in column]
    if cam_axes:
        combo = _unique_rows(np.column_stack([column[a] for a in cam_axes]))[1]
        _, first = np.unique(combo, return_index=True)
        group = pd.factorize(_objects([_cam_group(points[i].params, base) for i in first.tolist()]))[0][combo]
    else:
        group = np.zeros(n, np.int64)

    # Points that agree from the start (settings, and the length when the learning rate reads it) form a class;
    # its candidate epochs are its points' proxy-step epochs. A node: the points of a class that agree up to e.
    classes, klass = _unique_rows(np.column_stack([start, total if progress else np.zeros(n, np.int64)]))
    pairs, pair_of = _unique_rows(np.column_stack([klass, schedule]))  # (class, schedule) of each point
    class_epochs: dict[int, set[int]] = defaultdict(set)
    for c, k in pairs.tolist():
        class_epochs[c].update(_boundaries(schedules[k]))
    by_pair = np.argsort(pair_of, kind="stable")
    cuts = np.flatnonzero(np.r_[True, np.diff(pair_of[by_pair]) != 0, True])
    befores: dict[tuple, int] = {}
    rows = []
    for (c, k), (lo, hi) in zip(pairs.tolist(), itertools.pairwise(cuts.tolist()), strict=True):
        idx = by_pair[lo:hi]
        bounds = _boundaries(schedules[k])
        for e in sorted(class_epochs[c]):
            if e >= totals[k]:
                break
            before = tuple(b for b in bounds if b < e)
            rows.append(
                np.column_stack(
                    [
                        idx,
                        np.full(len(idx), e),
                        np.full(len(idx), c),
                        np.full(len(idx), befores.setdefault(before, len(befores))),
                        proxy[idx] if before else np.full(len(idx), -1),
                        clear[idx] if len(before) >= 2 else np.full(len(idx), -1),
                    ]
                )
            )
    if not rows:
        return _unshared(plan, keys)
    table = np.concatenate(rows)
    nodes, node_of = _unique_rows(table[:, 1:])
    kept = np.bincount(node_of)[node_of] >= 2
    if not kept.any():  # nothing two points share
        return _unshared(plan, keys)
    order = np.lexsort((table[kept, 1], table[kept, 0]))  # by point, then epoch
    chain_points, chain_nodes = table[kept, 0][order], node_of[kept][order]

    # Each kept node's parent: the node before it in any member's chain (a node has one parent, whoever holds
    # it); then a stem with one child and no point of its own is merged into that child.
    first = np.r_[True, chain_points[1:] != chain_points[:-1]]
    previous = np.where(first, -1, np.r_[-1, chain_nodes[:-1]])
    unique_nodes, where = np.unique(chain_nodes, return_index=True)
    parent_of: dict[int, int | None] = {
        int(k): (None if previous[w] < 0 else int(previous[w]))
        for k, w in zip(unique_nodes.tolist(), where.tolist(), strict=True)
    }
    last = np.r_[chain_points[1:] != chain_points[:-1], True]
    last_of = dict(zip(chain_points[last].tolist(), chain_nodes[last].tolist(), strict=True))
    children: dict = defaultdict(set)
    direct: dict = defaultdict(int)
    for node, parent in parent_of.items():
        children[parent].add(node)
    for node in last_of.values():
        direct[node] += 1
    node_epoch = nodes[:, 0].tolist()
    for node in sorted(parent_of, key=node_epoch.__getitem__):  # shallow epochs first
        if direct[node] == 0 and len(children[node]) == 1:
            (child,) = children[node]
            parent = parent_of.pop(node)
            parent_of[child] = parent
            children[parent].discard(node)
            children[parent].add(child)

    # Each node's members in grid_key order (the first is the stem's representative), as spans of one array.
    rank = np.empty(n, np.int64)  # each point's place in grid_key order
    rank[sorted(range(n), key=keys.__getitem__)] = np.arange(n)
    order = np.lexsort((rank[chain_points], chain_nodes))
    member_node, member = chain_nodes[order], chain_points[order]
    cuts = np.flatnonzero(np.r_[True, member_node[1:] != member_node[:-1], True])
    span = {int(member_node[a]): (a, b) for a, b in itertools.pairwise(cuts.tolist())}
    before_of = {v: k for k, v in befores.items()}

    def name(node: int) -> str:  # what the node means, read off a member: the same stem in every run
        e, c, before, proxy_code, clear_code = nodes[node].tolist()
        params = points[member[span[node][0]]].params
        text = json.dumps(
            [
                e,
                {a: params[a] for a in start_axes if a in params},
                int(classes[c][1]) if progress else None,
                list(before_of[before]),
                None if proxy_code < 0 else {a: params[a] for a in proxy_axes if a in params},
                None if clear_code < 0 else bool(clear_code),
            ],
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    names = {node: name(node) for node in parent_of}
    # The CAM groups a stem computes: those that two or more members due a proxy step at its epoch share.
    due_table = np.zeros((len(schedules), int(nodes[:, 0].max()) + 1), bool)
    for k, text in enumerate(schedules):
        for b in _boundaries(text):
            if b < due_table.shape[1]:
                due_table[k, b] = True
    due = due_table[schedule[member], nodes[member_node, 0]]
    due_node, due_member = member_node[due], member[due]
    _, first, counts = np.unique(
        due_node * (int(group.max()) + 1) + group[due_member], return_index=True, return_counts=True
    )
    key_array = _objects(keys)
    groups_of: dict[int, list[str]] = defaultdict(list)
    shared = first[counts >= 2]
    for node, key in zip(due_node[shared].tolist(), key_array[due_member[shared]].tolist(), strict=True):
        groups_of[node].append(key)
    for node in sorted(parent_of, key=lambda k: (node_epoch[k], names[k])):  # parents before children
        a, b = span[node]
        parent = parent_of[node]
        plan.stems[names[node]] = Stem(
            names[node],
            node_epoch[node],
            None if parent is None else names[parent],
            keys[member[a]],
            tuple(sorted(groups_of[node])),
            frozenset(key_array[member[a:b]].tolist()),
        )
    # Each point starts from the last node of its chain (never one merged away: a point ends there).
    last_node = np.full(n, -1, np.int64)
    last_node[chain_points[last]] = chain_nodes[last]
    stem_names = _objects([None, *(names.get(k) for k in range(len(nodes)))])
    plan.parent = dict(zip(keys, stem_names[last_node + 1].tolist(), strict=True))
    plan.shared_epochs = sum(
        st.epochs - (plan.stems[st.parent].epochs if st.parent else 0) for st in plan.stems.values()
    )
    start_epochs = np.where(last_node >= 0, nodes[np.maximum(last_node, 0), 0], 0)
    plan.shared_epochs += int((total - start_epochs).sum())
    return plan


_ABSENT = object()  # an axis a point does not have


def _objects(values: list) -> np.ndarray:
    """A 1-D object array of `values` (tuples stay whole)."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _cam_group(params: dict, base: dict) -> tuple:
    """What the maps of a proxy step depend on beyond the prefix (a control has no map: its method alone)."""
    method = params.get("cam_method", base["cam_method"])
    if method in CONTROL_METHODS:
        return (method,)
    return tuple(params.get(f, base[f]) for f in CAM_GROUP_FIELDS)


def _unshared(plan: Plan, keys: list[str]) -> Plan:
    plan.parent = dict.fromkeys(keys)
    plan.shared_epochs = plan.naive_epochs
    return plan
