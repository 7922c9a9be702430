"""What a first GPU run would break, reproduced on the CPU (the GPU calls sit behind `trainer.device`'s seams):
transformers under the saliency loss, fp16 saliency gradients, out-of-memory errors that are not torch's, a
checkpoint without loss-scaler state, the batch-size probe of the real step, ScoreCAM's memory."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from tests.conftest import tiny_config
from trainer import TrialConfig, run_trial
from trainer.augment import Augmented
from trainer.device import auto_batch_size
from trainer.failures import FailureKind, failure_kind, is_out_of_memory
from trainer.models import create_model
from trainer.saliency_loss import saliency_terms


def test_the_saliency_loss_trains_a_transformer(tmp_path):
    """Item 1: a second derivative through timm's fused attention ("derivative for
    aten::_scaled_dot_product_flash_attention_for_cpu_backward is not implemented") failed every ViT trial."""
    config = TrialConfig.from_dict(
        tiny_config(architecture="test_vit", proxy_steps="1", saliency_loss_weight=1.0, invariance_loss_weight=0.5)
    )
    metrics = run_trial(config, tmp_path / "vit").metrics
    assert np.isfinite(metrics["val_loss"])
    model = create_model("test_vit", 3, 64)
    assert any(getattr(m, "fused_attn", False) for m in model.modules())  # what the saliency loss must turn off


def test_saliency_gradients_are_float32_and_non_zero_under_fp16_autocast():
    """Item 7: the input gradient was taken inside fp16 autocast without loss scaling: small gradients underflow to
    zero (the term vanishes) or overflow to inf. The CPU's fp16 autocast mirrors CUDA's."""
    torch.manual_seed(0)
    model = create_model("test_resnet", 3, 64, double_backward=True)
    originals = torch.rand(4, 3, 64, 64) * 1e-3  # faint images: tiny gradients, where fp16 underflows
    labels = torch.tensor([0, 1, 2, 0])
    targets = torch.nn.functional.one_hot(labels, 3).float()
    augmented = Augmented(originals.flip(-1), targets, same_on_maps=lambda maps: maps.flip(-1))
    with torch.autocast(device_type="cpu", dtype=torch.float16):
        _, saliency, _ = saliency_terms(model, originals, augmented, labels)
    assert saliency.dtype == torch.float32 and torch.isfinite(saliency) and saliency.item() > 0
    saliency.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize(
    "text",
    [
        "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
        "cuDNN error: CUDNN_STATUS_ALLOC_FAILED",
        "cuDNN error: CUDNN_STATUS_NOT_ENOUGH_WORKSPACE",
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
    ],
)
def test_allocation_failures_of_every_library_are_out_of_memory(text):
    """Item 6: cuBLAS and cuDNN allocation failures matched neither the probe nor the retry rule."""
    from search.run.dispatch import Completion
    from search.run.worker import Job, JobKind

    assert is_out_of_memory(RuntimeError(text))
    config = TrialConfig.from_dict({"dataset": {"kind": "digits"}})
    shared = Job(JobKind.TRIAL, "trial 0", config, "trials/0-x", gpus=0.5)
    assert Completion.failed(shared, text, failure_kind(RuntimeError(text))).failure is FailureKind.OOM
    assert Completion.failed(shared, "bad", failure_kind(ValueError("bad value"))).failure is FailureKind.ERROR
    whole = dataclasses.replace(shared, gpus=1.0)  # out of memory on a whole GPU is the trial's own error
    assert Completion.failed(whole, text, failure_kind(RuntimeError(text))).failure is FailureKind.ERROR


class FailsAbove(torch.nn.Module):
    """What a GPU does when a batch does not fit, in the words of `error`."""

    def __init__(self, inner: torch.nn.Module, limit: int, error: Exception) -> None:
        super().__init__()
        self.inner, self.limit, self.error = inner, limit, error

    def forward(self, x):
        if x.shape[0] > self.limit:
            raise self.error
        return self.inner(x)


