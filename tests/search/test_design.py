"""A designed fraction: budgets read strictly, balanced blocks that extend and never change, the points a design
runs, and what a budget buys or refuses (on the thesis grid's real shape and on a real digits run)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from search.budget import plan_design
from search.design import (
    DesignError,
    configurations,
    design_factors,
    expected_halfwidth,
    extend_design,
    factor_table,
    parse_budget,
)
from search.grid import GridSpec, config_key
from search.space import SpaceError, load_space, parse_space
from tests.search.helpers import search_cli, space, trials, write_space
from tests.tiny import TINY_FIXED

ROOT = Path(__file__).resolve().parents[2]
THESIS = ROOT / "spaces" / "thesis_grid.yaml"


@pytest.fixture(scope="module")
def thesis() -> GridSpec:
    return load_space(THESIS, check_roots=False)


@pytest.fixture(scope="module")
def thesis_configs(thesis) -> dict:
    return configurations(thesis.points)


@pytest.fixture(scope="module")
def five_percent(thesis):
    """The thesis grid's design for a 5% budget (seconds to plan: made once for the tests that read it)."""
    return plan_design(thesis, "5%", None, [], True, thesis.resources)


@pytest.mark.parametrize(
    ("text", "amount", "unit"),
    [("5%", 0.05, "fraction"), ("1200", 1200, "hours"), ("0.5h", 0.5, "hours"), ("120configs", 120, "configs")],
)
def test_a_budget_is_a_share_hours_or_configurations(text, amount, unit):
    budget = parse_budget(text)
    assert (budget.amount, budget.unit) == (pytest.approx(amount), unit)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("0", "more than nothing"),
        ("-1", "expected a share"),
        ("nan", "expected a share"),
        ("5 %", "no space: 5%"),
        ("1.5configs", "whole number"),
        ("five", "expected a share"),
        ("1e400", "expected a share"),
    ],
)
def test_a_bad_budget_says_what_is_expected(text, said):
    with pytest.raises(DesignError, match=said):
        parse_budget(text)


def test_each_block_is_balanced_distinct_and_the_union_too(thesis, thesis_configs):
    design = extend_design(thesis_configs, thesis.data["fixed"], None, 3, 0, range(3))
    factors = design_factors(thesis_configs)
    assert [b["seed"] for b in design["blocks"]] == [0, 1, 2]
    chosen = [k for b in design["blocks"] for k in b["configs"]]
    assert len(chosen) == len(set(chosen)) == 180  # no configuration twice, within or across blocks
    for keys in [b["configs"] for b in design["blocks"]] + [chosen]:
        for factor in factors:
            counts = Counter(str(thesis_configs[k].get(factor.name)) for k in keys)
            if factor.name != "clear_every_step":  # nested in proxy_steps: balanced within the multi-step half
                assert len(set(counts.values())) == 1, (factor.name, counts)


def test_swaps_make_blocks_more_orthogonal_than_a_random_subset(thesis, thesis_configs):
    design = extend_design(thesis_configs, thesis.data["fixed"], None, 1, 0, range(3))
    rng = np.random.default_rng(0)
    random_widths = []
    for _ in range(10):
        picked = list(rng.choice(list(thesis_configs), 60, replace=False))
        random = {**design, "blocks": [{"seed": 0, "configs": picked}]}
        random_widths.append(expected_halfwidth(random, thesis_configs, 1.0))
    assert expected_halfwidth(design, thesis_configs, 1.0) < min(random_widths)


def test_a_larger_budget_extends_the_design_and_never_changes_it(thesis, thesis_configs):
    fixed = thesis.data["fixed"]
    one = extend_design(thesis_configs, fixed, None, 1, 7, range(3))
    three = extend_design(thesis_configs, fixed, one, 3, 7, range(3))
    assert three["blocks"][0] == one["blocks"][0]
    assert extend_design(thesis_configs, fixed, None, 3, 7, range(3)) == three  # the same seed, the same design
    assert extend_design(thesis_configs, fixed, None, 1, 8, range(3))["blocks"] != one["blocks"]


