"""Successive halving on real studies, and every trial's per-epoch values in the study (optuna-dashboard's API)."""

import json
import math
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from optuna.trial import TrialState

from search.planning.halving import Halving, decide
from search.records.paths import trial_folder
from search.space.grid import Objective
from tests.search.helpers import fixed_without, free_port, start_driver, trials, write_space

GRID = {"cam_method": ["gradcam", "eigencam"], "threshold": [0.1, 0.3, 0.5, 0.7, 0.8, 0.9]}  # 12 points
FIXED = {**fixed_without("proxy_steps"), "proxy_steps": "1,p,2"}
HALVING = {"rungs": [2], "keep": "1/3"}


def halving(direction="maximize"):
    return Halving((2,), 1 / 3, "1/3", (), Objective("val_accuracy", direction))


def test_decisions_keep_the_best_third_and_every_tie_with_the_cutoff():
    values = {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.7, "e": 0.1, "f": 0.2}
    assert set(decide(halving(), 2, values)) == {"c", "d", "e", "f"}  # a third of 6, rounded up: the best 2
    assert set(decide(halving(), 2, {**values, "c": 0.8})) == {"d", "e", "f"}  # c ties the last one kept: kept
    assert set(decide(halving("minimize"), 2, values)) == {"a", "b", "c", "d"}
    assert "ranks 6 of 6" in decide(halving(), 2, values)["e"]


def expected_stopped(values: dict[int, float]) -> set[int]:
    """By hand: keep ceil(n/3) best by val accuracy at the rung and every tie with the last kept; stop the rest."""
    ordered = sorted(values.values(), reverse=True)
    cutoff = ordered[math.ceil(len(ordered) / 3) - 1]
    return {number for number, value in values.items() if value < cutoff}


def value_at(folder, epoch: int) -> float:
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return next(r["val_accuracy"] for r in rows if r["epoch"] == epoch)


