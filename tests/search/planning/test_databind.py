"""databind: hostile inputs and the defects the review rounds found, each checked where it belongs."""

import pytest
import yaml

from tests.search.helpers import folder_space, refused, search_cli, trials


@pytest.mark.slow
def test_a_changed_dataset_is_refused_then_accepted_and_recorded(tmp_path):
    """Item 2: deleting and adding images between two runs mixed two datasets into one study, silently."""
    path = folder_space(tmp_path)
    assert search_cli("run", str(path), "--executor", "local", cwd=tmp_path, timeout=300).returncode == 0
    imgs = tmp_path / "imgs"
    for name in ("1.png", "2.png", "3.png"):
        (imgs / "0" / name).unlink()
    (imgs / "1" / "new.png").write_bytes((imgs / "2" / "4.png").read_bytes())
    data = yaml.safe_load(path.read_text())
    data["grid"]["threshold"] = [0.3, 0.6]  # a new point, which would train on the changed data
    path.write_text(yaml.safe_dump(data))
    done = search_cli("run", str(path), "--executor", "local", cwd=tmp_path)
    refused(done, "f: 3 files removed (e.g. 0/1.png), 1 files added (e.g. 1/new.png)")
    assert "--accept-data-change" in done.stderr and "--study NEW_NAME" in done.stderr
    assert len(trials(tmp_path)) == 1  # refused before anything was dispatched
    accepted = search_cli("run", str(path), "--executor", "local", "--accept-data-change", cwd=tmp_path, timeout=300)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "data changed, accepted" in accepted.stdout
    from search.planning.status import load_study

    study = load_study("tiny", f"sqlite:///{tmp_path}/runs/tiny.db")
    assert [c["dataset"] for c in study.user_attrs["data_changes"]] == ["f"]
    assert search_cli("run", str(path), "--executor", "local", cwd=tmp_path).returncode == 0  # bound to the new data
