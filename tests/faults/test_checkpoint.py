"""A truncated or corrupted checkpoint: the trial restarts from scratch with a warning, not a crash."""

import json

import pytest

from tests.conftest import tiny_config, without_timing
from trainer import TrialConfig, run_trial

pytestmark = pytest.mark.slow  # the quick tier is `pytest -m 'not slow'`


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_checkpoint_restarts_from_scratch(tmp_path, damage):
    config = TrialConfig.from_dict(tiny_config(proxy_steps="1,p,1"))
    reference = run_trial(config, tmp_path / "reference").metrics
    run_trial(config, tmp_path / "t")
    checkpoint = tmp_path / "t" / "checkpoint.pt"
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(
        {"truncate": data[: len(data) // 2], "garbage": b"\x00\x01garbage" * 100, "empty": b""}[damage]
    )
    (tmp_path / "t" / "result.json").unlink()  # as if it was killed before finishing
    metrics = run_trial(config, tmp_path / "t").metrics
    assert "checkpoint.pt unusable" in (tmp_path / "t" / "trial.log").read_text()
    assert without_timing(metrics) == without_timing(reference)
    assert json.loads((tmp_path / "t" / "result.json").read_text())["metrics"]["epochs"] == 2
