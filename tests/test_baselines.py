"""Baselines (issue 6): token counts at the published budgets, order, and naive references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mlb_core.backbones.prompts import render_prompt
from mlb_core.backbones.tiny import build_tiny_model
from mlb_core.config import get_preset
from mlb_core.errors import MLBError
from mlb_core.methods import METHODS
from mlb_core.methods.baselines import (
    frame_quotas,
    image_grid,
    mlb_budget,
    sf_slow_indices,
    thumbnail,
    uniform_indices,
)
from mlb_core.methods.registry import MethodInput, frames_that_fit
from mlb_core.pipeline import VideoFeatures, answer
from mlb_core.selection.attention import last_query_attention_eager

BASELINES = ("full", "uniform-pool", "fastv-topk", "sf-llava", "ig-vlm", "ts-llava")
# llava-hf/llava-v1.6-vicuna-7b-hf's any-res resolutions (config.json, image_grid_pinpoints)
LLAVA_NEXT_7B_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]


def _tokens(t, h, w, d=32, seed=0):
    return torch.randn(t, h, w, d, generator=torch.Generator().manual_seed(seed))


def _frames(t, height=72, width=128, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (t, height, width, 3), dtype=np.uint8)


def _run(vlm, method, tokens, frames, params, question="What is the rabbit doing?"):
    inp = MethodInput(vlm, tokens, frames, render_prompt(vlm.family, question), params)
    return METHODS[method](inp), inp


# ---- published budgets at the default settings -----------------------------------------
@pytest.fixture(scope="module")
def vlm24():
    """LLaVA-NeXT-7B's geometry: CLIP 336 px / 14 -> 24 x 24, its pinpoints, a 4K context."""
    return build_tiny_model("llava_next_vicuna", vision_overrides=dict(image_size=336, patch_size=14),
                            image_grid_pinpoints=LLAVA_NEXT_7B_PINPOINTS, max_position_embeddings=4096)


def test_budgets_at_defaults(vlm24):
    params = get_preset("mlb")  # 50 frames, GAPool 3x3, VSTail 2x2
    assert vlm24.grid_hw == (24, 24)
    tokens = _tokens(50, 24, 24)
    frame = _frames(1, 720, 1280)  # bigbuckbunny.mp4's size; one frame repeated (a view, no copy)
    frames = np.broadcast_to(frame, (50, 720, 1280, 3))
    counts = {m: _run(vlm24, m, tokens, frames, params)[0].shape[0] for m in (*BASELINES, "mlb")}
    assert counts == {
        "mlb": 3400,  # 50 x 64 + 50 x 4
        "uniform-pool": 3400,  # the MLB budget
        "fastv-topk": 3400,  # top 3400 of the 6 frames (3456 tokens) that fit a 4K context
        "full": 3456,  # 6 x 576
        "sf-llava": 3680,  # 10 x 288 + 50 x 16 [SF-LLaVA]
        "ts-llava": 3456,  # 2880 + 576 [TS-LLaVA]
        # 6 frames of 1280x720 -> a 2560x2160 image -> pinpoint 672x672 (2x2 tiles, 48x48
        # features) -> unpadded to 40 rows x 48 + 40 newlines = 1960, + 576 base = 2536
        "ig-vlm": 576 + 40 * (48 + 1),
    }
    assert mlb_budget(50, 24, 24, params) == 3400
    assert mlb_budget(50, 27, 27, params) == 50 * 81 + 50 * 4  # OneVision's 27 x 27 grid
    assert mlb_budget(50, 24, 24, params.replace(tail_mode="none")) == 3200


def test_sf_llava_slow_frames_are_sf_llavas():
    # SF-LLaVA: torch.linspace(0, T, 11).to(int32), last dropped
    assert sf_slow_indices(50, 10).tolist() == list(range(0, 50, 5))
    assert sf_slow_indices(20, 4).tolist() == [0, 5, 10, 15]


# ---- the tiny model: order and naive references ----------------------------------------
@pytest.fixture(scope="module")
def clip():
    return {"tokens": _tokens(4, 8, 8), "frames": _frames(4)}


