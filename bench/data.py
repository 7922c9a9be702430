"""The data path at thesis scale: decoding per trial (today's path) against the per-machine decoded-image cache.

    python bench/data.py           # 5,000 JPEGs (256×256) read at 224 px; trials on 20,000 images at 224 px
    python bench/data.py --quick   # CI-sized: 300 JPEGs at 64 px, trials on 200 images, proxy steps on 100 and 300

Prints one JSON object:
- loader throughput, images/s delivered to the model input (uint8 → normalised float), one process each: the files
  decoded and resized per image (today's path) vs rows read from the cache (goal ≥ 20×), and the one-off cache build;
  also without the conversion to float, which runs on the model's device (on this GPU-less machine, the CPU);
- peak RSS of a trial on an in-memory dataset (Fashion-MNIST-shaped IDX files, N images resized to 224 px) without
  the cache and on an already built cache entry (goal: ≤ 1.5 GB beyond the model's own, which is the trial's RSS
  on a tiny dataset);
- peak RSS of a proxy step (wrong images -> CAMs -> proxies, an untrained model so that most training images are
  wrong) on a cached dataset of two sizes at the trial's image size: it must not grow with the wrong images;
- start-up of a trial's data on an already cached image folder (list, fingerprint, verify the entry: goal ≤ 1 s),
  against today's per-file verify().
"""

from __future__ import annotations

import argparse
import gzip
import json
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import ROOT, emit
from PIL import Image

from trainer.config import DatasetConfig
from trainer.data.batching import Part, batches, model_input
from trainer.data.imageset import load_uncached
from trainer.data.load import load_images
from trainer.folder import CONFIG


