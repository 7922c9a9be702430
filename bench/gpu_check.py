"""The one command to run on a GPU machine: a device check that always comes back with figures.

    python bench/gpu_check.py                 # on a GPU: the thesis' architectures at 224 px, ≤ 8 minutes
    python bench/gpu_check.py --budget 300    # a harder time budget (seconds), enforced by the script itself
    python bench/gpu_check.py --quick         # its CPU form (tiny models, 64 px): what CI runs

Each case prints one JSON line as soon as it ends (`"case": …, "ok": …` and its figures, or its `error` and the
tail of its stderr); one failing case never hides the others; a case that would not fit in what is left of the
budget is reported as skipped; a summary line ends the output whatever happened (an exception, Ctrl-C, the budget).
Cases: per architecture, a trial with `batch_size: auto`, mixed precision and a gradcam proxy step (steady-state
images/s from its epochs after the first, beside a bare AMP loop of the same model for the ratio; peak allocated and
reserved GPU memory; CAMs not constant; AMP on; no CPU fallback); the thesis' other CAM methods (gradcam++,
eigencam); ViT with the saliency loss; `num_workers: 4`; `search run` with `batch_size: auto` on half GPUs, shared
stems against `--no-share`, each search trial's device and AMP read from its result.json; a forced out-of-memory
error on a half GPU, retried on a whole one. Without CUDA every case runs its CPU form and says so (its searches
on the local executor).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
import yaml
from common import machine
from data import make_jpegs  # bench/data.py: bench/ is the script's folder

GPU_ARCHITECTURES = ("resnet18", "resnet50", "efficientnet_b0", "vgg16", "vit_base_patch16_224")
CPU_ARCHITECTURES = ("test_resnet", "test_vit")


class Budget:
    """Seconds left of the whole check; a case asks for what it expects to need."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def case(name: str, budget: Budget, need: float, results: list[dict], fn: Callable[[], dict]) -> None:
    """Run one case and print its JSON line: its figures, its error, or why it was skipped."""
    started = time.monotonic()
    if budget.left() < need:
        row = {"case": name, "ok": None, "skipped": f"{budget.left():.0f} s left of the budget, needs ~{need:.0f}"}
    else:
        try:
            row = {"case": name, **fn()}
        except Exception as exc:  # one broken case never hides the others
            row = {"case": name, "ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000]}
            row["traceback_tail"] = traceback.format_exc()[-600:]
    row["seconds"] = round(time.monotonic() - started, 1)
    results.append(row)
    print(json.dumps(row, default=float), flush=True)


class Check:
    """The settings of one device check: on a GPU, the thesis' sizes; on the CPU, tiny ones."""

    def __init__(self, workdir: Path, budget: Budget, gpu: bool) -> None:
        self.workdir, self.budget, self.gpu = workdir, budget, gpu
        self.size = 224 if gpu else 64
        self.images = make_jpegs(
            workdir / "jpegs", 640 if gpu else 90, classes=10 if gpu else 3, side=256 if gpu else 64
        )
        self.cache = workdir / "cache"

    def trial(self, name: str, **fields) -> tuple[dict, dict, list[dict]]:
        """One trial in this process: (metrics, result.json, metrics.jsonl rows)."""
        from trainer import TrialConfig, run_trial

        config = {
            "dataset": {"kind": "imagefolder", "root": str(self.images)},
            "image_size": self.size,
            "batch_size": "auto",
            "mixed_precision": True,
            "architecture": "resnet18" if self.gpu else "test_resnet",
            "cam_method": "gradcam",
            "proxy_steps": "2,p,1",
            "seed": 0,
            **fields,
        }
        folder = self.workdir / "trials" / name
        metrics = run_trial(TrialConfig.from_dict(config), folder, cache_dir=self.cache).metrics
        rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line]
        return metrics, json.loads((folder / "result.json").read_text()), rows

    def architecture(self, arch: str) -> dict:
        metrics, result, rows = self.trial(arch, architecture=arch)
        steady = rows[1:] or rows  # the first epoch pays for warm-up, cuDNN autotuning and the cache
        seconds = sum(r["seconds"] for r in steady)
        images_per_s = sum(r["train_images"] for r in steady) / seconds if seconds else None
        bare = bare_amp_loop(arch, self.size, metrics["batch_size"], 8 if self.gpu else 3)
        step = result["proxy_steps"][0] if result["proxy_steps"] else {}
        on_gpu = "cuda" in str(result["device"]).lower() or torch.cuda.is_available()
        row = {
            "architecture": arch,
            "batch_size": metrics["batch_size"],
            "images_per_s": images_per_s,
            "bare_amp_images_per_s": bare,
            "ratio_to_bare": images_per_s / bare if images_per_s and bare else None,
            "peak_gpu_mem_mb": metrics["peak_gpu_mem_mb"],
            "peak_gpu_reserved_mb": metrics.get("peak_gpu_reserved_mb"),
            "proxy_step_s": metrics["proxy_seconds"],
            "cams_not_constant": bool(step) and step.get("constant_maps", 0) < step.get("chosen", 0),
            "amp": metrics["mixed_precision_used"],
            "device": result["device"],
            "cpu_fallback": self.gpu and not on_gpu,
        }
        row["ok"] = row["cams_not_constant"] and not row["cpu_fallback"] and (row["amp"] or not self.gpu)
        return row

    def cam_method(self, method: str) -> dict:
        metrics, result, _ = self.trial(method, cam_method=method)
        step = result["proxy_steps"][0] if result["proxy_steps"] else {}
        return {"cam_method": method, "proxy_step_s": metrics["proxy_seconds"], "ok": bool(step)}

    def vit_saliency(self) -> dict:
        arch = "vit_base_patch16_224" if self.gpu else "test_vit"
        metrics, _, _ = self.trial("vit-saliency", architecture=arch, saliency_loss_weight=1.0, proxy_steps="1")
        return {"architecture": arch, "val_loss": metrics["val_loss"], "batch_size": metrics["batch_size"], "ok": True}

    def workers(self) -> dict:
        metrics, _, _ = self.trial("workers", num_workers=4, proxy_steps="1")
        return {"num_workers": 4, "val_accuracy": metrics["val_accuracy"], "ok": True}

    def search(self, name: str, fixed: dict, grid: dict, gpus: float, *flags: str) -> dict:
        """`search run` of a small space in a subprocess with a timeout inside the budget; per trial, its device,
        AMP and batch size (from result.json), and the failures with their kind."""
        space = self.workdir / f"{name}.yaml"
        data = {
            "study": name,
            "resources": {"gpus_per_trial": gpus if self.gpu else 0, "cpus_per_trial": 1},
            "datasets": {"jpegs": {"kind": "imagefolder", "root": str(self.images)}},
            "fixed": {"image_size": self.size, "architecture": "resnet18" if self.gpu else "test_resnet", **fixed},
            "grid": grid,
        }
        space.write_text(yaml.safe_dump(data))
        # Without a GPU the searches run on the local executor: Ray's GPU dispatch is what they check, and a CPU
        # has none to dispatch (tests/search/run/test_gpu.py covers it with GPUs declared to Ray).
        executor = [] if self.gpu else ["--executor", "local"]
        args = [sys.executable, "-m", "search", "run", str(space), "--cache-dir", str(self.cache), *executor, *flags]
        try:
            done = subprocess.run(
                args, cwd=self.workdir, capture_output=True, text=True, timeout=max(30, self.budget.left() - 20)
            )
            code, tail = done.returncode, (done.stdout + done.stderr)[-1500:]
        except subprocess.TimeoutExpired as exc:
            code, tail = None, f"timed out: {str(exc.stderr or '')[-1500:]}"
        from search.planning.status import load_trials
        from search.records.storage import StudyError

        try:
            trials = load_trials(name, f"sqlite:///{self.workdir}/runs/{name}.db")
        except StudyError:  # it never got as far as its study: the output tail says why
            trials = []
        seen = []
        for t in trials:
            folder = self.workdir / "runs" / name / "trials" / f"{t.number}-{t.user_attrs['grid_key'][:8]}"
            result = json.loads((folder / "result.json").read_text()) if (folder / "result.json").exists() else {}
            seen.append(
                {
                    "state": t.state.name,
                    "device": result.get("device"),
                    "amp": result.get("metrics", {}).get("mixed_precision_used"),
                    "batch_size": result.get("metrics", {}).get("batch_size"),
                    "gpu_ids": t.user_attrs.get("gpu_ids"),
                    "fail_kind": t.user_attrs.get("fail_kind"),
                    "whole_gpu": t.user_attrs.get("whole_gpu"),
                }
            )
        complete = sum(s["state"] == "COMPLETE" for s in seen)
        return {"exit_code": code, "complete": complete, "trials": seen, "output_tail": tail if code else None}

    def auto_on_half_gpus(self) -> dict:
        thresholds = [0.2, 0.4, 0.6, 0.8] if self.gpu else [0.5]  # four share two GPUs; a CPU has none to share
        row = self.search(
            "auto-half", {"batch_size": "auto", "mixed_precision": True, "proxy_steps": "1,p,1"},
            {"threshold": thresholds}, 0.5, "--no-share",
        )  # fmt: skip
        amp_ok = not self.gpu or all(t["amp"] for t in row["trials"] if t["state"] == "COMPLETE")
        return {**row, "ok": row["exit_code"] == 0 and row["complete"] == len(thresholds) and amp_ok}

    def stems(self) -> dict:
        fixed = {"batch_size": 32, "mixed_precision": True, "proxy_steps": "2,p,1"}
        # On a CPU one stem and its two branches, shared only (tests/search/run/test_sharing.py compares the two).
        grid = {"cam_method": ["gradcam", "gradcamplusplus"] if self.gpu else ["gradcam"], "threshold": [0.3, 0.6]}
        points = len(grid["cam_method"]) * len(grid["threshold"])
        shared = self.search("stems", fixed, grid, 0.5)
        row = {"shared": {k: shared[k] for k in ("exit_code", "complete")}, "ok": shared["complete"] == points}
        if self.gpu:
            alone = self.search("nostems", fixed, grid, 0.5, "--no-share")
            row["unshared"] = {k: alone[k] for k in ("exit_code", "complete")}
            row["ok"] = row["ok"] and alone["complete"] == points
        return row

    def forced_oom(self) -> dict:
        """A batch far too large for half a GPU: its out-of-memory failure is retried on a whole GPU."""
        huge = 8192 if self.gpu else 32
        row = self.search("oom", {"batch_size": huge, "proxy_steps": "1"}, {"threshold": [0.5]}, 0.5)
        kinds = [t["fail_kind"] for t in row["trials"]]
        retried_whole = any(t["whole_gpu"] for t in row["trials"][1:])
        ok = ("oom" in kinds and retried_whole) if self.gpu else row["complete"] == 1
        return {"batch_size": huge, "fail_kinds": kinds, "retried_on_a_whole_gpu": retried_whole, "ok": ok}


