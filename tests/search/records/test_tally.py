"""search.records.tally: where points stand, counting only the trials that are tries of the grid's points. A study
edited
with Optuna alone (params outside the grid under a real point's key, no kind or grid_key, a NULL or text
objective) is named and left out by status, report and confirm, never counted or selected."""

from __future__ import annotations

import sqlite3

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from search.planning.status import load_study, load_trials, study_status
from search.records.tally import of_the_grid, tally
from tests.search.helpers import finished_study, search_cli, spec
from tests.tiny import TINY_FIXED

SPACE = {
    "repeats": 2,
    "grid": {"cam_method": ["gradcam"], "threshold": [0.3, 0.6]},
    "baselines": [{"proxy_steps": "2"}],
    "fixed": {**TINY_FIXED, "split": {"test_seed": 0}},
}


def hand_edited(tmp_path) -> tuple[str, dict[str, int]]:
    """A finished study `tiny` in runs/tiny.db, then four trials added outside `search run`; their numbers."""
    (tmp_path / "runs").mkdir()
    storage = f"sqlite:///{tmp_path}/runs/tiny.db"
    grid = finished_study(
        spec(**SPACE), storage, tmp_path / "runs" / "tiny", lambda p: 0.4 + p.get("threshold", 0) / 10
    )
    point = next(p for p in grid.spec.points if p.params.get("threshold") == 0.6 and p.params["seed"] == 0)
    study = optuna.load_study(study_name="tiny", storage=storage)
    real = {"grid_key": point.grid_key, "kind": "proxy", "seed": 0}
    recorded = next(t.distributions for t in study.trials if t.user_attrs.get("kind") == "proxy")
    settings = {k: v for k, v in point.params.items() if k != "seed"}
    added = {
        "outside the grid": create_trial(
            params={"cam_method": "gradcam", "threshold": 0.99},
            distributions=recorded,
            value=0.99,
            user_attrs=real,
        ),
        "no kind or grid_key": create_trial(params={}, distributions={}, value=0.97),
        "NULL objective": create_trial(params=settings, distributions=recorded, value=0.98, user_attrs=real),
        "text objective": create_trial(params=settings, distributions=recorded, value=0.96, user_attrs=real),
    }
    numbers = {}
    for why, trial in added.items():
        study.add_trial(trial)
        numbers[why] = study.trials[-1].number
    ids = {t.number: t._trial_id for t in study.trials}
    with sqlite3.connect(tmp_path / "runs" / "tiny.db") as conn:
        conn.execute("UPDATE trial_values SET value = NULL WHERE trial_id = ?", (ids[numbers["NULL objective"]],))
        conn.execute("UPDATE trial_values SET value = 'high' WHERE trial_id = ?", (ids[numbers["text objective"]],))
    return storage, numbers


def test_trials_added_by_hand_are_left_out_and_named(tmp_path):
    storage, numbers = hand_edited(tmp_path)
    study, trials = load_study("tiny", storage), load_trials("tiny", storage)
    kept, foreign = of_the_grid(spec(**SPACE), trials)
    assert sorted(foreign) == sorted(numbers.values()) and len(kept) == 6
    counted = tally(spec(**SPACE), trials)
    assert len(counted.done) == 6 and counted.foreign == foreign and not counted.pending
    info = study_status(study, trials)
    assert info["remaining"] == 0 and info["complete"] == 6 and info["best"]["value"] < 0.9


@pytest.mark.slow
def test_status_report_and_confirm_survive_a_hand_edited_study(tmp_path):
    """Issue 42 item 7: the trial outside the grid was selected by `confirm` and made `status` say "−1
    remaining"; the NULL objective, the missing kind and the text value broke `status`, `report` and `confirm`."""
    storage, numbers = hand_edited(tmp_path)
    said = "4 trials not of this grid left out (numbers " + ", ".join(map(str, sorted(numbers.values())))
    status = search_cli("status", "--study", "tiny", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "0 remaining" in status.stdout and said in status.stdout and "0.99" not in status.stdout
    report = search_cli("report", "--study", "tiny", cwd=tmp_path, timeout=600)
    assert report.returncode == 0 and said in report.stdout + report.stderr, report.stderr
    confirm = search_cli("confirm", "--study", "tiny", "--top", "1", "--seeds", "3", "--dry-run", cwd=tmp_path)
    assert confirm.returncode == 0 and said in confirm.stderr, confirm.stderr
    assert "threshold=0.6" in confirm.stdout and "0.99" not in confirm.stdout
    exported = search_cli("export", "--study", "tiny", cwd=tmp_path)
    assert exported.returncode == 0  # the export keeps every row: it is the raw record
    assert all(t.state == TrialState.COMPLETE for t in load_trials("tiny", storage))
