"""One proxy-attention training trial, top to bottom: `run_trial(config, workdir)`.

The trial folder (`trainer.folder`) gets `config.json`, `split.json`, `metrics.jsonl`, `checkpoint.pt` (after every
epoch and every proxy step), `proxies/step-K.npz`, `tensorboard/`, `cams.png`, `trial.log`, and last, atomically,
`result.json`. Every epoch's randomness derives from (seed, epoch), so a trial resumed from a checkpoint computes
exactly what an uninterrupted one would, whoever wrote the checkpoint: this trial, an earlier try, or a shared stem
(`trainer.stem.run_stem`) whose prefix key (`trainer.prefix`) equals this trial's at that epoch.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trainer import folder as layout
from trainer.config import CAM_METHOD_NAMES, MASKLESS_METHODS, TrialConfig
from trainer.data.batching import Concat, Part
from trainer.data.identity import Binding
from trainer.data.load import load_images
from trainer.data.split import make_split
from trainer.device import batch_size_for, gpu_peaks, precision, reset_peak_rss, select_device, set_threads
from trainer.epoch import evaluate, make_optimizer, train_epoch
from trainer.errors import DataError, ModelError, TrialError
from trainer.failures import is_disk_full
from trainer.files import atomic_write_bytes, atomic_write_json, file_sha256, load_checkpoint, write_jsonl
from trainer.modelcheck import check
from trainer.models import create_model
from trainer.outcome import TestScores, TrialFacts, result_record, trial_metrics
from trainer.prefix import cam_group_key, prefix_key
from trainer.proxy import (
    ProxyInputs,
    gallery,
    load_proxies,
    make_matched_proxies,
    make_proxy_images,
    save_gallery,
)

log = logging.getLogger("trainer")
# A proxy step's statistics as they appear in the row of the epoch that follows it (metrics.jsonl).
ROW_FIELDS = {
    "proxy_images": "proxy_images",
    "proxy_unchanged": "unchanged",
    "proxy_zero_maps": "zero_maps",
    "proxy_constant_maps": "constant_maps",
    "proxy_hot_fraction": "hot_fraction",
    "proxy_changed_fraction": "changed_fraction",
    "wrong_images": "wrong_images",
    "proxy_seconds": "seconds",
}
# `on_saved(names)` is told which files of the folder were just written (the artifact store uploads them).
Saved = Callable[[list[str]], None]
# `shared(step, key)` gives the file of a stem's proxy-step inputs for that step and CAM group, if one exists.
SharedLookup = Callable[[int, str], Path | None]
MatchedLookup = Callable[[int], Path | None]  # a matched control's: its configuration's proxies of step K


@dataclass
class TrialResult:
    """What a run of a trial reports: its metrics (None when it stopped at `until` before the end), the per-epoch
    history so far, and its folder."""

    metrics: dict[str, float | int | None] | None
    history: list[dict]
    workdir: Path

    @property
    def paused(self) -> bool:
        return self.metrics is None


@dataclass
class TrainingState:
    """Everything besides the weights that a checkpoint must carry to continue exactly."""

    epochs_done: int = 0
    proxy_steps_done: int = 0
    proxy_files: list[str] = field(default_factory=list)  # the proxies in training now
    history: list[dict] = field(default_factory=list)  # one row per epoch (metrics.jsonl)
    steps: list[dict] = field(default_factory=list)  # one row per proxy step (its statistics)
    batch_size: int = 0  # 0 until chosen (a number, or `auto`'s finding)
    pending: dict = field(default_factory=dict)  # the last proxy step's fields, for the next epoch's row
    shared_epochs: int = 0  # leading epochs a shared stem computed
    shared_seconds: float = 0.0  # and the proxy-step time it spent on this path
    peak_gpu_mem_mb: float = 0.0  # over every segment of the trial (a rung's pause, a retry), not its last alone
    peak_gpu_reserved_mb: float = 0.0

    def note_gpu_peaks(self, device: torch.device) -> None:
        allocated, reserved = gpu_peaks(device)
        self.peak_gpu_mem_mb = max(self.peak_gpu_mem_mb, allocated)
        self.peak_gpu_reserved_mb = max(self.peak_gpu_reserved_mb, reserved)


def run_trial(
    config: TrialConfig,
    workdir: str | Path,
    device: str | None = None,
    *,
    until: int | None = None,
    cache_dir: str | Path | None = None,
    shared: SharedLookup | None = None,
    on_saved: Saved | None = None,
    threads: int = 1,
    tag: dict[str, Any] | None = None,
    binding: Binding | None = None,
    matched: MatchedLookup | None = None,
    keep_maps: bool = False,
) -> TrialResult:
    """Train `config` in `workdir` (resuming from its checkpoint if there is one) and return its metrics; with
    `until`, stop after that many epochs (before a proxy step due there) and return without metrics.

    `threads`: torch's CPU threads (`set_threads`). `tag` (e.g. the trial number and grid key of a study) is written
    into `result.json`, so that a reader can tell this trial's result from one copied in from another folder.
    `binding`: what the study bound the dataset to; the trial refuses other data (`data.identity.check_binding`).
    `matched` (a matched control's): the proxies file of its configuration's step K; `keep_maps` (a configuration
    with matched controls): keep the maps of its proxies for them (`trainer.proxy.make_matched_proxies`).

    A folder that already holds this config's `result.json` (and this `tag`) returns it without training again."""
    workdir = Path(workdir)
    created = not workdir.exists()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        with trial_log(workdir):
            threads = set_threads(threads)
            done = layout.TrialFolder(workdir).read_result()
            if done is not None and done.get("config_digest") == config.digest() and done.get("tag") == tag:
                log.info("result.json already present: nothing to do")
                return TrialResult(done["metrics"], [], workdir)
            trial = Trial(
                config, workdir, select_device(device), cache_dir, shared, on_saved or nothing_saved, binding=binding
            )
            trial.matched, trial.keep_maps = matched, keep_maps
            trial.threads, trial.tag = threads, tag
            trial.run(until)
            return trial.finish() if trial.state.epochs_done == config.epochs else trial.pause()
    except (DataError, ModelError):
        # Bad input found before the first epoch: leave nothing half-written behind.
        if created and not (workdir / layout.CHECKPOINT).exists():
            shutil.rmtree(workdir, ignore_errors=True)
        raise
    except OSError as exc:
        if is_disk_full(exc) and "disk full" not in str(exc):  # say what filled up
            free = shutil.disk_usage(workdir).free
            raise OSError(exc.errno, f"disk full under {workdir} ({free} bytes free): {exc}") from None
        raise


class Trial:
    """The live parts of one trial: data, model, optimiser and the training state, restored from a checkpoint."""

    def __init__(
        self,
        config: TrialConfig,
        workdir: Path,
        device: torch.device,
        cache_dir: str | Path | None,
        shared: SharedLookup | None,
        on_saved: Saved,
        owner: str | None = None,
        binding: Binding | None = None,
    ) -> None:
        self.config, self.workdir, self.device, self.shared, self.on_saved = config, workdir, device, shared, on_saved
        self.owner = owner or config.digest()  # who writes this folder's checkpoints: a trial, or a shared stem
        self.threads: int = torch.get_num_threads()
        self.tag: dict[str, Any] | None = None
        self.matched: MatchedLookup | None = None
        self.keep_maps = False
        self.started = time.perf_counter()
        reset_peak_rss()  # this trial's peak, not its worker's
        log.info("trial %s on %s: %s", config.digest(), device, json.dumps(config.to_dict(), sort_keys=True))
        check(
            config.architecture,
            config.cam_method if config.schedule.steps and config.cam_method in CAM_METHOD_NAMES else None,
            config.image_size,
        )
        self._write_config()

        # Data: one split per trial, written once, never redone.
        self.images = load_images(config.dataset, config.image_size, cache_dir, binding)
        self.split = make_split(self.images, config.split, config.seed)
        split_file = workdir / layout.SPLIT
        if split_file.exists() and json.loads(split_file.read_text())["hash"] != self.split["hash"]:
            raise TrialError(f"the dataset changed since this trial started (split hash differs from {split_file})")
        atomic_write_json(split_file, self.split)
        on_saved([layout.CONFIG, layout.SPLIT])
        self.train, self.val, self.test = (
            Part(self.images, np.asarray(self.split[k])) for k in ("train", "val", "test")
        )
        log.info(
            "data: %d train / %d val / %d test images, %d classes, %d files skipped (not images, or unreadable)%s",
            len(self.train),
            len(self.val),
            len(self.test),
            len(self.images.classes),
            self.images.skipped,
            " (decoded-image cache)" if self.images.cached else "",
        )

        self.amp, self.scaler = precision(config, device)
        self.model, self.optimizer = self._fresh_model()
        self.state = self._resume() or TrainingState()
        if not self.state.batch_size:
            self.state.batch_size = batch_size_for(
                config, self.model, len(self.images.classes), device, len(self.train), self.amp
            )
        self.proxies = {name: load_proxies(workdir / name, config.image_size) for name in self.state.proxy_files}
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    @property
    def batch_size(self) -> int:
        return self.state.batch_size

    def run(self, until: int | None) -> None:
        """Every event of the schedule not done yet, stopping once `until` epochs are done."""
        from torch.utils.tensorboard import SummaryWriter  # slow import; only trials need it

        self.tensorboard = SummaryWriter(str(self.workdir / layout.TENSORBOARD))
        try:
            for kind, index in self.config.schedule.events():
                if until is not None and self.state.epochs_done >= until:
                    break
                if kind == "proxy" and index >= self.state.proxy_steps_done:
                    self.proxy_step(index)
                elif kind == "epoch" and index >= self.state.epochs_done:
                    self.epoch(index)
        finally:
            self.tensorboard.close()

    def proxy_step(self, index: int) -> None:
        """Make the proxies of step `index` from the current model and put them into training."""
        config, state = self.config, self.state
        boundary = config.schedule.boundaries[index]
        name = layout.TrialFolder(self.workdir).proxy_name(index)
        path = self.workdir / name
        inputs = None
        if config.control != "none":  # matched at every step: its configuration's own proxies of this step
            reference = self.matched(index) if self.matched is not None else None
            if reference is None:
                raise TrialError(f"a {config.control} control needs its configuration's proxy step {index}")
            step = make_matched_proxies(self.train, config, index, path, reference)
        else:
            inputs = self._shared_inputs(index, boundary)
            step = make_proxy_images(
                self.model, self.train, config, index, self.device, self.batch_size, path, inputs, self.keep_maps
            )
        if config.clear_every_step:
            self.proxies.clear()
        self.proxies[name] = load_proxies(path, config.image_size)
        picture = gallery(*step.shown)
        save_gallery(picture, self.workdir / layout.GALLERY)
        self.tensorboard.add_image("proxy/gallery", picture, index, dataformats="HWC")
        stats: dict[str, Any] = {**step.stats, "step": index, "epoch": boundary, "seconds": step.seconds}
        if (
            self.keep_maps
        ):  # its matched controls check that they read this very file (`search.run.worker.matched_step`)
            stats["file_sha256"] = file_sha256(path)
        state.steps.append(stats)
        state.proxy_steps_done, state.proxy_files = index + 1, list(self.proxies)
        state.pending = {row: stats[name] for row, name in ROW_FIELDS.items()}
        if inputs is not None:
            state.shared_seconds += inputs.seconds
        log.info(
            "proxy step %d: %s wrong training images, %d chosen, %d proxies (%d unchanged, %s all-zero maps, "
            "%.1f%% of their pixels at or above the threshold, %.1f%% changed), %.2f s, %d proxies in training",
            index,
            stats["wrong_images"],
            stats["chosen"],
            stats["proxy_images"],
            stats["unchanged"],
            stats["zero_maps"],
            100 * (stats["hot_fraction"] or 0),
            100 * (stats["changed_fraction"] or 0),
            step.seconds,
            sum(len(p) for p in self.proxies.values()),
        )
        chosen, unchanged = int(stats["chosen"] or 0), int(stats["unchanged"] or 0)
        if chosen and unchanged > chosen / 2 and config.cam_method not in MASKLESS_METHODS:  # copies: its point
            log.warning(
                "proxy step %d: %d of %d proxies are identical to their source image (%s all-zero maps); "
                "they are %s (unchanged_proxies: %s)",
                index,
                stats["unchanged"],
                stats["chosen"],
                stats["zero_maps"],
                "left out of training" if config.unchanged_proxies == "drop" else "trained on as copies",
                config.unchanged_proxies,
            )
        self._save_checkpoint([name, layout.GALLERY])

    def epoch(self, index: int) -> None:
        """One epoch of training on the originals plus the active proxies, then validation."""
        config, state = self.config, self.state
        data = Concat([self.train, *self.proxies.values()])
        start = time.perf_counter()
        train_loss, train_accuracy, lr = train_epoch(
            config,
            self.model,
            self.optimizer,
            self.scaler,
            data,
            len(self.images.classes),
            self.batch_size,
            index,
            self.device,
            self.amp,
        )
        seconds = time.perf_counter() - start
        val_loss, val_accuracy, _, _ = evaluate(
            self.model, self.val, self.batch_size, self.device, self.amp, config.num_workers
        )
        row = {
            "epoch": index + 1,
            "train_loss": train_loss,
            "train_accuracy": train_accuracy,
            "val_loss": val_loss,
            "val_accuracy": val_accuracy,
            "lr": lr,
            "seconds": seconds,
            "train_images": len(data),
            "proxies_in_training": len(data) - len(self.train),
            **dict.fromkeys(ROW_FIELDS),
            **state.pending,
        }
        state.pending = {}
        state.history.append(row)
        state.epochs_done = index + 1
        write_jsonl(self.workdir / layout.METRICS, state.history)
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "proxies_in_training"):
            self.tensorboard.add_scalar(key, row[key], index + 1)
        log.info(
            "epoch %d/%d: train loss %.4f acc %.4f, val loss %.4f acc %.4f, lr %.2e, %.2f s",
            index + 1,
            config.epochs,
            train_loss,
            train_accuracy,
            val_loss,
            val_accuracy,
            lr,
            seconds,
        )
        self._save_checkpoint([layout.METRICS])

    def pause(self) -> TrialResult:
        log.info("stopped after epoch %d of %d", self.state.epochs_done, self.config.epochs)
        return TrialResult(None, self.state.history, self.workdir)

    def finish(self) -> TrialResult:
        """Evaluate once on the test set, which nothing above has touched, and write `result.json` last."""
        config, state = self.config, self.state
        test = TestScores(*evaluate(self.model, self.test, self.batch_size, self.device, self.amp, config.num_workers))
        state.note_gpu_peaks(self.device)
        run = TrialFacts(
            self.images.classes,
            len(self.train),
            self.images.skipped,
            self.device,
            self.batch_size,
            self.amp,
            self.split,
            time.perf_counter() - self.started,
            state.shared_epochs,
            state.shared_seconds,
            (state.peak_gpu_mem_mb, state.peak_gpu_reserved_mb),
        )
        metrics = trial_metrics(config, state.history, state.steps, test, run)
        result = result_record(config, metrics, state.steps, test, run, self.threads, self.tag)
        self.on_saved([layout.TENSORBOARD])
        atomic_write_json(self.workdir / layout.RESULT, result)
        self.on_saved([layout.RESULT])
        log.info("done: val_accuracy %.4f, test_accuracy %.4f", metrics["val_accuracy"], test.accuracy)
        return TrialResult(metrics, state.history, self.workdir)

    # -- set-up, checkpoints -----------------------------------------------------------------------------------
    def _write_config(self) -> None:
        path = self.workdir / layout.CONFIG
        if path.exists() and TrialConfig.from_json_file(path).digest() != self.config.digest():
            raise TrialError(f"{self.workdir} already holds a different trial's config.json")
        atomic_write_json(path, self.config.to_dict())

    def _fresh_model(self) -> tuple[nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(self.config.seed)
        model = create_model(
            self.config.architecture,
            len(self.images.classes),
            self.config.image_size,
            self.config.pretrained,
            self.config.pretrained_path,
            double_backward=self.config.saliency_loss_weight > 0 or self.config.invariance_loss_weight > 0,
        ).to(self.device)
        return model, make_optimizer(self.config, model)

    def _resume(self) -> TrainingState | None:
        """The state of `checkpoint.pt` (this trial's, a retry's or a stem's), with the weights loaded; None when
        there is none, or it is damaged or belongs to another prefix (then the model is rebuilt, untouched)."""
        path = self.workdir / layout.CHECKPOINT
        if not path.exists():
            return None
        try:
            saved = load_checkpoint(path)
            state = TrainingState(**saved["state"])
            own = prefix_key(self.config, state.epochs_done, state.proxy_steps_done)
            if saved["prefix_key"] != own:
                log.warning("checkpoint.pt belongs to another trial's prefix: starting from scratch")
                return None
            missing = [f for f in state.proxy_files if not (self.workdir / f).exists()]
            if missing:
                raise FileNotFoundError(missing[0])
            self.model.load_state_dict(saved["model"])
            self.optimizer.load_state_dict(saved["optimizer"])
            if saved["scaler"] and self.scaler.is_enabled():
                self.scaler.load_state_dict(saved["scaler"])
            elif self.scaler.is_enabled():
                # Written without a GPU (the CPU fallback: its scaler was disabled and saved nothing). The weights
                # and optimiser are good; only the loss scale starts afresh (it settles within a few steps).
                log.info("checkpoint.pt has no loss-scaler state (written without mixed precision): a fresh scaler")
        except Exception as exc:  # a truncated or corrupt file can fail in many ways; all mean "start over"
            log.warning("checkpoint.pt unusable (%s): starting from scratch", exc)
            self.model, self.optimizer = self._fresh_model()  # a half-loaded model must not train on
            self.amp, self.scaler = precision(self.config, self.device)
            return None
        if saved["owner"] != self.owner:
            state.shared_epochs = state.epochs_done  # another's epochs: shared, not this one's own compute
        log.info(
            "resuming after epoch %d (%d proxy steps done)%s",
            state.epochs_done,
            state.proxy_steps_done,
            " from a shared stem" if saved["owner"].startswith("stem:") else "",
        )
        return state

    def _save_checkpoint(self, also: list[str]) -> None:
        buffer = io.BytesIO()
        state = self.state
        state.note_gpu_peaks(self.device)
        torch.save(
            {
                "prefix_key": prefix_key(self.config, state.epochs_done, state.proxy_steps_done),
                "owner": self.owner,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                "state": dataclasses.asdict(state),
            },
            buffer,
        )
        atomic_write_bytes(self.workdir / layout.CHECKPOINT, buffer.getvalue())
        self.on_saved([*also, layout.CHECKPOINT])

    def _shared_inputs(self, step: int, boundary: int) -> ProxyInputs | None:
        """A stem's inputs for this proxy step, when there are some for exactly this prefix and CAM group."""
        if self.shared is None:
            return None
        key = cam_group_key(self.config, boundary)
        path = self.shared(step, key)
        if path is None:
            return None
        inputs = ProxyInputs.load(path)
        if inputs.key != key:
            log.warning("shared proxy inputs %s are for another prefix: computing them here", path)
            return None
        log.info("proxy step %d uses a stem's wrong images and CAMs (%s)", step, path.name)
        return inputs


def nothing_saved(_names: list[str]) -> None:
    return None


@contextmanager
def trial_log(workdir: Path) -> Iterator[None]:
    """Send the trainer's log to `workdir/trial.log` while the trial runs."""
    handler = logging.FileHandler(workdir / layout.LOG)
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
