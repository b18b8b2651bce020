"""The structured tower initialisation (mlb_core.train.tower_init) on config-built CLIP towers."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

from mlb_core.train.tower_init import (
    colour_units,
    edge_energy_init,
    edge_filters,
    patch_filters,
    sincos_2d,
    structured_init,
)
from mlb_core.train.vision import Recipe, gelu_inverse


def tower(seed: int = 0) -> CLIPVisionModel:
    torch.manual_seed(seed)
    cfg = CLIPVisionConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                           image_size=84, patch_size=14)
    return CLIPVisionModel(cfg).eval()


def test_edge_filters_are_zero_mean_unit_norm_and_oriented():
    f = edge_filters(14)  # (18, 14, 14)
    assert f.shape == (18, 14, 14)
    assert torch.allclose(f.mean((1, 2)), torch.zeros(18), atol=1e-6)
    assert torch.allclose(f.flatten(1).norm(dim=1), torch.ones(18), atol=1e-5)
    vertical_edge = f[1]  # angle 0, offset 0: varies along x only
    assert torch.allclose(vertical_edge, vertical_edge[:1].expand(14, 14))
    assert (vertical_edge[:, -1] > 0).all() and (vertical_edge[:, 0] < 0).all()


def test_sincos_positions_separate_rows_and_columns():
    pe = sincos_2d(6, 16)  # (36, 16)
    assert pe.shape == (36, 16)
    grid = pe.reshape(6, 6, 16)
    assert torch.allclose(grid[:, 0, :8], grid[:, 3, :8])  # the row half ignores the column
    assert torch.allclose(grid[0, :, 8:], grid[4, :, 8:])  # the column half ignores the row
    d = torch.cdist(pe, pe)
    assert d[0, 1] < d[0, 35]  # neighbours are closer than opposite corners
    with pytest.raises(AssertionError):
        sincos_2d(6, 10)


def test_structured_init_sets_filters_positions_and_mimetic_attention():
    t = tower()
    before = {k: v.clone() for k, v in t.state_dict().items()}
    n = structured_init(t, seed=0)
    filters = patch_filters(3, 14)
    assert n == min(len(filters), 128)
    emb = t.embeddings if hasattr(t, "embeddings") else t.vision_model.embeddings
    assert torch.equal(emb.patch_embedding.weight[:n], filters[:n])
    assert torch.equal(emb.patch_embedding.weight[n:], before[next(k for k in before if "patch_embedding" in k)][n:])
    pos = emb.position_embedding.weight
    assert torch.equal(pos[1:], sincos_2d(6, 128)) and not pos[0].any()
    layers = t.encoder.layers if hasattr(t, "encoder") else t.vision_model.encoder.layers
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(256, 128, generator=gen)
    for layer in layers:
        att = layer.self_attn
        # W_v^T W_o^T is a2 Z - b2 I: a negative diagonal (mean -0.4, Z's diagonal averages ~0)
        vo = att.v_proj.weight.T @ att.out_proj.weight.T  # (d, d)
        assert -0.5 < vo.diagonal().mean().item() < -0.3
        # query-key near a positive identity: a token scores itself above the others
        scores = att.q_proj(x) @ att.k_proj(x).T  # (256, 256)
        off = (scores.sum() - scores.diagonal().sum()) / (256 * 255)
        assert scores.diagonal().mean() > off + 0.2 * math.sqrt(128)
        assert not any(p.bias.any() for p in (att.q_proj, att.k_proj, att.v_proj, att.out_proj))


def test_structured_init_is_seeded_and_keeps_a_loadable_stock_tower(tmp_path):
    a, b, c = tower(0), tower(0), tower(0)
    structured_init(a, seed=0)
    structured_init(b, seed=0)
    structured_init(c, seed=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    a.save_pretrained(tmp_path)
    back = CLIPVisionModel.from_pretrained(tmp_path).eval()
    assert type(back) is CLIPVisionModel
    px = torch.randn(1, 3, 84, 84)
    assert torch.allclose(back(px).last_hidden_state, a(px).last_hidden_state, atol=1e-6)


def test_recipe_rejects_an_unknown_tower_init():
    with pytest.raises(ValueError, match="tower_init"):
        Recipe(tower_init="xavier")


def test_edge_energy_init_rectifies_signed_edges_and_reserves_dimensions():
    """After :func:`edge_energy_init` the first layer is a per-patch MLP (no attention): its first
    hidden units are ``quick_gelu(gain * r)`` of the signed edge rows, whose sign twins sum to
    ``gain r tanh(0.851 gain r)`` (about ``|gain r|``), and the reserved dimensions hold exactly
    what fc2 writes there: zero, then a read-out."""
    t = tower()
    structured_init(t, seed=0)
    reserved = edge_energy_init(t, n_reserved=8, gain=2.0)
    assert reserved == list(range(120, 128))
    emb = t.embeddings if hasattr(t, "embeddings") else t.vision_model.embeddings
    w = emb.patch_embedding.weight
    assert torch.equal(w[15:19], -w[19:23])  # +luminance/+channels, then their sign twins
    assert not w[reserved].any()
    layer = (t.encoder if hasattr(t, "encoder") else t.vision_model.encoder).layers[0]
    px = torch.randn(2, 3, 84, 84)
    hs = t(px, output_hidden_states=True).hidden_states
    assert not hs[0][..., reserved].any() and not hs[1][..., reserved].any()
    # the reference: the layer by hand, with no attention term
    x0 = hs[0]
    h = layer.layer_norm2(x0)
    pre = h @ layer.mlp.fc1.weight.T + layer.mlp.fc1.bias
    act = pre * torch.sigmoid(1.702 * pre)  # quick_gelu
    torch.testing.assert_close(hs[1], x0 + act @ layer.mlp.fc2.weight.T + layer.mlp.fc2.bias, rtol=1e-4, atol=1e-5)
    edges = list(range(15, 120))
    torch.testing.assert_close(pre[..., :len(edges)], 2.0 * h[..., edges])
    assert not emb.position_embedding.weight[:, edges].any()
    # sign twins mirror each other about one per-token offset (the layer norms' mean)
    twins = h[:, 1:, 15:19] + h[:, 1:, 19:23]  # (2, 36, 4): patches (the CLS embedding is free)
    torch.testing.assert_close(twins, twins[..., :1].expand_as(twins), rtol=1e-4, atol=1e-4)
    with torch.no_grad():  # a read-out written into the reserved rows is all those dimensions hold
        layer.mlp.fc2.weight[reserved[:3]] = torch.randn(3, layer.mlp.fc2.in_features)
        layer.mlp.fc2.bias[reserved[:3]] = torch.randn(3)
    out = t(px, output_hidden_states=True).hidden_states[1]
    want = act @ layer.mlp.fc2.weight[reserved[:3]].T + layer.mlp.fc2.bias[reserved[:3]]
    torch.testing.assert_close(out[..., reserved[:3]], want, rtol=1e-4, atol=1e-4)


def test_recipe_rejects_an_unknown_shape_target():
    with pytest.raises(ValueError, match="shape_target"):
        Recipe(shape_target="everywhere")


def test_colour_units_are_bent_random_features_of_the_colour_rows_alone():
    """:func:`colour_units` rewrites only the first layer's MLP units after the rectified edges:
    each reads the 15 colour rows (channel and quadrant means) alone, its pre-activation on the
    sample has a spread of about ``gain``, and it bends (pre-activation 0) at one sampled patch;
    the edge units, fc2 and the reserved dimensions are untouched, and the draw is seeded."""
    t = tower()
    structured_init(t, seed=0)
    reserved = edge_energy_init(t, n_reserved=8, gain=2.0)
    layer = (t.encoder if hasattr(t, "encoder") else t.vision_model.encoder).layers[0]
    before = {k: v.clone() for k, v in layer.mlp.state_dict().items()}
    px = torch.randn(4, 3, 84, 84)
    caught = {}
    hook = layer.layer_norm2.register_forward_hook(lambda m, i, o: caught.__setitem__("x", o))
    with torch.no_grad():
        t(px)
    hook.remove()
    sample = caught["x"][:, 1:, :15].reshape(-1, 15)  # (4 * 36, 15)
    units = colour_units(t, sample, gain=3.0, seed=1, n_reserved=8)
    n_edges = 120 - 15  # the edge rows end where the reserved dimensions begin (128 - 8)
    assert units == list(range(n_edges, 256))
    fc1 = layer.mlp.fc1
    assert torch.equal(fc1.weight[:n_edges], before["fc1.weight"][:n_edges])
    assert torch.equal(layer.mlp.fc2.weight, before["fc2.weight"]) and not layer.mlp.fc2.weight[reserved].any()
    assert not fc1.weight[units][:, 15:].any() and fc1.weight[units][:, :15].abs().sum(1).gt(0).all()
    with torch.no_grad():
        pre = sample @ fc1.weight[units, :15].T + fc1.bias[units]  # (144, U)
    assert pre.abs().min(0).values.max() < 1e-4  # every unit bends at a sampled patch
    assert 1.5 < float(pre.std(0).median()) < 6.0
    again = tower()
    structured_init(again, seed=0)
    edge_energy_init(again, n_reserved=8, gain=2.0)
    colour_units(again, sample, gain=3.0, seed=1, n_reserved=8)
    ref = (again.encoder if hasattr(again, "encoder") else again.vision_model.encoder).layers[0].mlp.fc1
    assert torch.equal(ref.weight, fc1.weight) and torch.equal(ref.bias, fc1.bias)


def test_gelu_inverse_gives_the_targets_back_through_the_gelu():
    y = torch.linspace(0, 3, 301, dtype=torch.float64)
    x = gelu_inverse(y)
    torch.testing.assert_close(torch.nn.functional.gelu(x), y, rtol=0, atol=1e-9)
    assert bool((x[1:] > x[:-1]).all()) and float(x[0]) == pytest.approx(0.0, abs=1e-12)
    assert float(gelu_inverse(torch.tensor([5.0], dtype=torch.float64))) == pytest.approx(float(x[-1]))  # clamped


def test_colour_units_and_inverse_gelu_need_the_edge_tower():
    with pytest.raises(ValueError, match="tower_init='edges'"):
        Recipe(colour_units=True)
    with pytest.raises(ValueError, match="tower_init='edges'"):
        Recipe(inverse_gelu=True, tower_init="structured")
    assert Recipe(tower_init="edges", colour_units=True, inverse_gelu=True).colour_units
