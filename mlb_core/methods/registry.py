"""Every method is a function from grid tokens (and stage-one scores where it needs them)
to a stage-two visual sequence (docs/architecture.md, "Data flow"). Encoding and generation are
shared, so all methods are compared on identical inputs.

Register a method with :func:`register`; :data:`METHODS` maps names to functions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from mlb_core.backbones.adapter import VideoLLM
from mlb_core.backbones.prompts import Prompt
from mlb_core.config import MLBParams
from mlb_core.errors import MLBError
from mlb_core.selection.scores import StageOneCache
from mlb_core.timing import timed


@dataclass
class MethodInput:
    """What a method may use. Stage-one scores come from ``scorer``, the one stage-one cache
    (:class:`~mlb_core.selection.scores.StageOneCache`): pass the same cache for every question
    and method about a video so that its question-independent part is computed once."""

    vlm: VideoLLM
    tokens: torch.Tensor  # (T, h, w, D)
    frames: np.ndarray | None  # (T, H, W, 3) uint8; for methods that re-encode images
    prompt: Prompt
    params: MLBParams
    timings: dict[str, float] = field(default_factory=dict)
    scorer: StageOneCache = field(default_factory=StageOneCache)
    scored: bool = False  # set once the method asked for stage-one scores

    def segment_scores(self, frames: Sequence[int] | None = None, segment_frames: int | None = None,
                       layer: int | None = None) -> torch.Tensor:
        """(T', h, w) stage-one scores (of ``frames``, default all, in segments of
        ``segment_frames``, default ``params.segment_frames``): the last query's attention at
        decoder ``layer`` (0-based, default ``params.score_layer``), timed as ``stage_one``.
        Another layer is another entry of the same cache (docs/method.md, "SegAttn", step 3)."""
        self.scored = True
        params = self.params if layer is None else self.params.replace(score_layer=layer)
        with timed(self.timings, "stage_one", self.vlm.device):
            return self.scorer.scores(self.vlm, self.tokens, self.prompt, params, frames, segment_frames)


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
