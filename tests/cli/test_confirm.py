"""confirm: hostile inputs and the defects the review rounds found, each checked where it belongs."""


def test_identical_seeds_are_no_spread_not_one_seed(capsys):
    """Item 11: configurations whose seeds gave identical scores were said to come from "one seed"."""
    from cli.confirm import _print_selection
    from search.planning.confirmation import ConfirmationPlan
    from tests.search.helpers import spec

    group = (("architecture", "test_resnet"),)
    chosen = [{"threshold": 0.3, "_mean": 0.5}]
    for spread in (0.0, float("nan")):
        plan = ConfirmationPlan(spec(), True, spec(), {group: chosen}, {group: spread}, ("architecture",))
        _print_selection(plan, 3, "holm")
        said = capsys.readouterr().out
        assert ("no spread between the exploration's seeds" in said) == (spread == 0.0), said
        assert ("ran one seed of these configurations" in said) == (spread != spread), said
