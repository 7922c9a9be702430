"""The visual analysis: for the same test images, the CAM of a baseline model and of a proxy-attention model, both
loaded from their trials' checkpoints, beside proxy images the proxy trial made."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from trainer.cams import compute_cams
from trainer.config import TrialConfig
from trainer.data import load_images, model_input
from trainer.models import create_model


def load_trained_model(workdir: Path, num_classes: int) -> torch.nn.Module:
    """The model a trial folder's `checkpoint.pt` holds (its final epoch), in eval mode on the CPU."""
    config = TrialConfig.from_json_file(workdir / "config.json")
    model = create_model(config.architecture, num_classes, config.image_size)
    state = torch.load(workdir / "checkpoint.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    return model.eval()


def overlay(image: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """An (H, W, 3) uint8 image with its CAM blended on top in jet colours."""
    heat = cv2.applyColorMap((cam * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    return (0.5 * image + 0.5 * heat).astype(np.uint8)


def cam_comparison(baseline_dir: Path, proxy_dir: Path, count: int = 6) -> go.Figure:
    """Rows: test images · CAM of the baseline model · CAM of the proxy model · proxies of the first proxy step."""
    config = TrialConfig.from_json_file(proxy_dir / "config.json")
    images = load_images(config.dataset, config.image_size)
    test = json.loads((proxy_dir / "split.json").read_text())["test"][:count]
    pixels = torch.stack([images.image(i) for i in test])
    labels = torch.from_numpy(images.labels[test])
    rows = [("test image", [p.permute(1, 2, 0).numpy() for p in pixels])]
    for title, workdir in (("baseline model's CAM", baseline_dir), ("proxy model's CAM", proxy_dir)):
        model = load_trained_model(workdir, len(images.classes))
        cams = compute_cams(model, model_input(pixels, torch.device("cpu")), labels, config.cam_method).numpy()
        rows.append((title, [overlay(p.permute(1, 2, 0).numpy(), c) for p, c in zip(pixels, cams)]))
    steps = sorted((proxy_dir / "proxies").glob("step-*.npz"))
    if steps:
        with np.load(steps[0]) as npz:
            rows.append(("proxy images (step 0)", [img.transpose(1, 2, 0) for img in npz["images"][:count]]))
    fig = make_subplots(rows=len(rows), cols=count, row_titles=[title for title, _ in rows],
                        horizontal_spacing=0.01, vertical_spacing=0.03)
    for r, (_, tiles) in enumerate(rows, start=1):
        for c, tile in enumerate(tiles, start=1):
            fig.add_trace(go.Image(z=tile), row=r, col=c)
    fig.update_xaxes(visible=False).update_yaxes(visible=False)
    return fig.update_layout(title=f"Same test images, two trained models ({config.cam_method}, true class)",
                             height=180 * len(rows), margin={"l": 10, "r": 120})
