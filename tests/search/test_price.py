"""The price of a plan: epochs × seconds per epoch, with the evidence of each rate."""

import json

import pytest

from search.plan import build_plan
from search.price import DEFAULT_TRIAL_OVERHEAD_S, ROUGH_CPU_IMAGES_PER_S, calibration_file, price
from tests.search.helpers import search_cli, spec


def plan_of(s):
    pending = s.points
    return pending, build_plan(pending, s.data["fixed"], True)


def test_the_rough_default_is_images_times_pixels_over_a_stated_speed():
    s = spec(resources={"cpus_per_trial": 2, "gpus_per_trial": 0})
    pending, plan = plan_of(s)
    priced = price(s, pending, plan, [], None)
    ((_, group),) = priced["groups"].items()
    train = 200 * (1 - 0.15 - 0.15)  # digits, 20 a class, the default split
    per_epoch = train / (ROUGH_CPU_IMAGES_PER_S * (224 / 64) ** 2)
    assert group["naive"] == plan.naive_epochs and group["shared"] == plan.shared_epochs
    fixed = len(pending) * DEFAULT_TRIAL_OVERHEAD_S  # each trial's start and evaluation, beyond its epochs
    assert group["hours_naive"] == pytest.approx((plan.naive_epochs * per_epoch + fixed) / 3600)
    assert priced["hours_shared"] == pytest.approx((plan.shared_epochs * per_epoch + fixed) / 3600)
    assert "rough default" in group["rate"].evidence and priced["unit"] == "CPU-slot-hours"


def test_a_calibration_from_the_device_check_is_preferred_and_named():
    s = spec(resources={"cpus_per_trial": 1, "gpus_per_trial": 0.5})
    calibration_file().parent.mkdir(parents=True, exist_ok=True)
    calibration_file().write_text(
        json.dumps(
            {"device": "NVIDIA H200", "rows": [{"architecture": "test_resnet", "image_size": 64, "images_per_s": 1400}]}
        )
    )
    try:
        pending, plan = plan_of(s)
        priced = price(s, pending, plan, [], None)
    finally:
        calibration_file().unlink()
    ((_, group),) = priced["groups"].items()
    assert group["rate"].evidence == "calibrated on NVIDIA H200 by bench/gpu_check.py"
    per_epoch = 200 * 0.7 / 1400
    # A whole GPU's rate: on half a GPU an epoch takes about twice as long, so it costs the same GPU time.
    fixed = len(pending) * DEFAULT_TRIAL_OVERHEAD_S
    assert group["hours_naive"] == pytest.approx((plan.naive_epochs * per_epoch + fixed) / 3600)
    assert priced["unit"] == "GPU-hours"


def test_a_gpu_fraction_does_not_shrink_the_gpu_hours_but_a_measured_rate_counts_its_share():
    """Issue 34, item 10: 3·10⁹ epochs at 0.0001 GPU per trial were priced at 0.179 GPU-hours (hours scaled by the
    fraction). A fraction shares the GPU's time; it does not make an epoch cheaper."""
    whole, tiny = (spec(resources={"cpus_per_trial": 1, "gpus_per_trial": g}) for g in (1, 0.0001))
    pending, plan = plan_of(whole)
    assert price(tiny, pending, plan, [], None)["hours_naive"] == pytest.approx(
        price(whole, pending, plan, [], None)["hours_naive"]
    )
    # The flags' resources, not the space's, when given (what `--dry-run --gpus-per-trial` prices).
    as_cpu = price(whole, pending, plan, [], None, {"gpus_per_trial": 0, "cpus_per_trial": 2})
    assert as_cpu["unit"] == "CPU-slot-hours"


def test_the_thesis_grid_dry_run_prints_its_price(tmp_path):
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    done = search_cli("run", str(root / "spaces" / "thesis_grid.yaml"), "--dry-run", cwd=tmp_path)
    assert "54,720 points" in done.stdout
    assert "price (GPU-hours; training epochs, plus 6 s a trial beyond its epochs" in done.stdout
    assert "cifar100 × resnet18: 134,997 epochs (87,729 shared):" in done.stdout
    assert "total GPU-hours (leaving out 10 groups whose data is not there)" in done.stdout


def test_status_s_eta_is_the_price_of_what_is_left_at_this_study_s_own_rate(tmp_path):
    """Issue 24: `search status` uses the dry-run's model for its ETA: epochs left × seconds per epoch measured in
    this study, over the slots."""
    from search.status import load_study, load_trials, study_status
    from search.study import GridStudy

    s = spec()
    grid = GridStudy.open(s, f"sqlite:///{tmp_path}/s.db", tmp_path / "out")
    grid.study.set_user_attr("slots", 2)
    first = grid.pending()[0]
    number = grid.start(first)
    assert grid.finish(number, {"val_accuracy": 0.5, "train_seconds": 10.0, "epochs": 2}) is None  # 5 s an epoch
    info = study_status(
        load_study("tiny", f"sqlite:///{tmp_path}/s.db"), load_trials("tiny", f"sqlite:///{tmp_path}/s.db")
    )
    pending = [p for p in s.points if p.grid_key != first.point.grid_key]
    plan = build_plan(pending, s.data["fixed"], True)
    assert info["eta_basis"] == "epochs left × this study's seconds per epoch"
    # Issue 36, item 8: a trial's fixed cost counts too (the default here: the finished one recorded none).
    assert info["eta_seconds"] == pytest.approx(
        (plan.shared_epochs * 5.0 + len(pending) * DEFAULT_TRIAL_OVERHEAD_S) / 2
    )
