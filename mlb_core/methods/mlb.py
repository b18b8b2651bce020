"""LLaVA-MLB and its ablations as methods: ``full`` (no compression), ``segattn-topk`` (SegAttn
with top-k per segment, paper Fig. 1), ``global-topk`` (SegAttn's scores, one top-k over all
frames), ``mlb-gapool`` (SegAttn + GAPool), ``mlb`` (SegAttn + GAPool + VSTail, paper Fig. 3)
and ``mlb-avg`` (its attention-blind control); docs/method.md, "Variants"."""

from __future__ import annotations

from typing import Any

import torch

from mlb_core.methods.baselines import budget
from mlb_core.methods.registry import MethodInput, frames_that_fit, register
from mlb_core.selection.gapool import topk_tokens
from mlb_core.selection.segattn import segattn


@register("full", "all tokens of the frames that fit the context (no compression)")
def full(inp: MethodInput) -> torch.Tensor:
    t, h, w, d = inp.tokens.shape
    keep = frames_that_fit(inp.vlm, inp, h * w)
    return inp.tokens[torch.as_tensor(keep)].reshape(-1, d)


@register("segattn-topk", "SegAttn with top-k inside each segment (the biased baseline, Fig. 1)")
def segattn_topk(inp: MethodInput) -> torch.Tensor:
    """SegAttn with raw-attention selection (docs/method.md, "Variants"): each segment keeps
    its own top-k tokens by its stage-one scores (k = the segment's GAPool count, or
    ``params.budget`` spread over the segments), segments in time order, no tail. The
    selection is *per segment*: every segment keeps the same number of tokens."""
    visual, _ = segattn(inp.vlm, inp.tokens, inp.prompt, inp.params, select="topk",
                        tail_mode="none", scores=inp.segment_scores())
    return visual


@register("global-topk", "SegAttn's stage-one scores, one top-k over all sampled frames at the MLB budget")
def global_topk(inp: MethodInput) -> torch.Tensor:
    """One top-k over every sampled frame (docs/method.md, "Variants"): the SegAttn stage-one
    scores of ``mlb`` (the same cache entry, so no extra pass when ``mlb`` ran on the question),
    then the ``k`` highest-scoring tokens of the whole video in time order, no tail;
    ``k`` = the MLB budget (3400 at the ``mlb`` preset) unless ``params.budget`` is set.

    Unlike ``segattn-topk`` a segment may keep any share of ``k``, none included. Each
    segment's scores are the probabilities of its own stage-one pass over a sequence of the
    same length, so scores of different segments are compared as they are."""
    t, h, w, d = inp.tokens.shape
    scores = inp.segment_scores()  # (T, h, w)
    k = min(budget(inp), t * h * w)
    visual = topk_tokens(inp.tokens, scores, k)  # (k, D)
    assert visual.shape == (k, d)
    return visual


@register("mlb-gapool", "SegAttn + GAPool, no VSTail (LLaVA-MLB^G)")
def mlb_gapool(inp: MethodInput) -> torch.Tensor:
    visual, _ = segattn(inp.vlm, inp.tokens, inp.prompt, inp.params, select="gapool",
                        tail_mode="none", scores=_scores_if_needed(inp))
    return visual


@register("mlb", "SegAttn + GAPool + VSTail (LLaVA-MLB)")
def mlb(inp: MethodInput) -> torch.Tensor:
    visual, _ = segattn(inp.vlm, inp.tokens, inp.prompt, inp.params, select="gapool",
                        scores=_scores_if_needed(inp))
    return visual


@register("mlb-avg", "LLaVA-MLB with attention-blind average pooling (same cells, same tail): the control")
def mlb_avg(inp: MethodInput) -> torch.Tensor:
    """The like-for-like attention-blind control of ``mlb`` (docs/method.md, "Variants"): the same
    GAPool cells and VSTail, every cell a plain mean (``pool_mode: avg``), so stage one never
    runs. Differences between ``mlb`` and ``mlb-avg`` are what the attention weights add."""
    params = inp.params.replace(pool_mode="avg", tail_mode="pool" if inp.params.tail_mode == "gapool"
                                else inp.params.tail_mode)
    t, h, w, _ = inp.tokens.shape
    visual, _ = segattn(inp.vlm, inp.tokens, inp.prompt, params, select="gapool", scores=torch.ones(t, h, w))
    return visual


def _scores_if_needed(inp: MethodInput) -> Any:
    """Stage one is skipped when nothing reads its scores (``avg`` pooling, ``pool`` tail)."""
    if inp.params.pool_mode == "avg" and inp.params.tail_mode != "gapool":
        t, h, w, _ = inp.tokens.shape
        return torch.ones(t, h, w)
    return inp.segment_scores()
