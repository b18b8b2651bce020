"""The pooled tower (mlb_core.train.pool) on config-built CLIP towers: each closed-form layer
against a plain reference computed from the layer norm's output by hand."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPVisionConfig, CLIPVisionModel

from mlb_core.train import pool as P
from mlb_core.train.saturate import clamp_pair
from mlb_core.train.tower_init import clip_parts, edge_energy_init, structured_init
from mlb_core.train.vision import RECIPES, Recipe

HIDDEN = 128


def tower(seed: int = 0) -> CLIPVisionModel:
    torch.manual_seed(seed)
    cfg = CLIPVisionConfig(hidden_size=HIDDEN, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                           image_size=84, patch_size=14)
    return CLIPVisionModel(cfg).eval()


DIMS = list(range(HIDDEN - 32, HIDDEN))


def residual(n_tokens: int = 37, seed: int = 1) -> torch.Tensor:
    """(1, n_tokens, HIDDEN): random content, the reserved dimensions zero, slots set below."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, n_tokens, HIDDEN, generator=gen)
    x[..., DIMS] = 0
    return x


def normed(x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), eps=1e-5)


def test_append_layer_is_the_identity_and_counted():
    t = tower()
    x = residual()
    layer = P.append_layer(t)
    assert len(clip_parts(t)[2].layers) == 3 and t.config.num_hidden_layers == 3
    with torch.no_grad():
        out = layer(x, None)
    out = out[0] if isinstance(out, tuple) else out
    assert torch.allclose(out, x, atol=1e-6)


def test_mark_patches_tells_the_class_token_from_every_patch():
    t = tower()
    structured_init(t, seed=0)
    reserved = edge_energy_init(t, 32)
    P.mark_patches(t, reserved)
    emb, pre, _ = clip_parts(t)
    pix = torch.randn(3, 3, 84, 84) * 2
    with torch.no_grad():
        x = pre(emb(pix))  # (3, 1 + 36, D)
    flag = x[..., reserved[P.FLAG]] - x[..., reserved[P.FLAG_REF]]
    assert torch.equal(flag[:, 0], torch.zeros(3))
    assert (flag[:, 1:] > 0).all()


def test_saturate_layer_against_the_formulas():
    t = tower()
    layer = clip_parts(t)[2].layers[1]
    x = residual()
    gen = torch.Generator().manual_seed(2)
    x[..., DIMS[:10]] = torch.randn(1, 37, 10, generator=gen)
    x[..., DIMS[P.FLAG]] = 1.0
    x[0, 0, DIMS[P.FLAG]] = 0.0  # the class token
    a, b = torch.rand(6, generator=gen) + 0.5, torch.rand(6, generator=gen) - 0.5
    xn = normed(x)
    f = xn[..., DIMS[P.FLAG]] - xn[..., DIMS[P.FLAG_REF]]
    f_cls, least = float(f[0, 0]), float(f[0, 1:].min())
    P.set_saturate(layer, DIMS, a, b, 4.0, (f_cls, (least + f_cls) / 2))
    with torch.no_grad():
        out = layer.mlp(layer.layer_norm2(x))  # (1, 37, D)
    act = layer.mlp.activation_fn
    ref = x.new_zeros(out.shape)
    for c in range(6):  # plain loop over the slots
        z = xn[..., DIMS[c]] - xn[..., DIMS[P.ZERO]]
        ref[..., DIMS[P.KEYS][c]] = clamp_pair(a[c] * z + b[c], 4.0, act)
    for s in range(3):
        z = xn[..., DIMS[6 + s]] - xn[..., DIMS[P.ZERO]]
        ref[..., DIMS[P.VALUES][s]] = act(P.RECTIFY_GAIN * z) / P.RECTIFY_GAIN
    mid = (least + f_cls) / 2
    ref[..., DIMS[P.CLS]] = clamp_pair(2 * (mid - f) / (mid - f_cls), 4.0, act)
    ref[..., DIMS[P.STEADY]] = P.STEADY_VALUE
    assert torch.allclose(out, ref, atol=1e-5)
    assert float(out[0, 0, DIMS[P.CLS]]) > 0.99 and float(out[0, 1:, DIMS[P.CLS]].abs().max()) < 0.01


