"""Read a study into tidy tables: one row per trial (`trial_table`), one row per epoch (`load_curves`).

Only reads: the study database and the trial folders. Every trial row carries its params, its metrics and, under
`setting_<axis>`, the value every axis of the space resolved to for it (a baseline has no `threshold` param, but its
`setting_augmentation` is known), which is what pairing a configuration with its baseline needs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial

from search.space import GridSpec
from search.study import INTERNAL_ATTRS, spec_of, trial_workdir


@dataclass
class StudyData:
    """A study as tables: `trials` (one row per trial) and what is needed to read them."""

    name: str
    spec: GridSpec
    trials: pd.DataFrame
    out_dir: Path

    @property
    def axes(self) -> list[str]:
        """The axes of the space (params other than the seed), in a stable order."""
        names = {name for p in self.spec.points for name in p.params if name != "seed"}
        return sorted(names)

    @property
    def complete(self) -> pd.DataFrame:
        """COMPLETE trials only: the ones every statistic uses."""
        return self.trials[self.trials["state"] == "COMPLETE"]


def trial_rows(trials: list[FrozenTrial]) -> list[dict[str, Any]]:
    """One dict per trial: number, grid_key, state, attempt, baseline, every param, the objective value, every
    metric, start/complete times and duration, failure reason. Internal bookkeeping attrs are left out."""
    params = sorted({name for t in trials for name in t.params})
    metrics = sorted({name for t in trials for name in t.user_attrs} - set(INTERNAL_ATTRS) - set(params))
    rows = []
    for trial in trials:
        attrs = trial.user_attrs
        row: dict[str, Any] = {"number": trial.number, "grid_key": attrs.get("grid_key"),
                               "state": trial.state.name, "attempt": attrs.get("attempt"),
                               "baseline": attrs.get("baseline")}
        row.update({name: trial.params.get(name) for name in params})
        row["value"] = trial.value
        row.update({name: attrs.get(name) for name in metrics})
        start, end = trial.datetime_start, trial.datetime_complete
        row["datetime_start"] = start.isoformat() if start else None
        row["datetime_complete"] = end.isoformat() if end else None
        row["duration_s"] = (end - start).total_seconds() if start and end else None
        row["fail_reason"] = attrs.get("fail_reason")
        rows.append(row)
    return rows


def load_study_data(study: optuna.Study, trials: list[FrozenTrial]) -> StudyData:
    """The trial table of a study made by `search run` whose trials are `trials`, with each axis's resolved
    `setting_<axis>` column."""
    spec = spec_of(study)
    frame = pd.DataFrame(trial_rows(trials))
    points = {p.grid_key: p for p in spec.points}
    axes = sorted({name for p in spec.points for name in p.params if name != "seed"} | {"dataset", "architecture"})
    if len(frame):
        for axis in axes:
            frame[f"setting_{axis}"] = [_setting(points.get(key), axis, spec) for key in frame["grid_key"]]
        frame["config"] = [_config_label(points.get(key)) for key in frame["grid_key"]]
    out_dir = Path(study.user_attrs.get("out_dir", Path("runs") / study.study_name))
    return StudyData(study.study_name, spec, frame, out_dir)


def _setting(point, axis: str, spec: GridSpec) -> Any:
    if point is None:
        return None
    if axis == "dataset":
        return point.params.get("dataset", next(iter(spec.data["datasets"])))
    return point.setting(axis)


def _config_label(point) -> str | None:
    """A configuration: the point's params without the seed, as `k=v` text (its seeds are its repeats)."""
    if point is None:
        return None
    label = ", ".join(f"{k}={v}" for k, v in sorted(point.params.items()) if k != "seed")
    return ("baseline: " if point.baseline else "") + (label or "(fixed)")


def workdir_of(data: StudyData, row: pd.Series) -> Path:
    """The trial folder of a trial-table row."""
    return trial_workdir(data.out_dir, int(row["number"]), row["grid_key"])


def load_curves(data: StudyData, numbers: list[int] | None = None) -> pd.DataFrame:
    """Per-epoch rows from `metrics.jsonl` of the COMPLETE trials `numbers` (all when None), with `number`."""
    trials = data.complete if numbers is None else data.complete[data.complete["number"].isin(numbers)]
    rows = []
    for _, row in trials.iterrows():
        path = workdir_of(data, row) / "metrics.jsonl"
        try:
            lines = path.read_text().splitlines()
        except OSError:
            continue  # a trial folder on another node, or removed
        rows += [{"number": int(row["number"]), "config": row["config"], **json.loads(line)} for line in lines]
    return pd.DataFrame(rows)