def test_uniform_pool_matches_naive_windows(tiny, clip):
    tokens = clip["tokens"]
    params = get_preset("tiny")
    out, _ = _run(tiny, "uniform-pool", tokens, None, params)
    assert out.shape == (4 * (16 + 1), 32)  # the MLB budget: 4 x (2x2 GAPool cells of 8x8 + 1)
    params = params.replace(budget=70)  # 70 over 4 frames: 17, 18, 17, 18
    out, _ = _run(tiny, "uniform-pool", tokens, None, params)
    assert frame_quotas(4, 70).tolist() == [17, 18, 17, 18]
    ref = []
    for f, q in enumerate([17, 18, 17, 18]):
        flat = tokens[f].reshape(64, 32)  # raster order
        for i in range(q):
            a, b = (i * 64) // q, -(-((i + 1) * 64) // q)
            ref.append(flat[a:b].mean(0))
    torch.testing.assert_close(out, torch.stack(ref))


def test_fastv_topk_matches_eager_reference(tiny_eager, clip):
    tokens = clip["tokens"]
    params = get_preset("tiny").replace(budget=50)
    out, inp = _run(tiny_eager, "fastv-topk", tokens, None, params)
    assert out.shape == (50, 32) and "stage_one" in inp.timings
    embeds, vis = tiny_eager.build_inputs(inp.prompt, tokens.reshape(-1, 32))
    scores = last_query_attention_eager(tiny_eager.language_model, embeds, params.score_layer)[0, vis]
    keep = sorted(torch.argsort(scores, descending=True)[:50].tolist())  # top 50, then time order
    torch.testing.assert_close(out, tokens.reshape(-1, 32)[keep])
    # Default k: the MLB budget.
    assert _run(tiny_eager, "fastv-topk", tokens, None, get_preset("tiny"))[0].shape[0] == 68


def test_fastv_topk_keeps_to_the_context(clip):
    small = build_tiny_model(max_position_embeddings=200)
    tokens, params = clip["tokens"], get_preset("tiny").replace(budget=1000)
    out, inp = _run(small, "fastv-topk", tokens, None, params)
    keep = frames_that_fit(small, inp, 64)
    assert 1 <= len(keep) < 4  # not every frame fits 200 positions
    assert out.shape == (len(keep) * 64, 32)  # k capped by the tokens scored
    assert torch.equal(out, tokens[torch.as_tensor(keep)].reshape(-1, 32))  # all kept, in order


def test_sf_llava_matches_naive_loop(tiny):
    tokens = _tokens(10, 8, 8, seed=1)
    out, _ = _run(tiny, "sf-llava", tokens, None, get_preset("tiny").replace(n_frames=10))
    slow_idx = [0, 5]  # 10 frames -> 2 slow frames, SF-LLaVA's linspace(0, 10, 3)[:-1]
    ref = []
    for f in slow_idx:
        flat = tokens[f].reshape(64, 32)
        ref += [torch.maximum(flat[2 * i], flat[2 * i + 1]) for i in range(32)]
    for f in range(10):
        for r in range(4):
            for c in range(4):
                ref.append(tokens[f, 2 * r:2 * r + 2, 2 * c:2 * c + 2].reshape(-1, 32).mean(0))
    assert out.shape == (2 * 32 + 10 * 16, 32)  # slow first, then fast
    torch.testing.assert_close(out, torch.stack(ref))


def test_sf_llava_odd_grid_and_override(tiny):
    tokens = _tokens(5, 9, 9)  # OneVision-like: 81 tokens a frame, 3x3 pooling cells unequal
    params = get_preset("tiny").replace(n_frames=5, segment_frames=5, extra={"sf_slow_frames": 3})
    out, _ = _run(tiny, "sf-llava", tokens, None, params)
    assert out.shape == (3 * 40 + 5 * 16, 32)
    fast = torch.nn.functional.adaptive_avg_pool2d(tokens[4].permute(2, 0, 1), 4).permute(1, 2, 0)
    torch.testing.assert_close(out[-16:], fast.reshape(16, 32))
    # adaptive pooling cells of 9 into 4: [0,3) [2,5) [4,7) [6,9)
    torch.testing.assert_close(out[-1], tokens[4, 6:9, 6:9].reshape(-1, 32).mean(0))