def make_jpegs(root: Path, count: int, classes: int = 10, side: int = 256) -> Path:
    """`count` smooth random photos-like JPEGs in `classes` class folders."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, side, dtype=np.float32)
    for i in range(count):
        folder = root / f"class{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        a, b, c = rng.random(3)
        base = np.stack([np.outer(ramp * a, ramp), np.outer(ramp, ramp * b), np.full((side, side), c)], axis=2)
        noise = rng.normal(0, 0.05, (side // 8, side // 8, 3)).repeat(8, 0).repeat(8, 1)
        pixels = (np.clip(base + noise, 0, 1) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)
    return root


def throughput(images, size: int, seconds: float, convert: bool = True) -> float:
    """Images per second through `batches` (uint8 rows in a shuffled order) and, with `convert`, `model_input`
    (one process), over at most `seconds`."""
    import torch

    part = Part(images, np.arange(len(images)))
    device = torch.device("cpu")
    done, start = 0, time.perf_counter()
    for x, _ in batches(part, 64, torch.Generator().manual_seed(0)):
        if convert:
            model_input(x, device)
        done += len(x)
        if time.perf_counter() - start > seconds:
            break
    return done / (time.perf_counter() - start)


def write_idx(root: Path, count: int) -> Path:
    """Fashion-MNIST-shaped IDX files with `count` images (train) + a tenth of that (t10k)."""
    rng = np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    for part, n in (("train", count), ("t10k", count // 10)):
        for what, array in (("images-idx3", rng.integers(0, 255, (n, 28, 28))), ("labels-idx1", np.arange(n) % 10)):
            header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
            with gzip.open(root / f"{part}-{what}-ubyte.gz", "wb") as f:
                f.write(header + array.astype(np.uint8).tobytes())
    return root


def trial_rss(workdir: Path, dataset: dict, size: int, cache: Path | None) -> float:
    """Peak RSS (MB) of `search trial` training test_resnet one epoch on `dataset` at `size` px."""
    workdir.mkdir(parents=True)
    config = {
        "dataset": dataset,
        "image_size": size,
        "batch_size": 64,
        "architecture": "test_resnet",
        "proxy_steps": "1",
        "augmentation": "none",
        "seed": 0,
    }
    (workdir / CONFIG).write_text(json.dumps(config))
    args = ["--cache-dir", str(cache)] if cache else ["--no-cache"]
    done = subprocess.run(
        [sys.executable, "-m", "search", "trial", str(workdir / CONFIG), "--out", str(workdir), *args],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout)["peak_rss_mb"]


PROXY_STEP = """
import json, sys
import numpy as np, torch
sys.path.insert(0, {root!r})
from trainer.config import TrialConfig
from trainer.data.batching import Part
from trainer.data.load import load_images
from trainer.data.split import make_split
from trainer.device import peak_rss_mb, reset_peak_rss
from trainer.models import create_model
from trainer.proxy import make_proxy_images
from pathlib import Path
config = TrialConfig.from_dict({config!r})
images = load_images(config.dataset, config.image_size, {cache!r})
train = Part(images, np.asarray(make_split(images, config.split, config.seed)["train"]))
torch.manual_seed(0)
model = create_model(config.architecture, len(images.classes), config.image_size)
reset_peak_rss()
step = make_proxy_images(model, train, config, 0, torch.device("cpu"), 64, Path({out!r}) / "step-0.npz")
print(json.dumps({{"wrong_images": step.stats["wrong_images"], "peak_rss_mb": peak_rss_mb()}}))
"""


def proxy_step_rss(workdir: Path, dataset: dict, size: int, cache: Path) -> dict:
    """Wrong images and peak RSS (MB) of one gradcam proxy step (all wrong images) of an untrained test_resnet on
    the cached `dataset` at `size` px, in a fresh process."""
    workdir.mkdir(parents=True)
    config = {"dataset": dataset, "image_size": size, "architecture": "test_resnet", "wrong_subset": 1.0}
    code = PROXY_STEP.format(root=str(ROOT), config=config, cache=str(cache), out=str(workdir))
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    files, size, n_rss, rss_size = (300, 64, 200, 64) if args.quick else (5000, 224, 20000, 224)
    proxy_sizes = (100, 300) if args.quick else (1000, 4000)
    figures: dict = {"benchmark": "data", "jpegs": files, "image_size": size}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = make_jpegs(tmp / "jpegs", files)
        config = DatasetConfig(kind="imagefolder", root=str(folder))
        start = time.perf_counter()
        uncached = load_uncached(config, size)
        figures["today_startup_s"] = time.perf_counter() - start  # the per-file verify()
        start = time.perf_counter()
        load_images(config, size, tmp / "cache")
        figures["cache_build_s"] = time.perf_counter() - start
        start = time.perf_counter()
        cached = load_images(config, size, tmp / "cache")
        figures["cached_startup_s"] = time.perf_counter() - start
        figures["today_images_per_s"] = throughput(uncached, size, 20)
        figures["cache_images_per_s"] = throughput(cached, size, 20)
        figures["speedup"] = figures["cache_images_per_s"] / figures["today_images_per_s"]
        # The same without the float conversion, which runs on the model's device: on a GPU it is nearly free,
        # here (no GPU) it is CPU work that bounds both paths.
        figures["today_rows_per_s"] = throughput(uncached, size, 20, convert=False)
        figures["cache_rows_per_s"] = throughput(cached, size, 20, convert=False)
        figures["rows_speedup"] = figures["cache_rows_per_s"] / figures["today_rows_per_s"]
        figures["goal_speedup"] = 20

        idx = write_idx(tmp / "idx", n_rss)
        dataset = {"kind": "fashion_mnist", "root": str(idx)}
        figures["rss_images"] = n_rss + n_rss // 10
        figures["rss_image_size"] = rss_size
        figures["model_alone_rss_mb"] = trial_rss(
            tmp / "small", {"kind": "digits", "limit_per_class": 20}, rss_size, None
        )
        figures["today_trial_rss_mb"] = trial_rss(tmp / "today", dataset, rss_size, None)
        start = time.perf_counter()  # the driver builds a run's caches before its first trial
        load_images(DatasetConfig(**dataset), rss_size, tmp / "cache")
        figures["rss_cache_build_s"] = time.perf_counter() - start
        figures["cache_trial_rss_mb"] = trial_rss(tmp / "cached", dataset, rss_size, tmp / "cache")
        figures["cache_rss_beyond_model_mb"] = figures["cache_trial_rss_mb"] - figures["model_alone_rss_mb"]
        figures["goal_rss_beyond_model_mb"] = 1536
        steps = []
        for n in proxy_sizes:
            small = {"kind": "fashion_mnist", "root": str(write_idx(tmp / f"idx-{n}", n))}
            load_images(DatasetConfig(**small), rss_size, tmp / "cache")
            steps.append(proxy_step_rss(tmp / f"step-{n}", small, rss_size, tmp / "cache"))
        figures["proxy_steps"] = steps
        figures["proxy_step_rss_growth_mb_per_1000_wrong"] = (
            1000
            * (steps[1]["peak_rss_mb"] - steps[0]["peak_rss_mb"])
            / (steps[1]["wrong_images"] - steps[0]["wrong_images"])
        )
    emit(figures)


if __name__ == "__main__":
    main()