def test_pool_attention_against_a_plain_softmax_loop():
    t = tower()
    layer = P.append_layer(t)
    x = residual(seed=3)
    gen = torch.Generator().manual_seed(4)
    x[..., DIMS[P.KEYS]] = (torch.rand(1, 37, 6, generator=gen) > 0.7).float()
    x[..., DIMS[P.VALUES]] = torch.rand(1, 37, 3, generator=gen)
    x[0, 0, DIMS[P.CLS]] = 1.0  # the class token, with a key and values like any patch
    x[0, 0, DIMS[P.KEYS]] = 1.0
    x[..., DIMS[P.STEADY]] = P.STEADY_VALUE
    sigma = x.std(-1, unbiased=False)  # (1, 37)
    scale, cls_scale = float(sigma[0, 1:].median()), float(sigma[0, 0])
    P.set_pool_attention(layer, DIMS, 8.0, scale, cls_scale)
    with torch.no_grad():
        out = layer.self_attn(layer.layer_norm1(x))[0]  # (1, 37, D)
    xn = normed(x)[0]
    k = xn[:, DIMS[P.KEYS]] - xn[:, DIMS[P.ZERO], None]  # (37, 6)
    v = xn[:, DIMS[P.VALUES]] - xn[:, DIMS[P.ZERO], None]
    mark = xn[:, DIMS[P.CLS]] - xn[:, DIMS[P.ZERO]]  # (37,)
    ref = torch.zeros(37, 3)
    for i in range(37):
        logits = torch.tensor([8.0 * scale ** 2 * float(k[i] @ k[j])
                               - P.CLS_PENALTY * cls_scale * float(mark[j]) for j in range(37)])
        w = torch.softmax(logits, 0)
        ref[i] = scale * (w[:, None] * v).sum(0)
        assert w[0] < 1e-6  # the class token is never pooled
    assert torch.allclose(out[0][:, DIMS[P.POOLED]], ref, atol=1e-4)
    others = [d for d in range(HIDDEN) if d not in DIMS[P.POOLED]]
    assert float(out[0][:, others].abs().max()) == 0.0


def test_onehot_sharpening_marks_the_pooled_argmax_and_gates_by_mass():
    t = tower()
    layer = P.append_layer(t)
    proj = torch.nn.Module()
    proj.linear_1 = torch.nn.Linear(HIDDEN, 20)
    x = residual(seed=5)
    gen = torch.Generator().manual_seed(6)
    pooled = torch.rand(1, 37, 3, generator=gen)
    x[..., DIMS[P.POOLED]] = pooled
    x[..., DIMS[P.VALUES]] = torch.rand(1, 37, 3, generator=gen)
    x[..., DIMS[P.STEADY]] = P.STEADY_VALUE
    k, d = 1.5, 0.1
    P.set_onehot(layer, proj, DIMS, [6, 7, 8], 500.0, (k, d), 4.0)
    with torch.no_grad():
        sharp = (x + layer.mlp(layer.layer_norm2(x)))[..., DIMS[P.SHARP]]  # (1, 37, 3)
        units = proj.linear_1(x + layer.mlp(layer.layer_norm2(x)))[..., 6:9]
    top = pooled.topk(2, -1).values
    clear = (top[..., 0] - top[..., 1]) / normed(x).std() > 0  # every token; margins are random, not tiny
    xn = normed(x)
    margin = (xn[..., DIMS[P.POOLED]].topk(2, -1).values.diff(dim=-1).abs()[..., 0])
    decided = margin * 500.0 > 1.05  # the pair's clamp saturated
    assert decided.any() and clear.all()
    arg = pooled.argmax(-1)
    for i in torch.nonzero(decided[0]).flatten().tolist():
        for s in range(3):
            if s == int(arg[0, i]):
                assert abs(float(sharp[0, i, s])) < 0.05
            else:
                assert float(sharp[0, i, s]) < -P.ONEHOT_WALL + 0.1
    mass = x[..., DIMS[P.VALUES]].sum(-1)
    assert torch.allclose(units, sharp + k * mass[..., None] - d, atol=1e-4)


def test_fit_mass_recovers_a_known_gelu():
    gen = torch.Generator().manual_seed(7)
    m = torch.rand(2000, generator=gen) * 2
    target = F.gelu(1.7 * m - 0.3)
    k, d = P.fit_mass(m, target, torch.ones(2000), steps=1500)
    assert abs(k - 1.7) < 0.05 and abs(d - 0.3) < 0.05


def batches_of(t: CLIPVisionModel, seed: int = 0):
    """A synthetic stream: random frames with a coloured square; slot targets from the pixels."""

    def batches(n: int, part: str):
        gen = torch.Generator().manual_seed(seed * 10 + len(part))
        side = 84 // 14
        for _ in range(0, n, 4):
            pix = torch.randn(4, 3, 84, 84, generator=gen) * 0.1
            target = torch.zeros(4, side * side, 10)
            target[..., -1] = 1
            for i in range(4):
                c = int(torch.randint(6, (1,), generator=gen))
                r0, c0 = (int(v) for v in torch.randint(0, 3, (2,), generator=gen))
                pix[i, c % 3, r0 * 14:(r0 + 3) * 14, c0 * 14:(c0 + 3) * 14] += 2.0
                for r in range(r0, r0 + 3):
                    for cc in range(c0, c0 + 3):
                        p = r * side + cc
                        target[i, p, c] = 1.0
                        target[i, p, 6 + c % 3] = 1.0 if (r, cc) != (r0 + 1, c0 + 1) else 0.0
                        target[i, p, -1] = 0.0
            yield pix, target, 1 + 3 * (target[..., -1] == 0).float()

    return batches