def test_the_batch_size_probe_runs_the_real_step():
    """Item 3: the probe was one fp32 forward+backward: no optimiser state, no saliency double backward, no
    augmentation; a cuBLAS allocation failure was not taken as "does not fit"."""
    config = TrialConfig.from_dict(tiny_config(image_size=32, augmentation="mixup", saliency_loss_weight=1.0))
    model = create_model("test_resnet", 10, 32, double_backward=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cublas = RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`")
    cpu = torch.device("cpu")
    # The saliency loss puts originals and augmented images through the model together: twice the batch.
    assert auto_batch_size(config, FailsAbove(model, 32, cublas), 10, cpu, 1000, False) == 16
    assert auto_batch_size(config, model, 10, cpu, 8, False) == 8
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # weights and statistics back
    with pytest.raises(RuntimeError, match="a real bug"):  # anything else is not "does not fit"
        auto_batch_size(config, FailsAbove(model, 4, RuntimeError("a real bug")), 10, cpu, 1000, False)


def test_a_checkpoint_without_scaler_state_resumes_with_a_fresh_scaler(tmp_path, monkeypatch):
    """Item 9: a checkpoint written on the CPU (scaler disabled, empty state) made a GPU resume raise "The source
    state dict is empty", which was caught: the trial silently restarted from scratch."""
    import trainer.loop

    config = TrialConfig.from_dict(tiny_config(proxy_steps="2", mixed_precision=True))
    run_trial(config, tmp_path / "t", until=1)  # written without a GPU: its scaler saved nothing

    def on_a_gpu(config, device):  # the seam: what `precision` gives on CUDA, an enabled scaler
        return False, torch.amp.GradScaler("cpu", enabled=True)

    monkeypatch.setattr(trainer.loop, "precision", on_a_gpu)
    run_trial(config, tmp_path / "t")
    log = (tmp_path / "t" / "trial.log").read_text()
    assert "resuming after epoch 1" in log and "a fresh scaler" in log
    assert "starting from scratch" not in log
    assert json.loads((tmp_path / "t" / "result.json").read_text())["metrics"]["epochs"] == 2


def test_scorecam_gets_one_image_at_a_time():
    """Item 10: ScoreCAM built batch × channels × 3 × H × W at once (resnet50 at 224 px, 32 images: 39 GB)."""
    from pytorch_grad_cam import ScoreCAM

    from trainer.cams import compute_cams

    calls = []
    original = ScoreCAM.get_cam_weights

    def spy(self, input_tensor, *args, **kwargs):
        calls.append(input_tensor.shape[0])
        return original(self, input_tensor, *args, **kwargs)

    torch.manual_seed(0)
    model = create_model("test_resnet", 3, 64).eval()
    images = torch.rand(3, 3, 64, 64)
    ScoreCAM.get_cam_weights = spy
    try:
        maps = compute_cams(model, images, torch.tensor([0, 1, 2]), "scorecam", batch_size=32)
    finally:
        ScoreCAM.get_cam_weights = original
    assert calls == [1, 1, 1] and maps.shape == (3, 64, 64)


def test_peak_gpu_memory_covers_every_segment_of_a_trial(tmp_path, monkeypatch):
    """Item 8: `peak_gpu_mem_mb` was `max_memory_allocated` of the last segment only (a trial paused at a rung or
    resumed reported its last stretch), and left out reserved memory."""
    import trainer.loop
    from trainer.files import load_checkpoint

    peaks = iter([(900.0, 1200.0), (900.0, 1200.0), (300.0, 400.0), (300.0, 400.0), (300.0, 400.0)])
    monkeypatch.setattr(trainer.loop, "gpu_peaks", lambda device: next(peaks, (300.0, 400.0)))  # the CUDA seam
    config = TrialConfig.from_dict(tiny_config(proxy_steps="2"))
    run_trial(config, tmp_path / "t", until=1)  # the first segment peaks high
    run_trial(config, tmp_path / "t")  # the second lower: the trial's peak is still the first's
    state = load_checkpoint(tmp_path / "t" / "checkpoint.pt")["state"]
    assert (state["peak_gpu_mem_mb"], state["peak_gpu_reserved_mb"]) == (900.0, 1200.0)