def test_image_grid_layout():
    frames = np.stack([np.full((3, 4, 3), k, np.uint8) for k in range(5)])
    grid = image_grid(frames, 2)  # 2 per row, 3 rows, last cell white
    assert grid.shape == (9, 8, 3)
    cells = [[int(grid[3 * r, 4 * c, 0]) for c in range(2)] for r in range(3)]
    assert cells == [[0, 1], [2, 3], [4, 255]]
    assert (grid[3:6, 4:8] == 3).all()


def test_ig_vlm_is_one_anyres_image(tiny, clip):
    frames = clip["frames"]
    out, _ = _run(tiny, "ig-vlm", clip["tokens"], frames, get_preset("tiny"))
    idx = uniform_indices(4, 6)
    assert idx.tolist() == [0, 1, 1, 2, 2, 3]
    rows = [np.concatenate([frames[idx[2 * r]], frames[idx[2 * r + 1]]], axis=1) for r in range(3)]
    ref = tiny.encode_image_anyres(np.concatenate(rows, axis=0))  # (216, 256) image
    assert torch.equal(out, ref)
    assert out.shape[0] > 64  # base image + any-res tiles + newline tokens


def test_thumbnail_layout():
    s = 336
    pixels = torch.stack([torch.full((3, s, s), float(k)) for k in range(6)])
    thumb = thumbnail(pixels, (3, 2))
    assert thumb.shape == (3, s, s)
    for k in range(6):
        r, c = divmod(k, 2)
        tile = thumb[:, 112 * r:112 * (r + 1), 168 * c:168 * (c + 1)]  # TS-LLaVA: 336//3 x 336//2
        assert (tile == k).all(), k
    # A smooth image resized by area interpolation keeps its mean in every tile.
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(6, 3, 56, 56, generator=g)
    thumb = thumbnail(pixels, (3, 2))  # 56 = 19 + 18 + 19 rows, 28 + 28 cols
    assert thumb.shape == (3, 56, 56)
    torch.testing.assert_close(thumb[:, 19:37, 28:].mean(), pixels[3].mean(), atol=0.02, rtol=0)


def test_ts_llava_sampled_then_thumbnail(tiny, clip):
    tokens, frames = clip["tokens"], clip["frames"]
    params = get_preset("tiny").replace(extra={"ts_sampled_tokens": 100})
    out, _ = _run(tiny, "ts-llava", tokens, frames, params)
    assert out.shape == (100 + 64, 32)
    idx = [round(i * 255 / 99) for i in range(100)]  # linspace(0, N-1, n), first and last included
    assert idx[0] == 0 and idx[-1] == 255
    torch.testing.assert_close(out[:100], tokens.reshape(-1, 32)[idx])
    pixels = tiny.preprocess(frames[[0, 1, 1, 2, 2, 3]])
    thumb = tiny.encode_pixels(thumbnail(pixels, (3, 2))[None]).reshape(64, 32)
    torch.testing.assert_close(out[100:], thumb)
    # Default: 5 frames' worth of tokens, at most all of them -> 256 + 64 at the tiny preset.
    assert _run(tiny, "ts-llava", tokens, frames, get_preset("tiny"))[0].shape == (256 + 64, 32)


@pytest.mark.parametrize("method", ["ig-vlm", "ts-llava"])
def test_image_methods_need_frames(tiny, clip, method):
    with pytest.raises(MLBError, match="needs the decoded frames"):
        _run(tiny, method, clip["tokens"], None, get_preset("tiny"))


def test_every_method_answers_through_the_pipeline(tiny, clip):
    features = VideoFeatures("synthetic", clip["frames"], np.arange(4), clip["tokens"])
    params = get_preset("tiny")
    for method in sorted(METHODS):
        out = answer(tiny, features, "What happens?", method, params)
        expected = _run(tiny, method, clip["tokens"], clip["frames"], params)[0].shape[0]
        assert out.n_visual_tokens == expected, method
        assert isinstance(out.text, str) and out.timings["generate"] >= 0
    assert math.isclose(sum(frame_quotas(7, 100)), 100)
