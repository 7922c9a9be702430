"""One proxy-attention training trial, top to bottom: `run_trial(config, workdir)`.

The trial folder (DESIGN §5) gets `config.json`, `split.json`, `metrics.jsonl` (one line per epoch),
`checkpoint.pt` (each epoch; a re-run resumes from it), `proxies/step-K.npz`, `tensorboard/`, `cams.png`,
`trial.log`, and last, atomically, `result.json`. Every epoch's randomness derives from (seed, epoch), so a resumed
trial computes exactly what an uninterrupted one would.
"""

from __future__ import annotations

import errno
import importlib.metadata
import io
import json
import logging
import platform
import resource
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from trainer.augment import augment_batch
from trainer.config import TrialConfig
from trainer.data import DataError, IndexedImages, load_images, make_split, model_input, normalize, to_unit
from trainer.files import atomic_write_bytes, atomic_write_json, write_jsonl
from trainer.models import ModelError, create_model
from trainer.proxy import gallery, load_proxies, make_proxy_images, save_gallery, save_proxies
from trainer.saliency_loss import saliency_terms
from trainer.schedule import learning_rate

log = logging.getLogger("trainer")
CPU_DEFAULT_BATCH_SIZE = 32
CAM_AUGMENTATIONS = ("snapmix", "attentive_cutmix")  # they read the live model's CAMs
VERSIONED = ("torch", "torchvision", "timm", "grad-cam", "numpy", "scikit-learn")


class TrialError(RuntimeError):
    """The trial cannot go on (its loss became NaN, its folder holds another trial…); the message is the reason."""


@dataclass
class TrialResult:
    """What a finished trial reports: its metrics (numbers, or None where not measured) and its folder."""

    metrics: dict[str, float | int | None]
    workdir: Path


def run_trial(config: TrialConfig, workdir: str | Path, device: str | None = None) -> TrialResult:
    """Train `config` in `workdir` (resuming from its checkpoint if there is one) and return its metrics.

    A folder that already holds this config's `result.json` returns it without training again."""
    workdir = Path(workdir)
    created = not workdir.exists()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        with _trial_log(workdir):
            done = _finished_result(config, workdir)
            if done is not None:
                log.info("result.json already present: nothing to do")
                return TrialResult(done["metrics"], workdir)
            return _train(config, workdir, select_device(device))
    except (DataError, ModelError):
        # Bad input found before the first epoch: leave nothing half-written behind.
        if created and not (workdir / "checkpoint.pt").exists():
            shutil.rmtree(workdir, ignore_errors=True)
        raise
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT) and "disk full" not in str(exc):  # say what filled up
            free = shutil.disk_usage(workdir).free
            raise OSError(exc.errno, f"disk full under {workdir} ({free} bytes free): {exc}") from None
        raise


def select_device(requested: str | None = None) -> torch.device:
    """`requested` if given, else the first CUDA device when there is one (Ray sets CUDA_VISIBLE_DEVICES), else CPU."""
    if requested and requested != "auto":
        return torch.device(requested)
    return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")


