"""One question about one video, end to end (docs/architecture.md, "Data flow").

video --decode+sample--> frames --encode--> grid tokens (T, h, w, D)   [cache per video]
      --method (stage one + compression for MLB)--> visual sequence (N, D)
      --stage two: prefill + greedy decode--> answer
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlb_core.backbones.adapter import VideoLLM
from mlb_core.backbones.prompts import render_prompt
from mlb_core.config import MLBParams
from mlb_core.errors import MLBError
from mlb_core.methods import get_method
from mlb_core.methods.registry import MethodInput
from mlb_core.selection.scores import StageOneCache
from mlb_core.stage_two import StageTwoPrefix
from mlb_core.timing import timed
from mlb_core.video import load_video


@dataclass
class VideoFeatures:
    """A video's sampled frames and their grid tokens (reusable across questions/methods)."""

    path: str
    frames: np.ndarray  # (T, H, W, 3) uint8
    indices: np.ndarray  # (T,) frame indices in the file
    tokens: torch.Tensor  # (T, h, w, D)
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class Answer:
    text: str
    method: str
    n_visual_tokens: int
    n_prompt_tokens: int
    timings: dict[str, float]
    prefix_reused: bool | None = None  # stage two read prefix + visual from a per-video cache (None: no cache)

    def to_dict(self) -> dict[str, Any]:
        out = {"text": self.text, "method": self.method, "n_visual_tokens": self.n_visual_tokens,
               "n_prompt_tokens": self.n_prompt_tokens, "timings": self.timings}
        if self.prefix_reused is not None:
            out["prefix_reused"] = self.prefix_reused
        return out


def check_grids(params: MLBParams, h: int, w: int) -> None:
    """Refuse a GAPool grid or VSTail grid larger than the model's ``h x w`` token grid."""
    for name, (gh, gw) in (("grid", params.grid), ("tail_grid", params.tail_grid)):
        if gh > h or gw > w:
            raise MLBError(f"{name} {gh}x{gw} is larger than the model's {h}x{w} token grid")


def encode_video(vlm: VideoLLM, video: str | Path, n_frames: int, backend: str = "auto") -> VideoFeatures:
    """Decode ``n_frames`` uniformly sampled frames and encode them at base resolution."""
    timings: dict[str, float] = {}
    with timed(timings, "decode"):
        frames, indices = load_video(video, n_frames, backend)
    with timed(timings, "encode", vlm.device):
        tokens = vlm.encode_frames(frames)
    return VideoFeatures(str(video), frames, indices, tokens, timings)


def answer(
    vlm: VideoLLM,
    features: VideoFeatures,
    question: str,
    method: str = "mlb",
    params: MLBParams | None = None,
    task: str = "open",
    options: list[str] | None = None,
    scorer: StageOneCache | None = None,
    prefix: StageTwoPrefix | None = None,
) -> Answer:
    """Answer ``question`` about an encoded video with ``method``.

    Timings (seconds): ``stage_one`` (if the method scores tokens), ``compress`` (the rest
    of the method), ``prefill`` (stage two's forward), ``generate`` (greedy decoding).
    ``scorer``: a stage-one cache shared by the questions about one video; ``prefix``: a
    stage-two prefix cache shared likewise (:mod:`mlb_core.stage_two`): a method that reads no
    stage-one scores computes ``prefix + visual`` once per video and each later question only
    its suffix (``Answer.prefix_reused``); the answer is the plain prefill's up to float rounding.
    """
    params = params or MLBParams()
    fn = get_method(method)
    check_grids(params, features.tokens.shape[1], features.tokens.shape[2])
    prompt = render_prompt(vlm.family, question, task, options)
    inp = MethodInput(vlm, features.tokens, features.frames, prompt, params, scorer=scorer or StageOneCache())
    with timed(inp.timings, "method", vlm.device):
        visual = fn(inp)  # (N, D)
    timings = dict(inp.timings)
    timings["compress"] = timings.pop("method") - timings.get("stage_one", 0.0)
    embeds, _ = vlm.build_inputs(prompt, visual)
    vlm.check_length(embeds.shape[1], params.max_new_tokens)
    reuse = prefix is not None and not inp.scored  # visual tokens that do not depend on the question
    with timed(timings, "prefill", vlm.device):
        if reuse:
            logits, cache = prefix.prefill(vlm, prompt, visual, reuse_visual=True)
        else:
            logits, cache = vlm.prefill(embeds)
    with timed(timings, "generate", vlm.device):
        text = vlm.decode(logits, cache, embeds.shape[1], params.max_new_tokens)
    return Answer(text, method, int(visual.shape[0]), int(embeds.shape[1]), timings,
                  prefix_reused=bool(reuse and prefix.last_reused) if prefix is not None else None)