def bare_amp_loop(arch: str, size: int, batch: int, steps: int) -> float | None:
    """Images/s of a bare training loop (AMP on CUDA, random data, no data loading) of the same model."""
    if not steps:
        return None
    from trainer.models import create_model

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = create_model(arch, 10, size).to(device)
    optimizer = torch.optim.AdamW(model.parameters())
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda")
    x = torch.rand(batch, 3, size, size, device=device)
    y = torch.randint(10, (batch,), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def calibrate(results: list[dict]) -> None:
    """The steady-state images/s of each architecture this GPU trained, for `search run --dry-run`'s price."""
    from search.planning.price import calibration_file
    from trainer.files import atomic_write_json

    rows = [
        {"architecture": r["architecture"], "image_size": 224, "images_per_s": r["images_per_s"]}
        for r in results
        if r.get("architecture") and r.get("images_per_s") and r.get("ok")
    ]
    if rows:
        atomic_write_json(calibration_file(), {"device": torch.cuda.get_device_name(0), "rows": rows})
        print(json.dumps({"calibration": str(calibration_file()), "architectures": len(rows)}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the CPU form, even on a GPU machine")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for the whole check (default 480)")
    args = parser.parse_args()
    gpu = torch.cuda.is_available() and not args.quick
    budget = Budget(args.budget)
    results: list[dict] = []
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            check = Check(Path(tmp), budget, gpu)
            scale = 1.0 if gpu else 0.5
            for arch in GPU_ARCHITECTURES if gpu else CPU_ARCHITECTURES:
                case(f"architecture {arch}", budget, 40 * scale, results, lambda a=arch: check.architecture(a))
            for method in ("gradcamplusplus", "eigencam"):
                case(f"cam {method}", budget, 30 * scale, results, lambda m=method: check.cam_method(m))
            case("vit + saliency loss", budget, 40 * scale, results, check.vit_saliency)
            case("num_workers 4", budget, 30 * scale, results, check.workers)
            case("auto batch on half GPUs", budget, 60 * scale, results, check.auto_on_half_gpus)
            case("shared stems", budget, 90 * scale, results, check.stems)
            case("forced OOM retried whole", budget, 45 * scale, results, check.forced_oom)
        if gpu:
            calibrate(results)
    finally:
        print(
            json.dumps(
                {
                    "benchmark": "gpu_check",
                    "device": "cuda" if gpu else "cpu (the CPU form: no GPU figures)",
                    "cases": len(results),
                    "ok": all(r["ok"] is not False for r in results),
                    "failed": [r["case"] for r in results if r["ok"] is False],
                    "skipped": [r["case"] for r in results if r["ok"] is None],
                    "seconds": round(time.monotonic() - started, 1),
                    "machine": machine(),
                },
                default=float,
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
