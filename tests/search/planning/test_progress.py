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
