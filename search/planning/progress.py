"""Live progress of `search run`: a rich panel on a terminal, one plain line per finished job otherwise, and the
summary line every run ends with."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from search.planning.plan import Plan
from search.records import record
from search.records.paths import default_storage
from search.records.tally import shown_state
from search.space.grid import GridSpec, Objective
from trainer.prefix import PointKind


def format_seconds(seconds: float | None) -> str:
    """1h02m, 3m05s or 12s; "?" when unknown."""
    if seconds is None:
        return "?"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def format_hours(hours: float) -> str:
    """Device-hours as people read them: "1,234", "12.3", and small amounts with minutes or seconds beside them
    ("0.050 (3.0 min)", "0.0012 (4 s)"), never "0" or "0.0"."""
    if hours >= 1:
        return f"{hours:,.0f}" if hours >= 100 else f"{hours:.1f}"
    return f"{hours:.3f} ({hours * 60:.1f} min)" if hours >= 1 / 60 else f"{hours:.4f} ({hours * 3600:.0f} s)"


def process_seconds() -> float:
    """Seconds since this process started (Linux: its start time in /proc against the boot clock)."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        return time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return time.monotonic() - _IMPORTED


_IMPORTED = time.monotonic()


class JobClock:
    """When each job of a run started and ended, for `start_up`: what a run costs besides its jobs."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.spans: list[tuple[float, float]] = []

    def start(self, folder: str) -> None:
        self.started[folder] = time.monotonic()

    def end(self, folder: str) -> None:
        if (start := self.started.pop(folder, None)) is not None:
            self.spans.append((start, time.monotonic()))

    def start_up(self) -> float | None:
        """Seconds this run spent outside its jobs (the process's start, the study, the caches, the end) plus the
        first job's warm-up beyond a typical one (the worker's first imports): None before two jobs ended."""
        if len(self.spans) < 2:
            return None
        durations = sorted(e - s for s, e in self.spans)
        first = min(self.spans)
        warm_up = max(0.0, (first[1] - first[0]) - durations[len(durations) // 2])
        busy, (start, end) = 0.0, sorted(self.spans)[0]
        for s, e in sorted(self.spans):
            if s > end:
                busy, start = busy + end - start, s
            end = max(end, e)
        busy += end - start
        return max(0.0, process_seconds() - busy) + warm_up


def observed_concurrency(trials: list[FrozenTrial], last: int = 50) -> float | None:
    """How many trials ran at once, as the clock saw it: over the `last` completed trials, their summed durations
    over the time at least one of them ran (1.0 for one at a time). None with fewer than two: then only the slots
    the run recorded can say, and they may be another run's."""
    spans = sorted(
        (t.datetime_start, t.datetime_complete)
        for t in trials
        if t.state == TrialState.COMPLETE and t.datetime_start and t.datetime_complete
    )[-last:]
    if len(spans) < 2:
        return None
    busy, total, (start, end) = 0.0, 0.0, spans[0]
    for s, e in spans:
        total += (e - s).total_seconds()
        if s > end:
            busy += (end - start).total_seconds()
            start, end = s, e
        else:
            end = max(end, e)
    busy += (end - start).total_seconds()
    return max(1.0, total / busy) if busy > 0 else None


def eta_seconds(durations: list[float], remaining: int, parallel: float) -> float | None:
    """The one ETA: the mean trial duration so far × the trials left ÷ how many run at once."""
    if not durations:
        return None
    return sum(durations) / len(durations) * remaining / max(parallel, 1)


class RunProgress:
    """Counts and running jobs of one `search run`; call `update` often and `finished` per job."""

    def __init__(
        self,
        console: Console,
        name: str,
        grid_size: int,
        done: int,
        objective: Objective,
        slots: int,
        best: float | None,
    ) -> None:
        self.console, self.name, self.grid_size, self.slots = console, name, grid_size, slots
        self.metric, self.objective = objective.metric, objective
        self.done, self.failed, self.best = done, 0, best
        self.left = 0
        self.durations: list[float] = []
        self.running: dict[str, list] = {}  # label -> [start, epochs done, epochs]
        self.live = Live(console=console, refresh_per_second=2, transient=False) if console.is_terminal else None

    def __enter__(self) -> RunProgress:
        if self.live:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live:
            self.live.update(self._panel())
            self.live.__exit__(*exc)

    def started(self, label: str, epochs: int) -> None:
        self.running[label] = [time.monotonic(), 0, epochs]

    def epoch(self, label: str, done: int) -> None:
        if label in self.running:
            self.running[label][1] = done

    def improves(self, value: float | None) -> bool:
        return self.objective.better(value, self.best)

    def finished(
        self,
        label: str,
        ok: bool,
        value: float | None,
        improves: bool,
        text: str,
        counted: bool = True,
        running: bool = True,
    ) -> None:
        """Print one line for a job that ended (`counted`: a trial that completed or failed, not a stem or a rung)."""
        start = self.running.pop(label, [time.monotonic()])[0] if running else time.monotonic()
        seconds = time.monotonic() - start
        if counted and ok:
            self.done += 1
            self.durations.append(seconds)
            if improves:
                self.best = value
        elif counted:
            self.failed += 1
        line = f"[{self.done}/{self.grid_size}] {label} {text} ({format_seconds(seconds)})"
        if self.live:
            self.live.console.print(line, markup=False, highlight=False)
        else:
            print(line, flush=True)

    def update(self, left: int) -> None:
        self.left = left
        if self.live:
            self.live.update(self._panel())

    def _panel(self) -> Table:
        best = "–" if self.best is None else f"{self.best:.4f}"
        eta = eta_seconds(self.durations, self.left + len(self.running), self.slots)
        table = Table(
            title=f"{self.name}: {self.done}/{self.grid_size} complete, {len(self.running)} running, "
            f"{self.failed} failed this run, {self.left} waiting · best {self.metric} {best} · "
            f"ETA {format_seconds(eta)}",
            title_justify="left",
        )
        for column in ("job", "epoch", "running for"):
            table.add_column(column)
        now = time.monotonic()
        for label, (start, done, epochs) in sorted(self.running.items()):
            table.add_row(label, f"{done}/{epochs}", format_seconds(now - start))
        return table


