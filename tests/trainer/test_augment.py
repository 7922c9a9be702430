"""Each augmentation as a function of (images, labels, generator): shapes, label weights, pasted area = label
weight, determinism, no damage to the caller's tensors; the saliency-consistency loss (Al-afandi et al. 2022)."""

import math

import pytest
import torch

from trainer.augmentations import REGISTRY, augment_batch
from trainer.config import AugmentConfig, DatasetConfig
from trainer.data.batching import to_unit
from trainer.data.load import load_images
from trainer.models import create_model
from trainer.saliency_loss import normalize_maps, saliency_terms

N, SIZE = 8, 64
# methods whose every output pixel comes from exactly one source image, so its label weight is its pixel share
PIXEL_SHARE = ("cutmix", "resizemix", "ricap", "saliencymix", "attentive_cutmix")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("test_resnet", 10, SIZE)


@pytest.fixture(scope="module")
def digits():
    images = load_images(DatasetConfig(kind="digits"), SIZE)
    return to_unit(images.take(range(N)), torch.device("cpu")), torch.from_numpy(images.labels[:N])


def run(name, images, labels, model, seed=0, classes=10, **params):
    return augment_batch(
        images, labels, classes, name, torch.Generator().manual_seed(seed), AugmentConfig(**params), model
    )


@pytest.mark.parametrize("name", list(REGISTRY))
def test_shapes_labels_determinism_and_no_damage(name, digits, model):
    images, labels = digits
    before_images, before_labels = images.clone(), labels.clone()
    a = run(name, images, labels, model)
    b = run(name, images, labels, model)
    assert a.images.shape == images.shape and a.targets.shape == (N, 10)
    assert a.images.min() >= 0 and a.images.max() <= 1
    assert torch.equal(images, before_images) and torch.equal(labels, before_labels)
    assert torch.equal(a.images, b.images) and torch.equal(a.targets, b.targets)  # seeded
    assert (a.targets >= 0).all()
    if name != "snapmix":  # SnapMix's partial labels need not sum to one
        assert torch.allclose(a.targets.sum(1), torch.ones(N))
    assert a.same_on_maps(torch.rand(N, 1, SIZE, SIZE)).shape == (N, 1, SIZE, SIZE)
    if name != "none":
        assert not torch.equal(run(name, images, labels, model, seed=1).images, a.images)


@pytest.mark.parametrize("name", PIXEL_SHARE)
def test_pasted_area_equals_the_label_weight_within_one_pixel_row(name, model):
    # image i is the constant i/N and has class i: each output pixel names the image it came from
    images = (torch.arange(N).float() / N).view(N, 1, 1, 1).expand(N, 3, SIZE, SIZE).contiguous()
    labels = torch.arange(N)
    a = run(name, images, labels, model, classes=N)
    for i in range(N):
        source = (a.images[i, 0] * N).round().long()
        share = torch.bincount(source.flatten(), minlength=N).float() / SIZE**2
        assert torch.allclose(share, a.targets[i], atol=1 / SIZE), (i, share, a.targets[i])


def test_mixup_and_samplepairing_blend_as_defined(digits, model):
    images, labels = digits
    a = run("mixup", images, labels, model)
    lam = a.targets[torch.arange(N), labels]
    # x̃ = λ x + (1 − λ) x[perm]: the partner is the other image named in the targets
    for i in range(N):
        partners = [j for j in range(N) if labels[j] != labels[i] and a.targets[i, labels[j]] > 0]
        if lam[i] < 1 and partners:
            j = partners[0]
            assert torch.allclose(a.images[i], lam[i] * images[i] + (1 - lam[i]) * images[j], atol=1e-5)
    s = run("samplepairing", images, labels, model)
    assert torch.equal(s.targets, torch.nn.functional.one_hot(labels, 10).float())  # keeps the first label


def test_snapmix_and_attentive_cutmix_read_the_live_model(digits, model):
    images, labels = digits
    torch.manual_seed(1)
    other = create_model("test_resnet", 10, SIZE)
    for name in ("snapmix", "attentive_cutmix"):
        mine, theirs = run(name, images, labels, model), run(name, images, labels, other)
        assert not (torch.equal(mine.images, theirs.images) and torch.equal(mine.targets, theirs.targets)), name
        with pytest.raises(ValueError, match="needs the live model"):
            run(name, images, labels, None)
    snap = run("snapmix", images, labels, model)
    assert not torch.allclose(snap.targets.sum(1), torch.ones(N))


def test_map_transforms_are_the_image_transforms(digits, model):
    images, labels = digits
    maps = torch.rand(N, 1, SIZE, SIZE)
    as_images = maps.expand(N, 3, SIZE, SIZE).contiguous()
    for name in ("flip", "cutmix", "mixup", "resizemix", "ricap", "samplepairing"):
        a = run(name, as_images, labels, model)
        assert torch.allclose(a.same_on_maps(maps), a.images[:, :1], atol=1e-5), name
    mirror = run("flip", as_images, labels, model, max_degrees=0.0)
    assert torch.allclose(mirror.same_on_maps(mirror.same_on_maps(maps)), maps, atol=1e-5)  # a flip, twice
    cut = run("cutout", images, labels, model)
    erased = (cut.images != images).any(1, keepdim=True)
    assert (cut.same_on_maps(maps)[erased] == 0).all() and torch.equal(cut.same_on_maps(maps)[~erased], maps[~erased])


def test_saliency_loss(digits, model):
    images, labels = digits
    model.train()
    _, same, _ = saliency_terms(model, images, run("none", images, labels, model), labels)
    assert same.item() == pytest.approx(0, abs=1e-6)  # identical maps
    logits, moved, invariance = saliency_terms(model, images, run("flip", images, labels, model), labels)
    assert moved.item() > 0 and invariance.item() > 0 and logits.shape == (N, 10)
    model.zero_grad(set_to_none=True)
    moved.backward()  # β·L_sal alone trains the network
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    model.zero_grad(set_to_none=True)
    m = torch.rand(2, 1, 4, 4) * 5 + 1
    unit = normalize_maps(m)
    assert math.isclose(unit.amin().item(), 0) and math.isclose(unit.amax().item(), 1, rel_tol=1e-6)
