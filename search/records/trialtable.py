"""Read a study into tidy tables: one row per trial (`load_study_data`), one row per epoch (`load_curves`).

Only reads: the study database and the artifact store. Every trial row carries its params, its metrics and, under
`setting_<axis>`, the value each axis of the space resolved to for it (blank where the axis cannot apply: a baseline
has no threshold). A configuration (a point without its seed) gets a short label — P1, P2… for proxy attention,
B1… for baselines, C1… for controls — and `legend` says what each label is.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial

from search.records import record
from search.records.paths import trial_folder
from search.records.store import ArtifactStore
from search.records.study import spec_of
from search.records.tally import of_the_grid, shown_state
from search.space.grid import GridSpec, Point
from trainer.folder import TrialFolder
from trainer.metrics import PROXY_METRICS
from trainer.prefix import CAM_AXES, PointKind

KIND_PREFIX = {PointKind.PROXY: "P", PointKind.BASELINE: "B", PointKind.CONTROL: "C"}


@dataclass
class StudyData:
    """A study as tables: `trials` (one row per trial), `legend` (one row per configuration label)."""

    name: str
    spec: GridSpec
    trials: pd.DataFrame
    legend: pd.DataFrame
    store: ArtifactStore
    foreign: list[int] = field(default_factory=list)  # numbers of the trials left out: no try of a grid point

    @property
    def axes(self) -> list[str]:
        """The axes of the space (the seed aside), sorted."""
        return self.spec.axes

    @property
    def stage(self) -> str:
        """ "exploration" (a grid: selection on validation, comparisons exploratory) or "confirmation" (made by
        `search confirm`: the study whose verdicts a thesis reports)."""
        return self.spec.stage

    @property
    def complete(self) -> pd.DataFrame:
        """COMPLETE trials only: the ones every statistic uses."""
        return self.trials[self.trials["state"] == "COMPLETE"]

    @property
    def proxy_trials(self) -> pd.DataFrame:
        """Complete proxy-attention trials (not baselines, not controls)."""
        return self.complete[self.complete["kind"] == PointKind.PROXY]

    @property
    def reference_trials(self) -> pd.DataFrame:
        """Complete baselines and controls: what proxy attention is compared against."""
        return self.complete[self.complete["kind"] != PointKind.PROXY]


RENAMED_METRICS = {"proxy_steps": "proxy_steps_done"}  # what studies recorded before the metric got its own name


def trial_rows(trials: list[FrozenTrial]) -> list[dict[str, Any]]:
    """One dict per trial: number, grid_key, state, attempt, kind, every Optuna param, the seed, the objective
    value, every metric (`proxy_steps_done`: the proxy steps a trial made, beside the `proxy_steps` param),
    start/complete times and duration, failure reason, rung where halving stopped it."""
    params = sorted({name for t in trials for name in t.params} - {"seed"})
    metrics = record.metric_names(trials)
    rows = []
    for trial in trials:
        attrs = record.trial_attrs(trial)
        row: dict[str, Any] = {
            "number": trial.number,
            "grid_key": attrs["grid_key"],
            "state": shown_state(trial.state, attrs["fail_kind"]),
            "attempt": attrs["attempt"],
            "kind": attrs["kind"],
            "baseline": attrs["baseline"],
        }
        row.update({name: trial.params.get(name) for name in params})
        row["seed"] = record.seed_of(trial)
        row["value"] = trial.value
        row.update({RENAMED_METRICS.get(name, name): _scalar(record.metric(trial, name)) for name in metrics})
        start, end = trial.datetime_start, trial.datetime_complete
        row["datetime_start"] = start.isoformat() if start else None
        row["datetime_complete"] = end.isoformat() if end else None
        row["duration_s"] = (end - start).total_seconds() if start and end else None
        row.update({key: attrs[key] for key in ("fail_reason", "pruned_at", "prune_reason")})
        rows.append(row)
    return rows


def _scalar(value: Any) -> Any:
    return ",".join(map(str, value)) if isinstance(value, list) else value


# The metrics the tables and figures read: a study whose trials lack some (made by an earlier version, or filled
# by hand) gets empty columns for them instead of failing.
TABLE_METRICS = (
    "val_accuracy",
    "val_accuracy_best",
    "test_accuracy",
    "test_f1_macro",
    "train_seconds",
    "peak_rss_mb",
    "peak_gpu_mem_mb",
    "epochs",
    "images_seen",
    *PROXY_METRICS,
    "test_part",
)


def load_study_data(study: optuna.Study, trials: list[FrozenTrial]) -> StudyData:
    """The trial table of a study made by `search run` whose trials are `trials`; trials that are no try of a point
    of its grid (`search.records.tally.of_the_grid`: added by hand) are left out, their numbers kept in `foreign`."""
    spec = spec_of(study)
    frame, legend, foreign = trial_table(spec, trials)
    store = ArtifactStore(record.artifact_store_of(study))
    return StudyData(study.study_name, spec, frame, legend, store, foreign)


def trial_table(spec: GridSpec, trials: list[FrozenTrial]) -> tuple[pd.DataFrame, pd.DataFrame, list[int]]:
    """`trials` of a study of `spec` as one row per trial (its settings under `setting_<axis>`, its configuration's
    label), the legend of the labels, and the numbers of the trials that are no try of a point of its grid."""
    trials, foreign = of_the_grid(spec, trials)
    points = {p.grid_key: p for p in spec.points}
    frame = pd.DataFrame(trial_rows(trials))
    if len(frame):
        frame = frame.reindex(columns=[*frame.columns, *(m for m in TABLE_METRICS if m not in frame.columns)])
    legend = _legend(spec)
    if len(frame):
        keys = frame["grid_key"]
        frame["kind"] = [points[k].kind if k in points else kind for k, kind in zip(keys, frame["kind"], strict=True)]
        for axis in sorted(set(spec.axes) | {"dataset", "architecture", "proxy_steps"}):
            frame[f"setting_{axis}"] = [_setting(points.get(k), axis, spec) for k in keys]
        labels = dict(zip(legend["configuration"], legend["label"], strict=True)) if len(legend) else {}
        frame["config"] = [points[k].configuration.text if k in points else None for k in keys]
        frame["label"] = [labels.get(c) for c in frame["config"]]
    return frame, legend, foreign


def _setting(point: Point | None, axis: str, spec: GridSpec) -> Any:
    if point is None:
        return None
    if axis == "dataset":
        return spec.dataset_of(point)
    if point.kind == PointKind.BASELINE and axis in CAM_AXES:  # no proxy step: its CAM settings act on nothing
        return None
    return point.setting(axis)


def _legend(spec: GridSpec) -> pd.DataFrame:
    """One row per configuration: its short label, kind and full settings (labels numbered per kind)."""
    seen: dict[str, Point] = {}
    for point in spec.points:
        seen.setdefault(point.configuration.text, point)
    rows, counts = [], dict.fromkeys(KIND_PREFIX, 0)
    for text, point in sorted(seen.items(), key=lambda kv: (list(KIND_PREFIX).index(kv[1].kind), kv[0])):
        counts[point.kind] += 1
        rows.append(
            {"label": f"{KIND_PREFIX[point.kind]}{counts[point.kind]}", "kind": point.kind, "configuration": text}
        )
    return pd.DataFrame(rows, columns=["label", "kind", "configuration"])


def folder_of(data: StudyData, row: pd.Series) -> TrialFolder:
    """The trial folder of a trial-table row, in the study's artifact store."""
    return data.store.folder(trial_folder(int(row["number"]), row["grid_key"]))


