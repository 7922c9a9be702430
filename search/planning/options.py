"""How to run a space, decided in one place: the command line's flags (`RunFlags`: None where not given) resolved
against the space (`resolve`): flags first, then the space, then the defaults; for where a resumed study's folders
are, the study's own record comes before the space (it holds what an earlier `--artifacts` chose). The result
(`RunOptions`) has no defaults of its own, and nothing downstream picks a value again."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from search.planning.databind import Origin
from search.records import record
from search.records.paths import default_storage, run_dir
from search.records.store import resolve_uri
from search.space.grid import GridSpec
from search.space.parse import resource_problem
from trainer.errors import ProxySearchError
from trainer.files import default_cache_dir


class OptionError(ProxySearchError, ValueError):
    """A flag's value cannot be used; the message names the flag."""


@dataclass(frozen=True)
class RunFlags:
    """What the command line of `search run`, `resume` or `confirm` said (None: not given)."""

    storage: str | None = None
    out: Path | None = None
    artifacts: str | None = None
    executor: str = "ray"
    ray_address: str | None = None
    gpus_per_trial: float | None = None
    cpus_per_trial: float | None = None
    max_concurrent: int | None = None
    max_trials: int | None = None
    share: bool = True
    cache_dir: Path | None = None
    no_cache: bool = False
    scratch: str | None = None
    accept_data_change: bool = False


@dataclass(frozen=True)
class RunOptions:
    """How one run goes: every value decided (`resolve`)."""

    storage: str
    out_dir: Path  # the run's folder: logs of the local executor
    artifacts: str  # the artifact store: a path or an fsspec URL
    executor: str  # "ray" or "local"
    ray_address: str | None  # a cluster to join, or None for a Ray of the run's own
    resources: dict[str, float]  # gpus_per_trial, cpus_per_trial
    max_concurrent: int | None
    max_trials: int | None
    share: bool
    cache_dir: str | None  # None: no decoded-image cache
    scratch: str | None
    accept_data_change: bool
    origin: Origin | None  # a confirmation's exploration, whose data binding it takes over


def cache_location(flag: str | Path | None, no_cache: bool, space: str | None = None) -> str | None:
    """The decoded-image cache: none with `--no-cache` (whatever the space says), else `--cache-dir`, else the
    space's `cache_dir:`, else this user's cache folder."""
    if no_cache:
        return None
    return str(flag or space or default_cache_dir())


def storage_of(study: str, flag: str | None) -> str:
    """The storage every command reads or writes `study` in: `--storage` when given, else the study's default
    (`search.records.paths.default_storage`). The one place that decides it."""
    return flag or default_storage(study)


def resolve(
    spec: GridSpec, flags: RunFlags, stored: record.Attributed | None = None, origin: Origin | None = None
) -> RunOptions:
    """The options of a run of `spec`: each value from `flags` when given, else the space, else the default; the run
    folder and the artifact store of a resumed study from its own record (`stored`) before the space. Raises
    `OptionError` for a flag that cannot be used."""
    for key in ("gpus_per_trial", "cpus_per_trial"):
        value = getattr(flags, key)
        if value is not None and (why := resource_problem(key, value)):
            raise OptionError(f"--{key.replace('_', '-')}: {why}")
    for flag, count in (("--max-concurrent", flags.max_concurrent), ("--max-trials", flags.max_trials)):
        if count is not None and count < 1:
            raise OptionError(f"{flag}: expected a positive integer, got {count}")
    out_dir_was = record.recorded_out_dir(stored) if stored is not None else None
    artifacts_were = record.recorded_artifacts(stored) if stored is not None else None
    out_dir = Path(flags.out or out_dir_was or run_dir(spec.name)).resolve()
    resources = {
        key: value if (value := getattr(flags, key)) is not None else spec.resources[key]
        for key in ("gpus_per_trial", "cpus_per_trial")
    }
    return RunOptions(
        storage=storage_of(spec.name, flags.storage),
        out_dir=out_dir,
        artifacts=resolve_uri(flags.artifacts or artifacts_were or spec.artifacts or str(out_dir)),
        executor=flags.executor,
        ray_address=flags.ray_address,
        resources=resources,
        max_concurrent=flags.max_concurrent,
        max_trials=flags.max_trials,
        share=flags.share,
        cache_dir=cache_location(flags.cache_dir, flags.no_cache, spec.cache_dir),
        scratch=flags.scratch,
        accept_data_change=flags.accept_data_change,
        origin=origin,
    )
