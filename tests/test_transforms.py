"""Transform sets: the expansion order, identity first, distinct views that form a group, the registry."""

import itertools

import pytest
import torch

from labkit.core.errors import LabkitError
from labkit.sla import transforms

ALL = transforms.available()
BUILT_IN_M = {"rotation": 4, "rotation2": 2, "color_perm": 6, "color_perm3": 3, "rot_color_perm6": 6,
              "rot_color_perm12": 12, "rot_color_perm24": 24}


def _image_batch(tset, B=3, size=5):
    C = 3 if tset.needs_rgb else 2
    return torch.randn(B, C, size, size)


def test_every_built_in_set_is_registered_with_its_size():
    assert {name: transforms.get(name).M for name in BUILT_IN_M} == BUILT_IN_M


@pytest.mark.parametrize("name", ALL)
def test_expand_is_sample_major_with_identity_first(name):
    tset = transforms.get(name)
    x = _image_batch(tset)
    out = tset.expand(x)
    assert out.shape == (len(x) * tset.M, *x.shape[1:])
    for b, j in itertools.product(range(len(x)), range(tset.M)):  # direct loop over samples and views
        torch.testing.assert_close(out[b * tset.M + j], tset.views[j](x[b]), rtol=0, atol=0)
    torch.testing.assert_close(out[:: tset.M], x, rtol=0, atol=0)


@pytest.mark.parametrize("name", ALL)
def test_views_are_distinct_and_closed_under_composition(name):
    tset = transforms.get(name)
    maps = tset.index_maps((3 if tset.needs_rgb else 2, 5, 5))
    as_tuples = {tuple(m.tolist()) for m in maps}
    assert len(as_tuples) == tset.M, "two views are the same permutation"
    assert torch.equal(maps[0], torch.arange(maps.shape[1])), "view 0 is not the identity"
    for a, b in itertools.product(range(tset.M), repeat=2):
        composed = maps[b][maps[a]]  # view a applied after view b
        assert tuple(composed.tolist()) in as_tuples, f"{tset.names[a]} ∘ {tset.names[b]} leaves the set"


def test_rotation_matches_torch_rot90_and_colour_perm_reorders_channels():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    rot = transforms.get("rotation").expand(x).view(2, 4, 3, 4, 4)
    for k in range(4):
        torch.testing.assert_close(rot[:, k], torch.rot90(x, k, dims=(2, 3)))
    perm = transforms.get("color_perm").expand(x).view(2, 6, 3, 4, 4)
    for j, order in enumerate(itertools.permutations(range(3))):
        torch.testing.assert_close(perm[:, j], x[:, list(order)])


def test_products_are_outer_major():
    x = torch.randn(1, 3, 4, 4)
    prod = transforms.get("rot_color_perm12").expand(x)
    rot, col = transforms.get("rotation"), transforms.get("color_perm3")
    for a, b in itertools.product(range(4), range(3)):
        torch.testing.assert_close(prod[a * 3 + b], col.views[b](rot.views[a](x[0])))
    assert transforms.get("rot_color_perm12").names[0] == "rot0+RGB"


def test_user_can_register_a_set_in_a_few_lines():
    flips = transforms.TransformSet("test_hflip", ("id", "hflip"), (transforms.identity, lambda x: x.flip(-1)))
    transforms.register(flips, overwrite=True)
    x = torch.randn(2, 1, 3, 5)
    out = transforms.get("test_hflip").expand(x)
    torch.testing.assert_close(out[1], x[0].flip(-1))


def test_bad_sets_and_names_are_refused():
    with pytest.raises(LabkitError, match="unknown transform 'nope'; allowed: rotation"):
        transforms.get("nope")
    not_identity = transforms.TransformSet("bad_first", ("flip", "id"), (lambda x: x.flip(-1), transforms.identity))
    with pytest.raises(LabkitError, match="must be the identity"):
        not_identity.expand(torch.randn(1, 1, 2, 2))
    not_perm = transforms.TransformSet("bad_scale", ("id", "x2"), (transforms.identity, lambda x: x * 2))
    with pytest.raises(LabkitError, match="not a permutation"):
        not_perm.expand(torch.randn(1, 1, 2, 2))


def test_shape_checks_name_the_reason():
    with pytest.raises(LabkitError, match="permutes RGB channels but digits has 1 channel"):
        transforms.get("color_perm").check_input(1, 8, 8, dataset="digits")
    with pytest.raises(LabkitError, match="needs square images"):
        transforms.get("rotation").check_input(3, 32, 48)
    transforms.get("rotation").check_input(1, 8, 8)
