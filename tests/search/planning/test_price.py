"""The price of a plan: epochs × seconds per epoch, with the evidence of each rate."""

import json
import os
import time
from pathlib import Path

import pytest

from search.planning.plan import build_plan
from search.planning.price import DEFAULT_TRIAL_OVERHEAD_S, ROUGH_CPU_IMAGES_PER_S, calibration_file, price
from tests.search.helpers import search_cli, spec, write_space
from tests.tiny import TINY_FIXED, TINY_SPACE

DIGITS = 10 * TINY_SPACE["datasets"]["digits"]["limit_per_class"]  # the tiny space's images: 10 classes


def plan_of(s):
    pending = s.points
    return pending, build_plan(pending, s.fixed, True)


def test_the_rough_default_is_images_times_pixels_over_a_stated_speed():
    s = spec(resources={"cpus_per_trial": 2, "gpus_per_trial": 0})
    pending, plan = plan_of(s)
    priced = price(s, pending, plan, [], None)
    ((_, group),) = priced["groups"].items()
    train = DIGITS * (1 - 0.15 - 0.15)  # the default split
    per_epoch = train / (ROUGH_CPU_IMAGES_PER_S * (224 / TINY_FIXED["image_size"]) ** 2)
    assert group["naive"] == plan.naive_epochs and group["shared"] == plan.shared_epochs
    fixed = len(pending) * DEFAULT_TRIAL_OVERHEAD_S  # each trial's start and evaluation, beyond its epochs
    assert group["hours_naive"] == pytest.approx((plan.naive_epochs * per_epoch + fixed) / 3600)
    stems = len(plan.stems) * DEFAULT_TRIAL_OVERHEAD_S  # each stem is a job with the same fixed cost
    assert priced["hours_shared"] == pytest.approx((plan.shared_epochs * per_epoch + fixed + stems) / 3600)
    assert "rough default" in group["rate"].evidence and priced["unit"] == "CPU-slot-hours"


def test_a_calibration_from_the_device_check_is_preferred_and_named():
    s = spec(resources={"cpus_per_trial": 1, "gpus_per_trial": 0.5})
    calibration_file().parent.mkdir(parents=True, exist_ok=True)
    calibration_file().write_text(
        json.dumps(
            {
                "device": "NVIDIA H200",
                "rows": [{"architecture": "test_resnet", "image_size": TINY_FIXED["image_size"], "images_per_s": 1400}],
            }
        )
    )
    try:
        pending, plan = plan_of(s)
        priced = price(s, pending, plan, [], None)
    finally:
        calibration_file().unlink()
    ((_, group),) = priced["groups"].items()
    assert group["rate"].evidence == "calibrated on NVIDIA H200 by bench/gpu_check.py"
    per_epoch = DIGITS * 0.7 / 1400
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

    root = Path(__file__).resolve().parents[3]
    done = search_cli("run", str(root / "spaces" / "thesis_grid.yaml"), "--dry-run", cwd=tmp_path)
    assert "54,720 points" in done.stdout
    assert "price (GPU-hours; training epochs, plus 6 s a job (trial or stem) beyond its epochs" in done.stdout
    assert "cifar100 × resnet18: 134,997 epochs (87,729 shared):" in done.stdout
    assert "total GPU-hours (leaving out 10 groups whose data is not there)" in done.stdout


def test_status_s_eta_is_the_price_of_what_is_left_at_this_study_s_own_rate(tmp_path):
    """Issue 24: `search status` uses the dry-run's model for its ETA: epochs left × seconds per epoch measured in
    this study, over the slots."""
    from search.planning.status import load_study, load_trials, study_status
    from search.records.study import GridStudy

    s = spec()
    grid = GridStudy.open(s, f"sqlite:///{tmp_path}/s.db", tmp_path / "out")
    grid.study.set_user_attr("slots", 2)
    before = study_status(load_study("tiny", f"sqlite:///{tmp_path}/s.db"), [])
    assert before["eta_seconds"] > 0 and "not yet measured" in before["eta_basis"]  # issue 43 item 1: never "?"
    first = grid.pending()[0]
    number = grid.start(first)
    assert grid.finish(number, {"val_accuracy": 0.5, "train_seconds": 10.0, "epochs": 2}) is None  # 5 s an epoch
    info = study_status(
        load_study("tiny", f"sqlite:///{tmp_path}/s.db"), load_trials("tiny", f"sqlite:///{tmp_path}/s.db")
    )
    pending = [p for p in s.points if p.grid_key != first.point.grid_key]
    plan = build_plan(pending, s.fixed, True)
    assert info["eta_basis"] == "epochs left × this study's seconds per epoch, 2.0 trials at once"
    # Issue 36, item 8: a trial's fixed cost counts too (the default here: the finished one recorded none).
    fixed = (len(pending) + len(plan.stems)) * DEFAULT_TRIAL_OVERHEAD_S  # trials and stems alike
    assert info["eta_seconds"] == pytest.approx((plan.shared_epochs * 5.0 + fixed) / 2)


