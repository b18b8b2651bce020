"""Stage two with the question-independent prefix cached across the questions about one video
(docs/architecture.md, "Bench" and "Evaluation at scale"; docs/method.md, "SegAttn", step 5).

A stage-two prompt is ``prefix + visual + suffix`` (``VideoLLM.build_inputs``) and only the
suffix holds the question. Under causal attention the keys and values of the positions before
the suffix do not depend on it, so they can be computed once per video, as the stage-one cache
does for stage one (:mod:`mlb_core.selection.scores`):

- a method whose visual tokens do not depend on the question (it reads no stage-one scores:
  ``full``, ``sf-llava``, ``ig-vlm``, ``ts-llava``, ``mlb-avg``) caches ``prefix + visual``;
  each question runs only its suffix, a few tokens, on a fork of that cache;
- a method whose visual tokens depend on the question (``mlb``, ``mlb-gapool``,
  ``segattn-topk``, ``global-topk``, ``fastv``: they select by the question's stage-one scores)
  caches nothing: each question runs its whole prompt in one causal pass. Caching the text prefix
  alone would save its few tokens but cost more than it saves: a pass of many new tokens after
  cached ones needs an explicit attention mask, and the attention kernel without the causal fast
  path made such a prefill 15-80% slower than the plain one on the CPU (``mlb bench``, 1,360 to
  4,032 visual tokens after a 24-token prefix, measured 2026-12-03).

:class:`StageTwoPrefix` does both through a transformers ``DynamicCache`` whose stored tensors
are never written: each question runs on :func:`~mlb_core.selection.scores.fork_cache`, and the
fork it returns is the cache greedy decoding continues from. The last position's logits equal
the uncached ``VideoLLM.prefill`` up to float rounding (``tests/test_bench_prefix.py``,
``tests/test_stage_two.py``). The evaluation runner answers with it
(:func:`mlb_core.pipeline.answer`'s ``prefix``); the bench times its two parts
(:class:`mlb_core.bench.prefix.PrefixCache`).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from mlb_core.backbones.adapter import VideoLLM
from mlb_core.backbones.prompts import Prompt
from mlb_core.selection.scores import cpu_threads, fork_cache


@dataclass
class PrefixEntry:
    """The cached stage-two prefix of one video.

    Attributes:
        embeds: (C, D) the cached positions' input embeddings; a later prompt reuses the cache
            only when its own first C embeddings are equal to these.
        cache: a ``DynamicCache`` over every decoder layer, (1, Hk, C, hd) keys and values a layer.
    """

    embeds: torch.Tensor
    cache: Any

    @property
    def length(self) -> int:
        return int(self.embeds.shape[0])


class StageTwoPrefix:
    """Stage-two prefill with its question-independent prefix computed once per video.

    :meth:`prefill` returns the last position's logits (1, V) of ``prefix + visual + suffix``
    and the KV cache of the whole prompt (a fork: decoding appends to it, the stored entry stays
    as it is), as ``VideoLLM.prefill`` does. With ``reuse_visual`` the cached part is
    ``prefix + visual``, and a prompt whose cached part differs from the stored one (another
    video, other visual tokens) rebuilds it; without, the whole prompt runs in one pass and the
    stored entry is left for the next question-independent prompt. One entry is kept: the
    memory of one prompt's KV cache. On a CPU the suffix-only pass of ``reuse_visual`` runs with
    ``question_threads`` intra-op threads, as the stage-one cache's question passes do
    (:func:`~mlb_core.selection.scores.cpu_threads`).

    After each :meth:`prefill`: ``last_reused`` (the stored entry served it), ``last_cached`` and
    ``last_new`` (positions read from the cache and computed by the question's pass).
    """

    def __init__(self, question_threads: int | None = 1) -> None:
        self.question_threads = question_threads
        self.entry: PrefixEntry | None = None
        self.n_builds = 0
        self.last_reused = False
        self.last_cached = 0
        self.last_new = 0

    def clock(self, vlm: VideoLLM, part: str) -> AbstractContextManager:
        """A context manager around ``part`` of a prefill: ``"context"`` (building the cache, only
        when one is built) or ``"question"`` (the question's pass): none here; the bench's
        subclass times them."""
        return nullcontext()

    def build(self, vlm: VideoLLM, embeds: torch.Tensor) -> PrefixEntry:
        """The cache of ``embeds`` (C, D) through every decoder layer, no LM head (kept, or reused
        when the stored entry has the same embeddings)."""
        if self.entry is not None and self.entry.embeds.shape == embeds.shape and torch.equal(
                self.entry.embeds, embeds):
            return self.entry
        from transformers import DynamicCache

        self.entry = None  # free the old cache before the new one is made
        cache = DynamicCache(config=vlm.language_model.config)
        with torch.inference_mode():
            vlm.language_model(inputs_embeds=embeds[None], cache=cache, use_cache=True)
        self.entry = PrefixEntry(embeds, cache)
        self.n_builds += 1
        return self.entry

    def question(self, vlm: VideoLLM, entry: PrefixEntry, new: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """Logits (1, V) of the last of ``new`` (Q, D) positions after the cached ones, and the
        fork of the cache they were computed on (C + Q positions; the stored tensors are left as
        they are)."""
        c, q = entry.length, new.shape[0]
        positions = torch.arange(c, c + q, device=new.device)[None]  # (1, Q)
        with torch.inference_mode():
            out = vlm.model(inputs_embeds=new[None], cache=fork_cache(entry.cache), use_cache=True,
                            position_ids=positions, logits_to_keep=1)
        return out.logits[:, -1], out.cache if hasattr(out, "cache") else out.past_key_values

    def prefill(self, vlm: VideoLLM, prompt: Prompt, visual: torch.Tensor,
                reuse_visual: bool) -> tuple[torch.Tensor, Any]:
        """Last-position logits (1, V) of ``prompt.prefix + visual (N, D) + prompt.suffix`` and the
        prompt's KV cache (for :meth:`VideoLLM.decode`, ``n_past`` = the prompt's length)."""
        pre = vlm.embed_text(prompt.prefix, first=True)  # (P, D)
        suf = vlm.embed_text(prompt.suffix, first=False)  # (S, D)
        visual = visual.to(pre.dtype)
        assert len(pre) and len(suf), "the prompt has a prefix and a suffix (VideoLLM.build_inputs)"
        if not reuse_visual:  # nothing worth caching: one plain causal pass over the whole prompt
            embeds = torch.cat([pre, visual, suf])  # (L, D)
            vlm.check_length(len(embeds))
            self.last_reused, self.last_cached, self.last_new = False, 0, len(embeds)
            with self.clock(vlm, "question"):
                return vlm.prefill(embeds[None])
        cached = torch.cat([pre, visual])  # (C, D)
        vlm.check_length(len(cached) + len(suf))
        builds = self.n_builds
        with self.clock(vlm, "context"):
            entry = self.build(vlm, cached)
        self.last_reused = self.n_builds == builds  # the stored entry served this prompt
        self.last_cached, self.last_new = len(cached), len(suf)
        with cpu_threads(self.question_threads, vlm.device), self.clock(vlm, "question"):
            return self.question(vlm, entry, suf)
