"""A student's third day (issue 36): each test reproduces what stopped a new user and checks the fix."""

import yaml

from tests.conftest import write_digit_folder
from tests.faults.test_hostile_pass import refused
from tests.search.helpers import search_cli, space


def test_a_misspelled_root_is_reported_as_missing_first(tmp_path):
    """Item 1: a misspelled root in a space whose study exists gave "created with different datasets … run it as a
    new study", advice that makes it worse; the missing path came last, after a full plan."""
    write_digit_folder(tmp_path / "data" / "my_images", classes=3, per_class=12)
    data = space(datasets={"f": {"kind": "imagefolder", "root": "data/my_images"}}, grid={"threshold": [0.3]})
    data["fixed"]["proxy_steps"] = "1"
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(data))
    assert search_cli("run", str(path), "--executor", "local", cwd=tmp_path).returncode == 0
    path.write_text(path.read_text().replace("my_images", "my_image"))
    for extra in ((), ("--dry-run",)):
        done = search_cli("run", str(path), "--executor", "local", *extra, cwd=tmp_path)
        assert done.returncode == 2 and done.stderr.startswith("error: "), done.stderr
        first = done.stderr.removeprefix("error: ").split(";")[0]
        assert "data/my_image does not exist" in first, done.stderr
    refused(done, "does not exist")


def test_a_confirmation_of_an_exploration_that_learned_nothing_says_so(tmp_path):
    """Item 7: `search confirm` on a study where every trial sat at chance selected a configuration without a word."""
    path = tmp_path / "s.yaml"
    data = space(grid={"cam_method": ["gradcam"], "threshold": [0.3]}, repeats=2)
    data["fixed"] = {**data["fixed"], "optimizer": {"name": "sgd", "lr": 1e-9}, "split": {"test_seed": 0}}
    path.write_text(yaml.safe_dump(data))
    assert search_cli("run", str(path), "--executor", "local", cwd=tmp_path, timeout=600).returncode == 0
    done = search_cli("confirm", "--study", "tiny", "--top", "1", "--seeds", "3", "--dry-run", cwd=tmp_path)
    assert "warning: every complete trial is at chance accuracy" in done.stderr and "ranks noise" in done.stderr


def test_the_summary_says_what_kind_the_best_is_and_how_to_type_the_report(monkeypatch):
    """Items 5 and 6: the quickstart's "best val_accuracy 0.9250 (trial 3)" was its baseline; and the suggested
    `search report` was not on PATH when the environment was not activated."""
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from search.planning.plan import Plan
    from search.planning.progress import invoked_as, run_summary
    from tests.search.helpers import spec

    s = spec()
    made = [
        create_trial(
            value=value,
            params={"threshold": 0.3},
            distributions={"threshold": FloatDistribution(0, 1)},
            user_attrs={"kind": kind, "grid_key": key},
            state=TrialState.COMPLETE,
        )
        for value, kind, key in ((0.92, "baseline", "b"), (0.90, "proxy", "p"), (0.85, "proxy", "q"))
    ]
    for number, trial in enumerate(made):
        trial.number = number
    line = run_summary(s, made, Plan(), "sqlite:///runs/tiny.db")
    assert "best val_accuracy 0.9200 (trial 0, a baseline)" in line
    assert "best proxy configuration val_accuracy 0.9000 (trial 1)" in line
    monkeypatch.setattr("sys.argv", [".venv/bin/search", "run", "s.yaml"])
    assert invoked_as() == ".venv/bin/search"
    monkeypatch.setattr("sys.argv", ["/x/search/__main__.py"])
    assert invoked_as() == "search"


def test_a_by_control_table_holds_the_controls(tmp_path):
    """Item 4: a confirmation's `tables/by_control.csv` had two rows, both `control=none`: a CAM axis was read among
    proxy trials only, and a matched control is a trial of kind control."""
    from results.tables import axis_tables
    from search.records.study import GridStudy
    from search.records.trialtable import load_study_data
    from tests.results.test_tables import fill, metrics
    from tests.search.helpers import spec

    s = spec(repeats=3, grid={"cam_method": ["gradcam"], "threshold": [0.5], "control": ["none", "random_location"]})
    grid = GridStudy.open(s, f"sqlite:///{tmp_path}/s.db", tmp_path / "out")
    fill(grid, lambda point: metrics(0.8 + 0.01 * point.params["seed"], seed=point.params["seed"]))
    table = axis_tables(load_study_data(grid.study, grid.trials()))["by_control"]
    assert sorted(zip(table["control"], table["kind"], strict=True)) == [
        ("none", "proxy"),
        ("random_location", "control"),
    ]


