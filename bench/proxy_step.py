"""The proxy step against its floor and against the thesis code's way of doing it.

    python bench/proxy_step.py           # resnet18: 256 and 1024 images at 64 px, 64 at 224 px (a few minutes)
    python bench/proxy_step.py --quick   # CI-sized

Floor: one forward+backward pass of the same model over the same images. Ours: CAMs (batched, hooks released) +
replacement + the step's one .npz. Reference (Algorithm 2 of Mukherjee, "Proxy Attention: Comparing and Combining
Augmentation with Attention", MSc thesis, University of Groningen, 2023, as its code ran it): a CAM object made per
chunk and never released, the batch stacked from a Python list, each proxy saved as its own JPEG in the dataset's
folder. Goals: ours ÷ floor ≤ 1.5 for the gradient CAMs; reference ÷ ours ≥ 5 (outputs equal up to JPEG loss).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from common import emit, median_seconds

from trainer.cams import CAM_METHODS, GRADIENT_CAMS, compute_cams
from trainer.data.batching import normalize
from trainer.data.rows import write_npz
from trainer.models import cam_target, create_model
from trainer.proxy import replace_pixels

THRESHOLD, WEIGHT = 0.5, 0.5


def images_for(n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` real photos-like inputs: digits upscaled, in [0, 1], with their labels."""
    from trainer.config import DatasetConfig
    from trainer.data.load import load_images

    data = load_images(DatasetConfig(kind="digits"), size)
    index = np.arange(n) % len(data)
    return data.take(index).float() / 255, torch.from_numpy(data.labels[index])


def floor(model, x01, labels, batch=64) -> None:
    model.zero_grad(set_to_none=True)
    for i in range(0, len(x01), batch):
        F.cross_entropy(model(normalize(x01[i : i + batch])), labels[i : i + batch].to(x01.device)).backward()
    model.zero_grad(set_to_none=True)
    _sync(x01.device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ours(model, x01, labels, method, out: Path, batch=64) -> torch.Tensor:
    proxies = []
    for i in range(0, len(x01), batch):
        maps = compute_cams(model, normalize(x01[i : i + batch]), labels[i : i + batch], method, batch)
        proxies.append(
            (replace_pixels(x01[i : i + batch].cpu(), maps, THRESHOLD, WEIGHT, "blended") * 255).round().to(torch.uint8)
        )
    pixels = torch.cat(proxies)
    n = len(labels)
    write_npz(
        out / "step-0.npz",
        {
            "images": pixels.numpy(),
            "labels": labels.numpy(),
            "source_indices": np.arange(n),
            "dropped_source_indices": np.zeros(0, np.int64),
        },
    )
    return pixels


def reference(model, x01, labels, method, folder: Path, chunk=64) -> None:
    """The thesis code's way (kept deliberately as it was)."""
    from PIL import Image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    target = cam_target(model)
    for i in range(0, len(x01), chunk):
        cam = CAM_METHODS[method](
            model=model, target_layers=[target.layer], reshape_transform=target.reshape_transform
        )  # never released
        batch = torch.stack([normalize(x01[j : j + 1])[0] for j in range(i, min(i + chunk, len(x01)))])
        maps = torch.from_numpy(
            cam(input_tensor=batch, targets=[ClassifierOutputTarget(int(c)) for c in labels[i : i + chunk]])
        )
        out = replace_pixels(x01[i : i + chunk].cpu(), maps, THRESHOLD, WEIGHT, "blended")
        for k, img in enumerate(out):
            Image.fromarray((img.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(folder / f"proxy_{i + k}.jpeg")
    for hooks in [m._forward_hooks for m in model.modules()]:
        hooks.clear()  # undo the leak so the next measurement starts clean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    cases = [(64, 32, 1)] if args.quick else [(64, 256, 3), (64, 1024, 1), (224, 64, 1)]
    methods = ("gradcam",) if args.quick else GRADIENT_CAMS
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size, n, repeats in cases:
            model = create_model("resnet18", 10, size).to(device)
            x01, labels = images_for(n, size)
            x01 = x01.to(device)
            base = median_seconds(lambda m=model, x=x01, y=labels: floor(m, x, y), repeats)
            for method in methods:
                mine = median_seconds(lambda m=model, x=x01, y=labels, k=method: ours(m, x, y, k, Path(tmp)), repeats)
                rows.append(
                    {
                        "size": size,
                        "images": n,
                        "method": method,
                        "floor_s": base,
                        "ours_s": mine,
                        "ours_over_floor": mine / base,
                    }
                )
            folder = Path(tmp) / f"dataset-{size}-{n}"
            folder.mkdir()
            theirs = median_seconds(
                lambda m=model, x=x01, y=labels, f=folder: reference(m, x, y, "gradcam", f), 1, warmup=0
            )
            mine = next(r for r in rows if r["size"] == size and r["images"] == n and r["method"] == "gradcam")
            mine["reference_s"] = theirs
            mine["reference_over_ours"] = theirs / mine["ours_s"]
            ours_pixels = ours(model, x01, labels, "gradcam", Path(tmp)).float()
            from PIL import Image

            first = torch.from_numpy(np.asarray(Image.open(folder / "proxy_0.jpeg"))).permute(2, 0, 1).float()
            mine["reference_max_abs_diff_0_255"] = float((first - ours_pixels[0]).abs().mean())
    gradient = [r["ours_over_floor"] for r in rows if r["method"] in GRADIENT_CAMS]
    emit(
        {
            "benchmark": "proxy_step",
            "model": "resnet18",
            "device": str(device),
            "rows": rows,
            "worst_gradient_cam_ratio": max(gradient),
            "goal_ratio": 1.5,
            "reference_speedup": min(r["reference_over_ours"] for r in rows if "reference_over_ours" in r),
            "goal_speedup": 5.0,
        }
    )


if __name__ == "__main__":
    main()
