"""The proxy step: wrong training images -> CAMs -> proxy images that join the training set only.

With `I` the un-normalised image in [0, 1], `M` its CAM in [0, 1] and `t` the threshold:
`blended` (Algorithm 1 of the Proxy Attention thesis): where(M >= t, (1 - w) * M * I, I); `black`:
where(M >= t, 0, I); `mean|max|min|halfmax`: where(M >= t, c, I) with c the per-image mean / max / min / max/2 of M.

A step has two parts. Its *inputs* depend only on the model and the CAM method: which training images the model gets
wrong (eval mode, no augmentation) and the CAM of every one of them, kept as 8-bit maps (M = round(255·M)/255, the
resolution of any CAM picture). Grid points that share a training prefix share these inputs (`ProxyInputs`, saved by
a stem). Each point then draws its own seeded subset, `ceil(wrong_subset × N)` of the wrong images, and applies its
own threshold, weight and rule. A proxy the map left identical to its source (an all-zero Grad-CAM, a threshold above
every value) is a plain copy of a hard example: `unchanged_proxies: drop` (the default) leaves it out of training, so
that "proxy attention" means masked images and the `duplicate` control measures copies; `keep` does what the thesis
code did. Every step records what it made: proxies, unchanged ones, all-zero and constant maps, and the mean share
of pixels at or above the threshold (`hot_fraction`) and actually changed (`changed_fraction`), both over the
proxies that train. A step's proxies are one `proxies/step-K.npz` (uncompressed, read back by row).

Nothing here holds all of a step's images at once: at 224 px the wrong images of a CIFAR-100 split can number tens
of thousands (150 KB each, 600 KB as floats). CAMs are spooled to a file as they are computed and proxies are made
`PROXY_CHUNK` images at a time straight into their file, so a step's memory does not grow with the dataset.
"""

from __future__ import annotations

import io
import math
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch import nn

from trainer.cams import compute_cams
from trainer.config import MASKLESS_METHODS, TrialConfig
from trainer.data.batching import Part, batches, model_input, proxy_part
from trainer.data.imageset import InMemory
from trainer.data.rows import RowFile, SpooledRows, npz_rows, write_npz
from trainer.errors import DataError
from trainer.files import atomic_write_bytes

PROXY_CHUNK = 64  # images per piece of a proxy step: bounds its memory (64 × 600 KB floats at 224 px)
GALLERY_ROWS = 8


@dataclass
class ProxyInputs:
    """What a proxy step reads from the model: the wrong training positions, the model's predictions there, and
    one 8-bit CAM per wrong image for `cam_target`, read by row (None for the `duplicate` control, which needs no
    map): spooled while they are computed, or in place in the .npz a stem saved them to."""

    positions: np.ndarray  # (N,) positions in the training split the model gets wrong
    predicted: np.ndarray  # (N,) its predictions there
    maps: SpooledRows | RowFile | InMemory | None  # N rows (S, S) uint8: CAMs of the CAM target class
    seconds: float
    key: str = ""  # the `trainer.prefix.cam_group_key` they were computed for

    def save(self, path: Path) -> None:
        """One uncompressed .npz, written atomically (a stem writes it; its branches read it). Only freshly
        computed inputs (spooled maps) are saved."""
        arrays: dict[str, np.ndarray | SpooledRows] = {
            "positions": self.positions,
            "predicted": self.predicted,
            "seconds": np.asarray(self.seconds, np.float64),
            "key": np.asarray(self.key),
        }
        if self.maps is not None:
            if not isinstance(self.maps, SpooledRows):
                raise TypeError("ProxyInputs.save: maps read from a file are saved already")
            arrays["maps"] = self.maps
        write_npz(path, arrays)

    @classmethod
    def load(cls, path: Path) -> ProxyInputs:
        with np.load(path, allow_pickle=False) as data:
            maps: RowFile | InMemory | None = None
            if "maps" in data:
                maps = npz_rows(path, "maps") or InMemory(data["maps"])  # an older, compressed file: into memory
            return cls(data["positions"], data["predicted"], maps, float(data["seconds"]), str(data["key"]))

    def close(self) -> None:
        """Free the spooled maps (a file read in place needs nothing)."""
        if isinstance(self.maps, SpooledRows):
            self.maps.close()


