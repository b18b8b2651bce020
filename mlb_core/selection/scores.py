"""Stage one amortised across the questions of a video (issue 5; docs/method.md, "SegAttn", step 3).

Stage one feeds every segment as ``prompt prefix + segment tokens + suffix`` (the suffix
holds the question) through the decoder up to the scoring layer K and reads the last
query's attention (paper Fig. 3, stage one; :func:`mlb_core.selection.segattn.stage_one`). Under
causal attention the prefix and segment positions never see the question, so their keys
and values at layers 0..K-1, and their keys at layer K, are the same for every question
about the video. :class:`StageOneCache` computes them once per video
(:func:`build_context`) and a question then runs only its own few suffix tokens, at the
positions that follow the segment, through layers 0..K-1 with that cache; at layer K the
last query attends over the cached keys plus the new keys (:func:`score_question`). The
scores equal the uncached path's up to float rounding (``tests/test_stage_one_cache.py``).

The stored cache is never written: each question runs on a *fork* (a new cache object whose
layers share the stored tensors; ``DynamicLayer.update`` concatenates into new tensors).

Cost per video (stored until the next video): layers 0..K-1 keys and values plus the layer-K
keys of every prefix+segment position, i.e. ``(2K + 1) * n_kv_heads * head_dim`` numbers per
position (Vicuna-7B, K = 2, 50 frames: about 1.2 GB in fp16, 2.4 GB in fp32).

Usage (any method that reads stage-one scores picks it up through ``MethodInput.scorer``)::

    cache = StageOneCache()
    for question in questions:
        answer(vlm, features, question, "mlb", params, scorer=cache)
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from mlb_core.backbones.adapter import VideoLLM
from mlb_core.backbones.prompts import Prompt
from mlb_core.config import MLBParams
from mlb_core.errors import MLBError
from mlb_core.selection.attention import last_query_probs_cached, run_to_layer, scoring_keys
from mlb_core.selection.segattn import split_segments
from mlb_core.timing import timed


class ScoringInput(Protocol):
    """What the scorer reads of a method's input (``mlb_core.methods.registry.MethodInput``
    satisfies it; declared here so that selection does not import the methods wing)."""

    vlm: VideoLLM
    tokens: torch.Tensor
    prompt: Prompt
    params: MLBParams


@contextmanager
def cpu_threads(n: int | None, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run the block with ``n`` intra-op CPU threads (restored after); no-op for ``None`` or a GPU.

    A question pass is a few rows per segment: on a CPU, splitting such small ops over
    threads costs more than it saves, and far more when other processes share the cores
    (measured on 2 shared cores: 0.09 s with 1 thread against 0.7 s with 2, embedded default,
    4 segments)."""
    if n is None or torch.device(device).type != "cpu" or n == torch.get_num_threads():
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class SegmentContext:
    """Question-independent stage-one state of a batch of B segments (C positions each).

    Attributes:
        cache: a ``DynamicCache`` holding layers 0..K-1 keys/values, each (B, Hk, C, hd).
        keys: (B, Hk, C, hd) the scoring layer K's rotary-embedded keys.
        length: C = prefix tokens + segment tokens.
    """

    cache: object
    keys: torch.Tensor
    length: int

    def nbytes(self) -> int:
        tensors = [self.keys] + [t for layer in self.cache.layers if layer.is_initialized
                                 for t in (layer.keys, layer.values)]
        return sum(t.numel() * t.element_size() for t in tensors)


def build_context(language_model: nn.Module, embeds: torch.Tensor, layer: int) -> SegmentContext:
    """Run ``prefix + segment`` embeddings (B, C, D) through layers 0..K-1 (K = ``layer``),
    keeping their KV cache and the layer-K keys; nothing after layer K's key projection runs."""
    from transformers import DynamicCache

    cache = DynamicCache(config=language_model.config)
    keys = run_to_layer(language_model, layer, scoring_keys, inputs_embeds=embeds, cache=cache,
                        use_cache=True)
    assert keys.shape[0] == embeds.shape[0] and keys.shape[2] == embeds.shape[1], keys.shape  # (B, Hk, C, hd)
    return SegmentContext(cache, keys, int(embeds.shape[1]))


def fork_cache(cache: object) -> object:
    """A cache whose layers share ``cache``'s tensors: updating the fork (``torch.cat`` into new
    tensors) leaves ``cache`` as it was."""
    fork = copy.copy(cache)
    fork.layers = [copy.copy(layer) for layer in cache.layers]
    return fork


