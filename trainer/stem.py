"""A shared stem: the prefix of training that several grid points share, trained once (`run_stem`), then the
inputs of the proxy step due at its end (wrong images and CAMs), once per CAM group, for its points to read."""

from __future__ import annotations

import logging
from pathlib import Path

from trainer import folder as layout
from trainer.config import TrialConfig
from trainer.data.identity import Binding
from trainer.device import select_device, set_threads
from trainer.files import atomic_write_json
from trainer.loop import Saved, SharedLookup, Trial, nothing_saved, trial_log
from trainer.prefix import cam_group_key, prefix_key
from trainer.proxy import proxy_inputs

log = logging.getLogger("trainer")


def run_stem(
    config: TrialConfig,
    workdir: str | Path,
    until: int,
    groups: list[TrialConfig],
    device: str | None = None,
    *,
    cache_dir: str | Path | None = None,
    shared: SharedLookup | None = None,
    on_saved: Saved | None = None,
    threads: int = 1,
    binding: Binding | None = None,
) -> dict:
    """Train the prefix that several grid points share: `config` for `until` epochs, then the inputs of the proxy
    step due there (wrong images and CAMs) for each CAM group in `groups`, saved under `shared/`. Returns the stem's
    record (also written as `result.json`)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    on_saved = on_saved or nothing_saved
    with trial_log(workdir):
        set_threads(threads)
        trial = Trial(
            config,
            workdir,
            select_device(device),
            cache_dir,
            shared,
            on_saved,
            owner=f"stem:{prefix_key(config, until)}",
            binding=binding,
        )
        trial.run(until)
        step = config.schedule.steps_before(until)
        made = []
        for group in groups:
            key = cam_group_key(group, until)
            name = layout.shared_input(step, key)
            if not (workdir / name).exists():
                inputs = proxy_inputs(
                    trial.model, trial.train, group, step, trial.device, trial.batch_size, workdir, key
                )
                try:
                    inputs.save(workdir / name)
                finally:
                    inputs.close()
                on_saved([name])
                log.info(
                    "shared proxy step %d inputs for %s: %d wrong images, %.2f s",
                    step,
                    group.cam_method,
                    len(inputs.positions),
                    inputs.seconds,
                )
            made.append(name)
        record = {
            "prefix_key": prefix_key(config, until),
            "epochs": until,
            "shared": made,
            "seconds": sum(r["seconds"] for r in trial.state.history[trial.state.shared_epochs :]),
        }
        atomic_write_json(workdir / layout.RESULT, {"metrics": {}, "stem": record})
        on_saved([layout.RESULT])
        return record
