"""LLaVA-MLB and its ablations as methods: ``full`` (no compression), ``segattn-topk`` (SegAttn
with top-k, paper Fig. 1), ``mlb-gapool`` (SegAttn + GAPool) and ``mlb`` (SegAttn + GAPool +
VSTail, paper Fig. 3); docs/method.md, "Variants"."""

from __future__ import annotations

from typing import Any

import torch

from mlb_core.methods.registry import MethodInput, frames_that_fit, register
from mlb_core.selection.segattn import segattn


@register("full", "all tokens of the frames that fit the context (no compression)")
def full(inp: MethodInput) -> torch.Tensor:
    t, h, w, d = inp.tokens.shape
    keep = frames_that_fit(inp.vlm, inp, h * w)
    return inp.tokens[torch.as_tensor(keep)].reshape(-1, d)


@register("segattn-topk", "SegAttn with global top-k per segment (the biased baseline, Fig. 1)")
def segattn_topk(inp: MethodInput) -> torch.Tensor:
    visual, _ = segattn(inp.vlm, inp.tokens, inp.prompt, inp.params, select="topk",
                        tail_mode="none", scores=inp.segment_scores())
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