def run_driver(space, cwd, *extra):
    return subprocess.run(
        [sys.executable, "-m", "search", "run", str(space), "--executor", "local", *extra],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.slow
def test_halving_stops_exactly_the_points_below_the_cutoff_and_survives_a_kill(tmp_path):
    space = write_space(tmp_path / "tiny.yaml", grid=GRID, fixed=FIXED, halving=HALVING)
    driver = start_driver(space, tmp_path, "local")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not any(t.state == TrialState.PRUNED for t in trials(tmp_path)):
        assert driver.poll() is None, driver.stdout.read()
        time.sleep(0.2)
    time.sleep(1.0)
    driver.send_signal(signal.SIGKILL)  # after the rung: decisions made, survivors under way
    driver.wait()
    before = {
        t.user_attrs["grid_key"]: (t.number, t.user_attrs["pruned_at"])
        for t in trials(tmp_path)
        if t.state == TrialState.PRUNED
    }
    assert before and all(rung == 2 for _, rung in before.values())

    done = run_driver(space, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    final = trials(tmp_path)
    pruned = {
        t.user_attrs["grid_key"]: (t.number, t.user_attrs["pruned_at"]) for t in final if t.state == TrialState.PRUNED
    }
    assert pruned == before  # the same decisions, recorded once: nothing stopped twice or resurrected
    complete = {t.user_attrs["grid_key"]: t for t in final if t.state == TrialState.COMPLETE}
    assert len(complete) + len(pruned) == 12 and not set(complete) & set(pruned)
    folders = tmp_path / "runs" / "tiny"
    values = {}
    for t in final:
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            values[t.number] = value_at(folders / trial_folder(t.number, t.user_attrs["grid_key"]), 2)
            assert t.intermediate_values[2] == pytest.approx(values[t.number])  # the study holds the curve
    assert {n for n, _ in pruned.values()} == expected_stopped(values)
    for key, t in complete.items():  # survivors of the kill resumed where they were, nothing redone
        earlier = [o for o in final if o.user_attrs["grid_key"] == key and o.number < t.number]
        log = (folders / trial_folder(t.number, key) / "trial.log").read_text()
        assert not earlier or "resuming after epoch" in log
        assert sorted(t.intermediate_values) == [1, 2, 3]
    again = run_driver(space, tmp_path)  # and once more: nothing to run
    assert again.returncode == 0 and "nothing to run" in again.stdout
    assert len(trials(tmp_path)) == len(final)


def test_a_rung_before_the_first_proxy_step_is_refused(tmp_path):
    space = write_space(
        tmp_path / "tiny.yaml", grid=GRID, fixed={**FIXED, "proxy_steps": "2,p,2"}, halving={**HALVING, "rungs": [1]}
    )
    done = run_driver(space, tmp_path)
    assert done.returncode == 2 and "rung 1 is not after the first proxy step" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "runs").exists()


def test_the_dry_run_prints_the_epochs_with_and_without_halving(tmp_path):
    space = write_space(tmp_path / "tiny.yaml", grid=GRID, fixed=FIXED, halving=HALVING)
    done = run_driver(space, tmp_path, "--dry-run")
    assert done.returncode == 0, done.stderr
    # 12 points share epoch 1 in one stem; then each runs to the rung (1 epoch), a third (4) to the end (1 more).
    assert "with halving: at most 17 epochs (against 25 without)" in done.stdout


@pytest.mark.slow
def test_the_dashboard_shows_intermediate_values_of_running_and_finished_trials(tmp_path):
    # At 64 px, not the tiny 48: trials long enough for the dashboard to see one running.
    fixed = {**FIXED, "proxy_steps": "1,p,5", "image_size": 64}
    space = write_space(tmp_path / "tiny.yaml", grid={"threshold": [0.3, 0.6]}, fixed=fixed)
    driver = start_driver(space, tmp_path, "local")
    port = free_port()
    dashboard = None
    try:
        deadline = time.monotonic() + 300
        while not (tmp_path / "runs" / "tiny.db").exists() or not trials(tmp_path):
            assert time.monotonic() < deadline and driver.poll() is None
            time.sleep(0.2)
        dashboard = subprocess.Popen(
            [sys.executable, "-m", "search", "dashboard", "--study", "tiny", "--port", str(port)],
            cwd=tmp_path,
            stderr=subprocess.DEVNULL,
        )
        seen_running = False
        while driver.poll() is None and time.monotonic() < deadline:
            try:
                detail = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/1?after=0", timeout=10))
            except OSError:
                time.sleep(0.5)
                continue
            seen_running |= any(t["state"] == "Running" and t["intermediate_values"] for t in detail["trials"])
            time.sleep(0.5)
        assert driver.wait() == 0 and seen_running
        # optuna-dashboard serves a study's trial list from a cache for up to 2 s, so the read just after the driver
        # exits may predate the last trial's completion: read until both show, for as long as the cache could lag.
        finished: list[dict] = []
        settle = time.monotonic() + 30
        while len(finished) < 2 and time.monotonic() < settle:
            time.sleep(0.5)
            detail = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/1?after=0", timeout=10))
            finished = [t for t in detail["trials"] if t["state"] == "Complete"]
        assert len(finished) == 2 and all(
            [v["step"] for v in t["intermediate_values"]] == list(range(1, 7)) for t in finished
        )
    finally:
        driver.kill()
        if dashboard is not None:
            dashboard.terminate()
            dashboard.wait(timeout=30)


@pytest.mark.slow
def test_halving_over_nested_stems_decides_from_the_stems_epochs(local_ray, tmp_path):
    """Pairs differing only in clear_every_step share a stem up to their second proxy step (epoch 3), past the
    rung (epoch 2): their values at the rung come from that stem, and a pair, equal there, shares its fate."""
    import io

    from rich.console import Console

    from search.planning.options import RunFlags, resolve
    from search.records.study import GridStudy
    from search.run.driver import run_study
    from tests.search.helpers import spec

    s = spec(
        fixed={**FIXED, "proxy_steps": "1,p,2,p,1"},
        halving={**HALVING, "keep": "1/2"},
        grid={"cam_method": ["gradcam", "eigencam"], "threshold": [0.3, 0.6], "clear_every_step": [True, False]},
    )
    options = resolve(s, RunFlags(f"sqlite:///{tmp_path}/s.db", tmp_path / "out", no_cache=True))
    assert run_study(s, options, Console(file=io.StringIO())) == 0
    final = GridStudy.open(s, options.storage, options.out_dir).trials()
    by_key = {t.user_attrs["grid_key"]: t for t in final}
    assert len(by_key) == 8 and {t.state for t in final} <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert any(t.state == TrialState.PRUNED for t in final)
    for point in s.points:  # each point's twin (the other clear_every_step) met the same fate at the rung
        twin = next(
            p
            for p in s.points
            if p is not point
            and {k: v for k, v in p.params.items() if k != "clear_every_step"}
            == {k: v for k, v in point.params.items() if k != "clear_every_step"}
        )
        assert by_key[point.grid_key].state == by_key[twin.grid_key].state
        assert by_key[point.grid_key].intermediate_values[2] == by_key[twin.grid_key].intermediate_values[2]
