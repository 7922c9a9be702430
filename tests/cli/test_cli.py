"""What a new user meets first: the cache commands, a dry run that says what the real run would say, a folder
pointed one level too high, `search status` outside a project, and help that lists the choices."""

import re

import yaml
from typer.testing import CliRunner

from cli import app
from tests.conftest import write_digit_folder
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
    optuna.create_study(study_name="only", storage=storage).set_user_attr("space", spec().data)
    exported = search_cli("export", "--storage", storage, "--out", str(tmp_path / "t.csv"), cwd=tmp_path)
    assert exported.returncode == 0 and "-> " in exported.stdout, exported.stderr
    reported = search_cli("report", "--storage", storage, "--out", str(tmp_path / "report"), cwd=tmp_path)
    assert reported.returncode == 0 and (tmp_path / "report" / "report.html").exists(), reported.stderr
    optuna.create_study(study_name="second", storage=storage).set_user_attr("space", spec().data)
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
    study.set_user_attr("space", first.data)
    study.enqueue_trial({"threshold": 0.3})  # an existing trial: the study has run
    changed = write_space(tmp_path / "tiny.yaml", fixed={**first.data["fixed"], "proxy_steps": "2,p,2"})
    for extra in (["--dry-run"], ["--executor", "local"]):
        done = search_cli("run", str(changed), *extra, cwd=tmp_path)
        assert done.returncode == 2, (extra, done.stdout, done.stderr)
        assert "fixed.proxy_steps: '1,p,1' → '2,p,2'" in done.stderr and "--study NEW_NAME" in done.stderr


def test_one_wrong_value_gives_one_error(tmp_path):
    """Issue 24: `image_size: 48px` in fixed: also blamed grid.cam_method, grid.threshold and a baseline."""
    from tests.search.helpers import search_cli, space, write_space

    fixed = {**space()["fixed"], "image_size": "48px"}
    path = write_space(tmp_path / "s.yaml", fixed=fixed, baselines=[{"proxy_steps": "2"}])
    done = search_cli("run", str(path), "--dry-run", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "fixed.image_size: expected an integer" in done.stderr, done.stderr
