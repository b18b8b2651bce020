"""Every method is a function from grid tokens (and stage-one scores where it needs them)
to a stage-two visual sequence (architecture.md, "Data flow"). Encoding and generation are
shared, so all methods are compared on identical inputs.

Register a method with :func:`register`; :data:`METHODS` maps names to functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .config import MLBParams
from .errors import MLBError
from .models import VideoLLM
from .prompts import Prompt
from .segattn import segattn, stage_one
from .timing import timed


@dataclass
class MethodInput:
    """What a method may use. ``segment_scores()`` runs stage one once and caches it."""

    vlm: VideoLLM
    tokens: torch.Tensor  # (T, h, w, D)
    frames: np.ndarray | None  # (T, H, W, 3) uint8; for methods that re-encode images
    prompt: Prompt
    params: MLBParams
    timings: dict[str, float] = field(default_factory=dict)
    scorer: Callable[[MethodInput], torch.Tensor] | None = None  # e.g. a per-video cache
    _scores: torch.Tensor | None = None

    def segment_scores(self) -> torch.Tensor:
        """(T, h, w) stage-one scores, timed as ``stage_one``."""
        if self._scores is None:
            with timed(self.timings, "stage_one", self.vlm.device):
                self._scores = (self.scorer(self) if self.scorer is not None
                                else stage_one(self.vlm, self.tokens, self.prompt, self.params))
        return self._scores


Method = Callable[[MethodInput], torch.Tensor]
METHODS: dict[str, Method] = {}
METHOD_INFO: dict[str, str] = {}


def register(name: str, info: str) -> Callable[[Method], Method]:
    """Decorator: add a method to :data:`METHODS` with a one-line description."""

    def wrap(fn: Method) -> Method:
        METHODS[name] = fn
        METHOD_INFO[name] = info
        return fn

    return wrap


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise MLBError(f"unknown method {name!r}; choose one of {', '.join(sorted(METHODS))}")
    return METHODS[name]


def frames_that_fit(vlm: VideoLLM, inp: MethodInput, per_frame: int) -> np.ndarray:
    """Indices of the frames (uniform over the video) whose tokens fit the context."""
    text = len(vlm.embed_text(inp.prompt.prefix, True)) + len(vlm.embed_text(inp.prompt.suffix, False))
    room = vlm.context_length - text - inp.params.max_new_tokens
    t = inp.tokens.shape[0]
    n = min(t, room // per_frame)
    if n < 1:
        raise MLBError(f"not even one frame ({per_frame} tokens) fits the context of {vlm.context_length}")
    return np.unique(np.linspace(0, t - 1, n).round().astype(int))


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


def _scores_if_needed(inp: MethodInput) -> Any:
    """Stage one is skipped when nothing reads its scores (``avg`` pooling, ``pool`` tail)."""
    if inp.params.pool_mode == "avg" and inp.params.tail_mode != "gapool":
        t, h, w, _ = inp.tokens.shape
        return torch.ones(t, h, w)
    return inp.segment_scores()
from . import baselines  # noqa: E402,F401  (registers the baselines)
