"""The bench's stage-two prefix cache: :class:`mlb_core.stage_two.StageTwoPrefix` (the KV of the
question-independent prefix computed once per video; its docstring says what is cached for which
method) with the cost of each question's stage two measured (docs/architecture.md, "Bench").
:func:`mlb_core.bench.flops.stage_two_passes` counts the same passes for the FLOPs model and the
7B-shaped pricer; ``tests/test_bench_prefix.py`` checks both against the uncached prefill.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mlb_core.backbones.adapter import VideoLLM
from mlb_core.backbones.prompts import Prompt
from mlb_core.bench.measure import Stopwatch
from mlb_core.stage_two import StageTwoPrefix


@dataclass(frozen=True)
class PrefillCost:
    """What one question's stage two cost through a :class:`PrefixCache` (seconds).

    Attributes:
        context_s, context_cpu_s: building the cache (wall, process CPU); 0 when it was reused or
            nothing is cached (visual tokens that depend on the question).
        question_s, question_cpu_s: the question's own pass (the uncached positions, LM-head row).
        cached_tokens: positions read from the cache (``prefix + visual``, or 0).
        new_tokens: positions the question's pass computed.
        reused: the cache was already there (a later question about the same video).
    """

    context_s: float
    context_cpu_s: float
    question_s: float
    question_cpu_s: float
    cached_tokens: int
    new_tokens: int
    reused: bool

    @property
    def total_s(self) -> float:
        return self.context_s + self.question_s

    @property
    def total_cpu_s(self) -> float:
        return self.context_cpu_s + self.question_cpu_s


class PrefixCache(StageTwoPrefix):
    """:class:`~mlb_core.stage_two.StageTwoPrefix` whose :meth:`prefill` returns the last position's
    logits (1, V), as ``VideoLLM.prefill`` does, and records the question's cost in ``last_cost``
    (wall and process CPU seconds of the cache and of the question's pass, :class:`Stopwatch`)."""

    def __init__(self, question_threads: int | None = 1) -> None:
        super().__init__(question_threads)
        self.last_cost: PrefillCost | None = None
        self._watches: dict[str, Stopwatch] = {}

    def clock(self, vlm: VideoLLM, part: str) -> Stopwatch:
        self._watches[part] = Stopwatch(vlm.device)
        return self._watches[part]

    def prefill(self, vlm: VideoLLM, prompt: Prompt, visual: torch.Tensor,  # type: ignore[override]
                reuse_visual: bool) -> torch.Tensor:
        """Last-position logits (1, V) of ``prompt.prefix + visual (N, D) + prompt.suffix``."""
        self._watches = {}
        logits, _ = super().prefill(vlm, prompt, visual, reuse_visual)
        question = self._watches["question"]
        context = self._watches.get("context") if not self.last_reused else None  # None: no cache built
        self.last_cost = PrefillCost(
            context_s=context.wall if context is not None else 0.0,
            context_cpu_s=context.cpu if context is not None else 0.0,
            question_s=question.wall, question_cpu_s=question.cpu, cached_tokens=self.last_cached,
            new_tokens=self.last_new, reused=self.last_reused)
        return logits
