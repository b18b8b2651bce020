"""Tracing the LLM passes of every method on a stand-in: the decoder passes a method makes, its
visual-token count, whether its visual tokens depend on the question, and its stage-two passes
with the question-independent prefix cached (:class:`MethodTrace`), later priced in FLOPs or in
measured seconds (docs/architecture.md, "Bench")."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from mlb_core.bench.flops import LMShape, Pass, stage_two_passes
from mlb_core.bench.settings import QUESTIONS
from mlb_core.errors import MLBError


@dataclass(frozen=True)
class MethodTrace:
    """One method run on a stand-in.

    Attributes:
        visual: visual tokens it hands to stage two.
        prompt: stage-two prompt length (tokens).
        prefix_tokens, suffix_tokens: the first question's prompt around the video.
        passes: its decoder passes for one question, uncached.
        first, later: its passes for the first and a later question of a video through the
            stage-one cache; ``None`` when the method reads no segment scores.
        reuse_visual: its visual tokens do not depend on the question (it reads no segment
            scores, and two questions gave the same tokens), so stage two caches
            ``prefix + visual`` once per video (:mod:`mlb_core.bench.prefix`).
        stage_two_first, stage_two_later: stage two of the first and of a later question with
            that cache (:func:`mlb_core.bench.flops.stage_two_passes`).
    """

    visual: int
    prompt: int
    prefix_tokens: int
    suffix_tokens: int
    passes: list[Pass]
    first: list[Pass] | None = None
    later: list[Pass] | None = None
    reuse_visual: bool = False
    stage_two_first: list[Pass] | None = None
    stage_two_later: list[Pass] | None = None

    @property
    def cached_tokens(self) -> int:
        """Stage-two positions cached once per video (``prefix + visual``, or none when the visual
        tokens depend on the question: :mod:`mlb_core.stage_two`)."""
        return self.prefix_tokens + self.visual if self.reuse_visual else 0

    def stage_two(self) -> tuple[list[Pass], list[Pass]]:
        """``(stage_two_first, stage_two_later)``, counted from the token counts when not traced."""
        if self.stage_two_first is not None and self.stage_two_later is not None:
            return self.stage_two_first, self.stage_two_later
        return stage_two_passes(self.prefix_tokens, self.visual, self.suffix_tokens, self.reuse_visual)


@dataclass(frozen=True)
class TraceError:
    """A method that cannot run on the stand-in, and why."""

    error: str


@contextmanager
def trace_passes(language_model: Any) -> Iterator[list[dict[str, int]]]:
    """Record every decoder pass run inside the block: batch, new and cached positions, and
    how many layers completed (fewer than all = an early exit at the next one)."""
    layers = language_model.layers
    passes: list[dict[str, int]] = []

    def start(module: Any, args: tuple, kwargs: dict) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]
        cache = kwargs.get("cache")
        past = cache.get_seq_length(0) if cache is not None else 0
        passes.append({"batch": int(hidden.shape[0]), "new": int(hidden.shape[1]), "past": int(past),
                       "done": 0})

    def done(module: Any, args: tuple, kwargs: dict, output: Any) -> None:
        passes[-1]["done"] += 1

    handles = [layers[0].register_forward_pre_hook(start, with_kwargs=True)]
    handles += [layer.register_forward_hook(done, with_kwargs=True) for layer in layers]
    try:
        yield passes
    finally:
        for h in handles:
            h.remove()


def to_passes(raw: list[dict[str, int]], n_layers: int) -> list[Pass]:
    """Traced passes -> :class:`Pass`; a pass through all layers becomes ``layers=None``."""
    out = []
    for r in raw:
        full = r["done"] >= n_layers
        out.append(Pass(r["batch"], r["new"], r["past"], None if full else r["done"], not full))
    return out


@functools.lru_cache(maxsize=4)
def _stand_in(family: str, context: int) -> Any:
    """The seeded tiny stand-in of :func:`trace_methods` (built once per prompt family and context:
    ``cost_table`` traces a method per row, about a second a build)."""
    from mlb_core.backbones.tiny import build_tiny_model

    return build_tiny_model("llava_next", seed=0, prompt_family=family, max_position_embeddings=context)


def trace_methods(
    shape: LMShape, family: str, preset: str | Any, methods: list[str], n_questions: int
) -> dict[str, MethodTrace | TraceError]:
    """Run every method on a stand-in (tiny model with ``shape``'s context and ``family``'s
    prompt, random 24 x 24 grid tokens) at ``preset`` (a preset name or an ``MLBParams``)
    and record its visual tokens and decoder passes:
    ``{method: MethodTrace}``, or ``{method: TraceError}`` when it cannot run here. A method
    that reads no segment scores runs again on a second question: equal visual tokens make its
    ``prefix + visual`` cacheable in stage two (``reuse_visual``)."""
    from mlb_core.backbones.prompts import render_prompt
    from mlb_core.config import get_preset
    from mlb_core.methods import METHODS
    from mlb_core.methods.registry import MethodInput
    from mlb_core.selection.scores import StageOneCache

    params = get_preset(preset) if isinstance(preset, str) else preset
    vlm = _stand_in(family, shape.context)
    n_layers = len(vlm.layers)
    assert params.score_layer < n_layers - 1, "the stand-in must be deeper than the scoring layer"
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randn(params.n_frames, 24, 24, vlm.model.config.text_config.hidden_size, generator=gen)
    prompts = [render_prompt(family, q) for q in QUESTIONS[: max(2, n_questions)]]
    out: dict[str, MethodTrace | TraceError] = {}
    for name in methods:
        fn = METHODS[name]
        try:
            inp = MethodInput(vlm, tokens, None, prompts[0], params)
            with trace_passes(vlm.language_model) as raw:
                visual = fn(inp)
            embeds, _ = vlm.build_inputs(prompts[0], visual)
            first = later = None
            if inp.scored:  # reads segment scores: the cache applies
                cache = StageOneCache()
                runs = []
                for prompt in prompts[:2]:
                    with trace_passes(vlm.language_model) as cached:
                        fn(MethodInput(vlm, tokens, None, prompt, params, scorer=cache))
                    runs.append(to_passes(cached, n_layers))
                first, later = runs
            reuse = not inp.scored and torch.equal(visual, fn(MethodInput(vlm, tokens, None, prompts[1], params)))
            prefix = len(vlm.embed_text(prompts[0].prefix, True))
            suffix = len(vlm.embed_text(prompts[0].suffix, False))
            two_first, two_later = stage_two_passes(prefix, int(visual.shape[0]), suffix, reuse)
            out[name] = MethodTrace(visual=int(visual.shape[0]), prompt=int(embeds.shape[1]),
                                    prefix_tokens=prefix, suffix_tokens=suffix,
                                    passes=to_passes(raw, n_layers), first=first, later=later, reuse_visual=reuse,
                                    stage_two_first=two_first, stage_two_later=two_later)
        except MLBError as exc:
            out[name] = TraceError(str(exc))
    return out


def runnable(traces: dict[str, MethodTrace | TraceError]) -> dict[str, MethodTrace]:
    """The traces of the methods that ran."""
    return {k: v for k, v in traces.items() if isinstance(v, MethodTrace)}
