"""The per-video stage-one cache gives the uncached scores, never changes, and plugs into methods."""

from __future__ import annotations

import pytest
import torch

from mlb_core.backbones.prompts import render_prompt
from mlb_core.backbones.tiny import build_tiny_model
from mlb_core.config import get_preset
from mlb_core.methods import METHODS
from mlb_core.methods.registry import MethodInput
from mlb_core.selection.scores import StageOneCache, build_context, fork_cache, score_question
from mlb_core.selection.segattn import stage_one

QUESTIONS = ["What is the man doing?", "Why?",
             "Describe every object you can see, and the colour of the car."]


def _tokens(vlm, t=6, seed=0):
    h, w = vlm.grid_hw
    d = vlm.model.config.text_config.hidden_size
    return torch.randn(t, h, w, d, generator=torch.Generator().manual_seed(seed))


def _params(**kw):
    return get_preset("tiny").replace(n_frames=6, segment_frames=2, **kw)


def _snapshot(cache: StageOneCache):
    """Every stored tensor (object and a copy of its values)."""
    out = []
    for ctx in cache._contexts:
        out.append((ctx.keys, ctx.keys.clone()))
        for layer in ctx.cache.layers:
            if layer.is_initialized:
                out += [(layer.keys, layer.keys.clone()), (layer.values, layer.values.clone())]
    return out


@pytest.mark.parametrize("layer", [0, 1, 3])
@pytest.mark.parametrize("batch_size", [1, 2, 4])
@pytest.mark.parametrize("merge", [True, False])
def test_cached_scores_equal_uncached(tiny, layer, batch_size, merge):
    params = _params(score_layer=layer)
    tokens = _tokens(tiny)
    cache = StageOneCache(batch_size=batch_size, merge=merge)
    for q in QUESTIONS:
        prompt = render_prompt(tiny.family, q)
        ref = stage_one(tiny, tokens, prompt, params)  # (T, h, w), the uncached path
        got = cache.scores(tiny, tokens, prompt, params)
        assert got.shape == ref.shape == tokens.shape[:3]
        assert (got - ref).abs().max().item() <= 1e-5
    assert cache.n_builds == 1 and cache.n_questions == len(QUESTIONS)


@pytest.mark.parametrize("family", ["llava_next_34b", "llava_onevision"])
def test_other_families(family):
    """GQA with one KV head (34B-like) and Qwen2 with attention biases (OneVision)."""
    vlm = build_tiny_model(family, seed=1)
    params = _params(score_layer=2)
    tokens = _tokens(vlm, seed=2)
    cache = StageOneCache(batch_size=2)
    for q in QUESTIONS[:2]:
        prompt = render_prompt(vlm.family, q)
        ref = stage_one(vlm, tokens, prompt, params)
        assert (cache.scores(vlm, tokens, prompt, params) - ref).abs().max().item() <= 1e-5


def test_eager_attention_model(tiny_eager):
    params = _params()
    tokens = _tokens(tiny_eager)
    cache = StageOneCache()
    for q in QUESTIONS:
        prompt = render_prompt(tiny_eager.family, q)
        ref = stage_one(tiny_eager, tokens, prompt, params)
        assert (cache.scores(tiny_eager, tokens, prompt, params) - ref).abs().max().item() <= 1e-5


def test_multiple_choice_prompt(tiny):
    params = _params()
    tokens = _tokens(tiny)
    cache = StageOneCache()
    prompt = render_prompt(tiny.family, "Which colour?", "mc", ["red", "green", "blue"])
    ref = stage_one(tiny, tokens, prompt, params)
    assert (cache.scores(tiny, tokens, prompt, params) - ref).abs().max().item() <= 1e-5


def test_cache_is_not_mutated_across_questions(tiny):
    params = _params()
    tokens = _tokens(tiny)
    cache = StageOneCache(batch_size=2)
    cache.scores(tiny, tokens, render_prompt(tiny.family, QUESTIONS[0]), params)
    before = _snapshot(cache)
    lengths = [ctx.cache.get_seq_length() for ctx in cache._contexts]
    assert before and all(n == ctx.length for n, ctx in zip(lengths, cache._contexts, strict=True))
    for q in QUESTIONS[1:] + QUESTIONS:
        cache.scores(tiny, tokens, render_prompt(tiny.family, q), params)
    after = _snapshot(cache)
    assert len(after) == len(before)
    for (t0, copy0), (t1, _) in zip(before, after, strict=True):
        assert t0 is t1 and torch.equal(t1, copy0)
    assert [ctx.cache.get_seq_length() for ctx in cache._contexts] == lengths
    assert cache.n_builds == 1


@pytest.mark.parametrize(("merge", "passes"), [(True, 1), (False, 3)])
def test_merged_context_is_one_pass_per_question(tiny, merge, passes):
    params = _params()  # 3 segments, context batches of 1
    tokens = _tokens(tiny)
    cache = StageOneCache(batch_size=1, merge=merge)
    cache.scores(tiny, tokens, render_prompt(tiny.family, QUESTIONS[0]), params)
    assert len(cache._contexts) == passes
    calls = []
    handle = tiny.layers[0].register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    try:
        cache.scores(tiny, tokens, render_prompt(tiny.family, QUESTIONS[1]), params)
    finally:
        handle.remove()
    assert calls == [3] if merge else calls == [1, 1, 1]


