"""What a new user meets first: the cache commands, a dry run that says what the real run would say, a folder
pointed one level too high, `search status` outside a project, and help that lists the choices."""

import json
import re
import subprocess
import time

import pytest
import yaml
from typer.testing import CliRunner

from cli import app
from tests.conftest import tiny_config, write_digit_folder
from tests.search.helpers import SEARCH, free_port, mounted_tmpfs, refused, search_cli, space, spec, write_space
from trainer.config import DatasetConfig
from trainer.data.cache import ensure, entries

FIXED = {"image_size": 64, "architecture": "test_resnet", "proxy_steps": "1,p,1"}


def invoke(*args, cwd=None, monkeypatch=None):
    if monkeypatch is not None:
        monkeypatch.chdir(cwd)
    return CliRunner().invoke(app, [str(a) for a in args])


def test_cache_list_and_clear(tmp_path):
    folder = write_digit_folder(tmp_path / "digits", classes=2, per_class=4)
    cache = tmp_path / "cache"
    entry = ensure(DatasetConfig(kind="imagefolder", root=str(folder)), 32, cache)
    listed = invoke("cache", "list", "--cache-dir", cache)
    assert listed.exit_code == 0 and entry.key in listed.output and "8 images" in listed.output
    unknown = invoke("cache", "clear", "nope", "--cache-dir", cache)
    assert unknown.exit_code == 2 and "no cache entry 'nope'" in unknown.output
    cleared = invoke("cache", "clear", entry.key, "--cache-dir", cache)
    assert cleared.exit_code == 0 and "removed 1 entries" in cleared.output and entries(cache) == []


def space_file(tmp_path, root):
    path = tmp_path / "mine.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "datasets": {"mine": {"kind": "imagefolder", "root": str(root)}},
                "fixed": FIXED,
                "grid": {"threshold": [0.5]},
            }
        )
    )
    return path


def test_a_missing_folder_is_refused_alike_by_the_dry_run_and_the_run(tmp_path, monkeypatch):
    space = space_file(tmp_path, tmp_path / "nowhere")
    dry = invoke("run", space, "--dry-run", cwd=tmp_path, monkeypatch=monkeypatch)
    real = invoke("run", space, "--executor", "local", cwd=tmp_path, monkeypatch=monkeypatch)
    hint = "does not exist (an imagefolder root is a folder of class folders: put the dataset there)"
    assert dry.exit_code == real.exit_code == 2
    assert hint in dry.output and hint in real.output and "download: true" not in dry.output + real.output
    assert "would run" in dry.output  # the plan is printed first, then why the run would refuse it
    assert not (tmp_path / "runs").exists()


def test_the_dry_run_shows_each_folders_classes(tmp_path, monkeypatch):
    write_digit_folder(tmp_path / "data" / "digits", classes=3, per_class=5)
    write_digit_folder(tmp_path / "data" / "other", classes=3, per_class=5)
    dry = invoke("run", space_file(tmp_path, tmp_path / "data"), "--dry-run", cwd=tmp_path, monkeypatch=monkeypatch)
    assert dry.exit_code == 0, dry.output  # pointed one level too high: two "classes", each with images…
    assert re.search(r"dataset mine: 2 classes \(digits, other\), \d+ images", dry.output)  # …which it shows


def test_status_outside_a_project_says_where_it_looked(tmp_path, monkeypatch):
    done = invoke("status", cwd=tmp_path, monkeypatch=monkeypatch)
    assert done.exit_code == 0 and f"no studies in {tmp_path}/runs/*.db" in done.output
    missing = invoke("export", "--study", "nope", cwd=tmp_path, monkeypatch=monkeypatch)
    assert missing.exit_code == 2 and "no study database" in missing.output and "--storage" in missing.output


def test_help_lists_choices_and_resume_takes_the_run_flags():
    run_help = invoke("run", "--help").output
    assert "ray" in run_help and "local" in run_help
    resume_help = invoke("resume", "--help").output
    for flag in ("--max-trials", "--max-concurrent", "--dry-run", "--executor"):
        assert flag in resume_help