def load_curves(
    data: StudyData, numbers: list[int] | None = None, states: tuple[str, ...] = ("COMPLETE",)
) -> pd.DataFrame:
    """Per-epoch rows from `metrics.jsonl` of the trials `numbers` (all when None) in `states`, with `number`."""
    trials = data.trials[data.trials["state"].isin(states)] if len(data.trials) else data.trials
    if numbers is not None:
        trials = trials[trials["number"].isin(numbers)]
    rows = []
    for _, row in trials.iterrows():
        rows += [
            {
                "number": int(row["number"]),
                "config": row["config"],
                "label": row["label"],
                "kind": row["kind"],
                "state": row["state"],
                **line,
            }
            for line in folder_of(data, row).read_metrics()
        ]
    return pd.DataFrame(rows)


def export_rows(study: optuna.Study, trials: list[FrozenTrial]) -> list[dict[str, Any]]:
    """What `search export` writes: one row per trial with its effective settings, every TrialConfig field as
    `setting_<field>` (dotted for nested ones, as text: a schedule "4" stays "4" in pandas), each row's own
    (a baseline's `proxy_steps` is its own, not the study's fixed one), empty where a setting cannot act on that
    point (a baseline's CAM settings, a duplicate's mask); then the configuration label, the stage, the metrics
    (the proxy steps a trial made is `proxy_steps_done`)."""
    data = load_study_data(study, trials)
    frame = data.trials
    if not len(frame):
        return []
    points = {p.grid_key: p for p in data.spec.points}
    effective = {key: _effective(points.get(key)) for key in set(frame["grid_key"])}
    settings = pd.DataFrame([effective[key] for key in frame["grid_key"]], index=frame.index)
    settings.insert(0, "setting_dataset", frame["setting_dataset"])  # its name in the space
    params = {name for t in trials for name in t.params} - {"seed"}  # the settings say them all, resolved
    frame = frame.drop(columns=[c for c in frame.columns if c.startswith("setting_") or c in params] + ["config"])
    frame.insert(0, "stage", data.stage)
    frame.insert(0, "study", data.name)
    frame = pd.concat([frame, settings], axis=1)
    frame["datasets"] = json.dumps({n: dataclasses.asdict(d) for n, d in data.spec.datasets.items()}, sort_keys=True)
    return frame.to_dict("records")


def _effective(point: Point | None) -> dict[str, Any]:
    """A point's effective TrialConfig, flattened, as text; None where a setting cannot act on it."""
    if point is None:
        return {}
    silent = set(point.dropped) | (set(CAM_AXES) if point.kind == PointKind.BASELINE else set())
    return {
        f"setting_{name}": None if name.split(".")[0] in silent or value is None else _text(value)
        for name, value in flatten(point.config().to_dict()).items()
    }


def _text(value: Any) -> str:
    return json.dumps(value).strip('"')


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as one level of dotted keys: {"optimizer": {"lr": 1}} -> {"optimizer.lr": 1}."""
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
