"""The effects of a study as the report says them (`results.effects`): the study record → paired gains → the
fit → sentences. (The model itself: tests/analysis/test_effects.py.)"""

from __future__ import annotations

import numpy as np


def test_the_report_says_the_schedule_axis_changes_its_reference(tmp_path):
    """Issue 41, evidence 6: a study with two schedules, each beside its budget-matched baseline, fitted through the
    report's own path (the study record → paired gains → effects → sentences)."""
    from results.effects import effect_sentences, study_effects
    from search.planning.status import load_study, load_trials
    from search.records.study import GridStudy
    from search.records.trialtable import load_study_data
    from tests.search.helpers import spec

    space = spec(
        repeats=2,
        grid={
            "cam_method": ["gradcam", "eigencam"],
            "threshold": [0.2, 0.4, 0.6, 0.8],
            "proxy_steps": ["1,p,1", "1,p,1,p,1"],
        },
        fixed={k: v for k, v in spec().fixed.items() if k != "proxy_steps"},
        baselines=[{"proxy_steps": "2"}, {"proxy_steps": "3"}],
    )
    storage = f"sqlite:///{tmp_path}/s.db"
    grid = GridStudy.open(space, storage, tmp_path / "out")
    rng = np.random.default_rng(6)
    for pending in grid.pending():
        point = pending.point
        value = 0.6 + rng.normal(0, 0.01)
        metrics = {
            "val_accuracy": value,
            "epochs": point.schedule.epochs,
            "num_classes": 10,
            "seed": point.params["seed"],
        }
        grid.finish(grid.start(pending), metrics)
    data = load_study_data(load_study("tiny", storage), load_trials("tiny", storage))
    effects = study_effects(data, interactions=False)
    (family,) = effects.values()
    flags = family.axes.set_index("factor")["reference_changes"]
    assert bool(flags.filter(like="proxy_steps").iloc[0]) and not flags.get("threshold", False)
    (sentence,) = effect_sentences(effects, data.spec)
    assert "its levels are compared with different baselines (budget-matched)" in sentence
    assert "its interval includes their own noise" in sentence


def test_what_the_gains_leave_out_or_rest_on_is_said_beside_the_effects(tmp_path):
    """Issue 41, bad input: baselines at chance, proxy trials whose seed has no baseline, trials outside the grid
    (a NaN objective): each a caveat in the family's sentence, never a traceback or a bare number."""
    import sqlalchemy

    from results.effects import effect_sentences, study_effects
    from search.planning.status import load_study, load_trials
    from search.records.study import GridStudy
    from search.records.trialtable import load_study_data
    from tests.search.helpers import spec

    grid = {"threshold": [0.2, 0.4, 0.6, 0.8], "cam_method": ["gradcam", "eigencam"]}
    space = spec(repeats=3, grid=grid, baselines=[{"proxy_steps": "2"}])
    storage = f"sqlite:///{tmp_path}/s.db"
    grid = GridStudy.open(space, storage, tmp_path / "out")
    rng = np.random.default_rng(1)
    for pending in grid.pending():
        point = pending.point
        if point.kind == "baseline" and point.params["seed"] == 2:
            continue  # seed 2 has no baseline: its proxies cannot be paired
        chance = point.kind == "baseline"
        value = 0.1 if chance else 0.6 + rng.normal(0, 0.01)
        metrics = {"val_accuracy": value, "num_classes": 10, "seed": point.params["seed"]}
        grid.finish(grid.start(pending), metrics)
    proxy = next(
        t for t in load_trials("tiny", storage) if t.user_attrs["kind"] == "proxy" and t.user_attrs["seed"] == 0
    )
    engine = sqlalchemy.create_engine(storage)
    with engine.begin() as conn:  # a proxy trial's objective made NaN by hand
        conn.execute(
            sqlalchemy.text("UPDATE trial_values SET value = NULL WHERE trial_id = :id"), {"id": proxy._trial_id}
        )
    engine.dispose()
    data = load_study_data(load_study("tiny", storage), load_trials("tiny", storage))
    (sentence,) = effect_sentences(study_effects(data, interactions=False), data.spec)
    assert "Caveats:" in sentence, sentence
    assert "8 proxy trials with no matched baseline on their seed left out" in sentence  # seed 2's
    assert "every baseline is at chance accuracy" in sentence
    assert "1 trials of the study left out (not a try of a grid point)" in sentence