def test_a_design_runs_its_configurations_on_their_seeds_with_baselines_and_no_unmatched_controls(thesis):
    design = extend_design(configurations(thesis.points), thesis.data["fixed"], None, 2, 0, range(3))
    spec = GridSpec(thesis.name, {**thesis.data, "design": design})
    kinds = Counter(p.kind for p in spec.points)
    assert kinds == {"proxy": 2 * 60 * 15, "baseline": 2 * 4 * 15}  # 15 families, 4 baselines per seed
    blocks = [0 if p.params["seed"] == 0 else 1 for p in spec.points]
    assert blocks == sorted(blocks)  # block by block: a study stopped after a block holds it whole
    first = set(design["blocks"][0]["configs"])
    assert all(config_key(p.params) in first for p in spec.points if p.kind == "proxy" and p.params["seed"] == 0)


def test_a_nested_setting_is_one_factor_with_the_axis_that_decides_it(thesis_configs):
    table = factor_table(list(thesis_configs.values()), [f.name for f in design_factors(thesis_configs)])
    assert "proxy_steps × clear_every_step" in table.columns and "clear_every_step" not in table.columns
    assert table["proxy_steps × clear_every_step"].nunique() == 3


def test_a_budget_buys_blocks_within_it_or_refuses_with_the_smallest_that_works(thesis, five_percent):
    bought = five_percent
    blocks = len(bought.spec.data["design"]["blocks"])
    assert blocks >= 1 and "of the whole grid's epochs from scratch" in bought.lines[1]
    with pytest.raises(DesignError, match=r"smallest design .* costs"):
        plan_design(thesis, "0.1%", None, [], True, thesis.resources)
    whole = plan_design(thesis, "100%", None, [], True, thesis.resources)
    assert "design" not in whole.spec.data and "running it whole" in whole.lines[0]


def test_a_recorded_design_is_kept_without_a_budget_and_a_smaller_budget_removes_nothing(thesis, five_percent):
    recorded = five_percent.spec.data["design"]
    again = plan_design(thesis, None, recorded, [], True, thesis.resources)
    assert again.spec.data["design"]["blocks"] == recorded["blocks"] and "kept" in again.lines[0]
    smaller = plan_design(thesis, "2%", recorded, [], True, thesis.resources)
    assert smaller.spec.data["design"]["blocks"] == recorded["blocks"] and "removes none" in smaller.lines[0]


def test_a_grid_without_proxy_axes_cannot_be_designed():
    fixed = {k: v for k, v in TINY_FIXED.items() if k != "proxy_steps"}
    baselines_only = parse_space(space(grid={"proxy_steps": ["2", "3"]}, fixed=fixed), Path("s.yaml"))
    with pytest.raises(DesignError, match="no proxy configuration"):
        plan_design(baselines_only, "50%", None, [], True, baselines_only.resources)


@pytest.mark.parametrize(
    ("design", "said"),
    [
        ({"budget": "5 %"}, "design.budget"),
        ({"budget": "5%", "seed": -1}, "design.seed"),
        ({"budget": "5%", "width": 3}, "expected {budget"),
        ({"blocks": [{"seed": 0, "configs": ["../../etc"]}]}, "design.blocks"),
    ],
)
def test_a_bad_design_block_is_refused_naming_its_key(design, said):
    with pytest.raises(SpaceError, match=said):
        parse_space(space(design=design), Path("s.yaml"))


def test_the_thesis_dry_run_prints_the_design_its_price_and_precision_quickly(tmp_path):
    started = time.monotonic()
    done = search_cli("run", str(THESIS), "--budget", "5%", "--dry-run", cwd=tmp_path)
    assert time.monotonic() - started < 60  # the figure of record is in the README (bench-free: a bound, not a target)
    assert "balanced blocks of 60 configurations" in done.stdout
    assert "expected precision" in done.stdout and "this design" in done.stdout
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("budget", ["0", "-1", "nan", "5 %", "0.1%"])
def test_bad_budgets_on_the_command_line_are_one_line_and_create_nothing(tmp_path, budget):
    done = search_cli("run", str(THESIS), "--budget", budget, "--dry-run", cwd=tmp_path)
    assert done.returncode == 2 and "--budget" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()