def with_readout(t: CLIPVisionModel, reserved: list[int]) -> None:
    """A stand-in for the fitted first-layer read-out: random weights into the ten slot dimensions."""
    fc2 = clip_parts(t)[2].layers[0].mlp.fc2
    with torch.no_grad():
        fc2.weight[reserved[:10]] = torch.randn(10, fc2.in_features, generator=torch.Generator().manual_seed(8))


@pytest.mark.parametrize("sharpen", P.SHARPENINGS)
def test_build_pool_end_to_end_on_a_tiny_tower(sharpen: str):
    t = tower()
    structured_init(t, seed=0)
    reserved = edge_energy_init(t, 32)
    P.mark_patches(t, reserved)
    with_readout(t, reserved)
    proj = torch.nn.Module()
    proj.linear_1 = torch.nn.Linear(HIDDEN, 20)
    row = P.build_pool(t, proj, reserved, batches_of(t), [6, 7, 8], 0, 8.0, 4.0, 8, 8, 20, 1e-4, 1.0, sharpen)
    assert len(clip_parts(t)[2].layers) == 3 and t.config.num_hidden_layers == 3
    assert row["stage"] == "pool" and row["sharpen"] == sharpen
    assert row["cls_mark"] > 0.9 and row["patch_mark_max"] < 0.05
    for unit, d in zip([6, 7, 8], [reserved[i] for i in range(22, 25)], strict=True):  # the shape units read SHARP
        assert float(proj.linear_1.weight[unit, d].detach()) == 1.0
    with torch.no_grad():
        hidden = t(torch.randn(2, 3, 84, 84), output_hidden_states=True).hidden_states
    assert len(hidden) == 4 and torch.isfinite(hidden[-1]).all()


def test_build_pool_refuses_a_tower_without_the_patch_flag():
    t = tower()
    structured_init(t, seed=0)
    reserved = edge_energy_init(t, 32)
    with_readout(t, reserved)
    proj = torch.nn.Module()
    proj.linear_1 = torch.nn.Linear(HIDDEN, 20)
    with pytest.raises(ValueError, match="mark_patches"):
        P.build_pool(t, proj, reserved, batches_of(t), [6, 7, 8], 0, 8.0, 4.0, 8, 8, 20, 1e-4, 1.0, "onehot")


def test_recipe_checks_the_pool_fields():
    pooled = RECIPES["pooled"]
    assert pooled.pool == "shape" and pooled.reserved >= P.N_POOL_RESERVED and pooled.feature_layer == -1
    assert RECIPES["committed"] == pooled  # since 2026-12-06
    assert RECIPES["lead-cosine"].pool == "none" and RECIPES["lead-cosine"].reserved == 16  # as before the fields
    with pytest.raises(ValueError, match="pool must be"):
        replace(pooled, pool="colour")
    with pytest.raises(ValueError, match="pool_sharpen"):
        replace(pooled, pool_sharpen="hard")
    for bad in (dict(reserved=16), dict(readout="ridge"), dict(feature_layer=-2), dict(saturate="colour")):
        with pytest.raises(ValueError, match="builds two layers"):
            replace(pooled, **bad)
    with pytest.raises(ValueError, match="reserved must be"):
        Recipe(reserved=4)
    assert math.isclose(pooled.pool_gain, 8.0)


def test_the_card_describes_the_pooled_tower_only_when_there_is_one():
    import json
    from dataclasses import asdict

    from mlb_core.backbones.vision_weights import WEIGHTS_DIR
    from mlb_core.train.card import model_card

    log = json.loads((WEIGHTS_DIR / "training_log.json").read_text())  # the committed: pooled since 2026-12-06
    assert "pools shape" in model_card(log) and "hidden 256, 3 layers" in model_card(log)
    log = {k: v for k, v in log.items() if k != "pool"} | {"recipe": asdict(RECIPES["lead-cosine"])}
    assert "pools shape" not in model_card(log) and "hidden 256, 2 layers" in model_card(log)
    row = {"saturate_frames": 320, "keys_on": 0.91, "keys_off": -0.003, "sharpen": "onehot", "sharpen_frames": 1200,
           "outline_argmax_accuracy": 0.889}
    card = model_card({**log, "recipe": asdict(RECIPES["pooled"]), "pool": row})
    assert "pools shape" in card and "89% of their outline patches" in card and "32 residual dimensions" in card
