"""The GPU path, tested on a machine without one: real Ray is told the node has GPUs (`ray.init(num_gpus=2)`,
`search cluster head --num-gpus 2`); it schedules GPU tasks and sets CUDA_VISIBLE_DEVICES as on a GPU machine,
and the trials fall back to the CPU, saying so."""

import io
import json
import os
import subprocess
import sys
import time

import pytest
from optuna.trial import TrialState
from rich.console import Console

from search.planning.options import RunFlags, resolve
from search.records.paths import trial_folder
from search.records.study import GridStudy
from search.run.dispatch import RayExecutor, run_task
from search.run.driver import Run, run_study
from search.run.worker import Settings
from tests.search.helpers import spec, trials, write_space
from trainer.config import TrialConfig

pytestmark = pytest.mark.slow  # the quick tier is `pytest -m 'not slow'`

RESOURCES = {"gpus_per_trial": 1, "cpus_per_trial": 1}


def options(tmp_path, spec_=None, **changes):
    flags = RunFlags(f"sqlite:///{tmp_path}/s.db", tmp_path / "out", no_cache=True, **changes)
    return resolve(spec_ or spec(), flags)


def most_at_once(finished) -> int:
    """The largest number of trials whose [start, complete] intervals overlap."""
    events = sorted([(t.datetime_start, 1) for t in finished] + [(t.datetime_complete, -1) for t in finished])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def test_trials_get_their_own_gpus(local_ray, tmp_path):
    """Whole GPUs here; halves in the cluster test below."""
    limit = 2
    # Three trials for two GPUs: one has to wait for a GPU (each trial is a fresh worker process, its imports ~5 s).
    s = spec(resources={"gpus_per_trial": 1, "cpus_per_trial": 1}, grid={"threshold": [0.2, 0.5, 0.8]})
    o = options(tmp_path, s, share=False)
    assert run_study(s, o, Console(file=io.StringIO())) == 0
    finished = GridStudy.open(s, o.storage, o.out_dir).trials((TrialState.COMPLETE,))
    assert len(finished) == 3 and most_at_once(finished) <= limit
    for t in finished:
        folder = o.out_dir / trial_folder(t.number, t.user_attrs["grid_key"])
        result = json.loads((folder / "result.json").read_text())
        assert t.user_attrs["gpu_ids"] and set(t.user_attrs["gpu_ids"]) <= {"0", "1"}
        assert result["cuda_visible_devices"] == ",".join(t.user_attrs["gpu_ids"])  # what the trial saw
        assert "but CUDA is not available to torch: running on the CPU" in (folder / "trial.log").read_text()


def test_an_out_of_memory_trial_on_a_shared_gpu_is_retried_on_a_whole_one(local_ray, tmp_path):
    import ray

    def oom_when_shared(job, settings):  # the exception type and message torch raises when a GPU is full
        import torch

        if job["gpus"] < 1:
            raise torch.cuda.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.19 GiB "
                "total capacity; 77.81 GiB already allocated)"
            )
        return run_task(job, settings)

    s = spec(resources={"gpus_per_trial": 0.5, "cpus_per_trial": 1}, grid={"threshold": [0.5]})
    o = options(tmp_path, s, share=False)
    executor = RayExecutor(None, 1, 0.5, None, Settings(str(o.out_dir), None))
    executor.cpu_task = executor.gpu_task = ray.remote(max_calls=1)(oom_when_shared)
    grid = GridStudy.open(s, o.storage, o.out_dir)
    assert Run(grid, executor, Console(file=io.StringIO()), o).drive() == 0
    first, second = grid.trials()
    assert first.state == TrialState.FAIL and first.user_attrs["fail_kind"] == "oom"
    assert "CUDA out of memory" in first.user_attrs["fail_reason"]
    assert second.state == TrialState.COMPLETE and second.user_attrs["whole_gpu"] is True
    assert second.user_attrs["attempt"] == 1  # the shared GPU's failure used no attempt
    assert len(second.user_attrs["gpu_ids"]) == 1


def cli(args, cwd, **env):
    return subprocess.run(
        [sys.executable, "-m", "search", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **env},
    )


