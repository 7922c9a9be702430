"""Augmentations that mix images and their labels: x̃ = B ⊙ x₁ + (1 − B) ⊙ x₂, ỹ = λy₁ + (1 − λ)y₂ (Lewy &
Mańdziuk, "An overview of mixing augmentation methods and augmentation strategies", Artif. Intell. Rev. 56, 2023).

Each image is mixed with a partner drawn by a seeded permutation of the batch. Label weights follow the pixels: for
box methods λ is measured on the mask actually pasted, not the λ that was drawn. SnapMix and Attentive CutMix read
the live model's CAMs.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from trainer.augment import Augmented, box_masks, uniform
from trainer.data.batching import normalize


def beta(generator: torch.Generator, alpha: float, n: int = 1) -> torch.Tensor:
    """`n` draws from Beta(alpha, alpha), seeded by `generator`."""
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    return torch.from_numpy(np.random.default_rng(seed).beta(alpha, alpha, size=n)).float()


def _partner(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.randperm(images.shape[0], generator=generator).to(images.device)


def _composite(images, targets, perm, masks, partner=None, partner_maps=None, weight=None) -> Augmented:
    """(1 − M) ⊙ x + M ⊙ P(x[perm]) with labels (1 − w) y + w y[perm], w = mean(M) unless given. `partner` is
    P(x[perm]) when the partner is warped (resized, moved); `partner_maps` applies the same warp to maps."""
    masks = masks.to(images.device, images.dtype)
    partner = images[perm] if partner is None else partner
    out = images * (1 - masks) + partner * masks
    w = masks.flatten(1).mean(1) if weight is None else weight.to(images.device, images.dtype)
    mixed = targets * (1 - w).view(-1, 1) + targets[perm] * w.view(-1, 1)
    warp = partner_maps or (lambda m: m[perm])
    return Augmented(out, mixed, lambda maps: maps * (1 - masks) + warp(maps) * masks)


def mixup(images, targets, generator, params, model) -> Augmented:
    """MixUp (Zhang et al.): x̃ = λx₁ + (1 − λ)x₂ with one λ ~ Beta(α, α) per batch."""
    perm = _partner(images, generator)
    lam = beta(generator, params.mix_alpha).item()
    return _composite(images, targets, perm, torch.full((images.shape[0], 1, 1, 1), 1 - lam))


def cutmix(images, targets, generator, params, model) -> Augmented:
    """CutMix (Yun et al.): a box of area (1 − λ) from the partner, λ ~ Beta(α, α); labels by the pasted area."""
    n, _, h, w = images.shape
    perm = _partner(images, generator)
    area = 1 - beta(generator, params.mix_alpha).expand(n)
    return _composite(images, targets, perm, box_masks(n, (h, w), area, generator))


def samplepairing(images, targets, generator, params, model) -> Augmented:
    """SamplePairing (Inoue): the average of two images, keeping the first image's label."""
    perm = _partner(images, generator)
    return _composite(
        images, targets, perm, torch.full((images.shape[0], 1, 1, 1), 0.5), weight=torch.zeros(images.shape[0])
    )


def smoothmix(images, targets, generator, params, model) -> Augmented:
    """SmoothMix (Lee et al.): a Gaussian-edged blob of the partner (σ ∈ [0.1, 0.3] of the side); labels by its
    mean weight."""
    n, _, h, w = images.shape
    perm = _partner(images, generator)
    cy, cx = uniform(generator, n, 0, h), uniform(generator, n, 0, w)
    sigma = uniform(generator, n, 0.1, 0.3) * min(h, w)
    rows, cols = torch.arange(h).view(1, h, 1).float(), torch.arange(w).view(1, 1, w).float()
    d2 = (rows - cy.view(n, 1, 1)) ** 2 + (cols - cx.view(n, 1, 1)) ** 2
    return _composite(images, targets, perm, torch.exp(-d2 / (2 * sigma.view(n, 1, 1) ** 2)).unsqueeze(1))


