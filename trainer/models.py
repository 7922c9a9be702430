"""timm models by name, the CAM target layer of each family, and `measure`, what `trainer.modelcheck` needs to
know of a model (built on PyTorch's `meta` device: no memory, no compute)."""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from trainer.errors import ModelError
from trainer.families import TOKEN_FAMILIES
from trainer.files import load_checkpoint


class TokensToMap:
    """Reshape ViT tokens (B, prefix + h*w, C) to a CAM feature map (B, C, h, w), dropping the prefix tokens."""

    def __init__(self, num_prefix_tokens: int) -> None:
        self.num_prefix_tokens = num_prefix_tokens

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        x = tokens[:, self.num_prefix_tokens :, :]
        side = round(x.shape[1] ** 0.5)
        if side * side != x.shape[1]:
            raise ModelError(f"cannot reshape {x.shape[1]} patch tokens to a square grid")
        return x.reshape(x.shape[0], side, side, x.shape[2]).permute(0, 3, 1, 2)


def channels_last_to_first(x: torch.Tensor) -> torch.Tensor:
    """Swin blocks work on (B, H, W, C); CAMs need (B, C, H, W)."""
    return x.permute(0, 3, 1, 2)


@dataclass
class CamTarget:
    """The layer a CAM reads and how to turn its output into (B, C, h, w)."""

    layer: nn.Module
    reshape_transform: Callable | None


def _family(model: nn.Module) -> str:
    return type(model).__name__


def _size_kwargs(architecture: str, image_size: int) -> dict:
    # Transformers fix their patch grid at creation: build them for the trial's image size.
    name = architecture.lower()
    if any(name.startswith(p) for p in ("vit", "deit", "swin", "eva", "beit", "test_vit")):
        return {"img_size": image_size}
    return {}


def create_model(
    architecture: str,
    num_classes: int,
    image_size: int,
    pretrained: bool = False,
    pretrained_path: str | None = None,
    double_backward: bool = False,
) -> nn.Module:
    """A timm model with a fresh `num_classes` head. `pretrained` downloads weights from timm's hub;
    `pretrained_path` loads a local state dict (tensors only) and ignores a mismatched classifier.
    `double_backward` (the saliency loss differentiates an input gradient) turns timm's fused attention off: the
    flash and memory-efficient kernels of `scaled_dot_product_attention` have no second derivative, on the CPU or
    on CUDA (pytorch/pytorch#116350), so every transformer would fail; the math path has one."""
    if architecture not in available_architectures():
        raise ModelError(unknown_architecture(architecture))
    kwargs = _size_kwargs(architecture, image_size)
    try:
        model = timm.create_model(
            architecture, pretrained=pretrained and not pretrained_path, num_classes=num_classes, **kwargs
        )
    except OSError as exc:
        raise ModelError(
            f"cannot download pretrained weights for {architecture} (offline? use pretrained_path "
            f"or pretrained: false): {exc}"
        ) from None
    if pretrained_path:
        path = Path(pretrained_path)
        state = load_pretrained(path)
        own = model.state_dict()
        usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if not usable:
            raise ModelError(f"pretrained_path: {path} holds no weights that fit {architecture}")
        model.load_state_dict(usable, strict=False)
    if double_backward:
        for module in model.modules():
            if hasattr(module, "fused_attn"):
                setattr(module, "fused_attn", False)  # noqa: B010 (a timm attribute torch's typing does not know)
    return model


def load_pretrained(path: Path) -> dict[str, torch.Tensor]:
    """The state dict (tensors only: `weights_only`) in the file `pretrained_path` names. Checked when a space or
    a config is validated, and again when the model is made; anything else is a `ModelError` naming the file."""
    if not path.is_file():
        raise ModelError(f"pretrained_path: {path} does not exist or is not a file", "pretrained_path")
    try:
        state = load_checkpoint(path)
    except Exception as exc:  # torch raises many kinds for a file that is not a checkpoint
        raise ModelError(
            f"pretrained_path: {path} is not a PyTorch state dict ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''})"[:300],
            "pretrained_path",
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(
            f"pretrained_path: {path} holds a {type(state).__name__} without tensors, not a state dict",
            "pretrained_path",
        )
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def unknown_architecture(architecture: str) -> str:
    """Why `architecture` cannot be built, with the closest timm names."""
    close = difflib.get_close_matches(
        architecture.replace("-", "").replace("_", "").lower(),
        sorted(available_architectures()),
        n=3,
        cutoff=0.7,
    )
    hint = f"; did you mean {' or '.join(close)}?" if close else " (see timm.list_models())"
    return f"unknown architecture {architecture!r}{hint}"


@functools.cache
def available_architectures() -> frozenset[str]:
    """Every architecture name timm can build."""
    return frozenset(timm.list_models())


def cam_target(model: Any) -> CamTarget:
    """The CAM target layer of `model` (a timm model), chosen per family; the last feature stage otherwise."""
    family = _family(model)
    if family in TOKEN_FAMILIES or (hasattr(model, "num_prefix_tokens") and hasattr(model, "blocks")):
        return CamTarget(model.blocks[-1].norm1, TokensToMap(model.num_prefix_tokens))
    if family == "SwinTransformer":
        return CamTarget(model.layers[-1].blocks[-1].norm1, channels_last_to_first)
    if family == "EfficientNet":
        return CamTarget(model.bn2, None)  # after conv_head, which feature_info omits
    module_name = model.feature_info[-1]["module"]
    return CamTarget(model.get_submodule(module_name), None)


def measure(architecture: str, image_size: int) -> dict:
    """What `trainer.modelcheck` needs to know of a model, from one shape-only forward on the meta device: its
    family and the (h, w) of its CAM feature map, or why it cannot be built at this size."""
    if architecture not in available_architectures():
        return {
            "error": unknown_architecture(architecture),
            "family": None,
            "map": None,
        }
    try:
        with torch.device("meta"):
            model = timm.create_model(
                architecture, pretrained=False, num_classes=2, **_size_kwargs(architecture, image_size)
            )
        target = cam_target(model)
        seen: list[tuple[int, int]] = []

        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            out = target.reshape_transform(output) if target.reshape_transform else output
            seen.append(tuple(out.shape[-2:]))

        handle = target.layer.register_forward_hook(hook)
        try:
            model.eval()(torch.empty(1, 3, image_size, image_size, device="meta"))
        finally:
            handle.remove()
    except Exception as exc:  # timm raises assorted errors for sizes a model cannot take
        return {"error": f"{architecture} cannot run at image_size {image_size}: {exc}", "family": None, "map": None}
    return {"error": None, "family": _family(model), "map": list(seen[-1])}
