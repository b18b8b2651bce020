"""The bench's stage-two prefix cache (``mlb_core.bench.prefix``) on a tiny model: the same logits as
the plain prefill, reuse across the questions about a video, and the passes the FLOPs model counts."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mlb_core.backbones.prompts import render_prompt
from mlb_core.bench.flops import stage_two_passes
from mlb_core.bench.prefix import PrefixCache
from mlb_core.bench.trace import to_passes, trace_passes

QUESTIONS = ("What is happening in the video?", "How many people appear in the video at all, and where?")


@pytest.fixture
def visual(tiny):
    return torch.randn(40, tiny.model.config.text_config.hidden_size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("reuse_visual", [True, False])
def test_cached_prefill_equals_the_plain_prefill(tiny, visual, reuse_visual):
    cache = PrefixCache()
    for i, q in enumerate(QUESTIONS):
        prompt = render_prompt(tiny.family, q)
        embeds, _ = tiny.build_inputs(prompt, visual)  # (1, L, D)
        plain, _ = tiny.prefill(embeds)  # (1, V)
        logits = cache.prefill(tiny, prompt, visual, reuse_visual)
        assert logits.shape == plain.shape
        torch.testing.assert_close(logits, plain, atol=1e-5, rtol=1e-5)
        cost = cache.last_cost
        prefix = len(tiny.embed_text(prompt.prefix, True))
        assert cost.cached_tokens == (prefix + len(visual) if reuse_visual else 0)
        assert cost.cached_tokens + cost.new_tokens == embeds.shape[1]
        assert cost.reused == (reuse_visual and i > 0)
        assert (cost.context_s == 0.0) == (i > 0 or not reuse_visual)
    assert cache.n_builds == (1 if reuse_visual else 0)  # question-dependent tokens: nothing cached


def test_stored_cache_is_never_written(tiny, visual):
    cache = PrefixCache()
    prompt = render_prompt(tiny.family, QUESTIONS[0])
    cache.prefill(tiny, prompt, visual, True)
    stored = [(layer.keys.clone(), layer.values.clone()) for layer in cache.entry.cache.layers]
    length = cache.entry.cache.get_seq_length(0)
    for q in QUESTIONS:
        cache.prefill(tiny, render_prompt(tiny.family, q), visual, True)
    assert cache.entry.cache.get_seq_length(0) == length == cache.entry.length
    for (k, v), layer in zip(stored, cache.entry.cache.layers, strict=True):
        assert torch.equal(k, layer.keys) and torch.equal(v, layer.values)


def test_other_visual_tokens_rebuild(tiny, visual):
    cache = PrefixCache()
    prompt = render_prompt(tiny.family, QUESTIONS[0])
    cache.prefill(tiny, prompt, visual, True)
    other = visual.clone()
    other[3] += 1.0  # another video (or question-dependent tokens): the cache must not be reused
    logits = cache.prefill(tiny, prompt, other, True)
    assert not cache.last_cost.reused and cache.n_builds == 2
    plain, _ = tiny.prefill(tiny.build_inputs(prompt, other)[0])
    torch.testing.assert_close(logits, plain, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("reuse_visual", [True, False])
def test_traced_passes_are_the_flops_models(tiny, visual, reuse_visual):
    """The decoder passes the prefix cache really makes = :func:`stage_two_passes` (the LM-head row is
    not a decoder layer, so the trace does not see it)."""
    cache = PrefixCache()
    runs = []
    for q in QUESTIONS:
        with trace_passes(tiny.language_model) as raw:
            cache.prefill(tiny, render_prompt(tiny.family, q), visual, reuse_visual)
        runs.append(to_passes(raw, len(tiny.layers)))
    prompts = [render_prompt(tiny.family, q) for q in QUESTIONS]
    prefix = len(tiny.embed_text(prompts[0].prefix, True))
    first, _ = stage_two_passes(prefix, len(visual), len(tiny.embed_text(prompts[0].suffix, False)), reuse_visual)
    _, later = stage_two_passes(prefix, len(visual), len(tiny.embed_text(prompts[1].suffix, False)), reuse_visual)
    assert runs == [[dataclasses.replace(p, head=False) for p in ps] for ps in (first, later)]