@dataclass
class ProxyStep:
    """The outcome of one proxy step (its proxies are in the file `make_proxy_images` wrote)."""

    labels: np.ndarray  # (K,) int64, the true labels of the proxies' sources
    source_indices: np.ndarray  # (K,) indices into the dataset's ImageSet
    dropped: np.ndarray  # ImageSet indices of unchanged proxies left out (`unchanged_proxies: drop`)
    stats: dict[str, float | int | None]
    seconds: float
    shown: tuple[np.ndarray, np.ndarray, np.ndarray]  # the first proxies' sources, maps and proxies (`gallery`)


def replace_pixels(
    images: torch.Tensor, cams: torch.Tensor, threshold: float, weight: float, rule: str
) -> torch.Tensor:
    """Apply replacement `rule` to `images` (B, C, H, W) in [0, 1] where `cams` (B, H, W) >= `threshold`."""
    m = cams.unsqueeze(1).to(images.dtype)
    hot = m >= threshold
    if rule == "blended":
        fill = (1 - weight) * m * images
    elif rule == "black":
        fill = torch.zeros_like(images)
    else:
        flat = m.flatten(1)
        per_image = {"mean": flat.mean(1), "max": flat.amax(1), "min": flat.amin(1), "halfmax": flat.amax(1) / 2}[rule]
        fill = per_image.view(-1, 1, 1, 1).expand_as(images)
    return torch.where(hot, fill, images)


