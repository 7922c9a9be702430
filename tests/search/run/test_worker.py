"""search.run.worker: a matched control reads its configuration's proxy step only when the file is the one the
configuration wrote (its SHA-256 recorded in the configuration's result.json); a damaged file is named."""

from __future__ import annotations

import json

import numpy as np
import pytest

from search.run.worker import Job, JobKind, Settings, run_job
from tests.conftest import tiny_config, write_digit_folder
from trainer.config import DatasetConfig, TrialConfig
from trainer.data.rows import write_npz
from trainer.errors import DataError
from trainer.files import file_sha256

CONFIGURATION = "trials/0-aaaaaaaa"


def job(control: str, number: int, keep_maps: bool = False) -> Job:
    config = TrialConfig.from_dict(tiny_config(threshold=0.3, control=control, proxy_steps="1,p,1"))
    matched = CONFIGURATION if control != "none" else None
    folder = CONFIGURATION if number == 0 else f"trials/{number}-x"
    return Job(JobKind.TRIAL, f"trial {number}", config, folder, matched=matched, keep_maps=keep_maps)


def test_a_job_gets_the_runs_share_of_a_gpu_or_a_whole_one_after_running_out_of_memory_on_a_share():
    shared = job("none", 1)
    whole = Job(JobKind.TRIAL, "trial 2", shared.config, "trials/2-x", whole_gpu=True)
    assert [shared.with_gpus(g).gpus for g in (0.0, 0.25, 2.0)] == [0.0, 0.25, 2.0]
    assert [whole.with_gpus(g).gpus for g in (0.25, 1.0, 2.0)] == [1.0, 1.0, 2.0]
    assert whole.with_gpus(0.0).gpus == 0.0  # resumed with --gpus-per-trial 0: never asks a CPU run for a GPU
    assert whole.with_gpus(0.25).with_gpus(0.25).gpus == 1.0 and whole.gpus == 0.0  # a copy, decided once


@pytest.fixture
def configuration(tmp_path, monkeypatch):
    """A configuration trial run with keep_maps (as a confirmation runs one), its store's path and settings."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # run_job hides GPUs in this process: restored after the test
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    settings = Settings(str(tmp_path / "store"), None)
    done = run_job(job("none", 0, keep_maps=True), settings)
    assert done.status == "complete"
    return tmp_path / "store" / CONFIGURATION, settings


@pytest.mark.slow
def test_a_damaged_step_file_is_named_never_trained_on(configuration):
    """Issue 42 item 8: with the configuration's maps zeroed the control completed silently; truncated, both tries
    failed with "BadZipFile: File is not a zip file", naming no file."""
    folder, settings = configuration
    step = folder / "proxies" / "step-0.npz"
    recorded = json.loads((folder / "result.json").read_text())["proxy_steps"][0]["file_sha256"]
    assert recorded == file_sha256(step)
    original = step.read_bytes()
    assert run_job(job("random_location", 1), settings).status == "complete"  # the file as written: matched

    with np.load(step) as data:
        arrays = {name: data[name] for name in data.files}
    write_npz(step, {**arrays, "maps": np.zeros_like(arrays["maps"])})  # a valid file, its maps zeroed
    with pytest.raises(DataError, match=r"step-0.npz is not the file its configuration wrote .* restore it"):
        run_job(job("random_location", 2), settings)

    step.write_bytes(original[: len(original) // 2])  # truncated
    with pytest.raises(DataError, match=r"step-0.npz is not the file its configuration wrote"):
        run_job(job("matched_duplicate", 3), settings)

    result = json.loads((folder / "result.json").read_text())  # a study from before the digest was recorded
    del result["proxy_steps"][0]["file_sha256"]
    (folder / "result.json").write_text(json.dumps(result))
    with pytest.raises(DataError, match=r"step-0.npz: not a readable proxy step of the configuration"):
        run_job(job("matched_duplicate", 4), settings)


@pytest.mark.parametrize("cached", [True, False])
def test_a_trial_refuses_data_that_changed_after_the_binding(tmp_path, cached, monkeypatch):
    """Item 5: a file deleted after the binding was taken trained on 23 files while the study recorded 24 (and
    passed again once the file was back). A job carries the binding; the trial checks the count, and the contents
    where the image cache hashed them."""
    from search.run.worker import Job, JobKind, Settings, run_job
    from trainer import TrialConfig
    from trainer.data.identity import Binding, manifest
    from trainer.errors import DataError

    root = write_digit_folder(tmp_path / "imgs", classes=3, per_class=8)
    dataset = {"kind": "imagefolder", "root": str(root)}
    bound = manifest(DatasetConfig(**dataset))
    config = TrialConfig.from_dict(tiny_config(dataset=dataset, proxy_steps="1"))
    made = Job(JobKind.TRIAL, "trial 0", config, "trials/0", binding=Binding(24, bound["digest"]))
    job = Job.from_data(made.to_data())
    assert job.binding == Binding(24, bound["digest"])  # it crosses the process edge
    settings = Settings(str(tmp_path / "store"), str(tmp_path / "cache") if cached else None)
    # run_job hides the GPUs of a job given none (CUDA_VISIBLE_DEVICES=""): in this process, only for this test,
    # or the next Ray this test process starts with declared GPUs refuses to.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # recorded, so that the end of the test restores it
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    (root / "2" / "7.png").unlink()
    with pytest.raises(DataError, match="23 files now, 24 when the study bound it"):
        run_job(job, settings)
    # Same count, other contents: only the cache, which hashes every file it decodes, can tell.
    (root / "2" / "7.png").write_bytes((root / "1" / "1.png").read_bytes())
    if cached:
        with pytest.raises(DataError, match=r"contents .* when the study bound it"):
            run_job(job, settings)
    (root / "2" / "7.png").unlink()
    write_digit_folder(tmp_path / "again", classes=3, per_class=8)
    (root / "2" / "7.png").write_bytes((tmp_path / "again" / "2" / "7.png").read_bytes())
    assert run_job(job, settings).status == "complete"
