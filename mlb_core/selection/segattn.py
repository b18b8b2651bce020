"""SegAttn: compress, then expand (paper Fig. 3; docs/method.md, "SegAttn").

Stage one runs the LLM over every segment of ``segment_frames`` frames (prompt prefix +
segment tokens + question) only up to the scoring layer and reads the last query token's
attention over the segment's visual tokens. Segments are independent and of equal
length, so they are scored in batches. Each segment is then compressed (GAPool, or global
top-k for the biased ``segattn-topk`` variant), the compressed segments are concatenated
in time order, the VSTail is appended, and stage two runs the full LLM on the result.
"""

from __future__ import annotations

import torch

from mlb_core.backbones.adapter import VideoLLM
from mlb_core.backbones.prompts import Prompt
from mlb_core.config import MLBParams
from mlb_core.errors import MLBError
from mlb_core.selection.attention import last_query_attention
from mlb_core.selection.gapool import gapool, gapool_count, topk_tokens, vstail


def split_segments(tokens: torch.Tensor, segment_frames: int) -> torch.Tensor:
    """(T, h, w, D) -> (S, segment_frames, h, w, D), S = T / segment_frames."""
    t = tokens.shape[0]
    if t % segment_frames:
        raise MLBError(f"segment_frames={segment_frames} does not divide the {t} frames")
    return tokens.reshape(t // segment_frames, segment_frames, *tokens.shape[1:])


def segment_inputs(vlm: VideoLLM, segments: torch.Tensor, prompt: Prompt) -> tuple[torch.Tensor, slice]:
    """Stage-one inputs: (S, L, D) = prefix + one segment's flattened tokens + suffix."""
    s, f, h, w, d = segments.shape
    embeds, vis = vlm.build_inputs(prompt, segments[0].reshape(f * h * w, d))
    batch = embeds.expand(s, -1, -1).clone()  # (S, L, D)
    batch[:, vis] = segments.reshape(s, f * h * w, d).to(batch.dtype)
    return batch, vis


def stage_one(
    vlm: VideoLLM, tokens: torch.Tensor, prompt: Prompt, params: MLBParams, batch_size: int = 4
) -> torch.Tensor:
    """Stage-one scores of every visual token, segment by segment.

    Args:
        tokens: (T, h, w, D) grid tokens of the sampled frames.
        prompt: the question's prompt (the same one stage two uses).
        batch_size: segments scored per forward pass.

    Returns:
        (T, h, w) float32: last-query attention at ``params.score_layer``; each segment's
        scores are the probabilities of its own stage-one pass.
    """
    t, h, w, _ = tokens.shape
    segments = split_segments(tokens, params.segment_frames)  # (S, f, h, w, D)
    out = []
    for chunk in segments.split(batch_size):
        embeds, vis = segment_inputs(vlm, chunk, prompt)  # (s, L, D)
        scores = last_query_attention(vlm.language_model, embeds, params.score_layer)  # (s, L)
        out.append(scores[:, vis])
    return torch.cat(out).reshape(t, h, w)


def compress(tokens: torch.Tensor, scores: torch.Tensor | None, params: MLBParams, select: str) -> torch.Tensor:
    """Compress every segment and concatenate them in time order.

    ``select="gapool"``: GAPool with ``params.grid`` and ``params.pool_mode`` (per frame, so
    segment boundaries do not change the result). ``select="topk"``: each segment keeps
    its top-k tokens by score, k = the GAPool count of the segment (equal budget) or
    ``params.budget`` spread over the segments.

    Returns:
        (N, D) frame-major visual sequence.
    """
    t, h, w, d = tokens.shape
    if select == "gapool":
        return gapool(tokens, scores, params.grid, params.pool_mode)
    if select != "topk":
        raise MLBError(f"unknown stage-one selection {select!r}")
    assert scores is not None and scores.shape == (t, h, w)
    n_seg = t // params.segment_frames
    k = (params.budget // n_seg if params.budget
         else params.segment_frames * gapool_count(h, w, params.grid))
    seg_tokens = split_segments(tokens, params.segment_frames)
    seg_scores = scores.reshape(n_seg, params.segment_frames, h, w)
    return torch.cat([topk_tokens(x, s, k) for x, s in zip(seg_tokens, seg_scores, strict=True)])


def segattn(
    vlm: VideoLLM,
    tokens: torch.Tensor,
    prompt: Prompt,
    params: MLBParams,
    select: str = "gapool",
    tail_mode: str | None = None,
    scores: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SegAttn's compression side: stage one, per-segment compression, VSTail.

    Args:
        tokens: (T, h, w, D) grid tokens.
        select: ``gapool`` (LLaVA-MLB) or ``topk`` (the biased baseline).
        tail_mode: VSTail mode; default ``params.tail_mode``.
        scores: precomputed (T, h, w) stage-one scores (skips stage one).

    Returns:
        ``(visual, scores)``: (N, D) stage-two visual sequence and the (T, h, w) scores.
    """
    if scores is None:
        scores = stage_one(vlm, tokens, prompt, params)
    body = compress(tokens, scores, params, select)  # (N_body, D)
    tail = vstail(tokens, scores, params.tail_grid, params.tail_mode if tail_mode is None else tail_mode)
    return torch.cat([body, tail]), scores
