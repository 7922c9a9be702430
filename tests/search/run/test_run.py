"""`search run` end to end with real Ray (num_cpus=2), real trials and a real SQLite study."""

import os

import optuna
import pytest
from optuna.trial import TrialState
from rich.console import Console
from typer.testing import CliRunner

from cli import app
from search.planning.options import RunFlags, resolve
from search.planning.status import load_study, load_trials, study_status
from search.records.paths import trial_folder
from search.records.trialtable import trial_rows
from search.run.driver import run_study
from tests.search.helpers import (
    search_cli,
    spec,
)

pytestmark = pytest.mark.slow  # the quick tier is `pytest -m 'not slow'`


def run(spec_, tmp_path, executor="ray"):
    options = resolve(spec_, RunFlags(f"sqlite:///{tmp_path}/study.db", tmp_path / "out", executor=executor))
    return run_study(spec_, options, Console(file=open(os.devnull, "w"))), options


def trials_of(options, name="tiny"):
    return optuna.load_study(study_name=name, storage=options.storage).get_trials(deepcopy=False)


def test_ray_run_completes_every_point_once(local_ray, tmp_path):
    s = spec(baselines=[{"proxy_steps": "2"}])
    code, options = run(s, tmp_path)
    assert code == 0
    trials = trials_of(options)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 5
    assert sorted(t.user_attrs["grid_key"] for t in trials) == sorted(p.grid_key for p in s.points)
    for t in trials:
        workdir = options.out_dir / trial_folder(t.number, t.user_attrs["grid_key"])
        assert (workdir / "result.json").exists() and t.value == t.user_attrs["val_accuracy"]
        assert t.user_attrs["proxy_images"] > 0 or t.user_attrs["baseline"]
    info = study_status(load_study("tiny", options.storage), load_trials("tiny", options.storage))
    assert info["complete"] == 5 and info["remaining"] == 0 and info["best"]["value"] == max(t.value for t in trials)
    rows = trial_rows(load_trials("tiny", options.storage))
    assert len(rows) == 5 and {"threshold", "cam_method", "test_accuracy", "duration_s"} <= set(rows[0])
    assert "fail_kind" not in rows[0]
    again, _ = run(s, tmp_path)  # the same command again: nothing to do
    assert again == 0 and len(trials_of(options)) == 5
    resumed = CliRunner().invoke(
        app, ["resume", "--study", "tiny", "--storage", options.storage, "--executor", "local"]
    )  # the space read back from the study itself
    assert resumed.exit_code == 0 and "all 5 points are finished" in resumed.output


@pytest.mark.slow
def test_one_config_gives_the_same_metrics_through_every_entry_point(tmp_path, local_ray):
    """`search trial` gave val 0.183 / test 0.133 where `search run` of the same config gave 0.167 / 0.100: the
    worker set torch's threads to cpus_per_trial, `search trial` did not. One function sets them everywhere."""
    import json

    from tests.conftest import without_timing
    from tests.faults.conftest import run_in_process

    s = spec(grid={"threshold": [0.4]}, resources={"cpus_per_trial": 2, "gpus_per_trial": 0})
    metrics = {}
    for executor in ("local", "ray"):
        code, options = run_in_process(s, tmp_path / executor, executor=executor)
        assert code == 0
        folder = next((options.out_dir / "trials").iterdir())
        result = json.loads((folder / "result.json").read_text())
        assert result["threads"] == 2
        metrics[executor] = without_timing(result["metrics"])
    config = next((tmp_path / "local" / "out" / "trials").iterdir()) / "config.json"
    direct = search_cli("trial", str(config), "--out", str(tmp_path / "direct"), "--threads", "2", cwd=tmp_path)
    assert direct.returncode == 0, direct.stderr
    metrics["trial"] = without_timing(json.loads((tmp_path / "direct" / "result.json").read_text())["metrics"])
    assert metrics["local"] == metrics["ray"] == metrics["trial"]
    assert json.loads((tmp_path / "direct" / "result.json").read_text())["threads"] == 2
