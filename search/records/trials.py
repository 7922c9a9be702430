"""Every trial of a study in a few SQL queries: `read_trials`.

Optuna's `get_trials` builds an ORM object per param and per attribute and takes about a second per thousand
trials; the thesis grid has fifty thousand. This reads the same rows with one query per table of Optuna's RDB
schema (the same on SQLite, PostgreSQL and MySQL) and returns the same `FrozenTrial`s. It only reads.
"""

from __future__ import annotations

import datetime
import json
import math
from collections import defaultdict
from collections.abc import Iterable

import optuna
import sqlalchemy
from optuna.distributions import BaseDistribution, json_to_distribution
from optuna.trial import FrozenTrial, TrialState

_VALUE = {"FINITE": None, "INF_POS": math.inf, "INF_NEG": -math.inf}


def read_trials(
    storage: optuna.storages.RDBStorage, study_name: str, states: Iterable[TrialState] | None = None
) -> list[FrozenTrial]:
    """The study's trials in number order, as `Study.get_trials` returns them (optionally only `states`)."""
    study_id = storage.get_study_id_from_name(study_name)
    wanted = None if states is None else {s.name for s in states}
    with storage.engine.connect() as conn:

        def rows(sql: str) -> list:
            return list(conn.execute(sqlalchemy.text(sql), {"study": study_id}).all())

        def of_study(table: str, columns: str) -> list:
            # Table and column names are this module's constants; the study id is a bound parameter.
            return rows(
                f"SELECT t.trial_id, {columns} FROM {table} x JOIN trials t "  # noqa: S608
                f"ON t.trial_id = x.trial_id WHERE t.study_id = :study"
            )

        # Trials first: a row written after this query belongs to a trial already read (only newer, e.g. the
        # metrics of a trial read as RUNNING) or to a trial not read (ignored), never the other way round.
        trials = [
            r
            for r in rows(
                "SELECT trial_id, number, state, datetime_start, datetime_complete FROM trials "
                "WHERE study_id = :study ORDER BY number"
            )
            if wanted is None or r.state in wanted
        ]
        params = of_study("trial_params", "x.param_name, x.param_value, x.distribution_json")
        values = of_study("trial_values", "x.objective, x.value, x.value_type")
        user_attrs = of_study("trial_user_attributes", "x.key, x.value_json")
        system_attrs = of_study("trial_system_attributes", "x.key, x.value_json")
        intermediate = of_study("trial_intermediate_values", "x.step, x.intermediate_value, x.intermediate_value_type")

    distributions: dict[str, BaseDistribution] = {}  # one parsed object per distinct JSON
    by_trial: dict[int, dict] = defaultdict(
        lambda: {"params": {}, "dists": {}, "values": {}, "user": {}, "system": {}, "steps": {}}
    )
    for trial_id, name, internal, dist_json in params:
        if dist_json not in distributions:
            distributions[dist_json] = json_to_distribution(dist_json)
        dist = distributions[dist_json]
        by_trial[trial_id]["params"][name] = dist.to_external_repr(internal)
        by_trial[trial_id]["dists"][name] = dist
    for trial_id, objective, value, kind in values:
        by_trial[trial_id]["values"][objective] = _VALUE.get(kind) or value
    for part, attrs in (("user", user_attrs), ("system", system_attrs)):
        decoded = json.loads("[" + ",".join(value_json for _, _, value_json in attrs) + "]")  # one parse, not 100k
        for (trial_id, key, _), value in zip(attrs, decoded, strict=False):
            by_trial[trial_id][part][key] = value
    for trial_id, step, value, kind in intermediate:
        by_trial[trial_id]["steps"][step] = math.nan if kind == "NAN" else _VALUE.get(kind) or value

    out = []
    for r in trials:
        parts = by_trial[r.trial_id]
        objectives = [parts["values"][k] for k in sorted(parts["values"])] or None
        out.append(
            FrozenTrial(
                number=r.number,
                state=TrialState[r.state],
                value=None,
                values=objectives,
                datetime_start=_datetime(r.datetime_start),
                datetime_complete=_datetime(r.datetime_complete),
                params=parts["params"],
                distributions=parts["dists"],
                user_attrs=parts["user"],
                system_attrs=parts["system"],
                intermediate_values=parts["steps"],
                trial_id=r.trial_id,
            )
        )
    return out


def _datetime(value: str | datetime.datetime | None) -> datetime.datetime | None:
    """SQLite hands DATETIME columns of a textual query back as ISO strings; other databases as datetimes."""
    return datetime.datetime.fromisoformat(value) if isinstance(value, str) else value
