"""A trial's schedule (`proxy_steps`): parsed once, by `parse_schedule`, and asked everywhere else (torch-free).

"20,p,19" trains 20 epochs, makes proxies, trains 19 more. A `Schedule` holds what every part of the project asks
of that text: the total epochs, the epoch count before each proxy step (its *boundaries*), and the events in order.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Iterator
from dataclasses import dataclass

from trainer.errors import ConfigError


@dataclass(frozen=True)
class Schedule:
    """A parsed `proxy_steps`: `text` as written, `epochs` in all, and `boundaries`, the epochs trained before
    each proxy step ("5,p,9,p,4" -> (5, 14))."""

    text: str
    epochs: int
    boundaries: tuple[int, ...]

    @property
    def steps(self) -> int:
        """How many proxy steps the schedule makes."""
        return len(self.boundaries)

    def steps_before(self, epochs: int) -> int:
        """The proxy steps due before epoch `epochs` (a step due at `epochs` itself not yet made)."""
        return bisect.bisect_left(self.boundaries, epochs)

    def steps_through(self, epochs: int) -> int:
        """The proxy steps due at or before epoch `epochs`."""
        return bisect.bisect_right(self.boundaries, epochs)

    def events(self) -> Iterator[tuple[str, int]]:
        """The schedule in order: ("epoch", 0-based epoch) and ("proxy", 0-based proxy step); a step due after
        epoch e comes after ("epoch", e - 1)."""
        epoch = 0
        for step, boundary in enumerate((*self.boundaries, self.epochs)):
            for e in range(epoch, boundary):
                yield "epoch", e
            epoch = boundary
            if step < self.steps:
                yield "proxy", step


@functools.lru_cache(maxsize=4096)
def parse_schedule(text: str) -> Schedule:
    """Parse "5,p,9" (integers: epochs of training; "p": a proxy step); raise `ConfigError` unless every token is a
    positive integer or "p" and every "p" is followed by training epochs (so no two are adjacent)."""
    tokens: list[int | str] = []
    for raw in str(text).split(","):
        token = raw.strip().lower()
        if token == "p":
            tokens.append("p")
        elif token.isdigit() and int(token) > 0:
            tokens.append(int(token))
        else:
            raise ConfigError(
                f"proxy_steps: {text!r} must be comma-separated positive integers (epochs) and 'p' (proxy steps)"
            )
    for a, b in zip(tokens, [*tokens[1:], None], strict=False):
        if a == "p" and not isinstance(b, int):
            raise ConfigError(f"proxy_steps: {text!r}: every 'p' must be followed by a number of training epochs")
    epochs, boundaries = 0, []
    for item in tokens:
        if isinstance(item, int):
            epochs += item
        else:
            boundaries.append(epochs)
    return Schedule(str(text), epochs, tuple(boundaries))
