"""Live progress of `search run`: a rich panel on a terminal; one plain line per finished trial otherwise."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table


def epochs_done(workdir: Path) -> int:
    """Epochs a running trial has finished so far (lines in its metrics.jsonl)."""
    try:
        with open(workdir / "metrics.jsonl", "rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


def format_seconds(seconds: float | None) -> str:
    """1h02m, 3m05s or 12s; "?" when unknown."""
    if seconds is None:
        return "?"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class RunProgress:
    """Counts and running trials of one `search run`; call `update` often and `finished` per trial."""

    def __init__(self, console: Console, name: str, grid_size: int, done: int, metric: str, slots: int,
                 best: float | None) -> None:
        self.console, self.name, self.grid_size, self.metric, self.slots = console, name, grid_size, metric, slots
        self.done, self.failed, self.best = done, 0, best
        self.left = 0
        self.durations: list[float] = []
        self.running: dict[int, tuple[Path, float, int]] = {}  # number -> (workdir, start, epochs)
        self.live = Live(console=console, refresh_per_second=2, transient=False) if console.is_terminal else None

    def __enter__(self) -> RunProgress:
        if self.live:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.live.update(self._panel())
            self.live.__exit__(*exc)

    def started(self, number: int, workdir: Path, epochs: int) -> None:
        self.running[number] = (workdir, time.monotonic(), epochs)

    def finished(self, number: int, ok: bool, value: float | None, better: bool, text: str) -> None:
        _, start, _ = self.running.pop(number)
        seconds = time.monotonic() - start
        if ok:
            self.done += 1
            self.durations.append(seconds)
            if value is not None and (self.best is None or better):
                self.best = value
        else:
            self.failed += 1
        line = f"[{self.done}/{self.grid_size}] trial {number} {text} ({format_seconds(seconds)})"
        if self.live:
            self.live.console.print(line, markup=False, highlight=False)
        else:
            print(line, flush=True)

    def eta(self) -> float | None:
        if not self.durations:
            return None
        return sum(self.durations) / len(self.durations) * (self.left + len(self.running)) / max(self.slots, 1)

    def update(self, left: int) -> None:
        self.left = left
        if self.live:
            self.live.update(self._panel())

    def _panel(self) -> Table:
        best = "–" if self.best is None else f"{self.best:.4f}"
        table = Table(title=f"{self.name}: {self.done}/{self.grid_size} complete, {len(self.running)} running, "
                            f"{self.failed} failed this run, {self.left} waiting · best {self.metric} {best} · "
                            f"ETA {format_seconds(self.eta())}", title_justify="left")
        for column in ("trial", "folder", "epoch", "running for"):
            table.add_column(column)
        now = time.monotonic()
        for number, (workdir, start, epochs) in sorted(self.running.items()):
            table.add_row(str(number), workdir.name, f"{epochs_done(workdir)}/{epochs}",
                          format_seconds(now - start))
        return table
