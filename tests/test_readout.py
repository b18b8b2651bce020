"""The learnt slot read-out (mlb_core/train/readout.py; docs/training-record.md, "A learnt read-out")."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mlb_core.train import scenes
from mlb_core.train.readout import learn_readout, slots_of, weighted_ridge


def _quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


def _problem(seed: int = 0, n: int = 3000, d: int = 4):
    """Patch vectors and slot targets that no linear read-out of near-linear units gives: a
    slot is 1 inside a ball around a centre (a colour), 0 elsewhere; the last slot is 1 - the others."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    centres = torch.randn(3, d, generator=g) * 0.8
    inside = ((x[:, None] - centres[None]).norm(dim=-1) < 1.3).float()  # (n, 3)
    inside = inside * (inside.cumsum(1) == 1)  # at most one slot a patch
    y = torch.cat([inside, 1 - inside.sum(1, keepdim=True)], 1)  # (n, 4)
    return x, y, torch.ones(n)


def test_slots_of_is_the_mlp_then_the_gelu_row_by_row():
    g = torch.Generator().manual_seed(1)
    x, w1, b1 = torch.randn(5, 6, generator=g), torch.randn(7, 6, generator=g), torch.randn(7, generator=g)
    w2, b2 = torch.randn(3, 7, generator=g), torch.randn(3, generator=g)
    fast = slots_of(x, w1, b1, w2, b2, _quick_gelu)
    for i in range(5):  # a plain loop over patches and units
        h = torch.stack([_quick_gelu(sum(w1[u, k] * x[i, k] for k in range(6)) + b1[u]) for u in range(7)])
        ref = torch.stack([F.gelu(sum(w2[s, u] * h[u] for u in range(7)) + b2[s]) for s in range(3)])
        torch.testing.assert_close(fast[i], ref, rtol=1e-5, atol=1e-6)


def test_weighted_ridge_matches_the_normal_equations_and_leaves_the_intercept_unshrunk():
    g = torch.Generator().manual_seed(2)
    h, y, w = torch.randn(200, 4, generator=g), torch.randn(200, 2, generator=g), torch.rand(200, generator=g) + 0.5
    weight, bias = weighted_ridge(h, y + 5.0, w, ridge=1e6)  # a huge ridge: the slopes vanish, the intercept stays
    assert weight.abs().max() < 1e-3
    torch.testing.assert_close(bias, ((y + 5.0) * w[:, None]).sum(0) / w.sum(), rtol=1e-3, atol=1e-3)
    weight, bias = weighted_ridge(h, h @ torch.tensor([[1.0, 2.0, 0.0, -1.0], [0.5, 0.0, 0.0, 0.0]]).T + 3.0, w, 0.0)
    torch.testing.assert_close(weight, torch.tensor([[1.0, 2.0, 0.0, -1.0], [0.5, 0.0, 0.0, 0.0]]), atol=1e-4, rtol=0)
    torch.testing.assert_close(bias, torch.full((2,), 3.0), atol=1e-4, rtol=0)


def test_learnt_readout_beats_its_ridge_start_keeps_the_fixed_units_and_is_seeded():
    x, y, w = _problem()
    fc1 = torch.nn.Linear(x.shape[1], 40)
    fixed = (fc1.weight[:8].detach().clone(), fc1.bias[:8].detach().clone())
    params, log = learn_readout(x, y, w, fc1, _quick_gelu, n_fixed=8, seed=0, steps=600, lr=1e-2, batch=512)
    assert params["w1"].shape == (40, x.shape[1]) and params["w2"].shape == (4, 40)
    torch.testing.assert_close(params["w1"][:8], fixed[0], rtol=0, atol=0)
    torch.testing.assert_close(params["b1"][:8], fixed[1], rtol=0, atol=0)
    assert log["loss_last100"] < 0.8 * log["loss_ridge_start"], log  # measured: 0.116 against 0.166
    again, _ = learn_readout(x, y, w, fc1, _quick_gelu, n_fixed=8, seed=0, steps=600, lr=1e-2, batch=512)
    other, _ = learn_readout(x, y, w, fc1, _quick_gelu, n_fixed=8, seed=1, steps=600, lr=1e-2, batch=512)
    for k in params:
        torch.testing.assert_close(params[k], again[k], rtol=0, atol=0)
    assert not torch.equal(params["w1"], other["w1"])
    torch.testing.assert_close(fc1.weight[:8], fixed[0], rtol=0, atol=0)  # fc1 itself is only read