def _train(config: TrialConfig, workdir: Path, device: torch.device) -> TrialResult:
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    log.info("trial %s on %s: %s", config.digest(), device, json.dumps(config.to_dict(), sort_keys=True))
    config_file = workdir / "config.json"
    if config_file.exists() and TrialConfig.from_json_file(config_file).digest() != config.digest():
        raise TrialError(f"{workdir} already holds a different trial's config.json")
    atomic_write_json(config_file, config.to_dict())

    # Data: one split per trial, written once, never redone.
    images = load_images(config.dataset, config.image_size)
    split = make_split(images, config.split, config.seed)
    split_file = workdir / "split.json"
    if split_file.exists() and json.loads(split_file.read_text())["hash"] != split["hash"]:
        raise TrialError(f"the dataset changed since this trial started (split hash differs from {split_file})")
    atomic_write_json(split_file, split)
    train_set, val_set, test_set = (IndexedImages(images, np.asarray(split[k])) for k in ("train", "val", "test"))
    log.info("data: %d train / %d val / %d test images, %d classes, %d unreadable files skipped",
             len(train_set), len(val_set), len(test_set), len(images.classes), images.skipped)

    # Model, optimiser, mixed precision (CUDA only: plain fp32 on the CPU).
    model = create_model(config.architecture, len(images.classes), config.image_size, config.pretrained,
                         config.pretrained_path).to(device)
    batch_size = _batch_size(config, model, len(images.classes), device, len(train_set))
    optimizer = _optimizer(config, model)
    amp = config.mixed_precision and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    state = _resume(workdir, config, model, optimizer, scaler)
    proxies: dict[str, Dataset] = {name: load_proxies(workdir / "proxies" / name) for name in state["proxy_files"]}
    if torch.cuda.is_available() and device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    from torch.utils.tensorboard import SummaryWriter  # slow import; only trials need it

    tensorboard = SummaryWriter(str(workdir / "tensorboard"))
    pending = {"proxy_images": 0, "proxy_seconds": 0.0, "wrong_images": None}
    try:
        for kind, index in _plan(config):
            if kind == "proxy":
                if index < state["proxy_steps_done"]:
                    continue
                step = make_proxy_images(model, train_set, config, index, device, batch_size)
                name = f"step-{index}.npz"
                save_proxies(step, workdir / "proxies" / name)
                if config.clear_every_step:
                    proxies.clear()
                proxies[name] = step.as_dataset()
                picture = gallery(torch.stack([images.image(int(i)) for i in step.source_indices[:8]])
                                  if len(step.source_indices) else step.pixels, step.cams, step.pixels)
                save_gallery(picture, workdir / "cams.png")
                tensorboard.add_image("proxy/gallery", picture, index, dataformats="HWC")
                state["proxy_steps_done"] = index + 1
                state["proxy_files"] = list(proxies)
                pending = {"proxy_images": len(step.labels), "proxy_seconds": step.seconds, "wrong_images": step.wrong}
                log.info("proxy step %d: %d wrong training images, %d proxies, %.2f s, %d proxies in training",
                         index, step.wrong, len(step.labels), step.seconds, sum(len(d) for d in proxies.values()))
                continue
            if index < state["epochs_done"]:
                continue

            # One epoch of training on the originals plus the active proxies.
            train_data = ConcatDataset([train_set, *proxies.values()])
            start = time.perf_counter()
            train_loss, train_accuracy, lr = _train_epoch(config, model, optimizer, scaler, train_data,
                                                          len(images.classes), batch_size, index, device, amp)
            seconds = time.perf_counter() - start
            val_loss, val_accuracy, _, _ = evaluate(model, val_set, batch_size, device, amp, config.num_workers)
            row = {"epoch": index + 1, "train_loss": train_loss, "train_accuracy": train_accuracy,
                   "val_loss": val_loss, "val_accuracy": val_accuracy, "lr": lr, "seconds": seconds,
                   "train_images": len(train_data), **pending}
            pending = {"proxy_images": 0, "proxy_seconds": 0.0, "wrong_images": None}
            state["history"].append(row)
            state["epochs_done"] = index + 1
            write_jsonl(workdir / "metrics.jsonl", state["history"])
            for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "proxy_images"):
                tensorboard.add_scalar(key, row[key], index + 1)
            _save_checkpoint(workdir, config, model, optimizer, scaler, state)
            log.info("epoch %d/%d: train loss %.4f acc %.4f, val loss %.4f acc %.4f, lr %.2e, %.2f s",
                     index + 1, config.epochs, train_loss, train_accuracy, val_loss, val_accuracy, lr, seconds)
    finally:
        tensorboard.close()

    # Final evaluation on the test set, which nothing above has touched.
    test_loss, test_accuracy, predicted, labels = evaluate(model, test_set, batch_size, device, amp,
                                                           config.num_workers)
    precision, recall, f1, _ = precision_recall_fscore_support(labels, predicted, average="macro", zero_division=0)
    history = state["history"]
    best = max(history, key=lambda r: r["val_accuracy"])
    target = config.target_val_accuracy
    metrics = {
        "val_accuracy": best["val_accuracy"],
        "best_epoch": best["epoch"],
        "val_accuracy_final": history[-1]["val_accuracy"],
        "test_accuracy": test_accuracy,
        "test_loss": test_loss,
        "test_precision_macro": float(precision),
        "test_recall_macro": float(recall),
        "test_f1_macro": float(f1),
        "train_seconds": sum(r["seconds"] for r in history),
        "proxy_seconds": sum(r["proxy_seconds"] for r in history),
        "proxy_images": sum(r["proxy_images"] for r in history),
        "epochs": len(history),
        "epochs_to_target": next((r["epoch"] for r in history if r["val_accuracy"] >= target), None)
        if target is not None else None,
        "train_images": len(train_set),
        "skipped_files": images.skipped,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mem_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        "batch_size": batch_size,
        "seed": config.seed,
        "trial_seconds": time.perf_counter() - started,  # this run's wall time: data, model, training, tests
    }
    result = {
        "metrics": metrics,
        "config_digest": config.digest(),
        "confusion_matrix": confusion_matrix(labels, predicted, labels=range(len(images.classes))).tolist(),
        "classes": images.classes,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "versions": {"python": platform.python_version(),
                     **{name: importlib.metadata.version(name) for name in VERSIONED}},
        "split_hash": split["hash"],
    }
    atomic_write_json(workdir / "result.json", result)
    log.info("done: val_accuracy %.4f, test_accuracy %.4f", metrics["val_accuracy"], test_accuracy)
    return TrialResult(metrics, workdir)


