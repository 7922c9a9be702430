"""Beyond one machine, on one machine: two Ray nodes started by `search cluster head/worker`, each with its own
scratch folder (nothing shared but the artifact store), trial folders in a store on a third path or in S3 (moto's
server: a real local S3 endpoint), a worker node killed mid-trial, and the Slurm script run with stand-ins for
`srun` and `scontrol`."""

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from optuna.trial import TrialState

from search.planning.status import load_study, load_trials
from search.records.store import ArtifactStore, resolve_uri
from search.records.trialtable import load_curves, load_study_data
from tests.search.helpers import (
    assert_each_point_complete_once,
    free_port,
    refused,
    search_cli,
    trials,
    write_space,
)
from tests.tiny import tiny_fixed

pytestmark = pytest.mark.slow  # the quick tier is `pytest -m 'not slow'`

FOLDER_FILES = {"config.json", "split.json", "metrics.jsonl", "checkpoint.pt", "result.json", "trial.log", "cams.png"}
GRID = {"threshold": [0.3, 0.6, 0.9]}


def search(*args, cwd, env=None, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "search", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


class Node:
    """A Ray node started the way a user does it, in its own process group."""

    def __init__(self, args: list[str], env: dict) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "search", "cluster", *args, "--block"],
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=60)


@pytest.fixture
def cluster(tmp_path, short_dir):
    """A head and a worker (1 CPU each), scratch folders of their own; yields (address, env, head, worker)."""
    env = dict(os.environ)
    nodes = []

    def start(extra_env=None):
        env.update(extra_env or {})
        port = free_port()
        address = f"127.0.0.1:{port}"
        head = Node(
            [
                "head",
                "--port",
                str(port),
                "--num-cpus",
                "1",
                "--node-ip-address",
                "127.0.0.1",
                "--scratch",
                str(tmp_path / "scratch-head"),
                "--temp-dir",
                str(short_dir / "head"),
            ],
            env,
        )
        nodes.append(head)
        assert search("cluster", "wait", address, "--nodes", "1", cwd=tmp_path, env=env).returncode == 0
        worker = Node(
            [
                "worker",
                address,
                "--num-cpus",
                "1",
                "--node-ip-address",
                "127.0.0.1",
                "--scratch",
                str(tmp_path / "scratch-worker"),
                "--temp-dir",
                str(short_dir / "worker"),
            ],
            env,
        )
        nodes.append(worker)
        assert search("cluster", "wait", address, "--nodes", "2", cwd=tmp_path, env=env).returncode == 0
        return address, env, head, worker

    yield start
    for node in reversed(nodes):
        node.kill()


def scratch_files(tmp_path):
    """Files left in the nodes' scratch folders, the shared-input cache aside."""
    return [
        p
        for name in ("scratch-head", "scratch-worker")
        for p in (tmp_path / name).rglob("*")
        if p.is_file() and "shared" not in p.parts
    ]


def check_store(tmp_path, store_uri, study_name, points):
    """Every trial folder complete in the store, nothing left in scratch, the report's curves for every trial."""
    store, storage = ArtifactStore(store_uri), f"sqlite:///{tmp_path}/runs/{study_name}.db"
    study = load_study(study_name, storage)
    done = [t for t in load_trials(study_name, storage) if t.state == TrialState.COMPLETE]
    assert len(done) == points
    for t in done:
        folder = store.folder(f"trials/{t.number}-{t.user_attrs['grid_key'][:8]}")
        names = {Path(n).name for n in store.fs.ls(folder.root, detail=False)}
        expected = FOLDER_FILES - ({"cams.png"} if t.user_attrs["kind"] == "baseline" else set())
        assert names >= expected, names
        assert folder.read_result()["metrics"]["val_accuracy"] == t.value
    assert len({t.user_attrs["ray_node"] for t in done}) == 2  # both nodes ran trials
    assert scratch_files(tmp_path) == []
    data = load_study_data(study, load_trials(study_name, storage))
    curves = load_curves(data)
    assert set(curves["number"]) == {t.number for t in done}


