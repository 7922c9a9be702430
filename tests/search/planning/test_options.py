"""`search.planning.options.resolve`: every option of a run decided once, flags over the space over the defaults."""

from pathlib import Path

import optuna
import pytest

from search.planning.options import OptionError, RunFlags, resolve
from search.records import record
from tests.search.helpers import refused, search_cli, spec, write_space
from trainer.files import default_cache_dir


def with_cache(cache_dir: str | None):
    return spec() if cache_dir is None else spec(cache_dir=cache_dir)


@pytest.mark.parametrize(
    ("space", "flag", "no_cache", "expected"),
    [
        (None, None, False, "default"),
        ("/space/cache", None, False, "/space/cache"),  # the space's cache_dir: was always ignored
        ("/space/cache", "/flag/cache", False, "/flag/cache"),  # the flag over the space
        (None, "/flag/cache", False, "/flag/cache"),
        ("/space/cache", None, True, None),  # --no-cache wins: the space's cache_dir switched the cache back on
        (None, "/flag/cache", True, None),
    ],
)
def test_the_cache_is_the_flag_then_the_space_then_the_default_and_no_cache_wins(space, flag, no_cache, expected):
    """Issue 35: `cache_dir_of` never returned None without `--no-cache`, and `launch` then took
    `options.cache_dir or spec.data.get("cache_dir")` (as the space's data was read then)."""
    options = resolve(with_cache(space), RunFlags(cache_dir=flag and Path(flag), no_cache=no_cache))
    assert options.cache_dir == (str(default_cache_dir()) if expected == "default" else expected)


def test_resources_and_folders_follow_the_same_precedence(tmp_path):
    s = spec(resources={"gpus_per_trial": 0, "cpus_per_trial": 2}, artifacts=str(tmp_path / "space-store"))
    options = resolve(s, RunFlags(cpus_per_trial=1, out=tmp_path / "out"))
    assert options.resources == {"gpus_per_trial": 0, "cpus_per_trial": 1}
    assert options.artifacts == str(tmp_path / "space-store")
    assert options.out_dir == (tmp_path / "out").resolve() and options.storage == "sqlite:///runs/tiny.db"
    # A resumed study: its own record of where it lives comes before the space.
    recorded = optuna.create_study(study_name="tiny")  # in memory: the record is what matters
    record.record_space(recorded, s.to_data(), s.digest(), str(tmp_path / "was"), str(tmp_path / "used"))
    resumed = resolve(s, RunFlags(), recorded)
    assert (resumed.out_dir, resumed.artifacts) == (tmp_path / "was", str(tmp_path / "used"))
    assert resolve(s, RunFlags(artifacts=str(tmp_path / "flag")), recorded).artifacts == str(tmp_path / "flag")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (RunFlags(max_trials=0), "--max-trials: expected a positive integer"),
        (RunFlags(max_concurrent=-1), "--max-concurrent: expected a positive integer"),
        (RunFlags(gpus_per_trial=2), "--gpus-per-trial: "),
    ],
)
def test_a_flag_that_cannot_be_used_is_named(flags, message):
    with pytest.raises(OptionError, match=message):
        resolve(spec(), flags)


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
