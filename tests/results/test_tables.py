"""Tables checked against numbers computed by hand, from a real Optuna study filled through the API."""

import math
from pathlib import Path

import numpy as np
import pytest

from results.load import load_study_data
from results.tables import (axis_tables, best_configurations, paired_comparisons, to_latex, to_markdown,
                            write_table)
from search.study import GridStudy
from tests.search.helpers import spec

BASELINE = [0.80, 0.82, 0.78, 0.81]
REAL = [0.05, 0.06, 0.04, 0.05]     # gradcam: a real improvement on every seed
NOISE = [0.02, -0.03, 0.01, -0.01]  # eigencam: noise around zero
T_975_DF3 = 3.182446305284263       # Student's t, 97.5% quantile, 3 degrees of freedom (from a table)


@pytest.fixture
def data(tmp_path):
    s = spec(repeats=4, grid={"cam_method": ["gradcam", "eigencam"], "threshold": [0.5]},
             baselines=[{"proxy_steps": "2"}])
    grid = GridStudy.open(s, f"sqlite:///{tmp_path}/s.db", tmp_path / "out")
    for pending in grid.pending():
        params = pending.point.params
        seed = params["seed"]
        if pending.point.baseline:
            test, val = BASELINE[seed], 0.70
        elif params["cam_method"] == "gradcam":
            test, val = BASELINE[seed] + REAL[seed], 0.75
            if seed == 0:  # a failed attempt first: its (absurd) metric must not count
                number = grid.start(pending)
                trial_id = grid.storage.get_trial_id_from_study_id_trial_number(grid.study_id, number)
                grid.storage.set_trial_user_attr(trial_id, "test_accuracy", 0.0)
                grid.fail(number, "boom")
        else:
            test, val = BASELINE[seed] + NOISE[seed], 0.90  # best by validation, not by test
        number = grid.start(pending)
        grid.finish(number, {"val_accuracy": val, "test_accuracy": test, "test_f1_macro": test - 0.1,
                             "train_seconds": 10.0 + seed, "peak_rss_mb": 500.0})
    return load_study_data(grid.study, grid.trials())


def by_hand(diffs):
    n = len(diffs)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = T_975_DF3 * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def test_paired_verdicts(data):
    table = paired_comparisons(data).set_index("configuration")
    assert len(table) == 2
    real = table.loc["cam_method=gradcam, threshold=0.5"]
    mean, low, high = by_hand(REAL)
    assert real["baseline"] == "baseline: proxy_steps=2" and real["n"] == 4
    assert real["mean_diff"] == pytest.approx(mean) and real["ci_low"] == pytest.approx(low)
    assert real["ci_high"] == pytest.approx(high) and real["verdict"] == "better"
    assert real["mean_baseline"] == pytest.approx(np.mean(BASELINE))
    t = mean / (math.sqrt(sum((d - mean) ** 2 for d in REAL) / 3) / 2)
    assert t == pytest.approx(12.247, abs=1e-3) and real["t_p"] == pytest.approx(0.001165, abs=2e-5)
    assert real["wilcoxon_p"] == pytest.approx(2 / 16)  # exact: all 4 differences positive
    noise = table.loc["cam_method=eigencam, threshold=0.5"]
    mean, low, high = by_hand(NOISE)
    assert noise["mean_diff"] == pytest.approx(mean) and noise["ci_low"] == pytest.approx(low)
    assert low < 0 < high and noise["verdict"] == "no evidence"


def test_failed_trials_do_not_count(data):
    assert (data.trials["state"] == "FAIL").sum() == 1
    by_cam = axis_tables(data)["by_cam_method"].set_index("cam_method")
    assert by_cam.loc["gradcam", "n"] == 4
    expected = np.mean([b + r for b, r in zip(BASELINE, REAL)])
    assert by_cam.loc["gradcam", "test_accuracy_mean"] == pytest.approx(expected)
    sd = np.std([b + r for b, r in zip(BASELINE, REAL)], ddof=1)
    assert by_cam.loc["gradcam", "test_accuracy_ci_high"] == pytest.approx(expected + T_975_DF3 * sd / 2)
    assert by_cam.loc["gradcam", "peak_rss_mb_mean"] == 500.0


def test_best_configurations_are_chosen_by_validation_not_test(data):
    best = best_configurations(data)
    assert best.iloc[0]["configuration"] == "cam_method=eigencam, threshold=0.5"
    assert best.iloc[0]["test_accuracy_mean"] < best.iloc[1]["test_accuracy_mean"]


def test_latex_markdown_and_csv(data, tmp_path):
    table = paired_comparisons(data)
    latex = to_latex(table)
    assert latex.count(r"\begin{tabular}") == latex.count(r"\end{tabular}") == 1
    assert r"\toprule" in latex and r"\midrule" in latex and r"\bottomrule" in latex
    assert r"mean\_diff" in latex and "mean_diff" not in latex.replace(r"\_", "")
    body = [line for line in latex.splitlines() if line.endswith(r"\\")]
    assert len(body) == len(table) + 1
    assert all(line.replace(r"\&", "").count("&") == len(table.columns) - 1 for line in body)
    assert len(to_markdown(table).splitlines()) == len(table) + 2
    paths = write_table(table, tmp_path, "verdicts")
    assert [p.name for p in paths] == ["verdicts.csv", "verdicts.md", "verdicts.tex"]
    assert all(Path(p).stat().st_size > 0 for p in paths)
