from pathlib import Path

import yaml

from search.space.grid import Configuration, grid_key
from tests.conftest import write_digit_folder
from tests.search.helpers import fixed_without, refused, search_cli, space, spec, write_space
from tests.tiny import TINY_FIXED
from trainer.prefix import CAM_AXES


def test_grid_key_ignores_order():
    assert grid_key({"a": 1, "b": "x"}) == grid_key({"b": "x", "a": 1})
    a = spec(grid={"cam_method": ["gradcam", "eigencam"], "threshold": [0.3, 0.6]})
    b = spec(grid={"threshold": [0.6, 0.3], "cam_method": ["eigencam", "gradcam"]})
    assert [p.grid_key for p in a.points] == [p.grid_key for p in b.points]


def test_a_points_key_is_grid_key_of_its_params():
    """`iter_points` builds each key from its values' JSON joined by hand (each encoded once, for a million points):
    it must be `grid_key(params)` itself, with dropped axes, nested and float values, baselines and seeds."""
    s = spec(
        repeats=2,
        fixed=fixed_without("proxy_steps"),
        grid={
            "cam_method": ["gradcam", "duplicate"],
            "threshold": [0.3, 0.65],
            "pixel_replacement": ["blended", "black"],
            "multiply_weight": [0.1, 0.5],
            "proxy_steps": ["1,p,1", "1,p,1,p,1"],
            "clear_every_step": [True, False],
        },
        baselines=[{"proxy_steps": "2", "augmentation": ["none", "flip"]}],
    )
    assert len(s.points) > 20 and any(p.dropped for p in s.points)
    for point in s.points:
        assert point.grid_key == grid_key(point.params), point.params


def test_a_configuration_is_a_point_without_its_seed_split_into_family_and_settings():
    """One `Configuration` serves the design (its `key`: the settings without dataset and architecture), halving and
    the confirmation (its `name`: one configuration in one family) and the tables (its `text`)."""
    s = spec(
        repeats=3,
        fixed=fixed_without("architecture"),
        grid={"architecture": ["resnet18", "efficientnet_b0"], "threshold": [0.3, 0.6]},
    )
    proxy = [p for p in s.points if p.kind == "proxy"]
    by_name: dict[str, set[int]] = {}
    for point in proxy:
        c = point.configuration
        assert c == Configuration.of(point.params) and "seed" not in c.params
        assert dict(c.family)["architecture"] == point.params["architecture"]
        assert c.params == {k: v for k, v in point.params.items() if k != "seed"}
        by_name.setdefault(c.name, set()).add(point.params["seed"])
    assert len(by_name) == 4 and all(seeds == {0, 1, 2} for seeds in by_name.values())  # its seeds are its repeats
    keys = {p.configuration.key for p in proxy}
    assert len(keys) == 2  # the same settings in two architectures: one configuration of a design
    texts = {p.configuration.text for p in proxy}
    assert len(texts) == 4 and all("seed=" not in t and "threshold=" in t for t in texts)


def test_repeats_baselines_and_resolution():
    s = spec(
        repeats=3,
        fixed=fixed_without("architecture"),
        grid={"cam_method": ["gradcam"], "threshold": [0.3, 0.6], "architecture": ["test_resnet"]},
        baselines=[{"proxy_steps": "2", "augmentation": ["none", "flip"]}],
    )
    grid = [p for p in s.points if not p.baseline]
    baselines = [p for p in s.points if p.baseline]
    assert len(grid) == 2 * 3 and len(baselines) == 2 * 3
    assert {p.params["seed"] for p in s.points} == {0, 1, 2}
    for point in baselines:
        assert not set(point.params) & set(CAM_AXES)  # a baseline has no CAM axes…
        assert point.params["architecture"] == "test_resnet"  # …but keeps the other grid axes
        config = point.config()
        assert config.proxy_steps == "2" and config.schedule.steps == 0
    config = grid[0].config()
    assert config.image_size == TINY_FIXED["image_size"] and config.dataset.kind == "digits"
    assert config.proxy_steps == "1,p,1"


def test_the_spec_digest_covers_fixed_only():
    assert spec().digest() == spec(grid={"threshold": [0.1]}).digest()
    assert spec().digest() != spec(fixed={**fixed_without("image_size"), "image_size": 96}).digest()


def test_every_shipped_space_is_valid():
    """The spaces in spaces/ are what users copy: each one parses (dataset roots aside: users bring their data)."""

    from search.space.parse import load_space

    shipped = sorted((Path(__file__).resolve().parents[3] / "spaces").glob("*.yaml"))
    assert {p.name for p in shipped} >= {"quickstart.yaml", "imagefolder.yaml", "thesis_grid.yaml", "compare.yaml"}
    for path in shipped:
        assert load_space(path, check_roots=False).points, path


def test_a_bad_fixed_value_is_reported_once_at_its_own_key(tmp_path):
    """Item 22: `optimizer.lr: .nan` in fixed: was reported again for every axis (grid.threshold…)."""
    path = write_space(tmp_path / "s.yaml", fixed={**space()["fixed"], "optimizer": {"name": "adamw", "lr": ".nan"}})
    path.write_text(path.read_text().replace("lr: .nan", "lr: .nan").replace("'.nan'", ".nan"))
    done = search_cli("run", str(path), "--dry-run", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("optimizer.lr") == 1 and "grid.threshold" not in done.stderr, done.stderr


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
