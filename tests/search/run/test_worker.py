"""search.run.worker: a matched control reads its configuration's proxy step only when the file is the one the
configuration wrote (its SHA-256 recorded in the configuration's result.json); a damaged file is named."""

from __future__ import annotations

import json

import numpy as np
import pytest

from search.run.worker import Job, JobKind, Settings, run_job
from tests.tiny import tiny_config
from trainer.config import TrialConfig
from trainer.data.rows import write_npz
from trainer.errors import DataError
from trainer.files import file_sha256

CONFIGURATION = "trials/0-aaaaaaaa"


def job(control: str, number: int, keep_maps: bool = False) -> Job:
    config = TrialConfig.from_dict(tiny_config(threshold=0.3, control=control, proxy_steps="1,p,1"))
    matched = CONFIGURATION if control != "none" else None
    folder = CONFIGURATION if number == 0 else f"trials/{number}-x"
    return Job(JobKind.TRIAL, f"trial {number}", config, folder, matched=matched, keep_maps=keep_maps)


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
