import resource

import pytest
import torch

from trainer.cams import CAM_METHODS, compute_cams
from trainer.config import DatasetConfig
from trainer.data.batching import model_input
from trainer.data.load import load_images
from trainer.errors import ModelError
from trainer.families import CAM_UNSUITABLE, TRANSFORMERS
from trainer.modelcheck import check
from trainer.models import create_model


@pytest.fixture(scope="module")
def digits_batch():
    images = load_images(DatasetConfig(kind="digits"), 64)
    return (model_input(images.take(range(6)), torch.device("cpu")), torch.from_numpy(images.labels[:6]))


def count_hooks(model) -> int:
    """Forward and backward hooks registered on `model`'s modules (a leak check)."""
    return sum(
        len(m._forward_hooks)
        + len(m._forward_pre_hooks)
        + len(m._backward_hooks)
        + len(getattr(m, "_full_backward_hooks", {}) or {})
        for m in model.modules()
    )


def model_for(method: str) -> str:
    # A tiny ViT for every method that runs on transformers; a tiny ConvNeXt for the rest.
    return "test_convnext" if "VisionTransformer" in CAM_UNSUITABLE.get(method, ((), ""))[0] else "test_vit"


@pytest.mark.parametrize("method", list(CAM_METHODS))
def test_every_cam_gives_non_constant_maps_and_leaves_the_model_as_it_was(method, digits_batch):
    x, y = digits_batch
    torch.manual_seed(0)
    model = create_model(model_for(method), 10, 64)
    model.train()
    hooks = count_hooks(model)
    requires = [p.requires_grad for p in model.parameters()]
    maps = compute_cams(model, x, y, method, batch_size=4)
    assert maps.shape == (6, 64, 64) and maps.dtype == torch.float32
    assert maps.min() >= 0 and maps.max() <= 1
    assert (maps.flatten(1).std(1) > 1e-4).all(), f"{method} gave a constant map"
    assert model.training and count_hooks(model) == hooks
    assert all(p.grad is None for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == requires


def test_twenty_proxy_steps_grow_neither_hooks_nor_memory(digits_batch):
    x, y = digits_batch
    model = create_model("test_resnet", 10, 64)
    compute_cams(model, x, y, "gradcam")  # warm-up: allocator pools
    compute_cams(model, x, y, "scorecam")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for i in range(20):
        compute_cams(model, x, y, ("gradcam", "scorecam", "ablationcam", "eigencam")[i % 4])
        assert count_hooks(model) == 0
    growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert growth_mb < 50, growth_mb


def test_ablationcam_failure_restores_the_layer(digits_batch):
    x, y = digits_batch
    model = create_model("test_resnet", 10, 64)
    layer = model.layer4
    with pytest.raises(IndexError):
        compute_cams(model, x, torch.full_like(y, 99), "ablationcam")  # class 99 does not exist
    assert model.layer4 is layer and count_hooks(model) == 0


def test_check_fails_fast():
    with pytest.raises(ModelError, match="1x1 CAM feature map"):
        check("resnet18", "gradcam", 32)
    check("resnet18", "gradcam", 64)
    check("resnet18", None, 32)  # no CAM, no constraint
    with pytest.raises(ModelError, match="unknown architecture"):
        check("resnet19", "gradcam", 64)
    with pytest.raises(ModelError, match="fullgrad does not work on vit_base_patch16_224"):
        check("vit_base_patch16_224", "fullgrad", 224)
    with pytest.raises(ModelError, match="unknown CAM method"):
        check("resnet18", "magiccam", 64)
    for family in (
        "swin_tiny_patch4_window7_224",
        "deit_tiny_patch16_224",
        "efficientnet_b0",
        "vgg16",
        "densenet121",
        "convnext_tiny",
        "mobilenetv3_small_100",
        "resnext50_32x4d",
    ):
        check(family, "gradcam", 224)
    assert "SwinTransformer" in TRANSFORMERS


def test_local_pretrained_weights(tmp_path):
    source = create_model("test_resnet", 10, 64)
    path = tmp_path / "weights.pt"
    torch.save(source.state_dict(), path)
    loaded = create_model("test_resnet", 5, 64, pretrained_path=str(path))  # another head: skipped
    assert torch.equal(next(loaded.parameters()), next(source.parameters()))
    with pytest.raises(ModelError, match="does not exist"):
        create_model("test_resnet", 5, 64, pretrained_path=str(tmp_path / "missing.pt"))
