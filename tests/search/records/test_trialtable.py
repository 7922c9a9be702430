"""trialtable: hostile inputs and the defects the review rounds found, each checked where it belongs."""


def test_a_trial_s_count_of_proxy_steps_has_its_own_name(tmp_path):
    """Item 9: the user attr `proxy_steps` was a count ('1') while the param of the same name is the schedule."""
    from tests.conftest import tiny_config
    from trainer import TrialConfig, run_trial

    metrics = run_trial(TrialConfig.from_dict(tiny_config(proxy_steps="1,p,1")), tmp_path / "t").metrics
    assert "proxy_steps" not in metrics and metrics["proxy_steps_done"] == 1
