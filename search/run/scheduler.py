"""What the driver runs next: the state of every point and stem of one run, and how a result changes it.

Each point is WAITING (to start or go on), RUNNING or ENDED (complete, stopped by halving, or out of attempts); each
stem WAITING, RUNNING, DONE or FAILED (out of attempts: its points go on without it). `_set` is the one place a
status changes, and every other field of a point's or a stem's state changes in a method here: questions (`ready`,
`start_of`, `running`…) change nothing. A stem can start when its parent is done; a point when its stem is done (or
it has a try of its own to continue), the rung it reached is decided, and `--max-trials` allows a new trial. Stems
go first (they unlock many points), then points that continue, then new points in the space's order
(`GridSpec.order`: grid_key order, a design's blocks in turn). Nothing here
touches the study, the store or an executor: the driver (`search.run.driver`) asks, runs, and reports back.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from search.planning.halving import RungBook
from search.planning.plan import Plan, Stem
from search.records.tally import PendingPoint
from trainer.failures import FailureKind


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    ENDED = "ended"  # a point: complete, stopped by halving, or out of attempts
    DONE = "done"  # a stem: its prefix and shared inputs are in the store
    FAILED = "failed"  # a stem out of attempts


@dataclass
class PointState:
    """A point this run must finish: its pending try, its open trial, and the epochs it is known to have done."""

    pending: PendingPoint
    number: int | None = None
    history: list[dict] = field(default_factory=list)  # rows of the folder it starts from, then its own
    reported: int = 0  # the last epoch reported to the study
    status: Status = Status.WAITING
    tries: int = 0  # in this run: at most max_attempts, whatever the cause
    previous_epochs: int = 0  # how far its last try got

    @property
    def key(self) -> str:
        return self.pending.point.grid_key


@dataclass
class StemState:
    """A shared stem of this run: its attempts, whether its next try gets a whole GPU, and, once done, the epochs
    it trained."""

    stem: Stem
    attempts: int = 0
    status: Status = Status.WAITING
    history: list[dict] = field(default_factory=list)
    whole_gpu: bool = False


State = PointState | StemState
# Which states a state may go to: a point that fails with attempts left is replaced by a fresh WAITING state.
MOVES = {
    Status.WAITING: {Status.RUNNING, Status.ENDED, Status.DONE},  # DONE: a stem an earlier run finished
    Status.RUNNING: {Status.WAITING, Status.ENDED, Status.DONE, Status.FAILED},
}


class Scheduler:
    """The points and stems of one run. `max_trials`: at most this many new trials (None: no limit). `waits_for`:
    each matched control's configuration, which must be complete before it starts (it reads the configuration's
    proxies at every step); `complete`: the points complete before this run; `order`: each point's place in the
    space (`GridSpec.order`: a design's blocks one after another), in which new points and stems start."""

    def __init__(
        self,
        pending: list[PendingPoint],
        plan: Plan,
        max_attempts: int,
        max_trials: int | None,
        rungs: RungBook | None,
        waits_for: dict[str, str] | None = None,
        complete: set[str] | None = None,
        order: dict[str, int] | None = None,
    ) -> None:
        self.plan, self.max_attempts, self.max_trials, self.rungs = plan, max_attempts, max_trials, rungs
        self.points = {p.point.grid_key: PointState(p) for p in pending}
        self.stems = {k: StemState(s) for k, s in plan.stems.items()}
        self.started = 0  # new trials in this run
        self.waits_for, self.complete = waits_for or {}, set(complete or ())
        order = order or {}
        self.rank = {k: order.get(k, 0) for k in self.points}
        self.stem_rank = {k: min((self.rank.get(m, 0) for m in s.members), default=0) for k, s in plan.stems.items()}

    def _set(self, state: State, status: Status) -> None:
        """The one place a point's or a stem's state changes."""
        if status not in MOVES.get(state.status, set()):
            raise RuntimeError(f"{state.status.value} -> {status.value}: not a move a run makes")
        state.status = status

    # -- what can run -------------------------------------------------------------------------------------
    def ready(self, count: int) -> list[State]:
        """Up to `count` stems and points that can start now: stems (shallow first), then points that continue,
        then new ones."""
        out: list[State] = []
        for stem in sorted(
            self.stems.values(), key=lambda s: (self.stem_rank[s.stem.key], self.plan.depth(s.stem.key), s.stem.key)
        ):
            if len(out) < count and self._stem_ready(stem):
                out.append(stem)
        for key in sorted(self.points, key=lambda k: (self.points[k].number is None, self.rank[k], k)):
            if len(out) < count and self._point_ready(self.points[key]):
                out.append(self.points[key])
        return out

    def _stem_ready(self, state: StemState) -> bool:
        if state.status != Status.WAITING:
            return False
        parent = self.usable_stem(state.stem.parent)
        if parent is not None and self.stems[parent].status != Status.DONE:
            return False
        return any(k in self.points and self.points[k].status != Status.ENDED for k in state.stem.members)

    def _point_ready(self, state: PointState) -> bool:
        if state.status != Status.WAITING:
            return False
        if state.key in self.waits_for and self.waits_for[state.key] not in self.complete:
            return False  # a matched control: after its configuration, whose proxies it takes
        stem = self.usable_stem(self.plan.stem_of.get(state.key))
        if stem is not None and self.stems[stem].status != Status.DONE and state.pending.previous is None:
            return False  # its stem will do the start of its training
        if self.rungs and self.rungs.blocked(state.pending.point, len(state.history)):
            return False
        return not (self.max_trials is not None and state.number is None and self.started >= self.max_trials)

    def usable_stem(self, key: str | None) -> str | None:
        """`key`, or the nearest ancestor that has not failed for good."""
        while key is not None and self.stems[key].status == Status.FAILED:
            key = self.stems[key].stem.parent
        return key

    def _done_stem(self, state: PointState) -> StemState | None:
        """The stem a point starts from, once it is done (the nearest that has not failed for good)."""
        key = self.usable_stem(self.plan.stem_of.get(state.key))
        return self.stems[key] if key is not None and self.stems[key].status == Status.DONE else None

    def start_of(self, state: PointState) -> tuple[str | None, str | None]:
        """The folder a point continues (its last try's, or its stem's when that is further on) and the stem
        whose shared proxy-step inputs it may use; (None, None) with nothing to start from."""
        stem = self._done_stem(state)
        stem_folder = stem.stem.folder if stem else None
        stem_epochs = len(stem.history) if stem else -1
        if state.pending.previous and state.previous_epochs >= stem_epochs:
            return state.pending.previous, stem_folder
        return stem_folder, stem_folder  # (its own folder, once it has a checkpoint, always comes first)

    def running(self) -> int:
        stems = sum(s.status == Status.RUNNING for s in self.stems.values())
        return stems + sum(s.status == Status.RUNNING for s in self.points.values())

    def waiting(self) -> int:
        return sum(s.status == Status.WAITING for s in self.points.values())

    # -- what happened ------------------------------------------------------------------------------------
    def started_job(self, state: State) -> None:
        self._set(state, Status.RUNNING)

    def stem_done(self, state: StemState, history: list[dict]) -> None:
        """A stem's prefix is trained: each of its points that is not over knows the epochs it trained for it (what
        a point knows of itself only ever grows; a stem is done after its parent, so the deepest one wins)."""
        self._set(state, Status.DONE)
        state.history = history
        for key in state.stem.members:
            point = self.points.get(key)
            if point is not None and point.status != Status.ENDED:
                self.progressed(point, history)

    def stem_failed(self, state: StemState, kind: FailureKind) -> bool:
        """A stem's try failed with `kind` (only the stem's own errors use an attempt; out of memory on a shared GPU
        is retried on a whole one: `FailureKind.on_gpus`, applied by `Completion.failed`, makes it the stem's own
        error on a whole GPU); whether it is out of attempts."""
        state.attempts += kind.uses_attempt
        state.whole_gpu = state.whole_gpu or kind.whole_gpu_retry
        self._set(state, Status.FAILED if state.attempts >= self.max_attempts else Status.WAITING)
        return state.status == Status.FAILED

    def opened(self, state: PointState, number: int, reported: int) -> None:
        """A point got its trial `number` in the study, which knows its epochs up to `reported`."""
        state.number = number
        state.reported = reported
        self.started += 1

    def reported(self, state: PointState, epoch: int) -> None:
        """The study knows a point's objective up to `epoch`."""
        state.reported = epoch

    def progressed(self, state: PointState, history: list[dict]) -> None:
        """What a point is known to have trained (its rows), when that is more than it was."""
        if len(history) > len(state.history):
            state.history = list(history)

    def resumed(self, state: PointState, history: list[dict]) -> None:
        """A point continues an earlier try that got as far as `history`."""
        state.history = list(history)
        state.previous_epochs = len(history)

    def paused(self, state: PointState) -> None:
        """A point reached its rung: it waits for the decision there."""
        self._set(state, Status.WAITING)

    def ended(self, state: PointState) -> None:
        """A point is stopped by halving, or out of attempts."""
        self._set(state, Status.ENDED)

    def completed(self, state: PointState) -> None:
        """A point is complete: what waits for it may start."""
        self._set(state, Status.ENDED)
        self.complete.add(state.key)

    def failed(
        self, state: PointState, kind: FailureKind, previous: str | None, history: Callable[[], list[dict]]
    ) -> bool:
        """A point's try failed with `kind` (`FailureKind.uses_attempt`, `.whole_gpu_retry`); `previous`: the
        folder to continue. Whether it is tried again: then a fresh WAITING state (with the rows `history()` reads)
        replaces this one; else it ends. A run tries a point at most max_attempts times whatever the cause, a
        shared GPU's out-of-memory retry aside."""
        pending = state.pending
        counted = kind.uses_attempt
        tries = state.tries + (not kind.whole_gpu_retry)
        if (pending.attempt < self.max_attempts or not counted) and tries < self.max_attempts:
            self._set(state, Status.WAITING)
            rows = history() if previous else []
            whole = pending.whole_gpu or kind.whole_gpu_retry
            self.points[state.key] = PointState(
                PendingPoint(pending.point, pending.attempt + counted, previous, whole),
                history=rows,
                tries=tries,
                previous_epochs=len(rows),
            )
            return True
        self._set(state, Status.ENDED)
        if self.rungs:
            self.rungs.leave(pending.point)
        return False

    def rung_decisions(self) -> list[tuple[PointState, int, str]]:
        """The points halving stops now, with the rung and the reason (each ends here)."""
        if not self.rungs:
            return []
        for state in self.points.values():
            if state.status != Status.ENDED:
                self.rungs.known(state.pending.point, state.history)
        stopped = []
        for key, (rung, reason) in self.rungs.decide_all().items():
            found = self.points.get(key)
            if found is not None and found.status != Status.ENDED:
                stopped.append((found, rung, reason))
        return stopped
