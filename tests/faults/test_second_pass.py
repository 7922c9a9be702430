"""The second hostile pass (issue 34): each test reproduces one defect it found, by its item number, and checks the
fix: a hostile input gets one line and exit 2, nothing is created, nothing is counted twice."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import tiny_config, write_digit_folder
from tests.faults.test_hostile_pass import SEARCH, folder_space, refused
from tests.search.helpers import python_process, search_cli, write_space
from tests.tiny import TINY_FIXED


def hold_lock(cwd, storage: str, study: str = "tiny") -> subprocess.Popen:
    """A process holding the driver lock of `study` in `storage`, as a running driver does."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from search.records.storage import DriverLock\n"
            f"with DriverLock({storage!r}, {study!r}):\n    print('held', flush=True); time.sleep(60)",
        ],
        cwd=cwd,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


# -- 1. the driver lock belongs to the database, not to its spelling ---------------------------------------------------
@pytest.mark.parametrize(
    "spelling",
    ["sqlite:///link.db", "sqlite:///runs/tiny.db?timeout=30", "sqlite:///runs/../runs/./tiny.db", "absolute"],
)
def test_a_second_driver_is_refused_under_every_spelling_of_one_database(tmp_path, spelling):
    """Item 1: a symlink to the database, or a query string, got a second driver past the lock (every point
    COMPLETE twice), and `?timeout=30` made a stray file named `tiny.db?timeout=30`."""
    path = write_space(tmp_path / "s.yaml")
    (tmp_path / "runs").mkdir()
    (tmp_path / "link.db").symlink_to(tmp_path / "runs" / "tiny.db")
    if spelling == "absolute":
        spelling = f"sqlite:///{tmp_path}/runs/tiny.db"
    holder = hold_lock(tmp_path, "sqlite:///runs/tiny.db")
    try:
        done = search_cli("run", str(path), "--storage", spelling, "--executor", "local", cwd=tmp_path)
        refused(done, f"another driver is running this study (pid {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["tiny.db.tiny.driver-lock"]


def test_a_storage_url_is_read_as_sqlalchemy_reads_it(tmp_path):
    """Item 1: the query string is not part of the file's name; an SQLite URI filename is refused."""
    from search.records.storage import DriverLock, StudyError, check_storage_url

    first = DriverLock("sqlite:///runs/a.db?timeout=30", "a").path
    assert first == DriverLock("sqlite:///runs/a.db", "a").path
    assert "?" not in str(first)
    with pytest.raises(StudyError, match="URI filenames"):
        check_storage_url("sqlite:///file:runs/a.db?uri=true")
    with pytest.raises(StudyError, match="in-memory"):
        check_storage_url("sqlite://")


# -- 9. every number is bounded, NaN and inf refused -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--cpus-per-trial", "nan", "--cpus-per-trial: expected a positive finite number, got nan"),
        ("--gpus-per-trial", "nan", "--gpus-per-trial: expected a non-negative finite number, got nan"),
        ("--cpus-per-trial", "inf", "--cpus-per-trial: expected a positive finite number, got inf"),
        ("--cpus-per-trial", "100000", "--cpus-per-trial: at most 1024"),
    ],
)
def test_resource_flags_refuse_nan_inf_and_absurd_values(tmp_path, flag, value, message):
    """Item 9: `--cpus-per-trial nan` was a traceback with Ray and silently taken by the local executor;
    `--gpus-per-trial nan` passed every comparison of the resource check."""
    path = write_space(tmp_path / "s.yaml")
    for executor in ("local", "ray"):
        done = search_cli("run", str(path), flag, value, "--executor", executor, "--dry-run", cwd=tmp_path)
        refused(done, message)
    assert list(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize("threads", ["0", "100000", "99999999999"])
def test_search_trial_threads_are_bounded_before_anything_is_written(tmp_path, threads):
    """Item 9: `--threads 100000` was a MemoryError traceback inside logging; 99999999999 an OverflowError after the
    trial folder was written."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps(tiny_config()))
    done = search_cli("trial", str(config), "--out", "t", "--threads", threads, cwd=tmp_path)
    refused(done, f"--threads: expected an integer from 1 to 1024, got {threads}")
    assert not (tmp_path / "t").exists()


# -- 12. the Slurm script honours the umask ----------------------------------------------------------------------------
def test_the_slurm_script_honours_the_umask(tmp_path):
    """Item 12: under `umask 077` the script was written 0755."""
    (tmp_path / "s.yaml").write_text("study: s\n")
    done = subprocess.run(
        ["bash", "-c", f"umask 077 && {sys.executable} -m search cluster slurm s.yaml --nodes 1 --gpus-per-node 1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "s.sbatch").stat().st_mode & 0o777 == 0o700


# -- 3. symlinks in a dataset ------------------------------------------------------------------------------------------
def test_a_link_leading_out_of_the_dataset_is_refused_with_one_line(tmp_path):
    """Item 3: a symlink to a file outside the root crashed the run with a ValueError traceback ("is not in the
    subpath of") and left an empty study."""
    path = folder_space(tmp_path)
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes((tmp_path / "imgs" / "0" / "1.png").read_bytes())
    (tmp_path / "imgs" / "0" / "link.png").symlink_to(outside)
    for extra in ((), ("--dry-run",)):
        done = search_cli("run", str(path), "--executor", "local", *extra, cwd=tmp_path)
        refused(done, f"imgs/0/link.png is a link to {outside}, outside the dataset's folder")
    assert not (tmp_path / "runs").exists()


def test_a_link_inside_the_dataset_is_one_more_file_everywhere(tmp_path):
    """Item 3: a symlink inside the folder (two names, one file) was counted by the dry-run (25 images) but not by
    the binding (24 files, digest unchanged). Now the link is a file under its own name for the dry-run, the binding,
    the cache and the trial alike."""
    from trainer.config import DatasetConfig
    from trainer.data.identity import manifest
    from trainer.data.imagefolder import summarize_folder
    from trainer.data.load import load_images

    root = write_digit_folder(tmp_path / "imgs", classes=2, per_class=12)
    dataset = {"kind": "imagefolder", "root": str(root)}
    before = manifest(dataset)
    (root / "1" / "again.png").symlink_to(root / "1" / "3.png")
    after = manifest(dataset)
    assert (before["files"], after["files"]) == (24, 25) and after["digest"] != before["digest"]
    assert sum(summarize_folder(root).images.values()) == 25
    for cache in (tmp_path / "cache", None):
        assert len(load_images(DatasetConfig(**dataset), 32, cache)) == 25


# -- 6. an unreadable folder or file is an error naming it -------------------------------------------------------------
# Root reads every file whatever its mode; without these capabilities it is held to the file's mode like any user.
DROP_DAC = ["setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search"]


def unprivileged(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`args` held to files' modes (as root: without the capabilities that override them)."""
    prefix = DROP_DAC if os.geteuid() == 0 else []
    return subprocess.run([*prefix, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("what", ["folder", "file"])
def test_an_unreadable_class_folder_or_file_refuses_the_run_and_creates_nothing(tmp_path, what):
    """Items 6 and 7: `chmod 000` on a class folder dropped the class silently (exit 0, 2 classes, `skipped_files 0`,
    a dry-run showing "0–8 images per class"), and an unreadable file refused the first run with exit 2 but left an
    empty study in the database."""
    path = folder_space(tmp_path)
    target = tmp_path / "imgs" / "1" if what == "folder" else tmp_path / "imgs" / "1" / "4.png"
    target.chmod(0)
    try:
        for extra in ((), ("--dry-run",)):
            done = unprivileged([*SEARCH, "run", str(path), "--executor", "local", *extra], tmp_path)
            refused(done, f"cannot read {target} (Permission denied")
        assert not (tmp_path / "runs").exists()
    finally:
        target.chmod(0o755)


# -- 5. the trial reads what the study bound ---------------------------------------------------------------------------
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
    bound = manifest(dataset)
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


# -- 2. a confirmation is bound to the exploration's data --------------------------------------------------------------
@pytest.mark.slow
def test_confirm_refuses_data_that_changed_since_the_exploration(tmp_path):
    """Item 2: after a file was removed, `search run` refused ("run on other data") but `search confirm` bound the
    confirmation to the new digest without a word."""
    path = folder_space(tmp_path, grid={"threshold": [0.3]}, repeats=2)
    data = yaml.safe_load(path.read_text())
    data["fixed"].update(proxy_steps="1,p,1", split={"test_seed": 0})
    path.write_text(yaml.safe_dump(data))
    assert search_cli("run", str(path), "--executor", "local", cwd=tmp_path, timeout=600).returncode == 0
    (tmp_path / "imgs" / "0" / "1.png").unlink()
    done = search_cli("confirm", "--study", "tiny", "--top", "1", "--seeds", "3", "--executor", "local", cwd=tmp_path)
    refused(done, "study 'tiny', which 'tiny-confirm' confirms, was run on other data: f: 1 files removed")
    assert "--accept-data-change" in done.stderr
    assert not (tmp_path / "runs" / "tiny-confirm.db").exists()


def test_an_accepted_change_is_recorded_in_the_confirmation_and_its_exploration(tmp_path):
    """Item 2: `--accept-data-change` on a confirmation records the change in both studies; the confirmation is
    bound to the new data from then on."""
    import optuna

    from search.planning.databind import DataChanged, Origin, check_data, current_manifests
    from search.records.store import ArtifactStore

    root = write_digit_folder(tmp_path / "imgs", classes=2, per_class=4)
    datasets = {"f": {"kind": "imagefolder", "root": str(root)}}
    storage = f"sqlite:///{tmp_path}/s.db"
    store = ArtifactStore(str(tmp_path / "store"))
    exploration = optuna.create_study(study_name="e", storage=storage)
    check_data(exploration, current_manifests(datasets), store, accept=False)
    (root / "0" / "1.png").unlink()

    def origin() -> Origin:
        loaded = optuna.load_study(study_name="e", storage=storage)

        def record(changes: list[dict]) -> None:
            loaded.set_user_attr("data_changes", [*(loaded.user_attrs.get("data_changes") or []), *changes])

        return Origin("e", loaded.user_attrs["data"], store, record)

    confirmation = optuna.create_study(study_name="e-confirm", storage=storage)
    with pytest.raises(DataChanged, match="1 files removed"):
        check_data(confirmation, current_manifests(datasets), store, accept=False, origin=origin())
    assert "data" not in confirmation.user_attrs
    lines = check_data(confirmation, current_manifests(datasets), store, accept=True, origin=origin())
    assert lines == ["f: 1 files removed (e.g. 0/1.png)"]
    for name in ("e", "e-confirm"):
        changes = optuna.load_study(study_name=name, storage=storage).user_attrs["data_changes"]
        assert [(c["dataset"], c["by"]) for c in changes] == [("f", "e-confirm")]
    confirmation = optuna.load_study(study_name="e-confirm", storage=storage)
    assert check_data(confirmation, current_manifests(datasets), store, accept=False, origin=origin()) == []


# -- 11. a confirmation of an unfinished exploration says so -----------------------------------------------------------
@pytest.mark.slow
def test_confirm_of_an_unfinished_exploration_warns_with_the_numbers(tmp_path):
    """Item 11: `search confirm` on an exploration with 29 of 100 points done selected silently."""
    path = write_space(
        tmp_path / "s.yaml",
        grid={"cam_method": ["gradcam"], "threshold": [0.3, 0.6]},
        fixed={**TINY_FIXED, "split": {"test_seed": 0}},
    )
    done = search_cli("run", str(path), "--executor", "local", "--max-trials", "1", cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    planned = search_cli("confirm", "--study", "tiny", "--top", "1", "--seeds", "3", "--dry-run", cwd=tmp_path)
    assert planned.returncode == 0, planned.stderr
    assert "warning: the exploration tiny is unfinished: 1 of 2 points ended (1 complete" in planned.stderr


def test_identical_seeds_are_no_spread_not_one_seed(capsys):
    """Item 11: configurations whose seeds gave identical scores were said to come from "one seed"."""
    from cli.confirm import _print_selection
    from search.planning.confirmation import ConfirmationPlan
    from tests.search.helpers import spec

    group = (("architecture", "test_resnet"),)
    chosen = [{"threshold": 0.3, "_mean": 0.5}]
    for spread in (0.0, float("nan")):
        plan = ConfirmationPlan(spec(), True, spec(), {group: chosen}, {group: spread}, ("architecture",))
        _print_selection(plan, 3, "holm")
        said = capsys.readouterr().out
        assert ("no spread between the exploration's seeds" in said) == (spread == 0.0), said
        assert ("ran one seed of these configurations" in said) == (spread != spread), said


# -- 10. the dry-run checks and prices what the run would do -----------------------------------------------------------
def test_the_dry_run_prices_the_flags_and_refuses_what_the_run_refuses(tmp_path):
    """Item 10: `--dry-run --gpus-per-trial 0.0001` ignored the flag and priced CPU-slot-hours; `gpus_per_trial:
    0.0001` in the space passed the dry-run on a GPU-less machine while the run refused it."""
    no_gpu = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # a machine without one, wherever the test runs
    path = write_space(tmp_path / "s.yaml")
    done = search_cli("run", str(path), "--dry-run", "--gpus-per-trial", "0.0001", cwd=tmp_path, env=no_gpu)
    assert "price (GPU-hours;" in done.stdout, done.stdout
    refused_run = search_cli(
        "run", str(path), "--gpus-per-trial", "0.0001", "--executor", "local", cwd=tmp_path, env=no_gpu
    )
    for outcome in (done, refused_run):
        assert outcome.returncode == 2 and "has no GPU" in outcome.stderr, outcome.stderr
    in_space = write_space(tmp_path / "g.yaml", resources={"gpus_per_trial": 0.0001, "cpus_per_trial": 1})
    planned = search_cli("run", str(in_space), "--dry-run", cwd=tmp_path, env=no_gpu)
    assert planned.returncode == 2 and "gpus_per_trial is 0.0001 but the Ray cluster has no GPU" in planned.stderr
    assert not (tmp_path / "runs").exists()


# -- 8. Ray connection errors: one line each ---------------------------------------------------------------------------
@pytest.mark.slow
def test_every_refused_join_of_a_ray_cluster_is_one_line(tmp_path, gpu_head):
    """Item 8: `search run --ray-address` without a token was a 56-line AuthenticationError traceback, with a wrong
    one ~20 lines of Ray warnings and "cannot write or read Failed to connect"; `search cluster worker` with
    `RAY_AUTH_TOKEN_PATH=/nonexistent` passed the token check (the head even printed "token from /nonexistent"), and
    a refused worker was a 64-line traceback."""
    path = write_space(tmp_path / "s.yaml")
    home = tmp_path / "home"  # a machine without the head's token
    home.mkdir()
    bare = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")} | {"HOME": str(home)}
    wrong = bare | {"RAY_AUTH_TOKEN": "0" * 64}
    missing = bare | {"RAY_AUTH_TOKEN_PATH": "/nonexistent"}
    cases = [
        (["run", str(path), "--ray-address", gpu_head], bare, "no Ray token on this machine to join"),
        (["run", str(path), "--ray-address", gpu_head], wrong, f"the Ray at {gpu_head} refused this machine's token"),
        (["run", str(path), "--ray-address", gpu_head], missing, "RAY_AUTH_TOKEN_PATH names /nonexistent, which is"),
        (["run", str(path), "--ray-address", "127.0.0.1:1"], dict(os.environ), "nothing answers at 127.0.0.1:1"),
        (["run", str(path), "--ray-address", "no-port"], dict(os.environ), "expected HOST:PORT"),
        (["cluster", "worker", gpu_head, "--num-cpus", "1"], missing, "RAY_AUTH_TOKEN_PATH names /nonexistent"),
        (["cluster", "worker", gpu_head, "--num-cpus", "1"], wrong, "refused this machine's token"),
        (["cluster", "head", "--port", "1"], missing, "RAY_AUTH_TOKEN_PATH names /nonexistent"),
    ]
    for args, env, message in cases:
        refused(search_cli(*args, cwd=tmp_path, env=env, timeout=120), message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "s.yaml"]


# -- 13. what a killed driver leaves is ended by the next run ---------------------------------------------------------
DRIVER = (
    "import os, time\n"
    "from search.run.dispatch import RayExecutor\n"
    "from search.run.worker import Settings\n"
    "executor = RayExecutor(None, 1, 0, None, Settings({store!r}, None))\n"
    "print(executor.record, flush=True)\n"
    "time.sleep(300)\n"
)


@pytest.mark.slow
def test_the_ray_processes_a_killed_driver_left_are_ended_by_pid(tmp_path):
    """Item 13: after a SIGKILL of the driver, Ray's DashboardAgent and RuntimeEnvAgent stayed alive 2–3 minutes,
    still listening. The driver records what it started (PID and start time); the next run and `search cluster
    stop` end what a dead driver recorded, and nothing else."""
    from search.run.leftovers import end_leftovers, start_time

    driver = python_process(DRIVER.format(store=str(tmp_path / "store")))
    record = Path(driver.stdout.readline().strip())
    processes = json.loads(record.read_text())["processes"]
    assert len(processes) >= 3  # gcs_server, raylet, the agents, workers
    assert end_leftovers() == [] and record.exists()  # its driver is alive: not ours to end
    os.kill(driver.pid, 9)
    driver.wait(timeout=60)
    time.sleep(2)
    left = [pid for pid, start in processes if start_time(pid) == start]
    assert left, "Ray's agents outlive a killed driver (if Ray stops leaving them, this test can go)"
    ended = end_leftovers()
    assert set(left) <= set(ended)
    assert all(start_time(pid) != start for pid, start in processes) and not record.exists()