def merge_contexts(contexts: list[SegmentContext]) -> SegmentContext:
    """Concatenate the contexts of several batches of segments (same length C) along the batch,
    so that a question runs as one pass over every segment (one copy, once per video)."""
    if len(contexts) == 1:
        return contexts[0]
    assert len({c.length for c in contexts}) == 1, "segments of one video have equal lengths"
    cache = fork_cache(contexts[0].cache)
    for i, layer in enumerate(cache.layers):
        if layer.is_initialized:
            layer.keys = torch.cat([c.cache.layers[i].keys for c in contexts])  # (S, Hk, C, hd)
            layer.values = torch.cat([c.cache.layers[i].values for c in contexts])
    return SegmentContext(cache, torch.cat([c.keys for c in contexts]), contexts[0].length)


def score_question(
    language_model: nn.Module, ctx: SegmentContext, suffix: torch.Tensor, layer: int
) -> torch.Tensor:
    """Stage-one scores of one question on cached segments.

    Args:
        ctx: :func:`build_context` of the B segments.
        suffix: (B, Q, D) the question's suffix embeddings (positions C..C+Q-1).
        layer: the scoring layer K (the one ``ctx`` was built for).

    Returns:
        (B, C + Q) float32: the last position's attention at layer K, heads averaged; equal
        to :func:`mlb_core.selection.attention.last_query_attention` on ``prefix + segment + suffix``.
    """
    b, q, _ = suffix.shape
    assert b == ctx.keys.shape[0], f"{b} questions rows for {ctx.keys.shape[0]} cached segments"
    positions = torch.arange(ctx.length, ctx.length + q, device=suffix.device)[None]  # (1, Q)
    fn = partial(last_query_probs_cached, past_keys=ctx.keys)
    return run_to_layer(language_model, layer, fn, inputs_embeds=suffix, cache=fork_cache(ctx.cache),
                        use_cache=True, position_ids=positions)


@dataclass
class _Entry:
    """One cached layout of one video: its segments' contexts and where the visual tokens sit."""

    tokens: torch.Tensor  # the video's (T, h, w, D) grid tokens (the object, for identity)
    key: tuple
    contexts: list[SegmentContext]
    vis: slice
    memo: tuple | None = None  # (suffix, scores, cost) of the last question


