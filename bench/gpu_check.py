"""The one command to run on a GPU machine: every architecture of the thesis grid at 224 px with mixed precision,
`batch_size: auto` and a proxy step, then a 4-trial `search run` sharing each GPU between two trials.

    python bench/gpu_check.py           # 640 generated images per architecture, 2 epochs
    python bench/gpu_check.py --quick   # 160 images, 1 epoch (the same checks)

Per architecture: images/s of training, peak GPU memory, the proxy step's seconds, that CAMs are not constant, that
mixed precision ran and that the trial did not fall back to the CPU. Then `search run` with gpus_per_trial 0.5:
4 trials COMPLETE, at most 2 per GPU at once, each with the GPU ids Ray gave it. Without a GPU it prints one line
saying so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from common import emit
from data import make_jpegs  # bench/data.py: bench/ is the script's folder

ARCHITECTURES = ("resnet18", "resnet50", "efficientnet_b0", "vgg16", "vit_base_patch16_224")


def one_architecture(arch: str, folder: Path, workdir: Path, epochs: int) -> dict:
    from trainer import TrialConfig, run_trial

    config = TrialConfig.from_dict(
        {
            "dataset": {"kind": "imagefolder", "root": str(folder)},
            "image_size": 224,
            "batch_size": "auto",
            "mixed_precision": True,
            "architecture": arch,
            "cam_method": "gradcam",
            "proxy_steps": f"{epochs},p,1",
            "pretrained": False,
            "seed": 0,
        }
    )
    metrics = run_trial(config, workdir / arch, cache_dir=workdir / "cache").metrics
    result = json.loads((workdir / arch / "result.json").read_text())
    step = result["proxy_steps"][0]
    return {
        "architecture": arch,
        "batch_size": metrics["batch_size"],
        "images_per_s": metrics["images_seen"] / metrics["train_seconds"],
        "peak_gpu_mem_mb": metrics["peak_gpu_mem_mb"],
        "proxy_step_s": metrics["proxy_seconds"],
        "cams_not_constant": step["constant_maps"] < step["chosen"],
        "amp": metrics["mixed_precision_used"],
        "device": result["device"],
        "cpu_fallback": result["device"] == "cpu" or not torch.cuda.is_available(),
    }


def search_run(folder: Path, workdir: Path) -> dict:
    space = workdir / "gpu.yaml"
    space.write_text(
        yaml.safe_dump(
            {
                "study": "gpu",
                "resources": {"gpus_per_trial": 0.5, "cpus_per_trial": 1},
                "datasets": {"jpegs": {"kind": "imagefolder", "root": str(folder)}},
                "fixed": {
                    "image_size": 224,
                    "batch_size": 32,
                    "architecture": "resnet18",
                    "mixed_precision": True,
                    "proxy_steps": "1,p,1",
                },
                "grid": {"threshold": [0.2, 0.4, 0.6, 0.8]},
            }
        )
    )
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "search", "run", str(space), "--no-share", "--cache-dir", str(workdir / "cache")],
        cwd=workdir,
        capture_output=True,
        text=True,
    )
    from search.status import load_trials

    trials = [t for t in load_trials("gpu", f"sqlite:///{workdir}/runs/gpu.db") if t.state.name == "COMPLETE"]
    events = sorted([(t.datetime_start, 1) for t in trials] + [(t.datetime_complete, -1) for t in trials])
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return {
        "exit_code": done.returncode,
        "complete": len(trials),
        "most_at_once": most,
        "gpu_ids": sorted({i for t in trials for i in t.user_attrs.get("gpu_ids") or []}),
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        emit({"benchmark": "gpu_check", "skipped": "no CUDA GPU on this machine: run it on one"})
        return
    images, epochs = (160, 1) if args.quick else (640, 2)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        folder = make_jpegs(workdir / "jpegs", images, side=256)
        rows = [one_architecture(arch, folder, workdir, epochs) for arch in ARCHITECTURES]
        run = search_run(folder, workdir)
    emit(
        {
            "benchmark": "gpu_check",
            "architectures": rows,
            "search_run": run,
            "gpus": torch.cuda.device_count(),
            "ok": all(r["amp"] and r["cams_not_constant"] and not r["cpu_fallback"] for r in rows)
            and run["complete"] == 4
            and run["most_at_once"] <= 2 * torch.cuda.device_count(),
        }
    )


if __name__ == "__main__":
    main()