def test_a_malformed_budget_is_refused_before_the_space_is_read(tmp_path):
    done = search_cli("run", str(tmp_path / "absent.yaml"), "--budget", "5 %", cwd=tmp_path)
    assert done.returncode == 2 and "--budget" in done.stderr and "absent.yaml" not in done.stderr, done.stderr


@pytest.mark.slow
def test_a_designed_run_resumes_extends_and_reports_its_effects(tmp_path):
    grid = {"cam_method": ["gradcam", "eigencam"], "threshold": [0.3, 0.6, 0.9], "multiply_weight": [0.2, 0.8]}
    path = write_space(
        tmp_path / "s.yaml", study="s", grid=grid, fixed=TINY_FIXED, repeats=2, baselines=[{"proxy_steps": "2"}]
    )
    first = search_cli("run", str(path), "--budget", "6configs", "--executor", "local", cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    proxies = [t for t in trials(tmp_path, "s") if t.user_attrs.get("kind") == "proxy"]
    assert len(proxies) == 10 and all(t.state.name == "COMPLETE" for t in proxies)  # one block of 10 of the 12
    assert {t.user_attrs["seed"] for t in proxies} == {0}
    again = search_cli("run", str(path), "--executor", "local", cwd=tmp_path)  # no budget: the design is kept
    assert again.returncode == 0 and "kept" in again.stdout, again.stdout + again.stderr
    assert len(trials(tmp_path, "s")) == len(proxies) + 1  # nothing new: the block and its baseline
    planned = search_cli("run", str(path), "--budget", "20configs", "--dry-run", cwd=tmp_path)
    assert "2 balanced blocks" in planned.stdout and "measured: this study's effects model" in planned.stdout
    bigger = search_cli("run", str(path), "--budget", "24configs", "--executor", "local", cwd=tmp_path)
    assert bigger.returncode == 0 and "running it whole" in bigger.stdout, bigger.stdout + bigger.stderr
    after = [t for t in trials(tmp_path, "s") if t.user_attrs.get("kind") == "proxy"]
    assert len(after) == 24 and len({t.user_attrs["grid_key"] for t in after}) == 24  # nothing ran twice
    report = search_cli("report", "--study", "s", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    effects = (tmp_path / "runs" / "s" / "report" / "tables" / "effects.csv").read_text()
    assert "threshold" in effects and "effect_pp" in effects
    html = (tmp_path / "runs" / "s" / "report" / "report.html").read_text()
    assert "Effects of each setting" in html and "Predicted best" in html
    confirm = search_cli(
        "confirm", "--study", "s", "--select", "model", "--top", "2", "--dry-run", "--allow-test-overlap", cwd=tmp_path
    )
    assert "predicted gain by the effects model" in confirm.stdout, confirm.stdout + confirm.stderr


def test_a_control_among_the_designed_axes_is_left_to_the_confirmation_and_said():
    methods = ["gradcam", "eigencam", "gradcamplusplus", "randomcam"]
    grid = {"cam_method": methods, "threshold": [0.1, 0.2, 0.4, 0.6, 0.8, 0.9]}
    spec = parse_space(space(grid=grid, repeats=2, baselines=[{"proxy_steps": "2"}]), Path("s.yaml"))
    planned = plan_design(spec, "4configs", None, [], True, spec.resources)
    kinds = Counter(p.kind for p in planned.spec.points)
    assert kinds["control"] == 0 and kinds["baseline"] == 1 and kinds["proxy"] >= 4
    assert {p.params["cam_method"] for p in planned.spec.points if p.kind == "proxy"} <= set(methods[:3])
    assert any("unmatched control points left out" in line for line in planned.lines)
