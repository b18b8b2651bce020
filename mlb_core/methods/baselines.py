"""Baselines as methods of the same harness (docs/method.md, "Baselines").

Each baseline maps the shared grid tokens (T, h, w, D) -- and, where it needs them, the
decoded frames or attention scores -- to a stage-two visual sequence (N, D). Encoding and
greedy generation are shared with LLaVA-MLB, so every method sees identical inputs.

Budgets at the ``mlb`` preset with a 24 x 24 grid (50 frames, 28,800 grid tokens):

- ``uniform-pool``: attention-blind average pooling to the MLB budget (3400);
- ``fastv-topk``: one pass over the frames that fit the context, global top-k (3400);
- ``sf-llava``: SlowFast-LLaVA (Xu et al., 2024; apple/ml-slowfast-llava):
  10 slow frames x 288 + 50 fast frames x 16 = 3680;
- ``ig-vlm``: IG-VLM (Kim et al., 2024; imagegridworth/IG-VLM): 6 frames tiled 2 per row x
  3 rows into one image, encoded by the model's own any-res path (count depends on the
  frames' aspect ratio and the checkpoint's pinpoints);
- ``ts-llava``: TS-LLaVA (Qu et al., 2024; tingyu215/TS-LLaVA): 2880 tokens sampled
  uniformly from all frames, then a 6-frame thumbnail image of 576 tokens = 3456.

Counts that depend on the frame count or grid are derived from them, so smaller presets
scale the recipes down; ``params.budget`` overrides the budget of ``uniform-pool`` and
``fastv-topk``, and ``params.extra`` may set ``sf_slow_frames`` and ``ts_sampled_tokens``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from mlb_core.config import MLBParams
from mlb_core.errors import MLBError
from mlb_core.methods.registry import MethodInput, frames_that_fit, register
from mlb_core.selection.gapool import gapool_count, topk_tokens, vstail

SF_SLOW_RATIO = 5  # SF-LLaVA: 10 slow frames of 50 [slow_10frms ... 50_frms config]
SF_FAST_GRID = (4, 4)  # SF-LLaVA: fast pathway adaptive-avg-pooled to 4 x 4 a frame
IMAGE_FRAMES = 6  # IG-VLM (frame_fixed_number=6) and TS-LLaVA (V2 thumbnail): 6 frames
IG_PER_ROW = 2  # IG-VLM: round(sqrt(6)) = 2 images per row -> 3 rows
TS_GRID = (3, 2)  # TS-LLaVA: find_best_grid(6) -> 3 rows x 2 columns
TS_SAMPLED_FRAMES = 5  # TS-LLaVA: 2880 sampled tokens = 5 frames' worth (+ 1 thumbnail = 6 x 576)


def mlb_budget(t: int, h: int, w: int, params: MLBParams) -> int:
    """Visual tokens LLaVA-MLB keeps for ``t`` frames of ``h x w`` tokens: GAPool body plus
    VSTail (3200 + 200 = 3400 at the ``mlb`` preset, 24 x 24 grids)."""
    body = t * gapool_count(h, w, params.grid)
    tail = vstail(torch.zeros(1, h, w, 1), torch.ones(1, h, w), params.tail_grid, params.tail_mode).shape[0]
    return body + t * tail


def budget(inp: MethodInput) -> int:
    """``params.budget`` if set, else the MLB budget at the same parameters (equal budgets)."""
    t, h, w, _ = inp.tokens.shape
    return inp.params.budget or mlb_budget(t, h, w, inp.params)


def uniform_indices(n_total: int, n: int) -> np.ndarray:
    """``n`` indices spread uniformly over ``range(n_total)``, first and last included
    (TS-LLaVA's ``uniformly_sample_frames``/``sample_tokens``; repeats when ``n > n_total``)."""
    return np.linspace(0, n_total - 1, n).round().astype(np.int64)


def _frames(inp: MethodInput, method: str) -> np.ndarray:
    if inp.frames is None:
        raise MLBError(f"method {method!r} re-encodes frames as an image and needs the decoded frames")
    assert inp.frames.ndim == 4 and inp.frames.shape[-1] == 3, inp.frames.shape
    return inp.frames


# ---- uniform-pool ---------------------------------------------------------------------
def frame_quotas(t: int, n: int) -> np.ndarray:
    """Split ``n`` tokens over ``t`` frames as evenly as possible, in order: (t,) ints, sum n."""
    edges = (np.arange(t + 1) * n) // t
    return np.diff(edges)


@register("uniform-pool", "attention-blind average pooling of every frame to the MLB budget")
def uniform_pool(inp: MethodInput) -> torch.Tensor:
    """Attention-blind pooling to ``budget(inp)`` tokens (the MLB budget unless
    ``params.budget`` is set). The budget is split evenly over the frames; each frame's
    ``h*w`` tokens, in raster order, are cut into that many contiguous windows of (nearly)
    equal length and averaged (``adaptive_avg_pool1d``). Frame-major order; a window never
    crosses a frame boundary. 68 tokens a frame (windows of ~8.5 tokens) at the ``mlb`` preset.
    """
    t, h, w, d = inp.tokens.shape
    n = min(budget(inp), t * h * w)
    flat = inp.tokens.reshape(t, h * w, d).transpose(1, 2).float()  # (T, D, hw)
    out = [F.adaptive_avg_pool1d(flat[f:f + 1], int(q))[0].T  # (q, D)
           for f, q in enumerate(frame_quotas(t, n)) if q > 0]
    visual = torch.cat(out).to(inp.tokens.dtype)
    assert visual.shape == (n, d)
    return visual


# ---- fastv-topk -----------------------------------------------------------------------
@register("fastv-topk", "one pass over all frames, last-query attention at the scoring layer, global top-k")
def fastv_topk(inp: MethodInput) -> torch.Tensor:
    """FastV-style selection (one pass, no segments): run the LLM on
    ``prefix + every frame's tokens + suffix`` up to ``params.score_layer``, score every
    visual token by the last query's attention, keep the global top-k in temporal order
    (k = the MLB budget unless ``params.budget`` is set). This is the biased selection of
    Fig. 1 at video scale.

    The pass must fit the context: if all ``T*h*w`` tokens do not, only the frames that fit
    (chosen uniformly over the video, as ``full`` does) are scored, and the top-k is taken
    among them (LLaVA-NeXT-7B's 4K context holds 6 of 50 frames). The pass is one segment of
    the stage-one cache, so later questions about the video reuse its question-independent
    part. Timed as ``stage_one``.
    """
    t, h, w, d = inp.tokens.shape
    keep = frames_that_fit(inp.vlm, inp, h * w)
    tokens = inp.tokens[torch.as_tensor(keep)]  # (T', h, w, D)
    scores = inp.segment_scores(frames=keep, segment_frames=len(keep))  # (T', h, w): one segment
    return topk_tokens(tokens, scores, budget(inp))


# ---- sf-llava -------------------------------------------------------------------------
def sf_slow_indices(t: int, n_slow: int) -> torch.Tensor:
    """SF-LLaVA's slow-pathway frames: ``linspace(0, T, n_slow + 1)`` truncated to int, last
    dropped (0, 5, ..., 45 for 10 of 50)."""
    return torch.linspace(0, t, n_slow + 1).to(torch.int32)[:-1].long()


@register("sf-llava", "SlowFast-LLaVA: slow 1 in 5 frames max-pooled by 2, fast all frames pooled to 4x4")
def sf_llava(inp: MethodInput) -> torch.Tensor:
    """SlowFast-LLaVA (``slowfast-slow_10frms_spatial_1d_max_pool-fast_4x4``, 50 frames).

    Slow pathway: ``T / 5`` frames (10 of 50, :func:`sf_slow_indices`; ``params.extra
    ["sf_slow_frames"]`` overrides), each frame's ``h*w`` tokens flattened in raster order
    and max-pooled by 2 (kernel 2, stride 2) -> 288 a frame. Fast pathway: every frame
    adaptive-average-pooled to 4 x 4 -> 16 a frame. Slow then fast:
    10 x 288 + 50 x 16 = 3680 tokens at the ``mlb`` preset.
    """
    t, h, w, d = inp.tokens.shape
    n_slow = int(inp.params.extra.get("sf_slow_frames", max(1, t // SF_SLOW_RATIO)))
    if n_slow < 1:
        raise MLBError(f"sf_slow_frames must be >= 1, got {n_slow}")
    slow = inp.tokens[sf_slow_indices(t, n_slow)].reshape(n_slow, h * w, d)  # (S, hw, D)
    slow = F.max_pool1d(slow.transpose(1, 2), kernel_size=2, stride=2).transpose(1, 2)  # (S, hw//2, D)
    grid = (min(SF_FAST_GRID[0], h), min(SF_FAST_GRID[1], w))
    fast = F.adaptive_avg_pool2d(inp.tokens.permute(0, 3, 1, 2).float(), grid)  # (T, D, 4, 4)
    fast = fast.permute(0, 2, 3, 1).reshape(-1, d).to(inp.tokens.dtype)  # (T*16, D)
    return torch.cat([slow.reshape(-1, d), fast])


# ---- ig-vlm ---------------------------------------------------------------------------
def image_grid(frames: np.ndarray, per_row: int) -> np.ndarray:
    """IG-VLM's grid view: frames (n, H, W, 3) uint8 placed ``per_row`` to a row, row-major,
    the last row padded with white frames -> (rows*H, per_row*W, 3) uint8."""
    n, hh, ww, _ = frames.shape
    rows = -(-n // per_row)
    pad = np.full((rows * per_row - n, hh, ww, 3), 255, np.uint8)
    tiles = np.concatenate([frames, pad]).reshape(rows, per_row, hh, ww, 3)
    return tiles.transpose(0, 2, 1, 3, 4).reshape(rows * hh, per_row * ww, 3)


@register("ig-vlm", "IG-VLM: 6 frames tiled 2 per row x 3 rows into one image (model's any-res path)")
def ig_vlm(inp: MethodInput) -> torch.Tensor:
    """IG-VLM: 6 frames, uniformly chosen among the sampled frames (IG-VLM samples 6 from
    the video directly), tiled 2 per row by 3 rows at their decoded resolution into one
    image, which the checkpoint encodes as it would any image: any-res tiles, unpadding and
    newline tokens for LLaVA-NeXT/OneVision, one base image for LLaVA-1.5
    (:meth:`VideoLLM.encode_image_anyres`). The count depends on the image's aspect ratio
    and the checkpoint's pinpoints; the image encoding is timed within ``compress``.
    """
    frames = _frames(inp, "ig-vlm")
    image = image_grid(frames[uniform_indices(len(frames), IMAGE_FRAMES)], IG_PER_ROW)
    return inp.vlm.encode_image_anyres(image)  # (N, D)


# ---- ts-llava -------------------------------------------------------------------------
def thumbnail(pixels: torch.Tensor, grid: tuple[int, int] = TS_GRID) -> torch.Tensor:
    """TS-LLaVA's thumbnail: base-resolution pixel values (rows*cols, 3, S, S) resized into
    the cells of a ``rows x cols`` grid (area interpolation when shrinking, bilinear when
    enlarging) and tiled row-major into one (3, S, S) image. Cell sides are
    ``S/rows`` x ``S/cols`` (112 x 168 at 336 px), rounded so that the cells fill ``S``."""
    rows, cols = grid
    n, c, s, s2 = pixels.shape
    assert n == rows * cols and s == s2, tuple(pixels.shape)
    ys = np.linspace(0, s, rows + 1).round().astype(int)
    xs = np.linspace(0, s, cols + 1).round().astype(int)
    out = pixels.new_zeros(c, s, s)
    for i in range(n):
        r, q = divmod(i, cols)
        size = (int(ys[r + 1] - ys[r]), int(xs[q + 1] - xs[q]))
        mode = "area" if size[0] < s or size[1] < s else "bilinear"
        tile = F.interpolate(pixels[i:i + 1].float(), size=size, mode=mode)[0]  # (3, sh, sw)
        out[:, ys[r]:ys[r + 1], xs[q]:xs[q + 1]] = tile.to(out.dtype)
    return out


@register("ts-llava", "TS-LLaVA: tokens sampled uniformly from all frames, then a 6-frame thumbnail image")
def ts_llava(inp: MethodInput) -> torch.Tensor:
    """TS-LLaVA (aggregation ``V2``): ``5 * h * w`` tokens (2880 at 24 x 24;
    ``params.extra["ts_sampled_tokens"]`` overrides) sampled uniformly, first and last
    included, from all frames' flattened tokens, then the thumbnail: 6 uniformly chosen
    frames, each preprocessed to the base resolution, tiled 3 rows x 2 columns into one
    base-size image (:func:`thumbnail`) and encoded like a frame -> ``h*w`` tokens (576).
    2880 + 576 = 3456 at the ``mlb`` preset (the budget of 6 images).
    """
    t, h, w, d = inp.tokens.shape
    frames = _frames(inp, "ts-llava")
    n = int(inp.params.extra.get("ts_sampled_tokens", TS_SAMPLED_FRAMES * h * w))
    if n < 1:
        raise MLBError(f"ts_sampled_tokens must be >= 1, got {n}")
    n = min(n, t * h * w)
    idx = torch.as_tensor(uniform_indices(t * h * w, n))
    sampled = inp.tokens.reshape(-1, d)[idx]  # (n, D)
    rows, cols = TS_GRID
    pixels = inp.vlm.preprocess(frames[uniform_indices(len(frames), rows * cols)])  # (6, 3, S, S)
    thumb = inp.vlm.encode_pixels(thumbnail(pixels, TS_GRID)[None]).reshape(-1, d)  # (h*w, D)
    return torch.cat([sampled, thumb.to(sampled.dtype)])
