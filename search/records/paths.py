"""Where a study's files live: the one owner of every path the tool builds.

On the machine that runs `search`: the study database `runs/<study>.db` and its run folder `runs/<study>/` (the
default artifact store, `report/`, `trials.csv`). Inside the artifact store, relative to its root: a trial's
folder `trials/<number>-<grid_key[:8]>`, a shared stem's `stems/<key>`, a dataset's file manifest
`datasets/<name>-<digest>.json`. Inside a trial's folder the trainer names its own files (`trainer.folder`:
`OUTCOME`, `RESULT`, …). A study name becomes a path only after `search.space.names.study_name_problem` accepted it.
"""

from __future__ import annotations

from pathlib import Path

from search.records.storage import StudyError
from search.space.names import study_name_problem
from trainer.folder import OUTCOME

__all__ = [
    "OUTCOME",
    "RUNS",
    "dataset_manifest",
    "default_storage",
    "run_dir",
    "stem_folder",
    "study_db",
    "study_dbs",
    "study_dbs_shown",
    "trial_folder",
]

RUNS = Path("runs")  # relative: a study lives beside the folder `search` is run from
DATABASES = "*.db"


def _checked(study: str) -> str:
    if (why := study_name_problem(study)) is not None:
        raise StudyError(why)
    return study


def study_db(study: str, root: Path = RUNS) -> Path:
    """`runs/<study>.db` (under `root`), for a valid study name only."""
    return root / f"{_checked(study)}.db"


def default_storage(study: str) -> str:
    """The storage URL a study has unless `--storage` says otherwise: `sqlite:///runs/<study>.db`."""
    return f"sqlite:///{study_db(study).as_posix()}"


def study_dbs(root: Path = RUNS) -> list[Path]:
    """The study databases under `root`, sorted."""
    return sorted(root.glob(DATABASES))


def study_dbs_shown(root: Path = RUNS) -> str:
    """Where `study_dbs` looks, as a message says it: `runs/*.db`."""
    return f"{root}/{DATABASES}"


def run_dir(study: str, root: Path = RUNS) -> Path:
    """`runs/<study>/` (under `root`): the default artifact store, and where reports and exports go."""
    return root / _checked(study)


def trial_folder(number: int, key: str) -> str:
    """`trials/<number>-<grid_key[:8]>`, relative to the artifact store."""
    return f"trials/{number}-{key[:8]}"


def stem_folder(key: str) -> str:
    """`stems/<key>`, relative to the artifact store: a shared prefix's folder."""
    return f"stems/{key}"


def dataset_manifest(name: str, digest: str) -> str:
    """`datasets/<name>-<digest>.json`, relative to the artifact store: a dataset's recorded file hashes."""
    return f"datasets/{name}-{digest}.json"
