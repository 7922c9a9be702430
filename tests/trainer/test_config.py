import json
from pathlib import Path

import pytest

from tests.conftest import tiny_config
from trainer.config import ConfigError, TrialConfig
from trainer.schedule import parse_schedule


def test_json_round_trip_and_defaults(tmp_path):
    config = TrialConfig.from_dict(tiny_config())
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config.to_dict()))
    again = TrialConfig.from_json_file(path)
    assert again == config
    assert again.digest() == config.digest()
    assert again.pixel_replacement == "blended" and again.split.val == 0.15
    assert config.epochs == 2 and config.schedule.boundaries == (1,)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"treshold": 0.5}, "treshold: unknown field"),
        ({"threshold": 1.5}, "threshold: expected a number in [0, 1]"),
        ({"threshold": "high"}, "threshold: expected a number"),
        ({"optimizer": {"name": "adamw", "lr": "fast"}}, "optimizer.lr: expected a number"),
        ({"optimizer": {"name": "rmsprop"}}, "optimizer.name: expected one of"),
        ({"cam_method": "magiccam"}, "cam_method: expected one of"),
        ({"batch_size": "big"}, "batch_size: expected an integer or 'auto'"),
        ({"proxy_steps": "5,x,3"}, "proxy_steps"),
        ({"dataset": {"kind": "imagefolder"}}, "dataset.root: expected a folder path"),
        ({"wrong_subset": 0}, "wrong_subset: expected a fraction in (0, 1]"),
        ({"clear_every_step": "yes"}, "clear_every_step: expected true/false"),
    ],
)
def test_errors_name_the_field(change, message):
    with pytest.raises(ConfigError) as err:
        TrialConfig.from_dict(tiny_config(**change))
    assert message in str(err.value)


def test_yaml_true_means_true_class():
    assert TrialConfig.from_dict(tiny_config(cam_target=True)).cam_target == "true"
    assert TrialConfig.from_dict(tiny_config(cam_target="predicted")).cam_target == "predicted"


@pytest.mark.parametrize("text", ["", "p,5", "5,p", "5,p,p,3", "0", "5;p;3", "-1,p,2"])
def test_bad_proxy_steps(text):
    if text == "p,5":
        schedule = parse_schedule(text)  # a proxy step before any training is allowed
        assert schedule.boundaries == (0,) and schedule.epochs == 5
        return
    with pytest.raises(ConfigError):
        parse_schedule(text)


def test_the_readme_documents_every_field():
    """The README's table of fields is `trainer.fields.fields_table()`: a field added without a meaning, or a
    README not regenerated, fails here (paste the printed table into the README)."""

    from trainer.fields import MEANINGS, fields_table, leaf_fields

    assert {name for name, _ in leaf_fields()} == set(MEANINGS)
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert fields_table() in readme, fields_table()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"optimizer": {"name": "sgd", "weight_decay": -1}}, "optimizer.weight_decay: expected a non-negative"),
        ({"optimizer": {"name": "sgd", "weight_decay": float("inf")}}, "expected a finite number"),
        ({"optimizer": {"name": "sgd", "momentum": -5}}, "optimizer.momentum: expected a number in [0, 1)"),
        ({"class_loss_weight": float("inf")}, "class_loss_weight: expected a finite number"),
        ({"target_val_accuracy": float("nan")}, "target_val_accuracy: expected"),
        ({"target_val_accuracy": 2}, "target_val_accuracy: expected an accuracy in [0, 1]"),
        ({"scheduler": {"name": "step", "gamma": 0}}, "scheduler.gamma: expected a factor in (0, 1]"),
        ({"pretrained_path": " "}, "pretrained_path: expected a file path"),
    ],
)
def test_every_number_is_checked_when_the_config_is_built(change, message):
    with pytest.raises(ConfigError) as caught:
        TrialConfig.from_dict(tiny_config(**change))
    assert message in str(caught.value)


def test_a_pretrained_path_that_is_not_a_checkpoint_is_said_so(tmp_path):
    """Item 23: `pretrained_path: /etc/passwd` was an IndexError inside the trial."""
    from trainer.modelcheck import ModelError
    from trainer.models import create_model

    with pytest.raises(ModelError, match="is not a PyTorch state dict"):
        create_model("test_resnet", 3, 64, pretrained_path="/etc/passwd")
