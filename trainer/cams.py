"""Class activation maps from pytorch-grad-cam, computed in batches, safely.

`compute_cams` is the one entry point: fp32 outside autocast, hooks always released (never through the library's
`__exit__`, which swallows IndexError), the model's train/eval mode restored and its gradients cleared afterwards, and
AblationCAM's layer swap undone even when it fails. Maps are (B, H, W) float32 in [0, 1], min-max normalised per
image by the library: a threshold is relative to each image's own maximum.
"""

from __future__ import annotations

import types
from typing import Any

import numpy as np
import torch
from pytorch_grad_cam import (
    FEM,
    KPCA_CAM,
    AblationCAM,
    EigenCAM,
    EigenGradCAM,
    FinerCAM,
    FullGrad,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    RandomCAM,
    ScoreCAM,
    ShapleyCAM,
    XGradCAM,
    ablation_cam,
    score_cam,
)
from pytorch_grad_cam.ablation_layer import AblationLayer, AblationLayerVit
from pytorch_grad_cam.utils.find_layers import replace_layer_recursive
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget, FinerWeightedTarget
from torch import nn

from trainer.config import CAM_METHOD_NAMES
from trainer.models import TokensToMap, cam_target

CAM_METHODS: dict[str, type] = {
    "gradcam": GradCAM,
    "gradcamplusplus": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "hirescam": HiResCAM,
    "layercam": LayerCAM,
    "gradcamelementwise": GradCAMElementWise,
    "eigencam": EigenCAM,
    "eigengradcam": EigenGradCAM,
    "kpcacam": KPCA_CAM,
    "scorecam": ScoreCAM,
    "ablationcam": AblationCAM,
    "fullgrad": FullGrad,
    "shapleycam": ShapleyCAM,
    "finercam": FinerCAM,
    "fem": FEM,
    "randomcam": RandomCAM,  # a control: proxies from random maps
}
if tuple(CAM_METHODS) != CAM_METHOD_NAMES:
    raise AssertionError("trainer.cams.CAM_METHODS and trainer.config.CAM_METHOD_NAMES must name the same methods")
GRADIENT_CAMS = ("gradcam", "gradcamplusplus", "xgradcam", "hirescam", "layercam")

# ScoreCAM and AblationCAM draw a tqdm bar per batch into every trial's log; TQDM_DISABLE cannot stop them because
# torch imports tqdm first. Their module-level `tqdm` is replaced by a pass-through.
score_cam.tqdm = ablation_cam.tqdm = types.SimpleNamespace(tqdm=lambda iterable, *args, **kwargs: iterable)


def compute_cams(
    model: nn.Module, images: torch.Tensor, classes: torch.Tensor, method: str, batch_size: int = 32
) -> torch.Tensor:
    """CAMs of `images` (normalised, (B, 3, H, W), on the model's device) for `classes` (B,), as (B, H, W) float32
    on the CPU in [0, 1]. The model comes back in the mode it was in, with no gradients and no hooks."""
    target = cam_target(model)
    was_training = model.training
    cam = _make_cam(method, model, target)
    # ScoreCAM builds images × channels × 3 × H × W at once (resnet50 at 224 px: 1.2 GB per image) and then scores
    # image by image anyway: one image per call costs nothing and bounds its memory by one image's share.
    batch_size = 1 if method == "scorecam" else batch_size
    try:
        with torch.autocast(device_type=images.device.type, enabled=False):
            maps = [
                _cam_batch(cam, method, images[i : i + batch_size].float(), classes[i : i + batch_size])
                for i in range(0, len(images), batch_size)
            ]
    finally:
        _release(cam)
        if method == "ablationcam" and not any(m is target.layer for m in model.modules()):
            replace_layer_recursive(model, cam.ablation_layer, target.layer)
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    if not maps:
        return torch.zeros(0, *images.shape[-2:])
    return torch.from_numpy(np.concatenate(maps).astype(np.float32))


def _make_cam(method: str, model: nn.Module, target: Any) -> Any:
    cls = CAM_METHODS[method]
    kwargs = {"model": model, "target_layers": [target.layer], "reshape_transform": target.reshape_transform}
    if method == "ablationcam":
        # The library's default AblationLayer is one shared instance; token models need the ViT variant.
        vit = isinstance(target.reshape_transform, TokensToMap)
        kwargs["ablation_layer"] = AblationLayerVit() if vit else AblationLayer()
    if method == "scorecam":
        cam = cls(**kwargs)
        cam.batch_size = 32
        return cam
    return cls(**kwargs)


def _cam_batch(cam: Any, method: str, images: torch.Tensor, classes: torch.Tensor) -> np.ndarray:
    if method == "finercam":
        return cam(input_tensor=images, targets=_finer_targets(cam, images, classes))
    return cam(input_tensor=images, targets=[ClassifierOutputTarget(int(c)) for c in classes])


def _finer_targets(cam: FinerCAM, images: torch.Tensor, classes: torch.Tensor) -> list:
    """Finer-CAM contrasts each class with the three classes whose logits are closest to it."""
    with torch.no_grad():
        logits = cam.base_cam.model(images).float().cpu()
    targets = []
    for row, c in zip(logits, classes.tolist(), strict=False):
        order = torch.argsort((row - row[c]).abs()).tolist()
        targets.append(FinerWeightedTarget(c, [k for k in order if k != c][:3], alpha=1.0))
    return targets


def _release(cam: Any) -> None:
    # Not the library's release(): its detach_() raises on gradient views (ShapleyCAM) before removing the hooks.
    hooks = (cam.base_cam if isinstance(cam, FinerCAM) else cam).activations_and_grads
    for handle in hooks.handles:
        handle.remove()
    hooks.handles.clear()
    hooks.activations, hooks.gradients = [], []