def _plan(config: TrialConfig) -> Iterator[tuple[str, int]]:
    """The schedule as events: ("epoch", 0-based epoch) and ("proxy", 0-based proxy step)."""
    epoch = step = 0
    for token in config.schedule:
        if token == "p":
            yield "proxy", step
            step += 1
        else:
            for _ in range(token):
                yield "epoch", epoch
                epoch += 1


def _train_epoch(config: TrialConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scaler: torch.amp.GradScaler, data: Dataset, num_classes: int, batch_size: int, epoch: int,
                 device: torch.device, amp: bool) -> tuple[float, float, float]:
    """Train one epoch; return mean loss, accuracy (against the hard labels) and the last learning rate.
    Raises TrialError on a NaN/inf loss."""
    seed = config.seed * 100_003 + epoch
    torch.manual_seed(seed)
    shuffle, augment = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    # A last batch of one image breaks batch norm in training mode: drop it then.
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, generator=shuffle,
                        num_workers=config.num_workers, drop_last=len(data) % batch_size == 1,
                        pin_memory=device.type == "cuda")
    model.train()
    saliency_loss = config.saliency_loss_weight > 0 or config.invariance_loss_weight > 0
    total_loss, correct, seen, lr = 0.0, 0, 0, config.optimizer.lr
    for i, (x, y) in enumerate(loader):
        lr = learning_rate(config, (epoch + i / len(loader)) / config.epochs, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        y = y.to(device, non_blocking=True)
        originals = to_unit(x, device)
        batch = augment_batch(originals, y, num_classes, config.augmentation, augment, config.augment,
                              model if config.augmentation in CAM_AUGMENTATIONS else None)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            if saliency_loss:
                logits, l_sal, l_inv = saliency_terms(model, originals, batch, y)
            else:
                logits, l_sal, l_inv = model(normalize(batch.images)), 0.0, 0.0
            l_class = F.cross_entropy(logits.float(), batch.targets, label_smoothing=config.label_smoothing)
            loss = (config.class_loss_weight * l_class + config.saliency_loss_weight * l_sal
                    + config.invariance_loss_weight * l_inv)
        if not torch.isfinite(loss):
            raise TrialError(f"loss became {loss.item()} at epoch {epoch + 1}, batch {i + 1} "
                             f"(lr {lr:.3g}): training diverged")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        total_loss += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
    return total_loss / max(seen, 1), correct / max(seen, 1), lr


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, batch_size: int, device: torch.device, amp: bool = False,
             num_workers: int = 0) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Mean cross-entropy, accuracy, predictions and labels of `model` on `data` (eval mode, no augmentation)."""
    was_training = model.training
    model.eval()
    losses, predicted, labels = [], [], []
    for x, y in DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers):
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            logits = model(model_input(x, device)).float()
        losses.append(F.cross_entropy(logits, y.to(device), reduction="sum").item())
        predicted.append(logits.argmax(1).cpu())
        labels.append(y)
    model.train(was_training)
    predicted, labels = torch.cat(predicted).numpy(), torch.cat(labels).numpy()
    return sum(losses) / len(labels), float((predicted == labels).mean()), predicted, labels


def _optimizer(config: TrialConfig, model: nn.Module) -> torch.optim.Optimizer:
    opt = config.optimizer
    if opt.name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay)
    cls = torch.optim.AdamW if opt.name == "adamw" else torch.optim.Adam
    return cls(model.parameters(), lr=opt.lr, weight_decay=opt.weight_decay)


def _batch_size(config: TrialConfig, model: nn.Module, num_classes: int, device: torch.device,
                train_size: int) -> int:
    if config.batch_size != "auto":
        return config.batch_size
    if device.type != "cuda":
        log.warning("batch_size: auto measures GPU memory and needs CUDA; using %d on %s",
                    CPU_DEFAULT_BATCH_SIZE, device)
        return CPU_DEFAULT_BATCH_SIZE
    return find_batch_size(model, config.image_size, num_classes, device, train_size)


def find_batch_size(model: nn.Module, image_size: int, num_classes: int, device: torch.device,
                    dataset_size: int, max_batch_size: int = 1024) -> int:
    """Thesis Algorithm 3: double the batch size until a forward+backward pass runs out of memory, and keep the
    last size that fit. Unlike the thesis code it never steps the optimiser, so the weights are left unchanged."""
    fits, size = 1, 2
    limit = min(max_batch_size, dataset_size)
    while size <= limit:
        try:
            x = torch.randn(size, 3, image_size, image_size, device=device)
            F.cross_entropy(model(x), torch.randint(num_classes, (size,), device=device)).backward()
            fits, size = size, size * 2
        except torch.cuda.OutOfMemoryError:
            break
        finally:
            model.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
    log.info("batch size finder: %d", fits)
    return fits


def _save_checkpoint(workdir: Path, config: TrialConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
                     scaler: torch.amp.GradScaler, state: dict) -> None:
    buffer = io.BytesIO()
    torch.save({"config_digest": config.digest(), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(), "state": state}, buffer)
    atomic_write_bytes(workdir / "checkpoint.pt", buffer.getvalue())


def _resume(workdir: Path, config: TrialConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
            scaler: torch.amp.GradScaler) -> dict:
    """The training state: fresh, or restored from `checkpoint.pt` (a corrupt or foreign one is ignored, loudly)."""
    fresh = {"epochs_done": 0, "proxy_steps_done": 0, "proxy_files": [], "history": []}
    path = workdir / "checkpoint.pt"
    if not path.exists():
        return fresh
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved["config_digest"] != config.digest():
            log.warning("checkpoint.pt belongs to another config: starting from scratch")
            return fresh
        missing = [f for f in saved["state"]["proxy_files"] if not (workdir / "proxies" / f).exists()]
        if missing:
            raise FileNotFoundError(f"proxies/{missing[0]}")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scaler.load_state_dict(saved["scaler"])
    except Exception as exc:  # a truncated or corrupt file can fail in many ways; all mean "start over"
        log.warning("checkpoint.pt unusable (%s): starting from scratch", exc)
        return fresh
    state = saved["state"]
    log.info("resuming after epoch %d (%d proxy steps done)", state["epochs_done"], state["proxy_steps_done"])
    return state


def _finished_result(config: TrialConfig, workdir: Path) -> dict | None:
    path = workdir / "result.json"
    if not path.exists():
        return None
    try:
        result = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return result if result.get("config_digest") == config.digest() else None


@contextmanager
def _trial_log(workdir: Path) -> Iterator[None]:
    """Send the trainer's log to `workdir/trial.log` while the trial runs."""
    handler = logging.FileHandler(workdir / "trial.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield
    except Exception as exc:
        log.error("trial failed: %s: %s", type(exc).__name__, exc)
        raise
    finally:
        log.removeHandler(handler)
        handler.close()
