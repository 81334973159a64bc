"""The group actions of SPEC §1: one mechanism for C4, C2, D4 and flip."""

import pytest
import torch

from eqtrain.geometry.group import GROUP_NAMES, Group


@pytest.mark.parametrize("name", GROUP_NAMES)
def test_cached_permutation_is_the_action(name):
    group = Group.from_name(name)
    x = torch.randn(3, 2, 5, 5)
    perms = group.permutations(5, 5)
    for g in range(group.order):
        via_perm = x.flatten(2)[:, :, perms[g]].view_as(x)
        assert torch.equal(via_perm, group.act(x, g))


@pytest.mark.parametrize("name", GROUP_NAMES)
def test_elements_form_a_group(name):
    """Closed under composition, identity first, all elements distinct."""
    group = Group.from_name(name)
    perms = group.permutations(4, 4)
    as_set = {tuple(p.tolist()) for p in perms}
    assert len(as_set) == group.order
    assert torch.equal(perms[0], torch.arange(16))
    for a in perms:
        for b in perms:
            assert tuple(a[b].tolist()) in as_set


@pytest.mark.parametrize(
    "name,size,orbits",
    [("c4", 3, 3), ("d4", 3, 3), ("c2", 3, 5), ("flip", 3, 6), ("c4", 5, 7), ("d4", 5, 6), ("c4", 7, 13)],
)
def test_orbit_counts_match_spec_oracles(name, size, orbits):
    # SPEC §2: full 3x3 -> C4 3, D4 3, C2 5; 5x5 -> C4 7, D4 6; the 7x7 C4 head has 13.
    assert Group.from_name(name).num_orbits(size, size) == orbits


def test_quarter_turns_refuse_non_square_grids_but_flips_do_not():
    with pytest.raises(ValueError, match="group=c4 .* square"):
        Group.from_name("c4").permutations(4, 6)
    assert Group.from_name("flip").permutations(4, 6).shape == (2, 24)
    assert Group.from_name("c2").permutations(4, 6).shape == (2, 24)


def test_unknown_group_names_the_valid_ones():
    with pytest.raises(ValueError, match="group='c8'.*c4, c2, d4, flip"):
        Group.from_name("c8")
