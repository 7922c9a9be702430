"""search.planning.progress: the warnings about models that learned nothing, per family of references."""

from __future__ import annotations

from search.planning.progress import chance_warnings
from search.planning.status import load_study, load_trials, study_status
from tests.search.helpers import finished_study, search_cli, spec

SPACE = {
    "repeats": 2,
    "grid": {"cam_method": ["gradcam"], "threshold": [0.3, 0.6]},
    "baselines": [{"proxy_steps": "2"}],
}


def test_baselines_at_chance_are_named_per_family(tmp_path):
    """Issue 43 item 2: 4 of 6 baselines of one architecture sat at chance (0.25), the confirmation then called
    configurations "better" by 23–33 pp, and only a study where every trial was at chance was warned about."""
    (tmp_path / "runs").mkdir()
    storage = f"sqlite:///{tmp_path}/runs/tiny.db"
    value = lambda p: 0.5 if "threshold" in p else (0.1 if p["seed"] == 0 else 0.6)  # noqa: E731 (10 classes)
    finished_study(spec(**SPACE), storage, tmp_path / "runs" / "tiny", value)
    study, trials = load_study("tiny", storage), load_trials("tiny", storage)
    (warning,) = chance_warnings(spec(**SPACE), trials)
    assert warning.startswith("warning: 1 of 2 baselines of digits × test_resnet are at chance accuracy")
    assert "more epochs or a lower learning rate" in warning
    assert study_status(study, trials)["warnings"] == [warning]
    status = search_cli("status", "--study", "tiny", cwd=tmp_path)
    assert warning in status.stdout
    fine = lambda p: 0.5  # noqa: E731
    finished_study(spec(**{**SPACE, "study": "fine"}), f"sqlite:///{tmp_path}/f.db", tmp_path / "f", fine)
    assert chance_warnings(spec(**SPACE), load_trials("fine", f"sqlite:///{tmp_path}/f.db")) == []


def test_the_summary_says_what_kind_the_best_is_and_how_to_type_the_report(monkeypatch):
    """Items 5 and 6: the quickstart's "best val_accuracy 0.9250 (trial 3)" was its baseline; and the suggested
    `search report` was not on PATH when the environment was not activated."""
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from search.planning.plan import Plan
    from search.planning.progress import invoked_as, run_summary
    from tests.search.helpers import spec

    s = spec()
    made = [
        create_trial(
            value=value,
            params={"threshold": 0.3},
            distributions={"threshold": FloatDistribution(0, 1)},
            user_attrs={"kind": kind, "grid_key": key},
            state=TrialState.COMPLETE,
        )
        for value, kind, key in ((0.92, "baseline", "b"), (0.90, "proxy", "p"), (0.85, "proxy", "q"))
    ]
    for number, trial in enumerate(made):
        trial.number = number
    line = run_summary(s, made, Plan(), "sqlite:///runs/tiny.db")
    assert "best val_accuracy 0.9200 (trial 0, a baseline)" in line
    assert "best proxy configuration val_accuracy 0.9000 (trial 1)" in line
    monkeypatch.setattr("sys.argv", [".venv/bin/search", "run", "s.yaml"])
    assert invoked_as() == ".venv/bin/search"
    monkeypatch.setattr("sys.argv", ["/x/search/__main__.py"])
    assert invoked_as() == "search"
