import math

import numpy as np
import torch

from tests.conftest import tiny_config
from trainer.config import TrialConfig
from trainer.data import Part, load_images, make_split
from trainer.models import create_model
from trainer.proxy import find_wrong, make_proxy_images, replace_pixels


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


def test_proxy_step_picks_a_seeded_subset_of_wrong_training_images():
    config = TrialConfig.from_dict(tiny_config(wrong_subset=0.5, seed=3))
    images = load_images(config.dataset, config.image_size)
    split = make_split(images, config.split, config.seed)
    train = Part(images, np.asarray(split["train"]))
    torch.manual_seed(0)
    model = create_model("test_resnet", 10, 64)
    wrong, _ = find_wrong(model, train, 32, torch.device("cpu"))
    step = make_proxy_images(model, train, config, 0, torch.device("cpu"), 32)
    assert step.stats["wrong_images"] == len(wrong) > 0
    assert step.stats["chosen"] == math.ceil(0.5 * len(wrong))
    assert len(step.labels) + len(step.dropped) == step.stats["chosen"]
    assert set(step.source_indices) | set(step.dropped) <= set(np.asarray(split["train"])[wrong])
    assert np.array_equal(step.labels, images.labels[step.source_indices])
    again = make_proxy_images(model, train, config, 0, torch.device("cpu"), 32)
    assert np.array_equal(again.source_indices, step.source_indices) and np.array_equal(again.pixels, step.pixels)
    other_step = make_proxy_images(model, train, config, 1, torch.device("cpu"), 32)
    assert not np.array_equal(other_step.source_indices, step.source_indices)
    originals = images.take(step.source_indices).numpy()
    assert (step.pixels != originals).reshape(len(originals), -1).any(1).all()  # each proxy differs (drop mode)
    assert step.pixels.dtype == np.uint8 and step.pixels.shape[1:] == (3, 64, 64)
