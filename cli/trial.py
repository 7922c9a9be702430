"""One trial in this process (`search trial`), and the machine's decoded-image cache (`search cache`)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import typer

from cli.app import CACHE_DIR, NO_CACHE, app, cache_app
from cli.errors import fail
from search.planning.options import cache_location


@app.command(short_help="Run one trial in this process (no Optuna, no Ray).")
def trial(
    config: Path = typer.Argument(..., help="a trial's config.json"),
    out: Path = typer.Option(..., help="the trial folder"),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:1… (default: CUDA when available)"),
    cache_dir: Path | None = CACHE_DIR,
    no_cache: bool = NO_CACHE,
    threads: int = typer.Option(1, help="torch CPU threads (as `search run` gives a trial: its cpus_per_trial)"),
) -> None:
    """Run one trial in this process (no Optuna, no Ray): a debugging aid."""
    from trainer import TrialConfig
    from trainer.config import MAX_THREADS
    from trainer.errors import DataError, ModelError

    if not 1 <= threads <= MAX_THREADS:
        fail(f"--threads: expected an integer from 1 to {MAX_THREADS}, got {threads}")
    trial_config = TrialConfig.from_json_file(config)
    if trial_config.pretrained_path:  # before the trial folder is made
        from trainer.models import load_pretrained

        load_pretrained(Path(trial_config.pretrained_path))
    from trainer import run_trial  # torch, timm and grad-cam load only for a config worth running

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logging.getLogger("trainer").addHandler(handler)
    try:
        result = run_trial(trial_config, out, device, cache_dir=cache_location(cache_dir, no_cache), threads=threads)
    except KeyboardInterrupt:
        print("trial failed: interrupted", file=sys.stderr)
        raise typer.Exit(130) from None
    except (DataError, ModelError) as exc:  # bad input found before the first epoch
        fail(str(exc).splitlines()[0])
    except Exception as exc:  # the reason goes on one line, for the person reading
        print(f"trial failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", file=sys.stderr)
        raise typer.Exit(1) from None
    finally:
        logging.getLogger("trainer").removeHandler(handler)
    print(json.dumps(result.metrics, indent=2))


@cache_app.command("list")
def cache_list(cache_dir: Path | None = CACHE_DIR) -> None:
    """The decoded datasets in the cache: key, dataset, image size, images, size on disk."""
    from trainer.data.cache import entries

    folder = Path(str(cache_location(cache_dir, no_cache=False)))
    found = entries(folder)
    for entry in found:
        meta = entry.meta
        print(
            f"{entry.key}\t{meta['dataset']['kind']} {meta['dataset']['root'] or ''}\t{meta['image_size']} px\t"
            f"{meta['count']} images\t{entry.size_bytes / 2**20:.1f} MB"
        )
    print(f"{len(found)} entries in {folder}", file=sys.stderr)


@cache_app.command("clear")
def cache_clear(
    keys: list[str] = typer.Argument(None, help="entries to remove (default: all)"), cache_dir: Path | None = CACHE_DIR
) -> None:
    """Remove cache entries (all of them, or those named); trials rebuild what they need."""
    from trainer.data.cache import entries, remove

    folder = Path(str(cache_location(cache_dir, no_cache=False)))
    chosen = [e for e in entries(folder) if not keys or e.key in keys]
    unknown = set(keys or []) - {e.key for e in chosen}
    if unknown:
        fail(f"no cache entry {sorted(unknown)[0]!r} in {folder} (see `search cache list`)")
    freed = sum(e.size_bytes for e in chosen)
    for entry in chosen:
        remove(entry)
    print(f"removed {len(chosen)} entries ({freed / 2**20:.1f} MB) from {folder}")