def _place(small: torch.Tensor, size: tuple[int, int], tops: torch.Tensor, lefts: torch.Tensor):
    """Put each (C, sh, sw) of `small` on an empty (C, H, W) canvas at (top, left); return canvases and masks."""
    n, c, sh, sw = small.shape
    canvas = small.new_zeros(n, c, *size)
    masks = small.new_zeros(n, 1, *size)
    for i, (t, left) in enumerate(zip(tops.tolist(), lefts.tolist(), strict=True)):
        canvas[i, :, t : t + sh, left : left + sw] = small[i]
        masks[i, :, t : t + sh, left : left + sw] = 1
    return canvas, masks


def resizemix(images, targets, generator, params, model) -> Augmented:
    """ResizeMix (Qin et al.): the whole partner resized by τ ∈ [`resize_min`, `resize_max`] and pasted anywhere;
    labels by the pasted area (≈ τ²)."""
    n, _, h, w = images.shape
    perm = _partner(images, generator)
    tau = uniform(generator, 1, params.resize_min, params.resize_max).item()
    sh, sw = max(1, round(tau * h)), max(1, round(tau * w))
    tops = torch.randint(0, h - sh + 1, (n,), generator=generator)
    lefts = torch.randint(0, w - sw + 1, (n,), generator=generator)

    def shrink(x):
        return _place(F.interpolate(x[perm], size=(sh, sw), mode="bilinear", align_corners=False), (h, w), tops, lefts)[
            0
        ]

    masks = _place(images.new_zeros(n, 1, sh, sw), (h, w), tops, lefts)[1]
    return _composite(images, targets, perm, masks, partner=shrink(images), partner_maps=shrink)


def ricap(images, targets, generator, params, model) -> Augmented:
    """RICAP (Takahashi et al.): four images cropped around a boundary point (w, h) ~ Beta(β, β) fill the four
    quadrants; labels by each quadrant's area."""
    n, _, h, w = images.shape
    perms = [torch.arange(n, device=images.device)] + [_partner(images, generator) for _ in range(3)]
    bw = round(beta(generator, params.ricap_beta).item() * w)
    bh = round(beta(generator, params.ricap_beta).item() * h)
    boxes = [(0, 0, bh, bw), (0, bw, bh, w - bw), (bh, 0, h - bh, bw), (bh, bw, h - bh, w - bw)]
    offsets = [
        (
            int(torch.randint(0, h - hh + 1, (1,), generator=generator)),
            int(torch.randint(0, w - ww + 1, (1,), generator=generator)),
        )
        for _, _, hh, ww in boxes
    ]

    def assemble(x: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x)
        for perm, (t, left, hh, ww), (oy, ox) in zip(perms, boxes, offsets, strict=True):
            out[:, :, t : t + hh, left : left + ww] = x[perm][:, :, oy : oy + hh, ox : ox + ww]
        return out

    mixed = sum(targets[perm] * (hh * ww / (h * w)) for perm, (_, _, hh, ww) in zip(perms, boxes, strict=False))
    return Augmented(assemble(images), mixed, assemble)


def spectral_saliency(images: torch.Tensor) -> torch.Tensor:
    """Spectral-residual saliency (Hou & Zhang), the detector SaliencyMix uses: (B, H, W)."""
    gray = images.mean(1)
    spectrum = torch.fft.fft2(gray)
    log_amplitude = torch.log(spectrum.abs() + 1e-8)
    residual = log_amplitude - F.avg_pool2d(log_amplitude.unsqueeze(1), 3, 1, 1, count_include_pad=False).squeeze(1)
    saliency = torch.fft.ifft2(torch.exp(torch.complex(residual, torch.angle(spectrum)))).abs() ** 2
    return F.avg_pool2d(saliency.unsqueeze(1), 3, 1, 1, count_include_pad=False).squeeze(1)


