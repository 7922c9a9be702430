import math

import numpy as np
import pytest
import torch

from tests.conftest import tiny_config
from trainer.config import TrialConfig
from trainer.data.batching import Part
from trainer.data.load import load_images
from trainer.data.rows import RowFile
from trainer.data.split import make_split
from trainer.models import create_model
from trainer.proxy import (
    PROXY_CHUNK,
    ProxyInputs,
    find_wrong,
    load_proxies,
    make_proxy_images,
    proxy_inputs,
    replace_pixels,
)


def hand_made():
    images = torch.tensor([[[[0.2, 0.4], [0.6, 0.8]]] * 3])  # (1, 3, 2, 2)
    cams = torch.tensor([[[0.0, 0.5], [0.9, 1.0]]])  # (1, 2, 2)
    return images, cams


def test_blended_is_algorithm_1():
    images, cams = hand_made()
    out = replace_pixels(images, cams, threshold=0.5, weight=0.2, rule="blended")
    expected = torch.tensor([[0.2, (1 - 0.2) * 0.5 * 0.4], [(1 - 0.2) * 0.9 * 0.6, (1 - 0.2) * 1.0 * 0.8]])
    assert torch.allclose(out[0, 0], expected)
    assert torch.equal(out[0, 0], out[0, 2])  # same rule on every channel


def test_constant_rules():
    images, cams = hand_made()
    hot = cams[0] >= 0.5
    for rule, value in {"black": 0.0, "mean": 0.6, "max": 1.0, "min": 0.0, "halfmax": 0.5}.items():
        out = replace_pixels(images, cams, threshold=0.5, weight=0.3, rule=rule)[0, 1]
        assert torch.allclose(out[hot], torch.full((3,), value)), rule
        assert torch.equal(out[~hot], images[0, 1][~hot]), rule


def test_threshold_is_inclusive_and_input_untouched():
    images, cams = hand_made()
    before = images.clone()
    out = replace_pixels(images, cams, threshold=1.0, weight=0.0, rule="black")
    assert out[0, 0, 1, 1] == 0 and out[0, 0, 1, 0] == images[0, 0, 1, 0]
    assert torch.equal(images, before)


def untrained_step_parts(**overrides):
    config = TrialConfig.from_dict(tiny_config(**overrides))
    images = load_images(config.dataset, config.image_size)
    split = make_split(images, config.split, config.seed)
    train = Part(images, np.asarray(split["train"]))
    torch.manual_seed(0)
    return config, images, split, train, create_model("test_resnet", 10, 64)


def test_proxy_step_picks_a_seeded_subset_of_wrong_training_images(tmp_path):
    config, images, split, train, model = untrained_step_parts(wrong_subset=0.5, seed=3)
    cpu = torch.device("cpu")
    wrong, _ = find_wrong(model, train, 32, cpu)
    step = make_proxy_images(model, train, config, 0, cpu, 32, tmp_path / "a.npz")
    assert step.stats["wrong_images"] == len(wrong) > 0
    assert step.stats["chosen"] == math.ceil(0.5 * len(wrong))
    assert len(step.labels) + len(step.dropped) == step.stats["chosen"]
    assert set(step.source_indices) | set(step.dropped) <= set(np.asarray(split["train"])[wrong])
    assert np.array_equal(step.labels, images.labels[step.source_indices])
    pixels = load_proxies(tmp_path / "a.npz", 64).take(np.arange(len(step.labels))).numpy()
    again = make_proxy_images(model, train, config, 0, cpu, 32, tmp_path / "b.npz")
    assert np.array_equal(again.source_indices, step.source_indices)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    other_step = make_proxy_images(model, train, config, 1, cpu, 32, tmp_path / "c.npz")
    assert not np.array_equal(other_step.source_indices, step.source_indices)
    originals = images.take(step.source_indices).numpy()
    assert (pixels != originals).reshape(len(originals), -1).any(1).all()  # each proxy differs (drop mode)
    assert pixels.dtype == np.uint8 and pixels.shape[1:] == (3, 64, 64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "b.npz", "c.npz"]  # no spool or temp file left


def test_proxy_step_made_in_pieces_equals_the_whole_step_at_once(tmp_path):
    """Proxies are made PROXY_CHUNK images at a time straight into their file: the file holds exactly what
    Algorithm 1 gives on all chosen images at once, and the statistics are those of all of them."""
    config, _, _, train, model = untrained_step_parts(threshold=0.3)
    cpu = torch.device("cpu")
    inputs = proxy_inputs(model, train, config, 0, cpu, 32, tmp_path)
    n = len(inputs.positions)
    assert n > 2 * PROXY_CHUNK  # several pieces, the last one partial
    maps = inputs.maps.take(np.arange(n))
    sources = train.take(inputs.positions)
    whole = replace_pixels(sources.float() / 255, torch.from_numpy(maps).float() / 255, 0.3, 0.5, "blended") * 255
    whole = whole.round().clamp(0, 255).to(torch.uint8)
    changed = ~(whole == sources).flatten(1).all(1).numpy()
    step = make_proxy_images(model, train, config, 0, cpu, 32, tmp_path / "p.npz", inputs)
    with np.load(tmp_path / "p.npz") as saved:
        assert np.array_equal(saved["images"], whole.numpy()[changed])
        assert np.array_equal(saved["source_indices"], train.indices[inputs.positions][changed])
    assert step.stats["unchanged"] == int((~changed).sum())
    hot = (torch.from_numpy(maps).float() / 255 >= 0.3).float().flatten(1).mean(1)[changed]  # of trained proxies
    assert step.stats["hot_fraction"] == pytest.approx(float(hot.double().mean()), abs=1e-6)
    altered = (whole != sources).any(1).float().flatten(1).mean(1)[changed]
    assert step.stats["changed_fraction"] == pytest.approx(float(altered.double().mean()), abs=1e-6)
    assert step.stats["changed_fraction"] <= step.stats["hot_fraction"]
    assert step.stats["zero_maps"] == int((maps.reshape(n, -1).max(1) == 0).sum())
    assert np.array_equal(step.shown[2], whole.numpy()[changed][:8])
    assert np.array_equal(step.shown[0], sources.numpy()[changed][:8])
    inputs.close()


