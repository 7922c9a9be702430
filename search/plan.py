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
import json
from collections import defaultdict
from dataclasses import dataclass, field

from search.grid import DEFAULTS, Point, schedule_epochs
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


@functools.lru_cache(maxsize=4096)
def _boundaries(proxy_steps: str) -> tuple[int, ...]:
    return tuple(proxy_step_epochs(proxy_steps))


def build_plan(points: list[Point], fixed: dict, share: bool = True) -> Plan:
    """The stems under `points` (all from one space, whose `fixed:` is `fixed`); none when not `share`."""
    base = {**DEFAULTS, **fixed}
    progress = (fixed.get("scheduler") or {}).get("name", "none") in PROGRESS_SCHEDULERS
    info = {}
    ids: dict[tuple, int] = {}  # each distinct signature part once, as a small int (nodes hash fast)
    for p in points:
        params = p.params
        schedule = str(params.get("proxy_steps", base["proxy_steps"]))
        ordered = sorted(params.items())  # values are validated scalars of one type per axis: hashable as they are
        start_part = tuple(kv for kv in ordered if kv[0] == "dataset" or SCOPES[kv[0]] == START)
        proxy_part = tuple(kv for kv in ordered if SCOPES.get(kv[0]) == FIRST_PROXY_STEP)
        group = tuple(params.get(f, base[f]) for f in CAM_GROUP_FIELDS)
        clear = params.get("clear_every_step", base["clear_every_step"])
        info[p.grid_key] = (ids.setdefault(start_part, len(ids)), schedule_epochs(schedule), _boundaries(schedule),
                            ids.setdefault(proxy_part, len(ids)), clear, group)
    plan = Plan(naive_epochs=sum(i[1] for i in info.values()))
    if not share:
        plan.parent = dict.fromkeys(info)
        plan.shared_epochs = plan.naive_epochs
        return plan

    # A node: the points that agree up to epoch e. Candidate epochs are the proxy-step epochs of the points that
    # agree from the start (same start settings and, when the learning rate reads progress, the same length).
    classes: dict = defaultdict(list)
    for key, (start, total, *_rest) in info.items():
        classes[(start, total if progress else None)].append(key)
    members: dict[tuple, list[str]] = defaultdict(list)
    chains: dict[str, list[tuple]] = {}
    for keys in classes.values():
        epochs = sorted({b for k in keys for b in info[k][2]})
        for key in keys:
            start, total, bounds, proxy, clear, _ = info[key]
            chain = []
            for e in epochs:
                if e >= total:
                    break
                before = tuple(b for b in bounds if b < e)
                node = (e, start, total if progress else None, before, proxy if before else None,
                        clear if len(before) >= 2 else None)
                members[node].append(key)
                chain.append(node)
            chains[key] = chain
    kept = {node for node, keys in members.items() if len(keys) >= 2}
    path = {key: [n for n in chain if n in kept] for key, chain in chains.items()}

    # Merge a stem with one child and no point of its own into that child.
    parent_of: dict[tuple, tuple | None] = {}
    for nodes in path.values():
        for i, node in enumerate(nodes):
            parent_of[node] = nodes[i - 1] if i else None
    children: dict = defaultdict(set)
    direct: dict = defaultdict(int)
    for node, parent in parent_of.items():
        children[parent].add(node)
    for nodes in path.values():
        if nodes:
            direct[nodes[-1]] += 1
    for node in sorted(parent_of, key=lambda n: n[0]):  # shallow epochs first
        if direct[node] == 0 and len(children[node]) == 1:
            (child,) = children[node]
            parent = parent_of.pop(node)
            parent_of[child] = parent
            children[parent].discard(node)
            children[parent].add(child)
    content = {i: part for part, i in ids.items()}  # names hash what a node means, not the ids of this run

    def name(node: tuple) -> str:
        e, start, total, before, proxy, clear = node
        text = json.dumps([e, content[start], total, before, content.get(proxy), clear])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    names = {node: name(node) for node in parent_of}
    for node in sorted(parent_of, key=lambda n: (n[0], names[n])):  # parents before children
        parent = parent_of[node]
        keys = sorted(members[node])
        groups: dict = defaultdict(list)
        for k in keys:
            if node[0] in info[k][2]:  # a proxy step is due here
                method = info[k][5][0]
                groups[(method,) if method in CONTROL_METHODS else info[k][5]].append(k)
        plan.stems[names[node]] = Stem(names[node], node[0], names[parent] if parent else None, keys[0],
                                       tuple(ks[0] for _, ks in sorted(groups.items()) if len(ks) >= 2),
                                       frozenset(keys))
    for key, nodes in path.items():
        deepest = next((n for n in reversed(nodes) if n in parent_of), None)
        plan.parent[key] = names[deepest] if deepest else None
    plan.shared_epochs = sum(s.epochs - (plan.stems[s.parent].epochs if s.parent else 0)
                             for s in plan.stems.values())
    plan.shared_epochs += sum(info[k][1] - plan.start_epoch(k) for k in info)
    return plan