@torch.no_grad()
def find_wrong(
    model: nn.Module, train: Part, batch_size: int, device: torch.device, num_workers: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Positions in `train` the model misclassifies (eval mode, no augmentation) and its predictions there."""
    was_training = model.training
    model.eval()
    predictions = [
        model(model_input(images, device)).argmax(1).cpu()
        for images, _ in batches(train, batch_size, None, num_workers)
    ]
    model.train(was_training)
    predicted = torch.cat(predictions).numpy() if predictions else np.zeros(0, np.int64)
    wrong = np.flatnonzero(predicted != train.labels)
    return wrong, predicted[wrong]


def proxy_inputs(
    model: nn.Module,
    train: Part,
    config: TrialConfig,
    step: int,
    device: torch.device,
    batch_size: int,
    spool_dir: Path,
    key: str = "",
) -> ProxyInputs:
    """The wrong training images and the CAM of every one of them (`config`'s method, target and CAM batch),
    the CAMs spooled to an anonymous file in `spool_dir` (`ProxyInputs.close` frees it)."""
    start = time.perf_counter()
    positions, predicted = find_wrong(model, train, batch_size, device, config.num_workers)
    maps = None
    if config.cam_method not in MASKLESS_METHODS:
        labels = train.labels[positions]
        targets = torch.from_numpy((labels if config.cam_target == "true" else predicted).astype(np.int64))
        maps = SpooledRows(spool_dir, (config.image_size, config.image_size))
        with _seeded_numpy(config.seed, step):  # randomcam draws from numpy's global generator
            for lo in range(0, len(positions), config.cam_batch_size):
                images = train.take(positions[lo : lo + config.cam_batch_size])
                cams = compute_cams(
                    model,
                    model_input(images, device),
                    targets[lo : lo + config.cam_batch_size],
                    config.cam_method,
                    config.cam_batch_size,
                )
                maps.append(np.round(cams.numpy() * 255).astype(np.uint8))
    return ProxyInputs(positions, predicted, maps, time.perf_counter() - start, key)


@contextmanager
def _seeded_numpy(seed: int, step: int) -> Iterator[None]:
    state = np.random.get_state()
    np.random.seed(np.random.SeedSequence([seed, step]).generate_state(1)[0])
    try:
        yield
    finally:
        np.random.set_state(state)


def make_proxy_images(
    model: nn.Module,
    train: Part,
    config: TrialConfig,
    step: int,
    device: torch.device,
    batch_size: int,
    path: Path,
    inputs: ProxyInputs | None = None,
    keep_maps: bool = False,
) -> ProxyStep:
    """Proxy step number `step` (0-based) on the original training images `train`, from `inputs` when a stem
    computed them, else computing them now; its proxies are written to `path` (`load_proxies` reads them). With
    `keep_maps`, the maps of the proxies that train go into the file too: what its matched controls read
    (`make_matched_proxies`)."""
    start = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    own_inputs = inputs is None
    if inputs is None:
        inputs = proxy_inputs(model, train, config, step, device, batch_size, path.parent)
    duplicate = config.cam_method in MASKLESS_METHODS
    if not duplicate and inputs.maps is None:
        raise ValueError(f"proxy inputs without maps cannot make {config.cam_method} proxies")
    rng = np.random.default_rng([config.seed, step])
    count = math.ceil(config.wrong_subset * len(inputs.positions))
    chosen = np.sort(rng.choice(len(inputs.positions), size=count, replace=False)) if count else np.zeros(0, int)
    size = config.image_size
    proxies = SpooledRows(path.parent, (3, size, size))
    kept_maps = SpooledRows(path.parent, (size, size)) if keep_maps and not duplicate else None
    kept: list[np.ndarray] = []  # per piece, which chosen images become proxies
    tally = _Tally()
    nothing = np.zeros((0, 3, size, size), np.uint8)
    shown: tuple[np.ndarray, ...] = (nothing, np.zeros((0, size, size), np.uint8), nothing)
    try:
        for lo in range(0, count, PROXY_CHUNK):
            piece = chosen[lo : lo + PROXY_CHUNK]
            sources = train.take(inputs.positions[piece])
            maps = np.zeros((len(piece), size, size), np.uint8) if inputs.maps is None else inputs.maps.take(piece)
            made, keep = _proxy_piece(sources, maps, config, tally)
            kept.append(keep)
            proxies.append(made.numpy()[keep])
            if kept_maps is not None:
                kept_maps.append(maps[keep])
            if len(shown[0]) < GALLERY_ROWS:
                parts = (sources.numpy()[keep], maps[keep], made.numpy()[keep])
                shown = tuple(np.concatenate([a, b])[:GALLERY_ROWS] for a, b in zip(shown, parts, strict=True))
        keep_all = np.concatenate(kept) if kept else np.zeros(0, bool)
        positions = inputs.positions[chosen]
        source_indices = train.indices[positions]
        labels = train.labels[positions][keep_all]
        arrays: dict[str, np.ndarray | SpooledRows] = {
            "images": proxies,
            "labels": labels,
            "source_indices": source_indices[keep_all],
            "dropped_source_indices": source_indices[~keep_all],
        }
        write_npz(path, {**arrays, **({"maps": kept_maps} if kept_maps is not None else {})})
    finally:
        proxies.close()
        if kept_maps is not None:
            kept_maps.close()
        if own_inputs:
            inputs.close()
    return ProxyStep(
        labels=labels,
        source_indices=source_indices[keep_all],
        dropped=source_indices[~keep_all],
        stats={**tally.stats(keep_all, duplicate), "wrong_images": len(inputs.positions), "chosen": int(count)},
        seconds=inputs.seconds + time.perf_counter() - start,
        shown=(shown[0], shown[1], shown[2]),
    )


def make_matched_proxies(train: Part, config: TrialConfig, step: int, path: Path, reference: Path) -> ProxyStep:
    """A matched control's proxy step `step`: the very images its configuration trained as proxies at that step,
    read from the configuration's own `proxies/step-K.npz` (`reference`, written with `keep_maps`), so that the
    control is matched at every step, not only where the two models are still identical. `matched_duplicate`
    trains them unmasked; `random_location` with the configuration's own maps moved elsewhere (`relocate`). The
    configuration's dropped images stay dropped."""
    start = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with np.load(reference, allow_pickle=False) as data:
            sources, dropped, has_maps = data["source_indices"], data["dropped_source_indices"], "maps" in data.files
        maps = npz_rows(reference, "maps") if has_maps else None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise DataError(f"{reference}: not a readable proxy step of the configuration ({exc})") from None
    if config.control == "random_location" and maps is None:
        raise ValueError(f"{reference} holds no maps: the configuration ran without keep_maps")
    position = {int(index): i for i, index in enumerate(train.indices)}
    positions = np.asarray([position[int(i)] for i in sources], dtype=np.int64)
    size = config.image_size
    proxies = SpooledRows(path.parent, (3, size, size))
    tally = _Tally()
    location = np.random.default_rng([config.seed, step, 1])
    try:
        for lo in range(0, len(positions), PROXY_CHUNK):
            piece = np.arange(lo, min(lo + PROXY_CHUNK, len(positions)))
            originals = train.take(positions[piece])
            unit = None
            if config.control == "random_location" and maps is not None:
                unit = torch.from_numpy(relocate(maps.take(piece), location)).float() / 255
                made = _replace(originals, unit, config)
                tally.hot += float((unit >= config.threshold).float().flatten(1).mean(1).double().sum())
            else:
                made = originals.clone()
            tally.unchanged += int((made == originals).flatten(1).all(1).sum())
            tally.changed += float((made != originals).any(1).float().flatten(1).mean(1).double().sum())
            proxies.append(made.numpy())
        labels = train.labels[positions]
        write_npz(
            path,
            {"images": proxies, "labels": labels, "source_indices": sources, "dropped_source_indices": dropped},
        )
    finally:
        proxies.close()
    trained = np.ones(len(positions), bool)
    stats = {
        **tally.stats(trained, config.control == "matched_duplicate"),
        "zero_maps": None,  # the configuration's maps, counted in its own record
        "constant_maps": None,
        "wrong_images": None,  # the configuration's, not this model's
        "chosen": len(sources) + len(dropped),
    }
    nothing = np.zeros((0, 3, size, size), np.uint8)
    return ProxyStep(labels, sources, dropped, stats, time.perf_counter() - start, (nothing, nothing[:, 0], nothing))


@dataclass
class _Tally:
    """What a proxy step counts over its pieces: unchanged proxies, all-zero and constant maps, and, summed over
    the proxies that train, their share of pixels at or above the threshold (`hot`) and of pixels changed."""

    unchanged: int = 0
    zero_maps: int = 0
    constant_maps: int = 0
    hot: float = 0.0
    changed: float = 0.0

    def stats(self, trained: np.ndarray, duplicate: bool) -> dict[str, float | int | None]:
        """A step's record of what it made (`trained`: which chosen images became proxies that train)."""
        return {
            "proxy_images": int(trained.sum()),
            "unchanged": self.unchanged,
            "zero_maps": None if duplicate else self.zero_maps,
            "constant_maps": None if duplicate else self.constant_maps,
            "hot_fraction": _share(self.hot, trained, duplicate),
            "changed_fraction": _share(self.changed, trained, duplicate),
        }


def _proxy_piece(
    sources: torch.Tensor, maps: np.ndarray, config: TrialConfig, tally: _Tally
) -> tuple[torch.Tensor, np.ndarray]:
    """Algorithm 1 on a piece of the chosen images: their proxies and which of them train; counted into `tally`."""
    duplicate = config.cam_method in MASKLESS_METHODS
    if duplicate:
        made = sources.clone()
    else:
        unit = torch.from_numpy(maps).float() / 255
        made = _replace(sources, unit, config)
        flat = maps.reshape(len(maps), -1)
        tally.zero_maps += int((flat.max(1) == 0).sum())
        tally.constant_maps += int((flat.max(1) == flat.min(1)).sum())
    same = (made == sources).flatten(1).all(1).numpy()
    tally.unchanged += int(same.sum())
    keep = ~same if config.unchanged_proxies == "drop" and not duplicate else np.ones(len(maps), bool)
    if not duplicate:
        tally.hot += float((unit >= config.threshold)[keep].float().flatten(1).mean(1).double().sum())
        tally.changed += float((made != sources).any(1)[keep].float().flatten(1).mean(1).double().sum())
    return made, keep


def _replace(sources: torch.Tensor, unit_maps: torch.Tensor, config: TrialConfig) -> torch.Tensor:
    """uint8 proxies of uint8 `sources` under maps in [0, 1] (`replace_pixels` with the config's rule)."""
    mixed = replace_pixels(
        sources.float() / 255, unit_maps, config.threshold, config.multiply_weight, config.pixel_replacement
    )
    return (mixed * 255).round().clamp(0, 255).to(torch.uint8)


def _share(total: float, keep: np.ndarray, duplicate: bool) -> float | None:
    """The mean share of pixels over the proxies that train (0 for the unmasked duplicate; None without any)."""
    trained = int(keep.sum())
    if not trained:
        return None
    return 0.0 if duplicate else total / trained


def relocate(maps: np.ndarray, rng: np.random.Generator, cells: int = 7) -> np.ndarray:
    """The random-location control's maps: each (S, S) uint8 map's own values, rearranged so that their order
    follows a smooth random field (Gaussian noise on a `cells` × `cells` grid, resized bilinearly): the same
    values, so exactly as many pixels at or above any threshold and the same per-image mean, max and min, in
    random, blob-shaped places."""
    out = np.empty_like(maps)
    size = maps.shape[-1]
    for k, cam in enumerate(maps):
        field = cv2.resize(rng.standard_normal((cells, cells)).astype(np.float32), (size, size))
        field += rng.uniform(0, 1e-4, (size, size)).astype(np.float32)  # ties broken at random
        flat = np.empty(cam.size, np.uint8)
        flat[np.argsort(field, axis=None, kind="stable")] = np.sort(cam, axis=None)
        out[k] = flat.reshape(cam.shape)
    return out


def load_proxies(path: Path, image_size: int) -> Part:
    """A `proxies/step-K.npz` as training data: images read by row from the file (an older compressed file is
    read into memory)."""
    with np.load(path, allow_pickle=False) as data:
        labels = data["labels"]
        rows = npz_rows(path, "images")
        pixels = rows if rows is not None else data["images"]
    return proxy_part(pixels, labels, image_size)


def gallery(originals: np.ndarray, maps: np.ndarray, proxies: np.ndarray, rows: int = GALLERY_ROWS) -> np.ndarray:
    """An (H, W, 3) uint8 picture: one row per example of image | CAM (jet colours) | proxy image."""
    tile = max(originals.shape[-1], 96)

    def up(img: np.ndarray) -> np.ndarray:
        return cv2.resize(np.ascontiguousarray(img), (tile, tile), interpolation=cv2.INTER_NEAREST)

    lines = []
    for k in range(min(rows, len(originals))):
        heat = cv2.applyColorMap(maps[k], cv2.COLORMAP_JET)[..., ::-1]
        parts = [up(originals[k].transpose(1, 2, 0)), up(heat), up(proxies[k].transpose(1, 2, 0))]
        lines.append(np.concatenate(parts, axis=1))
    if not lines:
        return np.zeros((tile, 3 * tile, 3), dtype=np.uint8)
    return np.concatenate(lines, axis=0)


def save_gallery(picture: np.ndarray, path: Path) -> None:
    """Write a gallery picture as PNG, atomically."""
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