def chance_warnings(spec: GridSpec, trials: list[FrozenTrial]) -> list[str]:
    """Warnings about models that learned nothing (validation accuracy at most 1.5 / classes): every complete trial,
    or, per dataset × architecture, baselines: a gain over a reference at chance measures the reference, not proxy
    attention."""
    rows = [t for t in trials if t.state == TrialState.COMPLETE]
    scored = [t for t in rows if record.metric(t, "num_classes") and record.metric(t, "val_accuracy") is not None]
    if not scored or len(scored) < len(rows):
        return []
    at_chance = [t for t in scored if record.metric(t, "val_accuracy") <= 1.5 / record.metric(t, "num_classes")]
    if len(at_chance) == len(scored):
        classes = min(record.metric(t, "num_classes") for t in scored)
        return [
            f"warning: every complete trial is at chance accuracy (val_accuracy ≤ 1.5 / {classes} classes): "
            f"the models learned nothing; check the data, the learning rate and the number of epochs"
        ]
    families: dict[tuple, list[bool]] = {}
    for trial in scored:
        index = spec.order.get(record.grid_key_of(trial))  # type: ignore[arg-type]
        if index is None or record.kind_of(trial) != PointKind.BASELINE:
            continue
        point = spec.points[index]
        family = (spec.dataset_of(point), point.setting("architecture"))
        families.setdefault(family, []).append(trial in at_chance)
    return [
        f"warning: {sum(flags)} of {len(flags)} baselines of {dataset} × {arch} are at chance accuracy: gains over "
        "them measure a reference that learned nothing; give the baselines more epochs or a lower learning rate"
        for (dataset, arch), flags in sorted(families.items(), key=str)
        if any(flags)
    ]


def run_summary(spec: GridSpec, trials: list[FrozenTrial], plan: Plan, storage: str) -> str:
    """The line every `search run` ends with: where the study stands, the best point, what sharing saved, and
    the command that reports it."""
    keys = {record.grid_key_of(t) for t in trials if t.state == TrialState.COMPLETE}
    pruned = {record.grid_key_of(t) for t in trials if t.state == TrialState.PRUNED}
    failing = len({p.grid_key for p in spec.points} - keys - pruned)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    metric = spec.objective.metric
    best = best_of(complete, spec.objective)
    parts = [
        f"{spec.name}: {len(keys)} of {len(spec.points)} points complete",
        f"{len(pruned)} stopped by halving",
        f"{failing} not complete",
        f"{sum(shown_state(t.state, record.recorded_fail_kind(t)) == 'FAIL' for t in trials)} failed tries",
    ]
    if best is not None:
        kind = record.kind_of(best, PointKind.PROXY)
        parts.append(f"best {metric} {best.value:.4f} (trial {best.number}, a {kind})")
        proxy = best_of([t for t in complete if record.kind_of(t) == PointKind.PROXY], spec.objective)
        if kind != PointKind.PROXY and proxy is not None:  # what the study is about, beside it
            parts.append(f"best proxy configuration {metric} {proxy.value:.4f} (trial {proxy.number})")
    if plan.stems:
        parts.append(f"{plan.shared_epochs} of {plan.naive_epochs} epochs trained (shared prefixes)")
    storage_flag = "" if storage == default_storage(spec.name) else f" --storage {storage}"
    parts.append(f"report: {invoked_as()} report --study {spec.name}{storage_flag}")
    return "\n".join([" · ".join(parts), *chance_warnings(spec, trials)])


def best_of(trials: list[FrozenTrial], objective: Objective) -> FrozenTrial | None:
    """The trial with the best value for `objective`, or None."""
    best = None
    for trial in trials:
        if objective.better(trial.value, best.value if best else None):
            best = trial
    return best


def invoked_as() -> str:
    """The `search` command as the user typed it (`.venv/bin/search` when the environment is not activated, so
    that a suggested command works when pasted), else `search`."""
    typed = sys.argv[0] if sys.argv else ""
    return typed if Path(typed).name == "search" and os.sep in typed else "search"


@contextlib.contextmanager
def cache_progress(console: Console, title: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar while the driver decodes a dataset into the cache (a line at each end when not a
    terminal); yields the callback `trainer.data.cache.ensure` calls with (done, total)."""
    if not console.is_terminal:
        started = time.monotonic()
        reported = {"total": 0}

        def plain(done: int, total: int) -> None:
            reported["total"] = total

        yield plain
        if reported["total"]:
            console.print(f"{title}: {reported['total']} images in {format_seconds(time.monotonic() - started)}")
        return
    with Progress(
        TextColumn(title), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console, transient=True
    ) as bar:
        task = bar.add_task(title, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update
