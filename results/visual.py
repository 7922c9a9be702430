"""The visual analysis: for the same test images, the CAM of a baseline model and of a proxy-attention model, both
loaded from their trials' checkpoints (in the artifact store), beside proxy images the proxy trial made."""

from __future__ import annotations

import io

import cv2
import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from trainer.cams import compute_cams
from trainer.config import TrialConfig
from trainer.data.batching import model_input
from trainer.data.load import load_images
from trainer.files import load_checkpoint
from trainer.folder import CHECKPOINT, CONFIG, SPLIT, TrialFolder
from trainer.models import create_model


def _config(folder: TrialFolder) -> TrialConfig:
    data = folder.read_json(CONFIG)
    if data is None:
        raise OSError(f"{folder.file(CONFIG)} is missing")
    return TrialConfig.from_dict(data)


def load_trained_model(folder: TrialFolder, num_classes: int) -> torch.nn.Module:
    """The model a trial folder's `checkpoint.pt` holds (its final epoch), in eval mode on the CPU."""
    config = _config(folder)
    model = create_model(config.architecture, num_classes, config.image_size)
    data = folder.open_checkpoint()
    if data is None:
        raise OSError(f"{folder.file(CHECKPOINT)} is missing")
    model.load_state_dict(load_checkpoint(data)["model"])
    return model.eval()


def overlay(image: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """An (H, W, 3) uint8 image with its CAM blended on top in jet colours."""
    heat = cv2.applyColorMap((cam * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    return (0.5 * image + 0.5 * heat).astype(np.uint8)


def cam_comparison(baseline: TrialFolder, proxy: TrialFolder, count: int = 6) -> go.Figure:
    """Rows: test images · CAM of the baseline model · CAM of the proxy model · proxies of the first proxy step."""
    config = _config(proxy)
    images = load_images(config.dataset, config.image_size)
    split = proxy.read_json(SPLIT)
    if split is None:
        raise OSError(f"{proxy.file(SPLIT)} is missing")
    test = split["test"][:count]
    pixels = images.take(test)
    labels = torch.from_numpy(images.labels[test])
    rows = [("test image", [p.permute(1, 2, 0).numpy() for p in pixels])]
    for title, folder in (("baseline model's CAM", baseline), ("proxy model's CAM", proxy)):
        model = load_trained_model(folder, len(images.classes))
        cams = compute_cams(model, model_input(pixels, torch.device("cpu")), labels, config.cam_method).numpy()
        rows.append((title, [overlay(p.permute(1, 2, 0).numpy(), c) for p, c in zip(pixels, cams, strict=True)]))
    steps = proxy.proxy_files()
    data = proxy.read_bytes(steps[0]) if steps else None
    if data is not None:
        with np.load(io.BytesIO(data)) as npz:
            rows.append(("proxy images (step 0)", [img.transpose(1, 2, 0) for img in npz["images"][:count]]))
    fig = make_subplots(rows=len(rows), cols=count, horizontal_spacing=0.01, vertical_spacing=0.03)
    for r, (title, tiles) in enumerate(rows, start=1):
        for c, tile in enumerate(tiles, start=1):
            fig.add_trace(go.Image(z=tile), row=r, col=c)
        domain = fig.get_subplot(r, 1).yaxis.domain
        fig.add_annotation(
            text=title.replace(" ", "<br>", 1),
            xref="paper",
            yref="paper",
            x=-0.01,
            y=(domain[0] + domain[1]) / 2,
            xanchor="right",
            yanchor="middle",
            showarrow=False,
            align="right",
            font={"size": 12},
        )
    fig.update_xaxes(visible=False).update_yaxes(visible=False)
    return fig.update_layout(
        title=f"Same test images, two trained models ({config.cam_method}, true class)",
        template="plotly_white",
        height=170 * len(rows),
        margin={"l": 130, "r": 10},
    )