def test_a_class_limit_counts_the_datasets_own_classes():
    """Issue 43 item 6: CIFAR-100 with `limit_per_class: 50` was priced as 500 images (10 classes), not 5,000."""
    from search.planning.price import dataset_images
    from trainer.config import DatasetConfig

    assert dataset_images(DatasetConfig("cifar100", limit_per_class=50)) == 5000
    assert dataset_images(DatasetConfig("cifar10", limit_per_class=50)) == 500
    assert dataset_images(DatasetConfig("food101", limit_per_class=10)) == 1010
    assert dataset_images(DatasetConfig("digits", limit_per_class=1000)) == 1797  # never above the dataset
    assert dataset_images(DatasetConfig("cifar100")) == 60000


@pytest.mark.slow
def test_the_dry_run_predicts_the_runs_wall_time_within_a_busy_machine_s_noise(tmp_path):
    """Issue 43 item 1: on measured rates a dry-run underestimated 2.5× (no per-job overhead beyond "0 s", no
    stems, no start-up), and `status` divided by 2 slots while the local executor ran one trial at a time. Three
    trials measure the rates; the dry-run then prices the other six, which run while the test holds the clock."""
    import re

    import optuna

    from search.planning.status import load_study, load_trials, study_status
    from tests.search.helpers import write_space

    space = write_space(
        tmp_path / "s.yaml", grid={"cam_method": ["gradcam", "eigencam"], "threshold": [0.2, 0.4, 0.6, 0.8]}
    )
    first = search_cli("run", str(space), "--executor", "local", "--max-trials", "3", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    storage = f"sqlite:///{tmp_path}/runs/tiny.db"
    optuna.load_study(study_name="tiny", storage=storage).set_user_attr("slots", 2)  # as if another run had 2
    info = study_status(load_study("tiny", storage), load_trials("tiny", storage))
    assert info["eta_basis"].endswith("1.0 trials at once"), info["eta_basis"]  # the clock's, not the attribute's
    planned = search_cli("run", str(space), "--dry-run", cwd=tmp_path)
    assert (
        "s a job (trial or stem) beyond its epochs (measured)" in planned.stdout
        and "to start (measured)" in planned.stdout
    )
    figure, unit = re.search(r"wall time on 1 slot: ([\d.]+) (s|min)", planned.stdout).groups()
    predicted = float(figure) * (60 if unit == "min" else 1)
    started = time.monotonic()
    rest = search_cli("run", str(space), "--executor", "local", cwd=tmp_path)
    actual = time.monotonic() - started
    assert rest.returncode == 0, rest.stderr
    # The bug was 2.5× under; the band leaves room for a busy machine's load changing between the measuring trials
    # and the timed run (both wall clocks: on a test worker beside others it swung 1.35× with nothing changed).
    assert 0.6 <= predicted / actual <= 1.6, (predicted, actual, planned.stdout)


def test_the_dry_run_prices_the_flags_and_refuses_what_the_run_refuses(tmp_path):
    """Item 10: `--dry-run --gpus-per-trial 0.0001` ignored the flag and priced CPU-slot-hours; `gpus_per_trial:
    0.0001` in the space passed the dry-run on a GPU-less machine while the run refused it."""
    no_gpu = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # a machine without one, wherever the test runs
    path = write_space(tmp_path / "s.yaml")
    done = search_cli("run", str(path), "--dry-run", "--gpus-per-trial", "0.0001", cwd=tmp_path, env=no_gpu)
    assert "price (GPU-hours;" in done.stdout, done.stdout
    refused_run = search_cli(
        "run", str(path), "--gpus-per-trial", "0.0001", "--executor", "local", cwd=tmp_path, env=no_gpu
    )
    for outcome in (done, refused_run):
        assert outcome.returncode == 2 and "has no GPU" in outcome.stderr, outcome.stderr
    in_space = write_space(tmp_path / "g.yaml", resources={"gpus_per_trial": 0.0001, "cpus_per_trial": 1})
    planned = search_cli("run", str(in_space), "--dry-run", cwd=tmp_path, env=no_gpu)
    assert planned.returncode == 2 and "gpus_per_trial is 0.0001 but the Ray cluster has no GPU" in planned.stderr
    assert not (tmp_path / "runs").exists()