def test_export_and_report_read_the_only_study_without_being_told(tmp_path):
    """Issue 24: `search export` and `report` needed --study even when the storage held one study."""
    import optuna

    from tests.search.helpers import search_cli, spec

    storage = f"sqlite:///{tmp_path}/s.db"
    optuna.create_study(study_name="only", storage=storage).set_user_attr("space", spec().to_data())
    exported = search_cli("export", "--storage", storage, "--out", str(tmp_path / "t.csv"), cwd=tmp_path)
    assert exported.returncode == 0 and "-> " in exported.stdout, exported.stderr
    reported = search_cli("report", "--storage", storage, "--out", str(tmp_path / "report"), cwd=tmp_path)
    assert reported.returncode == 0 and (tmp_path / "report" / "report.html").exists(), reported.stderr
    optuna.create_study(study_name="second", storage=storage).set_user_attr("space", spec().to_data())
    two = search_cli("export", "--storage", storage, cwd=tmp_path)
    assert two.returncode == 2 and "give --study NAME: 2 studies" in two.stderr and "only" in two.stderr


def test_help_shows_flags_as_flags_and_the_version():
    """Issue 24: flags showed `<bool>` as if they took a value (`--no-share <bool>`, `--help <bool>`), `--dry-run
    --no-dry-run`, no `--version`, and `resume` lacked run options the README promised."""
    run_help = invoke("run", "--help").output
    assert "<bool>" not in run_help and "--no-dry-run" not in run_help and "--dry-run" in run_help
    resume_help = invoke("resume", "--help").output
    for flag in ("--artifacts", "--gpus-per-trial", "--cpus-per-trial", "--max-points", "--accept-data-change"):
        assert flag in resume_help
    version = invoke("--version")
    assert version.exit_code == 0 and version.output.startswith("proxy-attention-search ")


def test_relative_paths_in_a_space_are_relative_to_the_space_file(tmp_path):
    """Issue 24: `search run ../my.yaml` from a subfolder looked for the data relative to where it was typed."""
    from tests.search.helpers import search_cli

    project = tmp_path / "project"
    write_digit_folder(project / "imgs")
    space = {
        "datasets": {"mine": {"kind": "imagefolder", "root": "imgs"}},
        "fixed": FIXED,
        "grid": {"threshold": [0.3]},
        "artifacts": "out/store",
    }
    (project / "my.yaml").write_text(yaml.safe_dump(space))
    (tmp_path / "elsewhere").mkdir()
    done = search_cli("run", "../project/my.yaml", "--dry-run", cwd=tmp_path / "elsewhere")
    assert done.returncode == 0, done.stderr
    assert f"36 images, 12 images per class, 0 files skipped as not images in {project / 'imgs'}" in done.stdout
    assert f"trial folders: {project / 'out' / 'store'}/trials/" in done.stdout


def test_the_dry_run_refuses_what_the_run_refuses_naming_the_fields(tmp_path):
    """Issue 24: after `fixed.proxy_steps` changed under an existing study, the dry-run said "2 to run" and exit 0
    while the run refused without naming the field."""
    import optuna

    from tests.search.helpers import search_cli, spec, write_space

    first = spec()
    storage = f"sqlite:///{tmp_path}/runs/tiny.db"
    (tmp_path / "runs").mkdir()
    study = optuna.create_study(study_name="tiny", storage=storage)
    study.set_user_attr("space", first.to_data())
    study.enqueue_trial({"threshold": 0.3})  # an existing trial: the study has run
    changed = write_space(tmp_path / "tiny.yaml", fixed={**first.fixed, "proxy_steps": "2,p,2"})
    for extra in (["--dry-run"], ["--executor", "local"]):
        done = search_cli("run", str(changed), *extra, cwd=tmp_path)
        assert done.returncode == 2, (extra, done.stdout, done.stderr)
        assert "fixed.proxy_steps: '1,p,1' → '2,p,2'" in done.stderr and "--study NEW_NAME" in done.stderr


