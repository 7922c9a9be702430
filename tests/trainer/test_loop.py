import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import tiny_config, without_timing
from trainer import TrialConfig, TrialError, run_trial
from trainer.config import AUGMENTATIONS
from trainer.metrics import METRICS
from trainer.proxy import load_proxies


def metrics_lines(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def comparable(rows):
    return [without_timing(row) for row in rows]


def test_proxies_enter_training_only(tmp_path):
    config = TrialConfig.from_dict(tiny_config(proxy_steps="1,p,1"))
    result = run_trial(config, tmp_path)
    split = json.loads((tmp_path / "split.json").read_text())
    rows = metrics_lines(tmp_path)
    proxies = load_proxies(tmp_path / "proxies" / "step-0.npz", 64)
    assert len(proxies) == result.metrics["proxy_images"] == rows[1]["proxy_images"] > 0
    assert rows[0]["train_images"] == len(split["train"])
    assert rows[1]["train_images"] == len(split["train"]) + len(proxies)  # train grows…
    with np.load(tmp_path / "proxies" / "step-0.npz") as npz:
        assert set(npz["source_indices"].tolist()) <= set(split["train"])  # …from training images only
    result_json = json.loads((tmp_path / "result.json").read_text())
    assert result_json["split_hash"] == split["hash"]
    assert sum(map(sum, result_json["confusion_matrix"])) == len(split["test"])  # test set untouched
    assert result.metrics["val_accuracy_best"] == max(r["val_accuracy"] for r in rows)
    assert result.metrics["val_accuracy"] == rows[-1]["val_accuracy"]  # the final model's, like test_accuracy
    assert result.metrics["train_split_images"] == len(split["train"])
    assert result.metrics["images_seen"] == sum(r["train_images"] for r in rows)
    assert list(result.metrics) == list(METRICS)  # the registry is what a trial records, name for name


def test_the_tables_read_only_metrics_a_trial_records():
    """`search.records.trialtable`'s columns are names of `trainer.metrics.METRICS` (or where a trial ran)."""
    from search.records.trialtable import TABLE_METRICS

    assert set(TABLE_METRICS) <= set(METRICS)


@pytest.mark.slow
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
    with pytest.raises(TrialError, match=r"loss became (nan|inf)"):
        run_trial(config, tmp_path)
    assert not (tmp_path / "result.json").exists()
    assert "trial failed" in (tmp_path / "trial.log").read_text()


def test_finished_folder_is_not_trained_again(tmp_path):
    config = TrialConfig.from_dict(tiny_config(proxy_steps="1"))
    first = run_trial(config, tmp_path)
    mtime = (tmp_path / "checkpoint.pt").stat().st_mtime_ns
    assert run_trial(config, tmp_path).metrics == first.metrics
    assert (tmp_path / "checkpoint.pt").stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_corrupt_checkpoint_restarts_with_a_warning(tmp_path):
    config = TrialConfig.from_dict(tiny_config(proxy_steps="1,p,1"))
    reference = run_trial(config, tmp_path / "reference").metrics
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated")
    metrics = run_trial(config, tmp_path / "t").metrics
    assert "checkpoint.pt unusable" in (tmp_path / "t" / "trial.log").read_text()
    assert comparable([metrics]) == comparable([reference])


@pytest.mark.slow
def test_killed_trial_resumes_and_matches_an_uninterrupted_run(tmp_path):
    config = TrialConfig.from_dict(tiny_config(proxy_steps="2,p,4", dataset={"kind": "digits", "limit_per_class": 60}))
    workdir = tmp_path / "killed"
    workdir.mkdir()
    (workdir / "config.json").write_text(json.dumps(config.to_dict()))
    process = subprocess.Popen(
        [sys.executable, "-m", "search", "trial", str(workdir / "config.json"), "--out", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
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


@pytest.mark.parametrize("augmentation", AUGMENTATIONS)
def test_every_augmentation_combines_with_proxies_and_the_saliency_loss(tmp_path, augmentation):
    with_saliency = augmentation in ("flip", "cutmix", "snapmix")  # one per kind of map transform: warp, paste, CAM
    config = TrialConfig.from_dict(
        tiny_config(
            augmentation=augmentation,
            saliency_loss_weight=0.5 * with_saliency,
            invariance_loss_weight=0.1 * with_saliency,
            dataset={"kind": "digits", "limit_per_class": 8},
        )
    )
    metrics = run_trial(config, tmp_path).metrics
    rows = metrics_lines(tmp_path)
    assert metrics["proxy_images"] > 0 and len(rows) == 2
    assert all(np.isfinite(r["train_loss"]) for r in rows)


def test_a_checkpoint_whose_optimizer_part_is_damaged_restarts_cleanly(tmp_path):
    """The weights load, the optimizer state does not: the trial must start over with fresh weights, not train on
    from the loaded ones (the bug this pins down)."""
    import torch

    from trainer.files import load_checkpoint

    config = TrialConfig.from_dict(tiny_config(proxy_steps="2"))
    reference = run_trial(config, tmp_path / "reference").metrics
    saved = load_checkpoint(tmp_path / "reference" / "checkpoint.pt")
    saved["state"]["epochs_done"], saved["state"]["history"] = 1, saved["state"]["history"][:1]
    from trainer.prefix import prefix_key

    saved["prefix_key"] = prefix_key(config, 1)
    saved["optimizer"] = {"state": {}, "param_groups": [{"params": [0]}]}  # wrong number of parameters
    (tmp_path / "t").mkdir()
    torch.save(saved, tmp_path / "t" / "checkpoint.pt")
    metrics = run_trial(config, tmp_path / "t").metrics
    assert "checkpoint.pt unusable" in (tmp_path / "t" / "trial.log").read_text()
    assert comparable([metrics]) == comparable([reference])


def test_stopping_at_an_epoch_then_continuing_is_one_run(tmp_path):
    config = TrialConfig.from_dict(tiny_config(proxy_steps="1,p,2"))
    first = run_trial(config, tmp_path / "t", until=1)
    assert first.paused and len(first.history) == 1 and not (tmp_path / "t" / "result.json").exists()
    assert not (tmp_path / "t" / "proxies").exists()  # the proxy step due at the stop is not run
    second = run_trial(config, tmp_path / "t", until=2)
    assert second.paused and len(second.history) == 2
    done = run_trial(config, tmp_path / "t")
    whole = run_trial(config, tmp_path / "whole").metrics
    assert comparable([done.metrics]) == comparable([whole])
    assert comparable(metrics_lines(tmp_path / "t")) == comparable(metrics_lines(tmp_path / "whole"))


@pytest.mark.parametrize("rule", ["drop", "keep"])
def test_unchanged_proxies_are_counted_from_the_files(tmp_path, rule):
    import math

    from trainer.data.load import load_images

    config = TrialConfig.from_dict(tiny_config(proxy_steps="1,p,1", unchanged_proxies=rule, threshold=0.5))
    metrics = run_trial(config, tmp_path).metrics
    images = load_images(config.dataset, config.image_size)
    with np.load(tmp_path / "proxies" / "step-0.npz") as npz:
        pixels, sources, dropped = npz["images"], npz["source_indices"], npz["dropped_source_indices"]
    originals = images.take(sources).numpy()
    identical = int((pixels == originals).reshape(len(pixels), -1).all(1).sum())
    step = json.loads((tmp_path / "result.json").read_text())["proxy_steps"][0]
    assert metrics["proxy_unchanged"] == step["unchanged"] > 0  # at 64 px after one epoch many maps are all zero
    assert step["chosen"] == math.ceil(config.wrong_subset * step["wrong_images"])
    if rule == "keep":
        assert identical == step["unchanged"] and len(dropped) == 0 and len(pixels) == step["chosen"]
    else:
        assert identical == 0 and len(dropped) == step["unchanged"] and len(pixels) == step["proxy_images"]
    assert step["zero_maps"] <= step["unchanged"] and 0 < step["changed_fraction"] <= step["hot_fraction"] < 1
    row = metrics_lines(tmp_path)[1]
    assert row["proxy_unchanged"] == step["unchanged"] and row["proxy_images"] == len(pixels)
    assert "identical to their source image" in (tmp_path / "trial.log").read_text()


def test_the_duplicate_control_trains_on_unmasked_copies_of_the_same_draw(tmp_path):
    cam = run_trial(TrialConfig.from_dict(tiny_config(unchanged_proxies="keep")), tmp_path / "cam")
    copy = run_trial(TrialConfig.from_dict(tiny_config(cam_method="duplicate")), tmp_path / "copy")
    with (
        np.load(tmp_path / "cam" / "proxies" / "step-0.npz") as a,
        np.load(tmp_path / "copy" / "proxies" / "step-0.npz") as b,
    ):
        assert np.array_equal(a["source_indices"], b["source_indices"])  # the same wrong images, the same draw
        copies, sources = b["images"], b["source_indices"]
    from trainer.data.load import load_images

    images = load_images(TrialConfig.from_dict(tiny_config()).dataset, 64)
    assert np.array_equal(copies, images.take(sources).numpy())  # unmasked
    assert copy.metrics["proxy_images"] == cam.metrics["proxy_images"]
    assert copy.metrics["proxy_zero_maps"] is None  # no map at all


def test_the_official_test_split(tmp_path):
    import gzip
    import struct

    def write_idx(path, array):
        header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
        with gzip.open(path, "wb") as f:
            f.write(header + array.astype(np.uint8).tobytes())

    rng = np.random.default_rng(0)
    for part, n in (("train", 120), ("t10k", 40)):
        write_idx(tmp_path / f"{part}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        write_idx(tmp_path / f"{part}-labels-idx1-ubyte.gz", np.arange(n) % 4)
    config = TrialConfig.from_dict(
        tiny_config(
            dataset={"kind": "fashion_mnist", "root": str(tmp_path)},
            split={"val": 0.2, "test": "official"},
            proxy_steps="1",
        )
    )
    metrics = run_trial(config, tmp_path / "t").metrics
    split = json.loads((tmp_path / "t" / "split.json").read_text())
    assert split["test"] == list(range(120, 160)) and split["test_part"] == "official"
    assert len(split["val"]) == 24 and metrics["test_part"] == "official"
    from trainer import ConfigError

    with pytest.raises(ConfigError, match="official needs a dataset with an official test part"):
        TrialConfig.from_dict(tiny_config(split={"val": 0.2, "test": "official"}))


@pytest.mark.slow
def test_run_trial_refuses_a_model_whose_cams_are_constant(tmp_path):
    from trainer.modelcheck import ModelError

    config = TrialConfig.from_dict(tiny_config(architecture="resnet18", image_size=32))
    with pytest.raises(ModelError, match="1x1 CAM feature map"):
        run_trial(config, tmp_path / "t")
    assert not (tmp_path / "t").exists()  # nothing half-written
    done = (
        subprocess.run(
            [sys.executable, "-m", "search", "trial", str(tmp_path / "c.json"), "--out", str(tmp_path / "u")],
            capture_output=True,
            text=True,
            timeout=300,
            input=None,
        )
        if (tmp_path / "c.json").write_text(json.dumps(config.to_dict()))
        else None
    )
    assert done.returncode == 2 and "1x1 CAM feature map" in done.stderr and "Traceback" not in done.stderr


def test_precision_and_transfers_where_cuda_is_absent():
    """The CUDA-only branches, as far as they run here: fp16 autocast and the GradScaler only on CUDA, page-locked
    batches only for CUDA (asked for on the CPU they change nothing)."""
    import torch

    from trainer.data.batching import Part, batches, loader_options
    from trainer.data.load import load_images
    from trainer.device import precision

    mixed = TrialConfig.from_dict(tiny_config(mixed_precision=True))
    amp, scaler = precision(mixed, torch.device("cpu"))
    assert amp is False and not scaler.is_enabled()
    assert precision(mixed, torch.device("cuda"))[0] is True  # the decision; the scaler needs a real GPU
    assert precision(TrialConfig.from_dict(tiny_config()), torch.device("cuda"))[0] is False
    assert loader_options(torch.device("cuda")) == {"pin_memory": True}
    assert loader_options(torch.device("cpu")) == {"pin_memory": False}
    images = load_images(mixed.dataset, 32)
    part = Part(images, np.arange(40))
    plain = [x for x, _ in batches(part, 16, torch.Generator().manual_seed(0))]
    pinned = [x for x, _ in batches(part, 16, torch.Generator().manual_seed(0), pin_memory=True)]
    assert all(torch.equal(a, b) for a, b in zip(plain, pinned, strict=True))


def test_a_trial_reports_its_own_peak_memory_not_its_process_history(tmp_path):
    """A reused worker (or one exec'd from a large parent) has a high-water mark from before the trial: the trial's
    `peak_rss_mb` must not include it, and must include what the trial itself holds."""
    from trainer.device import peak_rss_mb, reset_peak_rss

    big = np.ones(1200 * 2**20 // 8)  # 1.2 GB, touched
    del big
    earlier = peak_rss_mb()
    assert reset_peak_rss() and peak_rss_mb() < earlier - 1000
    held = np.ones(400 * 2**20 // 8)
    assert peak_rss_mb() >= 400
    del held
    metrics = run_trial(TrialConfig.from_dict(tiny_config(proxy_steps="1")), tmp_path / "t").metrics
    assert 100 < metrics["peak_rss_mb"] < earlier - 1000


def test_the_batch_size_finder(tmp_path):
    """Algorithm 3 with its memory probe replaced by a function of the batch size, and the real probe (on the
    CPU) leaving weights and batch-norm statistics as they were."""
    import torch

    from trainer.device import auto_batch_size, find_batch_size
    from trainer.models import create_model

    class OutOfMemoryAbove48(torch.nn.Module):  # what a GPU does when a batch does not fit
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            if x.shape[0] > 48:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return self.inner(x)

    assert find_batch_size(lambda size: size <= 50, 1024) == 32
    assert find_batch_size(lambda size: True, 100) == 64  # never above the data
    assert find_batch_size(lambda size: False, 100) == 1
    model = create_model("test_resnet", 10, 32)
    probe = TrialConfig.from_dict(tiny_config(image_size=32))
    assert auto_batch_size(probe, OutOfMemoryAbove48(model), 10, torch.device("cpu"), 1000, False) == 32
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert auto_batch_size(probe, model, 10, torch.device("cpu"), 8, False, max_batch_size=8) == 8
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # running means untouched
    config = TrialConfig.from_dict(tiny_config(batch_size="auto", proxy_steps="1"))
    metrics = run_trial(config, tmp_path / "auto").metrics
    assert metrics["batch_size"] == 32 and "needs CUDA" in (tmp_path / "auto" / "trial.log").read_text()