def test_fork_leaves_the_stored_cache_alone(tiny):
    lm = tiny.language_model
    x = torch.randn(2, 30, 32, generator=torch.Generator().manual_seed(3))
    ctx = build_context(lm, x[:, :25], 2)
    layer0 = ctx.cache.layers[0]
    keys, values = layer0.keys, layer0.values
    fork = fork_cache(ctx.cache)
    fork.update(torch.ones(2, 2, 5, 8), torch.ones(2, 2, 5, 8), 0)
    assert fork.get_seq_length() == 30 and ctx.cache.get_seq_length() == 25
    assert layer0.keys is keys and layer0.values is values
    # layers 0..K-1 are cached, the scoring layer and after are not
    assert [layer.is_initialized for layer in ctx.cache.layers] == [True, True, False, False]
    assert ctx.keys.shape == (2, 2, 25, 8)  # (B, Hk, C, hd)
    probs = score_question(lm, ctx, x[:, 25:], 2)
    assert probs.shape == (2, 30)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2))


def test_new_video_or_prompt_prefix_rebuilds(tiny):
    params = _params()
    cache = StageOneCache()
    a, b = _tokens(tiny, seed=0), _tokens(tiny, seed=5)
    prompt = render_prompt(tiny.family, QUESTIONS[0])
    cache.scores(tiny, a, prompt, params)
    got = cache.scores(tiny, b, prompt, params)
    assert cache.n_builds == 2
    assert (got - stage_one(tiny, b, prompt, params)).abs().max().item() <= 1e-5
    other = render_prompt("vicuna", QUESTIONS[0])  # another prefix
    got = cache.scores(tiny, b, other, params)
    assert cache.n_builds == 3
    assert (got - stage_one(tiny, b, other, params)).abs().max().item() <= 1e-5
    b += 1  # the same tensor, changed in place
    got = cache.scores(tiny, b, other, params)
    assert cache.n_builds == 4
    assert (got - stage_one(tiny, b, other, params)).abs().max().item() <= 1e-5


def test_no_hooks_left_behind(tiny):
    params = _params()
    tokens = _tokens(tiny)  # encoding may let transformers install its own output-capturing hooks

    def hooks():
        return {(name, kind, key) for name, module in tiny.model.named_modules()
                for kind in ("_forward_pre_hooks", "_forward_hooks") for key in getattr(module, kind)}

    before = hooks()
    StageOneCache().scores(tiny, tokens, render_prompt(tiny.family, QUESTIONS[0]), params)
    assert hooks() == before


@pytest.mark.parametrize("method", ["mlb", "segattn-topk", "mlb-gapool"])
def test_plugs_into_methods_as_scorer(tiny, method):
    params = _params()
    tokens = _tokens(tiny)
    cache = StageOneCache()
    for q in QUESTIONS:
        prompt = render_prompt(tiny.family, q)
        ref = METHODS[method](MethodInput(tiny, tokens, None, prompt, params))
        inp = MethodInput(tiny, tokens, None, prompt, params, scorer=cache)
        got = METHODS[method](inp)
        assert got.shape == ref.shape
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)
        assert "stage_one" in inp.timings
    assert cache.n_builds == 1 and cache.n_questions == len(QUESTIONS)


def test_answer_with_scorer(tiny):
    from mlb_core.pipeline import VideoFeatures, answer

    params = _params()
    tokens = _tokens(tiny)
    feats = VideoFeatures("synthetic", None, None, tokens)
    cache = StageOneCache()
    for q in QUESTIONS[:2]:
        a = answer(tiny, feats, q, "mlb", params, scorer=cache)
        b = answer(tiny, feats, q, "mlb", params)
        assert a.text == b.text and a.n_visual_tokens == b.n_visual_tokens
    assert cache.timings["context"] > 0 and cache.timings["question"] > 0


def test_bad_batch_size():
    from mlb_core.errors import MLBError

    with pytest.raises(MLBError):
        StageOneCache(batch_size=0)


def test_question_threads_restored_and_same_scores(tiny):
    from mlb_core.selection.scores import cpu_threads

    params = _params()
    tokens = _tokens(tiny)
    prompt = render_prompt(tiny.family, QUESTIONS[2])
    before = torch.get_num_threads()
    a = StageOneCache(question_threads=1).scores(tiny, tokens, prompt, params)
    b = StageOneCache(question_threads=None).scores(tiny, tokens, prompt, params)
    assert torch.get_num_threads() == before
    assert (a - b).abs().max().item() <= 1e-6
    with pytest.raises(RuntimeError), cpu_threads(1):
        assert torch.get_num_threads() == 1
        raise RuntimeError
    assert torch.get_num_threads() == before
