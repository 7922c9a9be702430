"""The prefix key: what a trial's training depends on up to each epoch, and that a trial resumed from a shared stem
computes exactly what it computes alone."""

import dataclasses
import json

import pytest

from tests.conftest import tiny_config
from tests.trainer.test_loop import comparable, metrics_lines
from trainer import TrialConfig, run_trial
from trainer.config import AugmentConfig, OptimizerConfig
from trainer.prefix import SCOPES, cam_group_key, prefix_key
from trainer.stem import run_stem

SECOND_VALUE = {  # for each field, a value other than tiny_config's, to see which epochs it reaches
    "dataset": {"kind": "digits", "limit_per_class": 31},
    "image_size": 96,
    "split": {"val": 0.2, "test": 0.15},
    "batch_size": 16,
    "architecture": "test_efficientnet",
    "pretrained": True,
    "pretrained_path": "/w.pt",
    "cam_method": "eigencam",
    "cam_target": "predicted",
    "cam_batch_size": 8,
    "threshold": 0.7,
    "multiply_weight": 0.2,
    "proxy_steps": "1,p,1,p,1",
    "wrong_subset": 0.5,
    "clear_every_step": True,
    "pixel_replacement": "black",
    "unchanged_proxies": "keep",
    "control": "random_location",
    "augmentation": "cutout",
    "augment": dataclasses.asdict(AugmentConfig(cutout_size=0.3)),
    "class_loss_weight": 0.5,
    "saliency_loss_weight": 0.2,
    "invariance_loss_weight": 0.1,
    "optimizer": dataclasses.asdict(OptimizerConfig(lr=0.01)),
    "scheduler": {"name": "cosine"},
    "label_smoothing": 0.1,
    "mixed_precision": True,
    "target_val_accuracy": 0.5,
    "num_workers": 2,
    "seed": 3,
}


def test_every_config_field_has_a_scope():
    """A new TrialConfig field must be classified in trainer.prefix.SCOPES (the module refuses to import
    otherwise); this test names the field when someone forgets."""
    fields = {f.name for f in dataclasses.fields(TrialConfig)}
    assert fields == set(SCOPES), f"classify in trainer.prefix.SCOPES: {sorted(fields ^ set(SCOPES))}"
    assert fields == set(SECOND_VALUE), "give the new field a second value here too"


@pytest.mark.parametrize("field", sorted(SCOPES))
def test_a_field_changes_the_key_exactly_from_where_it_acts(field):
    base = TrialConfig.from_dict(tiny_config(proxy_steps="1,p,1,p,1"))
    other = TrialConfig.from_dict({**tiny_config(proxy_steps="1,p,1,p,1"), field: SECOND_VALUE[field]})
    if field == "proxy_steps":
        return  # the schedule's shape is covered by test_schedules_share_the_epochs_before_they_differ
    differs = [prefix_key(base, e) != prefix_key(other, e) for e in range(4)]
    scope = SCOPES[field]
    expected = {
        "start": [True] * 4,
        "proxy": [False, False, True, True],
        "second_proxy": [False, False, False, True],
        "never": [False] * 4,
    }[scope]
    assert differs == expected, (field, scope)


def test_schedules_share_the_epochs_before_they_differ():
    a = TrialConfig.from_dict(tiny_config(proxy_steps="2,p,2"))
    b = TrialConfig.from_dict(tiny_config(proxy_steps="2,p,1,p,1"))
    c = TrialConfig.from_dict(tiny_config(proxy_steps="4"))
    assert b.schedule.boundaries == (2, 3)
    assert prefix_key(a, 3) == prefix_key(b, 3) != prefix_key(b, 3, steps_done=2)  # the step due at 3 changes it
    assert prefix_key(a, 2) == prefix_key(c, 2)  # no learning-rate schedule reads progress here
    cosine = {"scheduler": {"name": "cosine"}}
    assert prefix_key(TrialConfig.from_dict(tiny_config(proxy_steps="2,p,2", **cosine)), 2) != prefix_key(
        TrialConfig.from_dict(tiny_config(proxy_steps="2,p,3", **cosine)), 2
    )  # cosine reads the total
    with pytest.raises(ValueError):
        prefix_key(a, 5)


@pytest.mark.slow
def test_a_branch_resumed_from_a_stem_computes_what_it_computes_alone(tmp_path):
    """The stem trains 2 epochs and computes the step's wrong images and CAMs for two CAM groups; branches with
    different CAM settings resume from a copy of its checkpoint and get exactly the metrics of their own runs."""
    branches = [
        TrialConfig.from_dict(tiny_config(proxy_steps="2,p,1", cam_method=m, threshold=t, wrong_subset=w))
        for m, t, w in (("gradcam", 0.3, 1.0), ("gradcam", 0.6, 0.5), ("eigencam", 0.3, 1.0))
    ]
    stem = tmp_path / "stem"
    record = run_stem(branches[0], stem, 2, [branches[0], branches[2]])
    assert record["epochs"] == 2 and len(record["shared"]) == 2
    assert len(metrics_lines(stem)) == 2 and not (stem / "proxies").exists()

    def shared(step, key):
        path = stem / "shared" / f"step-{step}-{key}.npz"
        return path if path.exists() else None

    for i, config in enumerate(branches):
        alone = run_trial(config, tmp_path / f"alone-{i}")
        branch = tmp_path / f"branch-{i}"
        branch.mkdir()
        for name in ("checkpoint.pt", "split.json", "metrics.jsonl"):
            (branch / name).write_bytes((stem / name).read_bytes())
        resumed = run_trial(config, branch, shared=shared)
        log = (branch / "trial.log").read_text()
        assert "from a shared stem" in log and "uses a stem's wrong images and CAMs" in log
        assert comparable([resumed.metrics]) == comparable([alone.metrics])
        assert comparable(metrics_lines(branch)) == comparable(metrics_lines(tmp_path / f"alone-{i}"))
        assert resumed.metrics["own_compute_seconds"] < alone.metrics["own_compute_seconds"]
    assert cam_group_key(branches[0], 2) == cam_group_key(branches[1], 2) != cam_group_key(branches[2], 2)


def test_a_checkpoint_of_another_prefix_is_not_used(tmp_path):
    first = TrialConfig.from_dict(tiny_config(proxy_steps="2"))
    run_trial(first, tmp_path / "a")
    other = TrialConfig.from_dict(tiny_config(proxy_steps="2", seed=1))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "checkpoint.pt").write_bytes((tmp_path / "a" / "checkpoint.pt").read_bytes())
    run_trial(other, tmp_path / "b")
    assert "belongs to another trial's prefix" in (tmp_path / "b" / "trial.log").read_text()
    assert json.loads((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()[0])["epoch"] == 1
