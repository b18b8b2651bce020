"""Tracing the LLM passes of every method on a stand-in: the decoder passes a method makes and
its visual-token count (:class:`MethodTrace`), later priced in FLOPs or in measured seconds."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from mlb_core.bench.flops import LMShape, Pass
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
    """

    visual: int
    prompt: int
    prefix_tokens: int
    suffix_tokens: int
    passes: list[Pass]
    first: list[Pass] | None = None
    later: list[Pass] | None = None


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


def trace_methods(
    shape: LMShape, family: str, preset: str, methods: list[str], n_questions: int
) -> dict[str, MethodTrace | TraceError]:
    """Run every method on a stand-in (tiny model with ``shape``'s context and ``family``'s
    prompt, random 24 x 24 grid tokens) and record its visual tokens and decoder passes:
    ``{method: MethodTrace}``, or ``{method: TraceError}`` when it cannot run here."""
    from mlb_core.backbones.prompts import render_prompt
    from mlb_core.backbones.tiny import build_tiny_model
    from mlb_core.config import get_preset
    from mlb_core.methods import METHODS
    from mlb_core.methods.registry import MethodInput
    from mlb_core.selection.scores import StageOneCache

    params = get_preset(preset)
    vlm = build_tiny_model("llava_next", seed=0, prompt_family=family, max_position_embeddings=shape.context)
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
            out[name] = MethodTrace(visual=int(visual.shape[0]), prompt=int(embeds.shape[1]),
                                    prefix_tokens=len(vlm.embed_text(prompts[0].prefix, True)),
                                    suffix_tokens=len(vlm.embed_text(prompts[0].suffix, False)),
                                    passes=to_passes(raw, n_layers), first=first, later=later)
        except MLBError as exc:
            out[name] = TraceError(str(exc))
    return out


def runnable(traces: dict[str, MethodTrace | TraceError]) -> dict[str, MethodTrace]:
    """The traces of the methods that ran."""
    return {k: v for k, v in traces.items() if isinstance(v, MethodTrace)}
