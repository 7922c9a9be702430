"""A student's third day (issue 36): each test reproduces what stopped a new user and checks the fix."""

import yaml

from tests.conftest import write_digit_folder
from tests.faults.test_hostile_pass import refused
from tests.search.helpers import search_cli, space


def test_a_misspelled_root_is_reported_as_missing_first(tmp_path):
    """Item 1: a misspelled root in a space whose study exists gave "created with different datasets … run it as a
    new study", advice that makes it worse; the missing path came last, after a full plan."""
    write_digit_folder(tmp_path / "data" / "my_images", classes=3, per_class=12)
    data = space(datasets={"f": {"kind": "imagefolder", "root": "data/my_images"}}, grid={"threshold": [0.3]})
    data["fixed"]["proxy_steps"] = "1"
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(data))
    assert search_cli("run", str(path), "--executor", "local", cwd=tmp_path).returncode == 0
    path.write_text(path.read_text().replace("my_images", "my_image"))
    for extra in ((), ("--dry-run",)):
        done = search_cli("run", str(path), "--executor", "local", *extra, cwd=tmp_path)
        assert done.returncode == 2 and done.stderr.startswith("error: "), done.stderr
        first = done.stderr.removeprefix("error: ").split(";")[0]
        assert "data/my_image does not exist" in first, done.stderr
    refused(done, "does not exist")