def test_one_wrong_value_gives_one_error(tmp_path):
    """Issue 24: `image_size: 48px` in fixed: also blamed grid.cam_method, grid.threshold and a baseline."""
    from tests.search.helpers import search_cli, write_space

    fixed = {**space()["fixed"], "image_size": "48px"}
    path = write_space(tmp_path / "s.yaml", fixed=fixed, baselines=[{"proxy_steps": "2"}])
    done = search_cli("run", str(path), "--dry-run", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "fixed.image_size: expected an integer" in done.stderr, done.stderr


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder even root cannot write: a read-only tmpfs."""
    yield from mounted_tmpfs(tmp_path / "ro", "ro,size=1m")


def test_a_read_only_folder_is_one_line_not_a_traceback(tmp_path, read_only_folder):
    """Item 20: export, report and run in a read-only project folder were EROFS tracebacks."""
    import optuna

    storage = f"sqlite:///{tmp_path}/s.db"
    optuna.create_study(study_name="s", storage=storage).set_user_attr("space", spec().to_data())
    for args in (
        ["export", "--study", "s", "--storage", storage, "--out", str(read_only_folder / "t.csv")],
        ["report", "--study", "s", "--storage", storage, "--out", str(read_only_folder / "report")],
        ["run", str(write_space(tmp_path / "s.yaml")), "--executor", "local"],
    ):
        done = search_cli(*args, cwd=read_only_folder)
        assert done.returncode == 2, (args, done.stderr)
        assert "Traceback" not in done.stderr and done.stderr.startswith("error: "), done.stderr
        assert "Read-only file system" in done.stderr or "cannot write" in done.stderr, done.stderr


def test_a_dashboard_that_cannot_listen_says_why(tmp_path):
    """Item 21: an unresolvable host, a port in use and port 99999 were tracebacks; item 25: `127.1` (loopback)
    was warned about as reachable from other machines."""
    import socket

    import optuna

    storage = f"sqlite:///{tmp_path}/s.db"
    optuna.create_study(study_name="s", storage=storage)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        for args, message in (
            (["--host", "no-such-host.invalid"], "does not resolve"),
            (["--port", "99999"], "expected a port in 1-65535"),
            (["--port", str(busy.getsockname()[1])], "is in use"),
        ):
            refused(search_cli("dashboard", "--storage", storage, *args, cwd=tmp_path), message)
    finally:
        busy.close()
    port = free_port()
    loopback = subprocess.Popen(
        [*SEARCH, "dashboard", "--storage", storage, "--host", "127.1", "--port", str(port)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.3)
    finally:
        loopback.terminate()
        _, err = loopback.communicate(timeout=30)
    assert "reachable from other machines" not in err and "optuna-dashboard on http://127.1" in err


@pytest.mark.parametrize("threads", ["0", "100000", "99999999999"])
def test_search_trial_threads_are_bounded_before_anything_is_written(tmp_path, threads):
    """Item 9: `--threads 100000` was a MemoryError traceback inside logging; 99999999999 an OverflowError after the
    trial folder was written."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps(tiny_config()))
    done = search_cli("trial", str(config), "--out", "t", "--threads", threads, cwd=tmp_path)
    refused(done, f"--threads: expected an integer from 1 to 1024, got {threads}")
    assert not (tmp_path / "t").exists()


def test_a_study_beside_its_space_file_is_found_from_another_folder(tmp_path):
    """Item 6: from another folder, `search run ../pa/mine.yaml` planned a new, empty study in ./runs while the real
    one sat beside the space file."""
    from tests.search.helpers import write_space

    project = tmp_path / "pa"
    project.mkdir()
    path = write_space(project / "mine.yaml")
    assert search_cli("run", str(path), "--executor", "local", "--max-trials", "1", cwd=project).returncode == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for extra in ((), ("--dry-run",)):
        done = search_cli("run", "../pa/mine.yaml", "--executor", "local", *extra, cwd=elsewhere)
        refused(done, f"study tiny lives in {project}/runs/tiny.db, not in this folder's runs/")
    assert list(elsewhere.iterdir()) == []
