import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from trainer import TrialConfig, TrialError, run_trial
from trainer.proxy import load_proxies
from tests.conftest import tiny_config

TIMING_KEYS = {"train_seconds", "proxy_seconds", "peak_rss_mb", "seconds", "trial_seconds"}


def metrics_lines(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def comparable(rows):
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


def test_proxies_enter_training_only(tmp_path):
    config = TrialConfig.from_dict(tiny_config(proxy_steps="1,p,1"))
    result = run_trial(config, tmp_path)
    split = json.loads((tmp_path / "split.json").read_text())
    rows = metrics_lines(tmp_path)
    proxies = load_proxies(tmp_path / "proxies" / "step-0.npz")
    assert len(proxies) == result.metrics["proxy_images"] == rows[1]["proxy_images"] > 0
    assert rows[0]["train_images"] == len(split["train"])
    assert rows[1]["train_images"] == len(split["train"]) + len(proxies)  # train grows…
    with np.load(tmp_path / "proxies" / "step-0.npz") as npz:
        assert set(npz["source_indices"].tolist()) <= set(split["train"])  # …from training images only
    result_json = json.loads((tmp_path / "result.json").read_text())
    assert result_json["split_hash"] == split["hash"]
    assert sum(map(sum, result_json["confusion_matrix"])) == len(split["test"])  # test set untouched
    assert result.metrics["val_accuracy"] == max(r["val_accuracy"] for r in rows)


def test_clear_every_step(tmp_path):
    sizes = {}
    for clear in (True, False):
        workdir = tmp_path / str(clear)
        run_trial(TrialConfig.from_dict(tiny_config(proxy_steps="1,p,1,p,1", clear_every_step=clear)), workdir)
        rows = metrics_lines(workdir)
        made = [r["proxy_images"] for r in rows]
        base = rows[0]["train_images"]
        sizes[clear] = rows[2]["train_images"]
        if clear:
            assert rows[2]["train_images"] == base + made[2]
        else:
            assert rows[2]["train_images"] == base + made[1] + made[2]
    assert sizes[False] > sizes[True]


def test_vit_proxy_step_makes_real_proxies(tmp_path):
    config = TrialConfig.from_dict(tiny_config(architecture="test_vit", cam_method="gradcam", threshold=0.3))
    result = run_trial(config, tmp_path)
    assert result.metrics["proxy_images"] > 0
    with np.load(tmp_path / "proxies" / "step-0.npz") as npz:
        images = npz["images"]
    assert images.shape[1:] == (3, 64, 64) and images.std() > 0
    assert (tmp_path / "cams.png").stat().st_size > 1000


def test_same_config_and_seed_give_the_same_metrics(tmp_path):
    config = TrialConfig.from_dict(tiny_config(scheduler={"name": "cosine"}))
    a = run_trial(config, tmp_path / "a").metrics
    b = run_trial(config, tmp_path / "b").metrics
    assert comparable([a]) == comparable([b])
    assert comparable(metrics_lines(tmp_path / "a")) == comparable(metrics_lines(tmp_path / "b"))


def test_scheduler_really_steps(tmp_path):
    run_trial(TrialConfig.from_dict(tiny_config(proxy_steps="3", scheduler={"name": "onecycle"})), tmp_path)
    lrs = [r["lr"] for r in metrics_lines(tmp_path)]
    assert len(set(lrs)) == 3 and lrs[-1] < lrs[0]


def test_diverging_loss_fails_with_a_reason(tmp_path):
    config = TrialConfig.from_dict(tiny_config(proxy_steps="2", optimizer={"name": "sgd", "lr": 1e12}))
    with pytest.raises(TrialError, match="loss became (nan|inf)"):
        run_trial(config, tmp_path)
    assert not (tmp_path / "result.json").exists()
    assert "trial failed" in (tmp_path / "trial.log").read_text()


def test_finished_folder_is_not_trained_again(tmp_path):
    config = TrialConfig.from_dict(tiny_config(proxy_steps="1"))
    first = run_trial(config, tmp_path)
    mtime = (tmp_path / "checkpoint.pt").stat().st_mtime_ns
    assert run_trial(config, tmp_path).metrics == first.metrics
    assert (tmp_path / "checkpoint.pt").stat().st_mtime_ns == mtime


def test_corrupt_checkpoint_restarts_with_a_warning(tmp_path):
    config = TrialConfig.from_dict(tiny_config(proxy_steps="1,p,1"))
    reference = run_trial(config, tmp_path / "reference").metrics
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated")
    metrics = run_trial(config, tmp_path / "t").metrics
    assert "checkpoint.pt unusable" in (tmp_path / "t" / "trial.log").read_text()
    assert comparable([metrics]) == comparable([reference])


def test_killed_trial_resumes_and_matches_an_uninterrupted_run(tmp_path):
    config = TrialConfig.from_dict(tiny_config(proxy_steps="2,p,4", dataset={"kind": "digits",
                                                                           "limit_per_class": 60}))
    workdir = tmp_path / "killed"
    workdir.mkdir()
    (workdir / "config.json").write_text(json.dumps(config.to_dict()))
    process = subprocess.Popen([sys.executable, "-m", "search", "trial", str(workdir / "config.json"),
                                "--out", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (workdir / "checkpoint.pt").exists() and (workdir / "metrics.jsonl").exists():
            break
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (workdir / "result.json").exists(), "the trial finished before it could be killed"
    done_before = len(metrics_lines(workdir))
    assert 1 <= done_before < 6

    resumed = run_trial(config, workdir).metrics
    log = (workdir / "trial.log").read_text()
    assert f"resuming after epoch {done_before}" in log
    uninterrupted = run_trial(config, tmp_path / "whole").metrics
    assert comparable([resumed]) == comparable([uninterrupted])
    assert comparable(metrics_lines(workdir)) == comparable(metrics_lines(tmp_path / "whole"))


@pytest.mark.parametrize("augmentation", ["none", "flip", "cutout", "random_erasing", "hide_and_seek", "gridmask",
                                          "augmix", "mixup", "cutmix", "resizemix", "smoothmix", "ricap",
                                          "samplepairing", "saliencymix", "snapmix", "attentive_cutmix"])
def test_every_augmentation_combines_with_proxies_and_the_saliency_loss(tmp_path, augmentation):
    with_saliency = augmentation in ("flip", "cutmix", "snapmix")  # one per kind of map transform: warp, paste, CAM
    config = TrialConfig.from_dict(tiny_config(augmentation=augmentation, saliency_loss_weight=0.5 * with_saliency,
                                               invariance_loss_weight=0.1 * with_saliency,
                                               dataset={"kind": "digits", "limit_per_class": 8}))
    metrics = run_trial(config, tmp_path).metrics
    rows = metrics_lines(tmp_path)
    assert metrics["proxy_images"] > 0 and len(rows) == 2
    assert all(np.isfinite(r["train_loss"]) for r in rows)
