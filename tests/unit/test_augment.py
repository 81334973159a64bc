"""Augmentation by the group, vectorised over the batch (SPEC §4)."""

import torch

from eqtrain.data.augment import Augmenter
from eqtrain.geometry.group import Group


def test_random_augmentation_applies_each_samples_own_element():
    group = Group.from_name("d4")
    aug = Augmenter(group, "random", 6, 6, "cpu")
    x, y = torch.randn(16, 2, 6, 6), torch.arange(16)
    elements = aug.sample(16, torch.Generator().manual_seed(0))
    out, out_y = aug(x, y, elements)
    for i in range(16):
        assert torch.equal(out[i], group.act(x[i], int(elements[i])))
    assert torch.equal(out_y, y)


def test_random_elements_are_uniform_over_the_group():
    aug = Augmenter(Group.from_name("c4"), "random", 4, 4, "cpu")
    counts = torch.bincount(aug.sample(40_000, torch.Generator().manual_seed(0)), minlength=4)
    assert (counts.float() / 10_000 - 1).abs().max() < 0.05


def test_orbit_augmentation_contains_every_transform_of_every_sample():
    group = Group.from_name("c4")
    aug = Augmenter(group, "orbit", 5, 5, "cpu")
    x, y = torch.randn(3, 1, 5, 5), torch.tensor([7, 8, 9])
    out, out_y = aug(x, y)
    assert out.shape == (12, 1, 5, 5)
    for g in range(4):
        assert torch.equal(out[3 * g : 3 * g + 3], group.act(x, g))
        assert torch.equal(out_y[3 * g : 3 * g + 3], y)
