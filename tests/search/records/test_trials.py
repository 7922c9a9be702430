"""`read_trials` returns exactly what Optuna's own `get_trials` returns, from a real SQLite study."""

import math

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from search.records.storage import open_storage
from search.records.trials import read_trials


def make_study(tmp_path):
    url = f"sqlite:///{tmp_path}/t.db"
    study = optuna.create_study(study_name="t", storage=open_storage(url, create=True), direction="maximize")
    optuna.create_study(study_name="other", storage=open_storage(url, create=True)).optimize(
        lambda trial: trial.suggest_float("x", 0, 1), n_trials=3
    )  # a second study's trials must not leak in
    for i in range(6):
        trial = study.ask(
            {
                "cam": CategoricalDistribution(["gradcam", "eigencam", None]),
                "threshold": FloatDistribution(0.0, 1.0),
                "seed": IntDistribution(0, 9),
                "flag": CategoricalDistribution([True, False]),
            }
        )
        trial.set_user_attr("grid_key", f"k{i}")
        trial.set_user_attr("nested", {"a": [1, 2.5, None], "b": "ü"})
        trial.storage.set_trial_system_attr(trial._trial_id, "sys", i)
        trial.report(0.1 * i, step=0)
        trial.report(math.inf, step=1)
        if i == 0:
            study.tell(trial, state=TrialState.FAIL)
        elif i == 1:
            study.tell(trial, math.inf)
        elif i < 5:
            study.tell(trial, 0.25 * i)
        # the last stays RUNNING
    return url, study


def test_read_trials_equals_optunas_get_trials(tmp_path):
    url, _study = make_study(tmp_path)
    expected = optuna.load_study(study_name="t", storage=url).get_trials(deepcopy=False)
    got = read_trials(open_storage(url, create=False), "t")
    assert len(got) == len(expected) == 6
    for a, b in zip(got, expected, strict=False):
        assert (
            a.number,
            a.state,
            a.values,
            a.params,
            a.distributions,
            a.user_attrs,
            a.system_attrs,
            a.intermediate_values,
            a.datetime_start,
            a.datetime_complete,
            a._trial_id,
        ) == (
            b.number,
            b.state,
            b.values,
            b.params,
            b.distributions,
            b.user_attrs,
            b.system_attrs,
            b.intermediate_values,
            b.datetime_start,
            b.datetime_complete,
            b._trial_id,
        )
    assert got[1].value == math.inf and got[5].state == TrialState.RUNNING and got[5].datetime_complete is None


def test_read_trials_filters_states(tmp_path):
    url, _ = make_study(tmp_path)
    storage = open_storage(url, create=False)
    complete = read_trials(storage, "t", (TrialState.COMPLETE,))
    assert [t.number for t in complete] == [1, 2, 3, 4]
    assert [t.number for t in read_trials(storage, "t", (TrialState.RUNNING, TrialState.FAIL))] == [0, 5]