@pytest.fixture
def s3(tmp_path):
    """moto's S3 server on loopback, a bucket, and the environment that points fsspec at it."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "moto's server never listened"
            time.sleep(0.2)
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "FSSPEC_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }
    os.environ.update(env)
    import fsspec.config
    import s3fs

    fsspec.config.set_conf_env(fsspec.config.conf)  # fsspec read FSSPEC_* at import: read them again
    s3fs.S3FileSystem.clear_instance_cache()
    s3fs.S3FileSystem(endpoint_url=env["FSSPEC_S3_ENDPOINT_URL"]).mkdir("runs-bucket")
    yield env
    for key in env:
        os.environ.pop(key, None)
    fsspec.config.conf.pop("s3", None)
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=30)


def test_trial_folders_go_to_a_shared_store_or_to_s3_and_scratch_is_cleaned(tmp_path, cluster, s3):
    """One two-node cluster (each node's start is a head or a worker and their Ray daemons), two studies: one whose
    store is a folder both nodes see, one in S3."""
    address, env, _, _ = cluster(s3)
    space = write_space(tmp_path / "tiny.yaml", grid=GRID, baselines=[{"proxy_steps": "2"}])
    store = tmp_path / "store"
    done = search("run", str(space), "--ray-address", address, "--artifacts", str(store), cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    check_store(tmp_path, str(store), "tiny", 4)
    assert not (tmp_path / "runs" / "tiny" / "trials").exists()  # the run folder holds no trial folder
    report = search("report", "--study", "tiny", cwd=tmp_path, env=env)
    assert report.returncode == 0 and "CAM comparison skipped" not in report.stderr
    in_s3 = ["--study", "ins3", "--artifacts", "s3://runs-bucket/tiny"]
    done = search("run", str(space), "--ray-address", address, *in_s3, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    check_store(tmp_path, "s3://runs-bucket/tiny", "ins3", 4)


def trial_run_by(node: Node) -> str | None:
    """The trial folder whose trial.log a Ray worker of `node` (its session) holds open."""
    for process in psutil.process_iter(["pid", "cmdline"]):
        try:
            if "ray::" not in " ".join(process.info["cmdline"] or []) or os.getsid(process.pid) != node.process.pid:
                continue
            for f in process.open_files():
                if f.path.endswith("/trial.log") and "/trials/" in f.path:
                    return Path(f.path).parent.name
        except (psutil.Error, OSError):
            continue
    return None


def test_a_killed_worker_node_is_retried_on_the_head_from_the_stores_checkpoint(tmp_path, cluster):
    address, env, _, worker = cluster()
    space = write_space(
        tmp_path / "tiny.yaml",
        grid={"threshold": [0.3, 0.6]},
        fixed=tiny_fixed(batch_size=8, proxy_steps="3,p,4", image_size=64),  # long enough to be killed mid-trial
    )
    store = tmp_path / "store"
    driver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "search",
            "run",
            str(space),
            "--ray-address",
            address,
            "--artifacts",
            str(store),
            "--no-share",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and time.monotonic() < deadline:
        running = trial_run_by(worker)  # the trial the worker node runs, once the store has its checkpoint
        if running is not None and (store / "trials" / running / "checkpoint.pt").exists():
            worker.kill()
            killed = running
        assert driver.poll() is None, driver.stdout.read()
        time.sleep(0.05)
    assert killed, "no trial ran on the worker node"
    output, _ = driver.communicate(timeout=600)
    assert driver.returncode == 0, output
    all_trials = trials(tmp_path)
    failed = [t for t in all_trials if t.state == TrialState.FAIL]
    assert len(failed) == 1 and f"{failed[0].number}-" == killed.split("-")[0] + "-"
    retry = next(
        t
        for t in all_trials
        if t.state == TrialState.COMPLETE and t.user_attrs["grid_key"] == failed[0].user_attrs["grid_key"]
    )
    log = (store / "trials" / f"{retry.number}-{retry.user_attrs['grid_key'][:8]}" / "trial.log").read_text()
    assert "resuming after epoch" in log and "resuming after epoch 0" not in log
    assert_each_point_complete_once(tmp_path, 2)


STAND_INS = {
    "scontrol": "#!/bin/bash\nprintf 'node-a\\nnode-b\\n'\n",
    # srun --nodes=1 --ntasks=1 -w NODE COMMAND...: run COMMAND here (the node's name picks nothing on one machine).
    "srun": '#!/bin/bash\nwhile [[ $1 == --* || $1 == -w ]]; do [[ $1 == -w ]] && shift; shift; done\nexec "$@"\n',
    "hostname": "#!/bin/bash\necho 127.0.0.1\n",
}


def test_the_slurm_script_is_valid_and_its_commands_run_a_study(tmp_path):
    space = write_space(tmp_path / "tiny.yaml", grid=GRID)
    made = search(
        "cluster",
        "slurm",
        str(space),
        "--nodes",
        "2",
        "--gpus-per-node",
        "0",
        "--cpus-per-node",
        "1",
        "--time",
        "01:00:00",
        "--port",
        str(free_port()),
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr
    script = tmp_path / "tiny.sbatch"
    text = script.read_text()
    assert "#SBATCH --nodes=2" in text and "#SBATCH --time=01:00:00" in text and "--ray-address" in text
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in STAND_INS.items():
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(stat.S_IRWXU)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SLURM_JOB_NODELIST": "node-[a-b]",
        "SLURM_JOB_ID": "42",
        "TMPDIR": str(tmp_path / "node-tmp"),
    }
    (tmp_path / "node-tmp").mkdir()
    done = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert_each_point_complete_once(tmp_path, 3)
    assert len({t.user_attrs["ray_node"] for t in trials(tmp_path)}) == 2
    again = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and "nothing to run" in again.stdout  # the next allocation resumes the study
    shutil.rmtree(tmp_path / "node-tmp", ignore_errors=True)
    assert json.loads(search("status", "--study", "tiny", "--json", cwd=tmp_path).stdout)["complete"] == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--artifacts", "memory://x"], "memory:// is gone when this process ends"),
        (["--storage", "sqlite:///:memory:"], "an in-memory database is gone when the run ends"),
        (["--storage", "sqlite://"], "an in-memory database is gone when the run ends"),
        (["--artifacts", "bogus://x"], "artifact store bogus://x"),
        (["--artifacts", "gs://bucket/x"], "artifact store gs://bucket/x"),
        (["--artifacts", "file:///proc/x"], "cannot write in /proc"),
        (["--artifacts", "afile"], "is a file, not a folder"),
        (["--artifacts", "afile/under"], "is a file, not a folder"),
        (["--artifacts", "s3://no-such-bucket/x"], "artifact store s3://no-such-bucket/x is not writable"),
        (["--study", "x" * 300], "a study name has at most 100 characters"),
        (["--study", ""], "is not a valid study name"),
    ],
)
@pytest.mark.parametrize("dry_run", [False, True])
def test_stores_that_vanish_or_cannot_be_used_are_refused_before_anything_is_made(tmp_path, args, message, dry_run):
    """Items 7 and 16: `memory://` reported success and kept nothing; every bad `--artifacts` was a 43-line
    traceback (and `--dry-run` accepted them all); a 300-character name failed inside the filesystem."""
    path = write_space(tmp_path / "s.yaml")
    (tmp_path / "afile").write_text("x")
    before = sorted(p.name for p in tmp_path.iterdir())
    done = search_cli("run", str(path), "--executor", "local", *args, *(["--dry-run"] if dry_run else []), cwd=tmp_path)
    refused(done, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_relative_artifacts_path_is_stored_absolute(tmp_path):
    """Item 8: `--artifacts ../relart` was stored as typed, so a resume from another folder wrote a second store."""
    (tmp_path / "project").mkdir()
    assert resolve_uri("../relart").startswith("/")
    path = write_space(tmp_path / "s.yaml")
    done = search_cli("run", str(path), "--artifacts", "../relart", "--dry-run", cwd=tmp_path / "project")
    assert done.returncode == 0, done.stderr
    assert f"trial folders: {tmp_path / 'relart'}/trials/" in done.stdout
    assert resolve_uri("file:///a/b") == "/a/b" and resolve_uri("s3://b/p") == "s3://b/p"
