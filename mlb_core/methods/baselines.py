"""Baselines as methods of the same harness (docs/method.md, "Baselines").

Each baseline maps the shared grid tokens (T, h, w, D) -- and, where it needs them, the
decoded frames or attention scores -- to a stage-two visual sequence (N, D). Encoding and
greedy generation are shared with LLaVA-MLB, so every method sees identical inputs.

Budgets at the ``mlb`` preset with a 24 x 24 grid (50 frames, 28,800 grid tokens) and a 4K
context (LLaVA-NeXT-7B):

- ``fastv``: FastV (Chen et al., ECCV 2024; pkunlp-icler/FastV) on the frames that fit the
  context (6 of 50, 3456 tokens): rank by the last token's attention at layer K-1, keep
  ``round((1 - R) * 3456)`` = 1728 at FastV's K = 2, R = 50%;
- ``sf-llava``: SlowFast-LLaVA (Xu et al., 2024; apple/ml-slowfast-llava):
  10 slow frames x 288 + 50 fast frames x 16 = 3680;
- ``ig-vlm``: IG-VLM (Kim et al., 2024; imagegridworth/IG-VLM): 6 frames tiled 2 per row x
  3 rows into one image, encoded by the model's own any-res path (count depends on the
  frames' aspect ratio and the checkpoint's pinpoints);
- ``ts-llava``: TS-LLaVA (Qu et al., 2024; tingyu215/TS-LLaVA): 2880 tokens sampled
  uniformly from all frames, then a 6-frame thumbnail image of 576 tokens = 3456.

Counts that depend on the frame count or grid are derived from them, so smaller presets
scale the recipes down. ``params.extra`` may set ``fastv_k``, ``fastv_r``,
``sf_slow_frames`` and ``ts_sampled_tokens``. The attention-blind control at the MLB
budget is ``mlb-avg`` (:mod:`mlb_core.methods.mlb`), which pools the same grid cells as
``mlb``; the raster-window ``uniform-pool`` it replaces is retired.
"""

from __future__ import annotations

import numbers

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
    """``params.budget`` if set, else the MLB budget at the same parameters (equal budgets);
    the k of ``global-topk`` (docs/method.md, "Variants")."""
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


# ---- fastv ----------------------------------------------------------------------------
FASTV_K = 2  # FastV: visual tokens are pruned after layer K = 2 ("1/2 tokens after layer 2")
FASTV_R = 0.5  # FastV: R = 50% of the visual tokens dropped


def fastv_settings(params: MLBParams) -> tuple[int, float]:
    """FastV's filtering layer K and filtering ratio R: ``params.extra["fastv_k"]`` and
    ``["fastv_r"]``, defaults K = 2, R = 0.5 (FastV's defaults); K >= 1, 0 <= R < 1."""
    k = params.extra.get("fastv_k", FASTV_K)
    r = params.extra.get("fastv_r", FASTV_R)
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise MLBError(f"fastv_k must be an integer >= 1 (prune after layer K), got {k!r}")
    if isinstance(r, bool) or not isinstance(r, numbers.Real) or not 0 <= r < 1:
        raise MLBError(f"fastv_r must be a fraction in [0, 1) (the share of visual tokens dropped), got {r!r}")
    return int(k), float(r)


def fastv_keep_count(n: int, r: float) -> int:
    """Visual tokens FastV keeps of ``n`` when it drops a fraction ``r``: its
    ``round(n * (1 - R))`` (288 of 576 at R = 50%), at least one."""
    return max(1, min(n, round(n * (1 - r))))


@register("fastv", "FastV (K=2, R=50%): frames that fit the context, drop R of their tokens by last-token attention")
def fastv(inp: MethodInput) -> torch.Tensor:
    """FastV (Chen et al., "An Image is Worth 1/2 Tokens After Layer 2", ECCV 2024) in one pass
    over the frames that fit the context (docs/method.md, "Baselines").

    FastV's released code (``fastv_forward``, pkunlp-icler/FastV) runs layers 0..K-1 on the
    whole prompt, takes layer K-1's attention, averaged over heads, in the *last* token's row,
    keeps the top ``round((1 - R) * n)`` of the ``n`` visual tokens and runs layers K.. on the
    kept tokens only. The paper's text describes the rank as the attention a token receives
    averaged over all query rows; we follow the code. Here:

    1. the frames that fit the context are chosen uniformly over the video (as ``full``
       does; 6 of 50 at 24 x 24 in a 4K context: 3456 tokens);
    2. ``prefix + those frames + suffix`` runs through layers 0..K-2 and layer K-1's
       last-query attention (heads averaged) scores every visual token: the stage-one cache
       with the frames as one segment and scoring layer K-1 (timed as ``stage_one``; its
       question-independent part is reused by later questions about the video);
    3. the top ``round((1 - R) * n)`` tokens, in time order, are the visual sequence, and stage
       two runs *every* layer on them (1728 at K = 2, R = 50%).

    How this differs from FastV's in-place pruning: in FastV layers 0..K-1 of the answering
    pass see all ``n`` visual tokens (so the kept tokens' and the text's hidden states at
    layer K carry what the dropped tokens contributed), and the kept tokens keep their
    original position ids (gaps where tokens were dropped). Here the stage-two prefill runs
    layers 0..K-1 again on the kept tokens only, at contiguous positions, so the dropped
    tokens influence only *which* tokens are kept. The ranking itself is FastV's.

    ``params.extra``: ``fastv_k`` (K, default 2) and ``fastv_r`` (R, default 0.5); ``budget``
    does not apply (R sets the count).
    """
    t, h, w, d = inp.tokens.shape
    k_layer, ratio = fastv_settings(inp.params)
    n_layers = len(inp.vlm.layers)
    if k_layer >= n_layers:
        raise MLBError(f"fastv_k={k_layer} prunes after the last layer: the model has {n_layers} layers")
    keep = frames_that_fit(inp.vlm, inp, h * w)  # (T',) frame indices, uniform over the video
    tokens = inp.tokens[torch.as_tensor(keep)]  # (T', h, w, D)
    scores = inp.segment_scores(frames=keep, segment_frames=len(keep), layer=k_layer - 1)  # (T', h, w)
    assert scores.shape == tokens.shape[:3], (tuple(scores.shape), tuple(tokens.shape))
    n = len(keep) * h * w
    visual = topk_tokens(tokens, scores, fastv_keep_count(n, ratio))  # (n_keep, D), time order
    assert visual.shape == (fastv_keep_count(n, ratio), d)
    return visual


# ---- sf-llava -------------------------------------------------------------------------
def sf_slow_indices(t: int, n_slow: int) -> torch.Tensor:
    """SF-LLaVA's slow-pathway frames: ``linspace(0, T, n_slow + 1)`` truncated to int, last
    dropped (0, 5, ..., 45 for 10 of 50)."""
    return torch.linspace(0, t, n_slow + 1).to(torch.int32)[:-1].long()


def sf_slow_frames(params: MLBParams, t: int) -> int:
    """SF-LLaVA's slow-pathway frame count for ``t`` sampled frames: ``params.extra
    ["sf_slow_frames"]``, default one frame in :data:`SF_SLOW_RATIO` (at least one)."""
    n_slow = int(params.extra.get("sf_slow_frames", max(1, t // SF_SLOW_RATIO)))
    if n_slow < 1:
        raise MLBError(f"sf_slow_frames must be >= 1, got {n_slow}")
    return n_slow


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
    n_slow = sf_slow_frames(inp.params, t)
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