def test_learnt_readout_in_the_tower_is_what_the_slot_units_read(edge_tower):
    """``fit_slot_readout`` with ``readout="learnt"`` on a tiny LLaVA-NeXT with a 336 px CLIP
    tower: afterwards the projector's slot units are exactly the fitted MLP of the first
    layer's second layer-norm output, through the GELU (a hand computation from the hooked
    input), and the rectified edge units are as ``edge_energy_init`` built them."""
    from mlb_core.train.tower_init import clip_parts, edge_rows
    from mlb_core.train.vision import N_SLOTS, Recipe, fit_slot_readout, pixel_values, slots

    model, processor, tower, reserved = edge_tower
    emb, _, encoder = clip_parts(tower)
    layer = encoder.layers[0]
    n_edges = len(edge_rows(emb.patch_embedding, len(reserved)))
    edges_before = layer.mlp.fc1.weight[:n_edges].detach().clone()
    recipe = Recipe(outline_fit_frames=12, shape_target="outline", tower_init="edges", readout="learnt",
                    readout_steps=40)
    row = fit_slot_readout(model, processor, scenes.VideoBank(max_frames=8), reserved, 0, recipe)
    assert row["readout"] == "learnt" and row["frames"] == 12 and row["patches"] == 12 * 576
    assert row["loss_last100"] < row["loss_ridge_start"], row
    torch.testing.assert_close(layer.mlp.fc1.weight[:n_edges], edges_before, rtol=0, atol=0)
    caught = {}
    hook = layer.layer_norm2.register_forward_hook(lambda m, i, o: caught.__setitem__("x", o))
    frames, _ = scenes.render_clip(scenes.sample_clip(9, 2, "train", 1, 0.0, "gradient"))
    with torch.no_grad():
        got = slots(model, pixel_values(frames, processor))  # (2, 24, 24, N_SLOTS)
    hook.remove()
    mlp, dims = layer.mlp, reserved[:N_SLOTS]
    want = slots_of(caught["x"][:, 1:].reshape(-1, caught["x"].shape[-1]), mlp.fc1.weight, mlp.fc1.bias,
                    mlp.fc2.weight[dims], mlp.fc2.bias[dims], mlp.activation_fn)
    torch.testing.assert_close(got.reshape(-1, N_SLOTS), want, rtol=1e-4, atol=1e-5)


def test_learnt_readout_needs_the_edge_tower_and_its_own_units():
    from mlb_core.train.vision import RECIPES, Recipe

    with pytest.raises(ValueError, match="readout"):
        Recipe(readout="mlp")
    with pytest.raises(ValueError, match="tower_init='edges'"):
        Recipe(readout="learnt")
    with pytest.raises(ValueError, match="colour_units"):
        Recipe(readout="learnt", tower_init="edges", colour_units=True)
    with pytest.raises(ValueError, match="readout_steps"):
        Recipe(readout="learnt", tower_init="edges", readout_steps=0)
    assert RECIPES["long-branch"].readout == "ridge" and RECIPES["committed"].readout == "learnt"  # pooled


def test_card_says_which_readout_the_weights_have():
    import json
    from dataclasses import asdict

    from mlb_core.backbones import vision_weights
    from mlb_core.train.card import model_card
    from mlb_core.train.vision import RECIPES

    log = json.loads((vision_weights.WEIGHTS_DIR / "training_log.json").read_text())  # the committed: pooled
    card = model_card(log)
    assert "A learnt slot read-out" in card and "3000 Adam steps" in card and "at the ridge start" in card
    assert "A closed-form slot read-out" not in card
    learnt_keys = ("readout", "loss_ridge_start", "loss_last100")
    ridge_fit = {k: v for k, v in log["outline_fit"].items() if k not in learnt_keys}
    card = model_card({**log, "recipe": asdict(RECIPES["long-branch"]), "outline_fit": ridge_fit})
    assert "A closed-form slot read-out" in card and "A learnt slot read-out" not in card
