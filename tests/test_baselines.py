"""Baselines (issue 6): token counts at the published budgets, order, and naive references
(docs/method.md, "Baselines")."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlb_core.backbones.prompts import render_prompt
from mlb_core.backbones.tiny import build_tiny_model
from mlb_core.config import get_preset
from mlb_core.errors import MLBError
from mlb_core.methods import METHODS
from mlb_core.methods.baselines import (
    fastv_keep_count,
    image_grid,
    mlb_budget,
    sf_slow_indices,
    thumbnail,
    uniform_indices,
)
from mlb_core.methods.registry import MethodInput, frames_that_fit
from mlb_core.pipeline import VideoFeatures, answer
from mlb_core.selection.attention import last_query_attention_eager
from mlb_core.selection.scores import StageOneCache

BASELINES = ("full", "fastv", "sf-llava", "ig-vlm", "ts-llava")
# llava-hf/llava-v1.6-vicuna-7b-hf's any-res resolutions (config.json, image_grid_pinpoints)
LLAVA_NEXT_7B_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]


def _tokens(t, h, w, d=32, seed=0):
    return torch.randn(t, h, w, d, generator=torch.Generator().manual_seed(seed))


def _frames(t, height=72, width=128, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (t, height, width, 3), dtype=np.uint8)


def _run(vlm, method, tokens, frames, params, question="What is the rabbit doing?", scorer=None):
    inp = MethodInput(vlm, tokens, frames, render_prompt(vlm.family, question), params,
                      scorer=scorer or StageOneCache())
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
    cache = StageOneCache()  # mlb and global-topk share the segments' scores
    counts = {m: _run(vlm24, m, tokens, frames, params, scorer=cache)[0].shape[0]
              for m in (*BASELINES, "mlb", "global-topk")}
    assert counts == {
        "mlb": 3400,  # 50 x 64 + 50 x 4
        "global-topk": 3400,  # the MLB budget, over all 50 frames
        "fastv": 1728,  # FastV K = 2, R = 50%: half of the 6 frames (3456 tokens) that fit a 4K context
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


def _fastv_reference(vlm, prompt, tokens, layer, n_keep):
    """Naive FastV ranking: one full eager forward over ``prefix + tokens + suffix``, layer
    ``layer``'s attention matrix, the last row averaged over heads, the ``n_keep`` best visual
    tokens in time order (FastV's released code)."""
    d = tokens.shape[-1]
    embeds, vis = vlm.build_inputs(prompt, tokens.reshape(-1, d))
    scores = last_query_attention_eager(vlm.language_model, embeds, layer)[0, vis]
    keep = sorted(torch.argsort(scores, descending=True)[:n_keep].tolist())
    return tokens.reshape(-1, d)[keep]


def test_fastv_keep_count_is_fastvs():
    # FastV: ATTENTION_RANK = round(576 * (1 - R)): 288 at R = 50%, 144 at 75%
    assert [fastv_keep_count(576, r) for r in (0.5, 0.75, 0.0)] == [288, 144, 576]
    assert fastv_keep_count(3456, 0.5) == 1728
    assert fastv_keep_count(10, 0.99) == 1  # never empty


def test_fastv_matches_eager_reference(tiny_eager, clip):
    tokens = clip["tokens"]  # 4 frames x 64 tokens; all fit the tiny context
    out, inp = _run(tiny_eager, "fastv", tokens, None, get_preset("tiny"))  # K = 2, R = 50%
    assert out.shape == (128, 32) and "stage_one" in inp.timings and inp.scored
    # ranked by layer K-1 = 1 (the layer before the pruning), not by params.score_layer
    torch.testing.assert_close(out, _fastv_reference(tiny_eager, inp.prompt, tokens, 1, 128))
    params = get_preset("tiny").replace(extra={"fastv_k": 3, "fastv_r": 0.75})  # score_layer stays 1
    out, inp = _run(tiny_eager, "fastv", tokens, None, params)
    assert out.shape == (64, 32)
    torch.testing.assert_close(out, _fastv_reference(tiny_eager, inp.prompt, tokens, 2, 64))


def test_fastv_keeps_to_the_context(clip):
    small = build_tiny_model(max_position_embeddings=200, attn_implementation="eager")
    tokens = clip["tokens"]
    out, inp = _run(small, "fastv", tokens, None, get_preset("tiny"))
    keep = frames_that_fit(small, inp, 64)
    assert 1 <= len(keep) < 4  # not every frame fits 200 positions
    ref = _fastv_reference(small, inp.prompt, tokens[torch.as_tensor(keep)], 1, len(keep) * 32)
    torch.testing.assert_close(out, ref)  # half of the frames that fit, not of all frames


def test_fastv_shares_the_cache_with_mlb(tiny, clip):
    """FastV's layer-(K-1) scores are their own cache entry: running ``mlb`` (scoring layer 1)
    and ``fastv`` with K = 3 (layer 2) on one cache gives what each gives alone, and a second
    question reuses both contexts."""
    tokens, params = clip["tokens"], get_preset("tiny").replace(extra={"fastv_k": 3})
    alone = {m: _run(tiny, m, tokens, None, params)[0] for m in ("mlb", "fastv")}
    cache = StageOneCache()
    for m in ("mlb", "fastv", "mlb"):
        assert torch.equal(_run(tiny, m, tokens, None, params, scorer=cache)[0], alone[m]), m
    assert cache.n_builds == 2
    _run(tiny, "fastv", tokens, None, params, question="Where is the rabbit?", scorer=cache)
    assert cache.n_builds == 2 and cache.n_questions == 3


@pytest.mark.parametrize("extra,match", [({"fastv_k": 0}, "fastv_k"), ({"fastv_k": "2"}, "fastv_k"),
                                         ({"fastv_k": 4}, "last layer"), ({"fastv_r": 1.0}, "fastv_r"),
                                         ({"fastv_r": -0.1}, "fastv_r"), ({"fastv_r": True}, "fastv_r")])
def test_fastv_bad_settings(tiny, clip, extra, match):
    with pytest.raises(MLBError, match=match):  # the tiny model has 4 layers
        _run(tiny, "fastv", clip["tokens"], None, get_preset("tiny").replace(extra=extra))


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