def test_gpus_on_a_machine_without_any_is_refused_before_anything_is_made(tmp_path):
    space = write_space(tmp_path / "tiny.yaml", resources=RESOURCES)
    for executor in ("ray", "local"):
        done = cli(["run", str(space), "--executor", executor], tmp_path)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert "gpus_per_trial: 0 (or --gpus-per-trial 0) to train on CPUs" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_a_cluster_with_two_gpus_runs_four_half_gpu_trials(tmp_path, gpu_head):
    space = write_space(tmp_path / "tiny.yaml", resources=RESOURCES, grid={"threshold": [0.2, 0.4, 0.6, 0.8]})
    done = cli(
        [
            "run",
            str(space),
            "--ray-address",
            gpu_head,
            "--gpus-per-trial",
            "0.5",
            "--cpus-per-trial",
            "0.5",
            "--no-share",
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    finished = [t for t in trials(tmp_path) if t.state == TrialState.COMPLETE]
    assert len(finished) == 4 and most_at_once(finished) <= 4
    for t in finished:
        assert t.user_attrs["gpu_ids"] and set(t.user_attrs["gpu_ids"]) <= {"0", "1"}
        folder = tmp_path / "runs" / "tiny" / trial_folder(t.number, t.user_attrs["grid_key"])
        result = json.loads((folder / "result.json").read_text())
        assert result["cuda_visible_devices"] == ",".join(t.user_attrs["gpu_ids"])  # what the trial saw
    too_many = cli(
        ["run", str(space), "--study", "other", "--ray-address", gpu_head, "--gpus-per-trial", "4"], tmp_path
    )
    assert too_many.returncode == 2 and "at most 1: a trial trains on one GPU" in too_many.stderr
    assert not (tmp_path / "runs" / "other.db").exists() and not (tmp_path / "runs" / "other").exists()
    started = time.monotonic()
    assert cli(["status", "--study", "tiny"], tmp_path).returncode == 0 and time.monotonic() - started < 60
    # A run without --ray-address starts a Ray of its own, even with a cluster in $RAY_ADDRESS (Ray's ray.init
    # would join it, or the newest `ray start` cluster on the machine, and fail on our object-store setting).
    cluster_nodes = {t.user_attrs["ray_node"] for t in finished}
    one = write_space(tmp_path / "one.yaml", resources=RESOURCES, grid={"threshold": [0.5]})
    alone = cli(["run", str(one), "--study", "alone", "--gpus-per-trial", "0"], tmp_path, RAY_ADDRESS=gpu_head)
    assert alone.returncode == 0, alone.stdout + alone.stderr
    (mine,) = [t for t in trials(tmp_path, "alone") if t.state == TrialState.COMPLETE]
    assert mine.user_attrs["ray_node"] not in cluster_nodes and not mine.user_attrs["gpu_ids"]


@pytest.mark.parametrize("executor", ["ray", "local"])
def test_a_trial_given_no_gpu_sees_none(tmp_path, executor):
    """Issue 25, item 2: Ray 2.60 no longer clears CUDA_VISIBLE_DEVICES for tasks that ask for no GPU, so with a
    driver whose environment has CUDA_VISIBLE_DEVICES=0,1 (Ray then declares 2 GPUs) every CPU trial would pick
    cuda:0 on a GPU machine. A trial given no GPU hides them, and its result.json says what it saw."""
    import os

    space = write_space(tmp_path / "tiny.yaml", grid={"threshold": [0.5]})
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0,1"}
    done = subprocess.run(
        [sys.executable, "-m", "search", "run", str(space), "--executor", executor, "--gpus-per-trial", "0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (folder,) = (tmp_path / "runs" / "tiny" / "trials").iterdir()
    result = json.loads((folder / "result.json").read_text())
    assert result["cuda_visible_devices"] == "" and result["device"] != "cuda"
    assert "CUDA is not available" not in (folder / "trial.log").read_text()  # it was given none, not denied one


def test_the_local_executor_ends_a_gpu_job_s_process_whatever_its_outcome(tmp_path):
    """Issue 25, item 4: only a successful GPU job closed the local worker, so a sticky CUDA error (or reserved
    memory) of a failed one reached every later job."""
    from search.run.dispatch import LocalExecutor
    from search.run.worker import Job, JobKind

    executor = LocalExecutor(Settings(str(tmp_path / "store"), None), tmp_path / "logs")
    executor.fresh = True  # what gpus_per_trial > 0 sets (a CPU machine cannot make one: it has no CUDA)
    try:
        config = TrialConfig.from_dict({"dataset": {"kind": "digits"}, "architecture": "no_such_model"})
        bad = Job(JobKind.TRIAL, "trial 0", config, "trials/0-x")
        executor.submit(bad)
        worker = executor.worker
        (done,) = _wait(executor)
        assert done.outcome is None and done.reason
        assert executor.worker is None and worker is not None and worker.poll() is not None
    finally:
        executor.close()


def _wait(executor, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = executor.wait(timeout=1)
        if done:
            return done
    raise AssertionError("the job never finished")