class StageOneCache:
    """The one stage-one score cache (docs/method.md, "SegAttn"): used by ``mlb answer``,
    ``mlb eval``, ``mlb bench`` and every method that reads stage-one scores.

    The first question about a video builds the context of every segment (batched by
    ``batch_size``); later questions with the same video tokens, prompt prefix, segment
    length and scoring layer reuse it, and several methods asking about the same question
    share its scores (memoised). A different video (another ``tokens`` tensor, or the same
    one modified in place) replaces it. ``frames`` selects a subset of the frames and
    ``segment_frames`` overrides the segment length: ``fastv`` scores the frames that
    fit the context as one segment, and keeps its own entry beside the segmented one
    (``max_entries`` layouts are kept, least recently used dropped). With ``merge``
    (default) the batches' contexts are concatenated once, so that each question is a single
    pass over all segments; without it, a question runs batch by batch (lower peak memory).
    On a CPU, question passes run with ``question_threads`` intra-op threads (default 1, see
    :func:`cpu_threads`; ``None`` keeps torch's setting).

    Attributes:
        timings: seconds spent, cumulated: ``context`` (building) and ``question`` (scoring).
        last_cost: seconds that computing the last :meth:`scores` call's scores took
            (``context``: 0 when the context was reused; ``question``), also when they were
            shared from the memo (``last_shared``).
        n_builds, n_questions: how many contexts were built and questions scored.
    """

    def __init__(self, batch_size: int = 4, merge: bool = True, question_threads: int | None = 1,
                 max_entries: int = 2) -> None:
        if batch_size < 1 or max_entries < 1:
            raise MLBError(f"batch_size and max_entries must be >= 1, got {batch_size}, {max_entries}")
        self.batch_size = batch_size
        self.merge = merge
        self.question_threads = question_threads
        self.max_entries = max_entries
        self.timings: dict[str, float] = {}
        self.last_cost: dict[str, float] = {}
        self.last_shared = False
        self.n_builds = 0
        self.n_questions = 0
        self._entries: list[_Entry] = []  # most recently used last

    def __call__(self, inp: ScoringInput) -> torch.Tensor:
        """The ``scorer`` protocol: (T, h, w) stage-one scores for ``inp``'s question."""
        return self.scores(inp.vlm, inp.tokens, inp.prompt, inp.params)

    @property
    def _contexts(self) -> list[SegmentContext]:
        """The contexts of the most recently used layout."""
        return self._entries[-1].contexts if self._entries else []

    def clear(self) -> None:
        """Drop the cached video."""
        self._entries = []

    def nbytes(self) -> int:
        """Bytes held by the cached contexts."""
        return sum(ctx.nbytes() for e in self._entries for ctx in e.contexts)

    @staticmethod
    def _video_key(vlm: VideoLLM, tokens: torch.Tensor, prefix: str, segment_frames: int, layer: int,
                   frames: tuple[int, ...] | None) -> tuple:
        try:
            version = tokens._version  # bumped by in-place changes
        except RuntimeError:  # inference tensors have no version counter (and are rarely modified)
            version = -1
        return (id(vlm.model), version, tuple(tokens.shape), prefix, segment_frames, layer, vlm.dtype, frames)

    def build(self, vlm: VideoLLM, tokens: torch.Tensor, prefix: str, params: MLBParams,
              frames: Sequence[int] | None = None, segment_frames: int | None = None) -> _Entry:
        """Build (or keep) the context of every segment of ``tokens`` (T, h, w, D)."""
        frames_key = tuple(int(f) for f in frames) if frames is not None else None
        seg = segment_frames or params.segment_frames
        key = self._video_key(vlm, tokens, prefix, seg, params.score_layer, frames_key)
        for i, e in enumerate(self._entries):
            if e.tokens is tokens and e.key == key:
                self._entries.append(self._entries.pop(i))
                return e
        # another video replaces every entry; another layout of the same video is added
        self._entries = [e for e in self._entries if e.tokens is tokens and e.key[:4] == key[:4]]
        used = tokens[torch.as_tensor(frames_key)] if frames_key is not None else tokens
        pre = vlm.embed_text(prefix, first=True)  # (P, D)
        segments = split_segments(used, seg)  # (S, f, h, w, D)
        s, f, h, w, d = segments.shape
        contexts = []
        with timed(self.timings, "context", vlm.device), timed(self.last_cost, "context", vlm.device):
            chunks = segments.split(self.batch_size)
            bar = tqdm(chunks, desc="stage one (context)", leave=False,
                       disable=None if len(chunks) > 1 else True)
            for chunk in bar:
                n = chunk.shape[0]
                embeds = torch.cat([pre.expand(n, -1, -1),
                                    chunk.reshape(n, f * h * w, d).to(pre.dtype)], 1)  # (n, C, D)
                vlm.check_length(embeds.shape[1])
                contexts.append(build_context(vlm.language_model, embeds, params.score_layer))
            if self.merge:
                contexts = [merge_contexts(contexts)]
        entry = _Entry(tokens, key, contexts, slice(len(pre), len(pre) + f * h * w))
        self._entries = (self._entries + [entry])[-self.max_entries:]
        self.n_builds += 1
        return entry

    def scores(self, vlm: VideoLLM, tokens: torch.Tensor, prompt: Prompt, params: MLBParams,
               frames: Sequence[int] | None = None, segment_frames: int | None = None) -> torch.Tensor:
        """(T', h, w) float32 stage-one scores of the ``frames`` of ``tokens`` (default all T),
        segments of ``segment_frames`` (default ``params.segment_frames``); the same as
        :func:`mlb_core.selection.segattn.stage_one` on those frames."""
        self.last_cost, self.last_shared = {"context": 0.0, "question": 0.0}, False
        entry = self.build(vlm, tokens, prompt.prefix, params, frames, segment_frames)
        if entry.memo is not None and entry.memo[0] == prompt.suffix:
            self.last_cost, self.last_shared = dict(entry.memo[2]), True
            return entry.memo[1]
        t = len(frames) if frames is not None else tokens.shape[0]
        _, h, w, _ = tokens.shape
        suffix = vlm.embed_text(prompt.suffix, first=False)  # (Q, D)
        out = []
        with (timed(self.timings, "question", vlm.device), timed(self.last_cost, "question", vlm.device),
              cpu_threads(self.question_threads, vlm.device)):
            for ctx in entry.contexts:
                vlm.check_length(ctx.length + len(suffix))
                n = ctx.keys.shape[0]
                probs = score_question(vlm.language_model, ctx, suffix.expand(n, -1, -1), params.score_layer)
                out.append(probs[:, entry.vis])  # (n, f*h*w)
        self.n_questions += 1
        scores = torch.cat(out).reshape(t, h, w)
        entry.memo = (prompt.suffix, scores, dict(self.last_cost))
        return scores
