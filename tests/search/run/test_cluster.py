"""Trials spread over a two-node Ray cluster (ray.cluster_utils.Cluster); results come back as return values."""

import io

import optuna
import pytest
import ray
from optuna.trial import TrialState
from ray.cluster_utils import Cluster
from rich.console import Console

from search.planning.options import RunFlags, resolve
from search.run.driver import run_study
from tests.search.helpers import spec

pytestmark = pytest.mark.slow  # the quick tier is `pytest -m 'not slow'`


def test_trials_land_on_both_nodes(tmp_path, no_ray):
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "object_store_memory": 100 * 2**20, "include_dashboard": False},
    )
    cluster.add_node(num_cpus=1, object_store_memory=100 * 2**20)
    try:
        options = resolve(
            spec(), RunFlags(f"sqlite:///{tmp_path}/study.db", tmp_path / "out", ray_address=cluster.address)
        )
        code = run_study(spec(), options, Console(file=io.StringIO()))
        assert code == 0
        trials = optuna.load_study(study_name="tiny", storage=options.storage).get_trials(deepcopy=False)
        assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
        assert len({t.user_attrs["ray_node"] for t in trials}) == 2
    finally:
        ray.shutdown()
        cluster.shutdown()