def test_optuna_s_tools_see_why_a_try_was_stopped(tmp_path):
    """Item 9: an interrupted try is FAIL in Optuna but INTERRUPTED in the export; the reason was only a user attr
    of ours. It is now where Optuna itself keeps a failed trial's reason (its `fail_reason` system attr)."""
    from search.records.study import GridStudy
    from tests.search.helpers import spec
    from trainer.failures import FailureKind

    grid = GridStudy.open(spec(), f"sqlite:///{tmp_path}/s.db", tmp_path / "out")
    number = grid.start(grid.pending()[0])
    grid.fail(number, "interrupted: the driver was stopped", FailureKind.INTERRUPTED)
    (trial,) = grid.study.get_trials(deepcopy=False)
    assert trial.system_attrs["fail_reason"] == "interrupted: the driver was stopped"


def test_an_interval_of_identical_seeds_says_so():
    """Item 10: two seeds with one value gave a "95% CI [0.931, 0.931]" of zero width."""
    from results.present import interval

    assert interval(0.931, 0.931, "test_accuracy", []) == "no spread"
    assert interval(0.92, 0.94, "test_accuracy", []) == "[0.920, 0.940]"


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


def test_every_part_of_a_split_latex_table_repeats_its_key_columns_and_keeps_the_verdict_with_its_numbers():
    """Item 2: part 2 of `by_threshold.tex` repeated only `architecture` (its rows read `test_efficientnet,
    test_efficientnet, test_resnet, test_resnet` with no threshold), and `verdicts.tex` put the verdict on another
    page than its p-values."""
    import dataclasses
    import re

    import pandas as pd

    from results import present

    rows = []
    for arch in ("test_resnet", "test_efficientnet"):
        for threshold in (0.3, 0.6):
            row = {"dataset": "digits", "setting_architecture": arch, "threshold": threshold, "kind": "proxy"}
            row["seeds"] = 3
            row["trials"] = 3
            for metric in ("test_accuracy", "test_f1_macro", "train_seconds", "peak_rss_mb", "val_accuracy"):
                row.update(
                    {f"{metric}_mean": 0.5, f"{metric}_sd": 0.1, f"{metric}_ci_low": 0.4, f"{metric}_ci_high": 0.6}
                )
            rows.append(row)
    table = pd.DataFrame(rows).rename(columns={"setting_architecture": "architecture"})
    shown = present.summary("by_threshold", table, "By threshold")
    printed = present.to_latex(shown, "s")  # fewer columns instead of landscape: one portrait table, the rest named
    assert printed.count(r"\end{tabular}") == 1 and r"Also in by\_threshold.csv" in printed
    latex = present.to_latex(dataclasses.replace(shown, printed=None), "s")  # every column: split, keys repeated
    parts = latex.split(r"\end{tabular}")[:-1]
    assert len(parts) > 1  # wide enough to split
    for part in parts:
        head = part.split(r"\midrule")[0]
        for key in ("architecture", "threshold", "kind"):
            assert re.search(rf"\\shortstack\[[lr]\]{{{key}}}", head), (key, head)
    verdicts = pd.DataFrame(
        [
            {
                "dataset": "d",
                "architecture": "a",
                "configuration": "P1",
                "reference": "B1",
                "n": 5,
                "mean_config": 0.8,
                "mean_reference": 0.7,
                "mean_diff": 0.1,
                "ci_low": 0.01,
                "ci_high": 0.2,
                "t_p": 0.01,
                "p_adjusted": 0.02,
                "family_size": 2,
                "mde_pp": 5.0,
                "wilcoxon_p": float("nan"),
                "epochs_config": 4,
                "epochs_reference": 4,
                "images_config": 400,
                "images_reference": 400,
                "verdict": "better",
                "budget_note": "",
            }
        ]
    )
    first = present.to_latex(present.verdicts(verdicts, "holm", "confirmation")).split(r"\end{tabular}")[0]
    assert "better" in first and "0.020" in first  # the verdict and its adjusted p in one part


def test_a_trial_s_count_of_proxy_steps_has_its_own_name(tmp_path):
    """Item 9: the user attr `proxy_steps` was a count ('1') while the param of the same name is the schedule."""
    from tests.conftest import tiny_config
    from trainer import TrialConfig, run_trial

    metrics = run_trial(TrialConfig.from_dict(tiny_config(proxy_steps="1,p,1")), tmp_path / "t").metrics
    assert "proxy_steps" not in metrics and metrics["proxy_steps_done"] == 1