def test_proxy_inputs_saved_by_a_stem_are_read_in_place(tmp_path):
    config, _, _, train, model = untrained_step_parts()
    cpu = torch.device("cpu")
    inputs = proxy_inputs(model, train, config, 0, cpu, 32, tmp_path, key="k")
    inputs.save(tmp_path / "shared.npz")
    loaded = ProxyInputs.load(tmp_path / "shared.npz")
    assert isinstance(loaded.maps, RowFile) and loaded.key == "k"
    rows = np.arange(len(inputs.positions))[::-1]
    assert np.array_equal(loaded.maps.take(rows), inputs.maps.take(rows))
    assert np.array_equal(loaded.positions, inputs.positions)
    own = make_proxy_images(model, train, config, 0, cpu, 32, tmp_path / "own.npz")
    shared = make_proxy_images(model, train, config, 0, cpu, 32, tmp_path / "shared-proxies.npz", loaded)
    assert (tmp_path / "own.npz").read_bytes() == (tmp_path / "shared-proxies.npz").read_bytes()
    assert own.stats == shared.stats
    inputs.close()


def test_matched_controls_replace_as_many_pixels_on_the_same_images(tmp_path):
    """Issue 21: the random-location control replaces, per image, exactly as many pixels (with the same values) as
    its configuration's CAM did at its threshold, on the same images with the same dropped set; only where differs.
    The matched duplicate adds exactly the images the configuration trained, unmasked. Both read them from the
    configuration's own step file (issue 33: matched at every step)."""
    from trainer.proxy import make_matched_proxies, relocate

    config, _, _, train, model = untrained_step_parts(threshold=0.3, wrong_subset=0.8, seed=2)
    cpu = torch.device("cpu")
    inputs = proxy_inputs(model, train, config, 0, cpu, 32, tmp_path)
    maps = inputs.maps.take(np.arange(len(inputs.positions)))
    real = make_proxy_images(model, train, config, 0, cpu, 32, tmp_path / "real.npz", inputs, keep_maps=True)
    steps = {"real": real}
    for control in ("random_location", "matched_duplicate"):
        matched = TrialConfig.from_dict(tiny_config(threshold=0.3, wrong_subset=0.8, seed=2, control=control))
        steps[control] = make_matched_proxies(train, matched, 0, tmp_path / f"{control}.npz", tmp_path / "real.npz")
    for step in steps.values():  # the same extra training images, and the same ones left out
        assert np.array_equal(step.source_indices, real.source_indices)
        assert np.array_equal(step.dropped, real.dropped)
        assert step.stats["proxy_images"] == real.stats["proxy_images"] > 0
    moved = relocate(maps, np.random.default_rng(0))
    hot = (maps >= round(0.3 * 255)).reshape(len(maps), -1).sum(1)
    assert np.array_equal((moved >= round(0.3 * 255)).reshape(len(maps), -1).sum(1), hot)  # per image, exactly
    assert np.array_equal(np.sort(moved.reshape(len(maps), -1), 1), np.sort(maps.reshape(len(maps), -1), 1))
    assert (moved != maps).any()  # elsewhere
    assert steps["random_location"].stats["hot_fraction"] == pytest.approx(real.stats["hot_fraction"])
    with np.load(tmp_path / "real.npz") as a, np.load(tmp_path / "random_location.npz") as b:
        assert not np.array_equal(a["images"], b["images"])
    with np.load(tmp_path / "matched_duplicate.npz") as copies:
        originals = train.images.take(real.source_indices).numpy()
        assert np.array_equal(copies["images"], originals)  # unmasked
    assert steps["matched_duplicate"].stats["changed_fraction"] == 0
    inputs.close()


@pytest.mark.slow
def test_matched_controls_train_as_many_images_as_their_configuration(tmp_path):
    """The same counts on real trials: proxies trained, images seen and pixels at or above the threshold."""
    from trainer import run_trial

    metrics = {}
    for control in ("none", "random_location", "matched_duplicate"):
        config = TrialConfig.from_dict(tiny_config(threshold=0.3, control=control, proxy_steps="1,p,1"))
        reference = lambda step: tmp_path / "none" / "proxies" / f"step-{step}.npz"  # noqa: E731
        metrics[control] = run_trial(config, tmp_path / control, matched=reference, keep_maps=True).metrics
    for control in ("random_location", "matched_duplicate"):
        assert metrics[control]["proxy_images"] == metrics["none"]["proxy_images"] > 0
        assert metrics[control]["images_seen"] == metrics["none"]["images_seen"]
    assert metrics["random_location"]["proxy_hot_fraction"] == pytest.approx(metrics["none"]["proxy_hot_fraction"])
    assert metrics["matched_duplicate"]["proxy_changed_fraction"] == 0
