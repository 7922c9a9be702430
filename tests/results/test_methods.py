"""results.methods: the methods paragraph says what ran, not what the space intended (issue 43 item 5: "156 points
(2 seeds each)" for configurations that ran on one seed, "5 balanced blocks of 16 configurations" for 72)."""

from __future__ import annotations

from results.methods import methods_text
from search.planning.budget import plan_design
from search.planning.status import load_study, load_trials
from search.records.study import GridStudy
from search.records.trialtable import load_study_data
from search.space.design import parse_budget
from tests.search.helpers import finished_study, spec

GRID = {"cam_method": ["gradcam", "eigencam"], "threshold": [0.2, 0.5, 0.8], "multiply_weight": [0.2, 0.8]}


def data_of(storage: str):
    return load_study_data(load_study("tiny", storage), load_trials("tiny", storage))


def test_the_seeds_said_are_the_seeds_each_configuration_ran_on(tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"
    grid = GridStudy.open(spec(repeats=2, baselines=[{"proxy_steps": "2"}]), storage, tmp_path / "out")
    for pending in grid.pending():  # the proxies on seed 0 only, the baseline on both seeds
        params = pending.point.params
        if params["seed"] == 0 or pending.point.kind == "baseline":
            grid.finish(grid.start(pending), {"val_accuracy": 0.5, "epochs": 2, "seed": params["seed"]})
    text = methods_text(data_of(storage))
    assert text.startswith("The grid has 10 points; 6 trials completed: ")
    assert "4 proxy trials of 4 configurations (1 seed each)" in text
    assert "2 baseline trials of 1 configurations (2 seeds each)" in text


def test_a_designed_study_says_its_blocks_and_what_ran_of_them(tmp_path):
    whole = spec(repeats=2, grid=GRID, baselines=[{"proxy_steps": "2"}])
    designed = plan_design(whole, parse_budget("12configs"), None, [], True, whole.resources).spec
    blocks = designed.design["blocks"]
    storage = f"sqlite:///{tmp_path}/s.db"
    finished_study(designed, storage, tmp_path / "out")
    text = methods_text(data_of(storage))
    sizes = " or ".join(str(n) for n in sorted({len(b["configs"]) for b in blocks}, reverse=True))
    assert f"A designed fraction: {len(blocks)} blocks of {sizes} proxy configurations" in text, text
    distinct = len({k for b in blocks for k in b["configs"]})
    assert f"{distinct} distinct configurations" in text
    assert f"{sum(len(b['configs']) for b in blocks)} proxy trials of {distinct} configurations" in text
    assert "levels are not balanced on seed 0: threshold" in text  # 10 configurations cannot balance 3 levels
