"""Stage two with the question-independent prefix cached across the questions about one video
(docs/architecture.md, "Bench"; docs/method.md, "SegAttn", step 5).

A stage-two prompt is ``prefix + visual + suffix`` (``VideoLLM.build_inputs``) and only the
suffix holds the question. Under causal attention the keys and values of the positions before
the suffix do not depend on it, so they can be computed once per video, as the stage-one cache
does for stage one (:mod:`mlb_core.selection.scores`):

- a method whose visual tokens do not depend on the question (it reads no stage-one scores:
  ``full``, ``sf-llava``, ``ig-vlm``, ``ts-llava``, ``mlb-avg``) caches ``prefix + visual``;
  each question runs only its suffix, a few tokens, on a fork of that cache;
- a method whose visual tokens depend on the question (``mlb``, ``mlb-gapool``,
  ``segattn-topk``, ``global-topk``, ``fastv``: they select by the question's stage-one scores)
  caches the text prefix only; each question runs ``visual + suffix``.

:class:`PrefixCache` does both for real, through a transformers ``DynamicCache`` whose stored
tensors are never written (each question runs on :func:`~mlb_core.selection.scores.fork_cache`);
the last position's logits equal the uncached ``VideoLLM.prefill`` up to float rounding
(``tests/test_bench_prefix.py``). :func:`mlb_core.bench.flops.stage_two_passes` counts the same
passes for the FLOPs model and the 7B-shaped pricer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mlb_core.backbones.adapter import VideoLLM
from mlb_core.backbones.prompts import Prompt
from mlb_core.bench.measure import Stopwatch
from mlb_core.selection.scores import cpu_threads, fork_cache


@dataclass(frozen=True)
class PrefillCost:
    """What one question's stage two cost through a :class:`PrefixCache` (seconds).

    Attributes:
        context_s, context_cpu_s: building the cache (wall, process CPU); 0 when it was reused.
        question_s, question_cpu_s: the question's own pass (the uncached positions, LM-head row).
        cached_tokens: positions read from the cache (``prefix`` or ``prefix + visual``).
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


@dataclass
class PrefixEntry:
    """The cached stage-two prefix of one video.

    Attributes:
        embeds: (C, D) the cached positions' input embeddings; a later prompt reuses the cache
            only when its own first C embeddings are equal to these.
        cache: a ``DynamicCache`` over every decoder layer, (1, Hk, C, hd) keys and values a layer.
    """

    embeds: torch.Tensor
    cache: object

    @property
    def length(self) -> int:
        return int(self.embeds.shape[0])


class PrefixCache:
    """Stage-two prefill with its question-independent prefix computed once per video.

    :meth:`prefill` returns the last position's logits (1, V) of ``prefix + visual + suffix``,
    as ``VideoLLM.prefill`` does, and records its cost in ``last_cost``. With ``reuse_visual``
    the cached part is ``prefix + visual``, otherwise the text prefix alone; a prompt whose
    cached part differs from the stored one (another video, other visual tokens) rebuilds it.
    On a CPU the suffix-only pass of ``reuse_visual`` runs with ``question_threads`` intra-op
    threads, as the stage-one cache's question passes do
    (:func:`~mlb_core.selection.scores.cpu_threads`).
    """

    def __init__(self, question_threads: int | None = 1) -> None:
        self.question_threads = question_threads
        self.entry: PrefixEntry | None = None
        self.last_cost: PrefillCost | None = None
        self.n_builds = 0

    def build(self, vlm: VideoLLM, embeds: torch.Tensor) -> PrefixEntry:
        """The cache of ``embeds`` (C, D) through every decoder layer, no LM head (kept, or reused
        when the stored entry has the same embeddings)."""
        if self.entry is not None and self.entry.embeds.shape == embeds.shape and torch.equal(
                self.entry.embeds, embeds):
            return self.entry
        from transformers import DynamicCache

        cache = DynamicCache(config=vlm.language_model.config)
        with torch.inference_mode():
            vlm.language_model(inputs_embeds=embeds[None], cache=cache, use_cache=True)
        self.entry = PrefixEntry(embeds, cache)
        self.n_builds += 1
        return self.entry

    def question(self, vlm: VideoLLM, entry: PrefixEntry, new: torch.Tensor) -> torch.Tensor:
        """Logits (1, V) of the last of ``new`` (Q, D) positions after the cached ones, computed on
        a fork of the cache (the stored tensors are left as they are)."""
        c, q = entry.length, new.shape[0]
        positions = torch.arange(c, c + q, device=new.device)[None]  # (1, Q)
        with torch.inference_mode():
            out = vlm.model(inputs_embeds=new[None], cache=fork_cache(entry.cache), use_cache=True,
                            position_ids=positions, logits_to_keep=1)
        return out.logits[:, -1]

    def prefill(self, vlm: VideoLLM, prompt: Prompt, visual: torch.Tensor, reuse_visual: bool) -> torch.Tensor:
        """Last-position logits (1, V) of ``prompt.prefix + visual (N, D) + prompt.suffix``."""
        pre = vlm.embed_text(prompt.prefix, first=True)  # (P, D)
        suf = vlm.embed_text(prompt.suffix, first=False)  # (S, D)
        visual = visual.to(pre.dtype)
        cached = torch.cat([pre, visual]) if reuse_visual else pre  # (C, D)
        new = suf if reuse_visual else torch.cat([visual, suf])  # (Q, D)
        assert len(cached) and len(new), "the prompt has a prefix and a suffix (VideoLLM.build_inputs)"
        vlm.check_length(len(cached) + len(new))
        reused = self.entry is not None and self.entry.embeds.shape == cached.shape and torch.equal(
            self.entry.embeds, cached)
        with Stopwatch(vlm.device) as sw_context:
            entry = self.build(vlm, cached)
        threads = self.question_threads if reuse_visual else None
        with cpu_threads(threads, vlm.device), Stopwatch(vlm.device) as sw_question:
            logits = self.question(vlm, entry, new)
        self.last_cost = PrefillCost(
            context_s=0.0 if reused else sw_context.wall, context_cpu_s=0.0 if reused else sw_context.cpu,
            question_s=sw_question.wall, question_cpu_s=sw_question.cpu, cached_tokens=len(cached),
            new_tokens=len(new), reused=reused)
        return logits