def saliencymix(images, targets, generator, params, model) -> Augmented:
    """SaliencyMix (Uddin et al.): the partner's box of area (1 − λ) around its saliency peak, pasted at the same
    place; labels by the pasted area."""
    n, _, h, w = images.shape
    perm = _partner(images, generator)
    peaks = spectral_saliency(images[perm]).flatten(1).argmax(1).cpu()
    centres = torch.stack([peaks // w, peaks % w], dim=1).float() + 0.5
    area = 1 - beta(generator, params.mix_alpha).expand(n)
    return _composite(images, targets, perm, box_masks(n, (h, w), area, generator, centres=centres))


def _cams(model: torch.nn.Module | None, images: torch.Tensor, targets: torch.Tensor, method: str) -> torch.Tensor:
    if model is None:
        raise ValueError(f"{method} needs the live model's CAMs")
    from trainer.cams import compute_cams

    return compute_cams(model, normalize(images), targets.argmax(1).cpu(), "gradcam").to(images.device)


def snapmix(images, targets, generator, params, model) -> Augmented:
    """SnapMix (Huang et al.): box B₂ of the partner, resized into box B₁ of the image; labels from the semantic
    percentage maps S = CAM / ΣCAM: p₁ = 1 − Σ(B₁ ⊙ S₁), p₂ = Σ(B₂ ⊙ S₂) (they need not sum to one)."""
    n, _, h, w = images.shape
    perm = _partner(images, generator)
    cams = _cams(model, images, targets, "snapmix")
    semantic = cams / cams.flatten(1).sum(1).clamp_min(1e-8).view(n, 1, 1)
    box1 = box_masks(n, (h, w), 1 - beta(generator, params.mix_alpha, n), generator).to(images.device)
    box2 = box_masks(n, (h, w), 1 - beta(generator, params.mix_alpha, n), generator).to(images.device)

    def moved(x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(x)
        for i in range(n):
            src, dst = box2[i, 0].nonzero(), box1[i, 0].nonzero()
            if len(src) and len(dst):
                (t2, l2), (b2, r2) = src.min(0).values, src.max(0).values + 1
                (t1, l1), (b1, r1) = dst.min(0).values, dst.max(0).values + 1
                patch = x[perm[i], :, t2:b2, l2:r2].unsqueeze(0)
                out[i, :, t1:b1, l1:r1] = F.interpolate(
                    patch, size=(int(b1 - t1), int(r1 - l1)), mode="bilinear", align_corners=False
                )[0]
        return out

    keep_box1 = box1 * (box2.flatten(1).sum(1) > 0).view(n, 1, 1, 1)  # no partner box: nothing pasted
    p1 = 1 - (keep_box1[:, 0] * semantic).flatten(1).sum(1)
    p2 = (box2[:, 0] * semantic[perm]).flatten(1).sum(1) * (keep_box1.flatten(1).sum(1) > 0)
    out = images * (1 - keep_box1) + moved(images) * keep_box1
    mixed = targets * p1.view(-1, 1) + targets[perm] * p2.view(-1, 1)
    return Augmented(out, mixed, lambda maps: maps * (1 - keep_box1) + moved(maps) * keep_box1)


def attentive_cutmix(images, targets, generator, params, model) -> Augmented:
    """Attentive CutMix (Walawalkar et al.): the `attentive_cells` most attended cells of a `attentive_grid`² grid
    of the partner's CAM, pasted at the same places; labels by the pasted area."""
    n, _, h, w = images.shape
    perm = _partner(images, generator)
    g, k = params.attentive_grid, params.attentive_cells
    cells = F.adaptive_avg_pool2d(_cams(model, images, targets, "attentive_cutmix")[perm].unsqueeze(1), g)
    top = cells.flatten(1).topk(k, dim=1).indices
    grid = torch.zeros(n, g * g, device=images.device).scatter_(1, top, 1.0).view(n, 1, g, g)
    return _composite(images, targets, perm, F.interpolate(grid, size=(h, w), mode="nearest"))
