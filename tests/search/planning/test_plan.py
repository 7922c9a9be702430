"""The stem tree of a grid (pure: nothing runs here)."""

from collections import defaultdict

import pytest

from search.planning.plan import build_plan
from search.space.parse import load_space
from tests.search.helpers import fixed_without, spec
from trainer.prefix import prefix_key

ROOT = __import__("pathlib").Path(__file__).resolve().parents[3]


def sharing_spec(**changes):
    """8 points: "2,p,1,p,1" with two CAM methods, two thresholds, clear_every_step on and off."""
    fixed = {**fixed_without("proxy_steps"), "proxy_steps": "2,p,1,p,1"}
    grid = {"cam_method": ["gradcam", "eigencam"], "threshold": [0.3, 0.6], "clear_every_step": [True, False]}
    return spec(**{"fixed": fixed, "grid": grid, **changes})


def test_stems_nest_where_points_share_more():
    s = sharing_spec()
    plan = build_plan(s.points, s.fixed)
    roots = [st for st in plan.stems.values() if st.parent is None]
    children = [st for st in plan.stems.values() if st.parent is not None]
    assert len(roots) == 1 and roots[0].epochs == 2 and len(roots[0].members) == 8
    assert len(roots[0].groups) == 2  # the CAMs of the step after epoch 2: once per CAM method
    assert len(children) == 4 and {c.epochs for c in children} == {3} and all(len(c.members) == 2 for c in children)
    assert all(len(c.groups) == 1 for c in children)  # each pair shares the second step's CAMs too
    assert set(plan.stem_of.values()) == {c.key for c in children}
    assert plan.naive_epochs == 8 * 4 and plan.shared_epochs == 2 + 4 * 1 + 8 * 1


def test_no_share_plans_every_point_from_scratch():
    s = sharing_spec()
    plan = build_plan(s.points, s.fixed, share=False)
    assert not plan.stems and plan.shared_epochs == plan.naive_epochs == 32
    assert set(plan.stem_of.values()) == {None}


def test_a_stem_with_one_child_and_no_point_is_merged():
    s = spec(fixed={**fixed_without("proxy_steps"), "proxy_steps": "2,p,1,p,1"}, grid={"threshold": [0.3]}, repeats=1)
    assert not build_plan(s.points, s.fixed).stems  # one point: nothing to share
    s = sharing_spec(grid={"cam_method": ["gradcam"], "threshold": [0.3], "clear_every_step": [True, False]})
    plan = build_plan(s.points, s.fixed)
    assert [st.epochs for st in plan.stems.values()] == [3]  # not a stem at 2 holding only the stem at 3


def test_stem_names_do_not_depend_on_which_points_are_left():
    s = sharing_spec()
    full = build_plan(s.points, s.fixed)
    part = build_plan(s.points[3:], s.fixed)
    assert set(part.stems) <= set(full.stems)


def test_baselines_share_when_the_learning_rate_does_not_read_the_total():
    s = spec(baselines=[{"proxy_steps": "2"}])  # "1,p,1" points and a "2" baseline, scheduler none
    plan = build_plan(s.points, s.fixed)
    (stem,) = plan.stems.values()
    assert stem.epochs == 1 and len(stem.members) == 5
    onecycle = spec(fixed={**fixed_without(), "scheduler": {"name": "onecycle"}}, baselines=[{"proxy_steps": "3"}])
    assert all(len(st.members) == 4 for st in build_plan(onecycle.points, onecycle.fixed).stems.values())


def test_the_thesis_grid_shares_at_least_half_again():
    s = load_space(ROOT / "spaces" / "thesis_grid.yaml", check_roots=False)
    plan = build_plan(s.points, s.fixed)
    assert plan.naive_epochs / plan.shared_epochs >= 1.5


@pytest.mark.slow
def test_the_planner_and_the_trainer_agree_on_every_point_of_the_thesis_grid():
    """Issue 23: the planner groups points by `prefix_signature` over their params; a trial hashes the same
    signature over its whole config (`prefix_key`) to find a checkpoint it may start from. On all 54,720 points:
    a stem's members hold one key at its epoch, two stems at one epoch hold two keys, every point starts from a
    stem with its own key there, and points that agree where their own proxy step is due share a stem."""
    s = load_space(ROOT / "spaces" / "thesis_grid.yaml", check_roots=False)
    plan = build_plan(s.points, s.fixed)
    configs = {p.grid_key: p.config() for p in s.points}
    key_of_stem, stems_at = {}, defaultdict(set)
    for stem in plan.stems.values():
        (key,) = {prefix_key(configs[m], stem.epochs) for m in stem.members}
        key_of_stem[stem.key] = key
        stems_at[stem.epochs].add(key)
    assert sum(len(keys) for keys in stems_at.values()) == len(plan.stems)
    for grid_key, parent in plan.stem_of.items():
        if parent is not None:
            assert prefix_key(configs[grid_key], plan.stems[parent].epochs) == key_of_stem[parent]
    groups, due = defaultdict(set), defaultdict(set)
    for grid_key, config in configs.items():
        for boundary in config.schedule.boundaries:
            groups[boundary, prefix_key(config, boundary)].add(grid_key)
            due[boundary].add(grid_key)
    stems_of = defaultdict(list)
    for stem in plan.stems.values():
        for member in stem.members:
            stems_of[member].append(stem)
    for (boundary, _), group in groups.items():
        if len(group) >= 2:  # a stem holds them (at that epoch, or deeper where it had a single child)
            stems = stems_of[next(iter(group))]
            assert any(st.epochs >= boundary and st.members & due[boundary] == group for st in stems)
