"""Stage two's per-video prefix cache in the answering path (``mlb_core.stage_two``): every method
answers as the plain prefill does (the naive reference), a method whose visual tokens do not
depend on the question prefills them once per video, and the runner records which answers reused it."""

from __future__ import annotations

import pytest
import torch

from mlb_core.config import get_preset
from mlb_core.evaluation.judge import read_jsonl
from mlb_core.evaluation.runner import evaluate, make_variants, predictions_path
from mlb_core.evaluation.synthetic import SynthConfig, generate
from mlb_core.pipeline import answer, encode_video
from mlb_core.stage_two import StageTwoPrefix

QUESTIONS = ("What colour is the square in the video?", "What shape appears first?",
             "Is there a red object at the end of the video, and which one?")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    generate(out, SynthConfig(n_videos=1, n_frames=12, size=(96, 72)))
    return out


@pytest.fixture(scope="module")
def features(tiny, synth):
    return encode_video(tiny, next((synth / "videos").glob("*.mp4")), 10)


@pytest.mark.parametrize("method", ["full", "sf-llava", "mlb-avg", "mlb", "segattn-topk"])
def test_answers_with_the_prefix_cache_equal_the_plain_prefill(tiny, features, method):
    params = get_preset("cpu").replace(n_frames=10, max_new_tokens=6)
    prefix = StageTwoPrefix()
    for i, q in enumerate(QUESTIONS):
        plain = answer(tiny, features, q, method, params)
        cached = answer(tiny, features, q, method, params, prefix=prefix)
        assert cached.text == plain.text and cached.n_prompt_tokens == plain.n_prompt_tokens
        question_free = method in ("full", "sf-llava", "mlb-avg")
        assert cached.prefix_reused is (question_free and i > 0)
        assert plain.prefix_reused is None
    # the question-dependent methods never build a prefix entry (their tokens change per question)
    assert prefix.n_builds == (1 if method in ("full", "sf-llava", "mlb-avg") else 0)


def test_cached_prompt_logits_and_cache_continue_like_the_plain_ones(tiny, features):
    """The fork :meth:`StageTwoPrefix.prefill` returns is the whole prompt's cache: one more decoding
    step on it gives the plain path's logits, and the stored entry is left as it was."""
    from mlb_core.backbones.prompts import render_prompt

    visual = features.tokens.reshape(-1, features.tokens.shape[-1])[:200]  # (200, D)
    prefix = StageTwoPrefix()
    for q in QUESTIONS[:2]:
        prompt = render_prompt(tiny.family, q)
        embeds, _ = tiny.build_inputs(prompt, visual)  # (1, L, D)
        logits, cache = prefix.prefill(tiny, prompt, visual, reuse_visual=True)
        plain, plain_cache = tiny.prefill(embeds)
        torch.testing.assert_close(logits, plain, atol=1e-5, rtol=1e-5)
        assert cache.get_seq_length(0) == plain_cache.get_seq_length(0) == embeds.shape[1]
        assert prefix.entry.cache.get_seq_length(0) == prefix.entry.length == embeds.shape[1] - prefix.last_new
        step = torch.tensor([[int(plain.argmax(-1))]])
        position = torch.tensor([[embeds.shape[1]]])
        with torch.inference_mode():
            a = tiny.model(input_ids=step, cache=cache, use_cache=True, position_ids=position).logits[:, -1]
            b = tiny.model(input_ids=step, cache=plain_cache, use_cache=True, position_ids=position).logits[:, -1]
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert prefix.n_builds == 1


def test_runner_reuses_the_prefix_within_a_video_and_answers_as_without(tiny, synth, tmp_path, monkeypatch):
    from mlb_core.evaluation import answering, runner

    methods = ["sf-llava", "mlb"]
    kw = dict(methods=methods, model="tiny:llava_next", vlm=tiny, overrides={"n_frames": 10, "max_new_tokens": 6},
              judge=None, progress=False)
    evaluate("synthetic", synth, out=tmp_path / "cached", **kw)
    real = answering.answer_items  # the reference: every prompt prefilled in full
    monkeypatch.setattr(runner, "answer_items", lambda *a, **k: real(*a, **{**k, "reuse_prefix": False}))
    evaluate("synthetic", synth, out=tmp_path / "plain", **kw)
    for v in make_variants(methods, ["cpu"], overrides={"n_frames": 10, "max_new_tokens": 6}):
        cached = read_jsonl(predictions_path(tmp_path / "cached", "synthetic", "tiny:llava_next", v))
        plain = read_jsonl(predictions_path(tmp_path / "plain", "synthetic", "tiny:llava_next", v))
        assert len(cached) == len(plain) == 6 and all(r["status"] == "answered" for r in cached)
        assert [r["prediction"] for r in cached] == [r["prediction"] for r in plain]
        reused = [r["prefix_reused"] for r in cached]
        assert reused == ([False] + [True] * 5 if v.method == "sf-llava" else [False] * 6), reused
        assert all(r["prefix_reused"] is None for r in plain)
