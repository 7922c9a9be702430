"""`search.records.record`: the one reader and writer of a study's and its trials' attributes."""

import pathlib
import re

import optuna
from optuna.trial import create_trial

from search.records import record
from search.records.record import StudyAttr, TrialAttr
from trainer.failures import FailureKind
from trainer.prefix import PointKind

ROOT = pathlib.Path(__file__).resolve().parents[3]


def test_a_study_record_reads_back_typed_with_defaults_for_old_studies():
    study = optuna.create_study(study_name="mine")
    assert record.stored_space(study) is None and record.confirmations(study) == []
    assert record.shared(study) is None and record.slots(study) is None and record.bound_data(study) == {}
    assert record.artifact_store_of(study) == "runs/mine"
    record.record_space(study, {"grid": {}}, "d1", "/out", "s3://b/p")
    record.record_run(study, False, 3, {"gpus_per_trial": 0.5, "cpus_per_trial": 2})
    record.add_confirmation(study, {"name": "c1"})
    record.add_confirmation(study, {"name": "c2"})
    record.add_data_changes(study, [{"dataset": "x"}])
    assert record.stored_space(study) == {"grid": {}} and record.artifact_store_of(study) == "s3://b/p"
    assert [c["name"] for c in record.confirmations(study)] == ["c1", "c2"]
    assert record.shared(study) is False and record.slots(study) == 3.0
    assert record.run_resources(study) == {"gpus_per_trial": 0.5, "cpus_per_trial": 2}
    assert record.data_changes(study) == [{"dataset": "x"}]
    study.set_user_attr(StudyAttr.ARTIFACTS, None)  # a study made before the store was recorded: its out_dir
    assert record.artifact_store_of(study) == "/out"
    study.set_user_attr(StudyAttr.CONFIRMATIONS, [{"name": "ok"}, "garbage", 3])  # edited by hand
    assert record.confirmations(study) == [{"name": "ok"}]


def test_a_trial_record_reads_back_typed():
    attrs = {
        **record.new_trial_attrs(4, "k" * 16, 2, PointKind.BASELINE, True),
        **record.failed_attrs("boom", FailureKind.OOM),
        "val_accuracy": 0.5,
    }
    trial = create_trial(state=optuna.trial.TrialState.FAIL, user_attrs={str(k): v for k, v in attrs.items()})
    assert record.grid_key_of(trial) == "k" * 16 and record.seed_of(trial) == 4
    assert record.kind_of(trial) is PointKind.BASELINE and record.on_whole_gpu(trial)
    assert record.fail_kind_of(trial) is FailureKind.OOM and record.recorded_fail_kind(trial) == "oom"
    assert record.metric_names([trial]) == ["val_accuracy"]  # every attribute that is no TrialAttr
    assert record.trial_attrs(trial)["attempt"] == 2 and "seed" not in record.trial_attrs(trial)
    bogus = create_trial(value=1.0, user_attrs={TrialAttr.KIND.value: "banana"})
    assert record.kind_of(bogus) is None and record.kind_of(bogus, PointKind.PROXY) is None
    assert record.kind_of(create_trial(value=1.0), PointKind.PROXY) is PointKind.PROXY  # not recorded: the default
    assert record.grid_key_of(bogus) is None and record.pruned_at(bogus) is None


def test_no_attribute_is_read_or_written_outside_the_record():
    """`user_attrs` and `set_user_attr` appear only in `search/records/record.py` (and `search/records/trials.py`,
    which builds
    Optuna's `FrozenTrial` from its bulk read)."""
    found = []
    for package in ("search", "cli", "results", "analysis"):
        for path in (ROOT / package).rglob("*.py"):
            if path.name in ("record.py", "trials.py"):
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if re.search(r"\.user_attrs\b|set_user_attr|set_trial_user_attr\(\w+, \"", line):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, found
