"""End to end on the tiny model: SegAttn equivalences, determinism, decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlb_core.backbones.prompts import render_prompt
from mlb_core.config import get_preset
from mlb_core.errors import MLBError
from mlb_core.methods import METHODS
from mlb_core.methods.registry import MethodInput
from mlb_core.pipeline import VideoFeatures, answer, encode_video
from mlb_core.selection.segattn import segment_inputs, split_segments, stage_one


@pytest.fixture(scope="module")
def features(tiny):
    return encode_video(tiny, "bigbuckbunny.mp4", 4)


def test_encode_shapes(tiny, features):
    assert features.tokens.shape == (4, 8, 8, 32)
    assert features.frames.shape[0] == 4 and features.frames.dtype == np.uint8


def test_stage_one_batched_equals_one_segment_at_a_time(tiny, features):
    params = get_preset("tiny")
    prompt = render_prompt(tiny.family, "What is shown?")
    batched = stage_one(tiny, features.tokens, prompt, params, batch_size=4)
    single = stage_one(tiny, features.tokens, prompt, params, batch_size=1)
    assert batched.shape == (4, 8, 8)
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-6)
    # Each segment's scores are that segment's last-query attention over its own tokens.
    segs = split_segments(features.tokens, params.segment_frames)
    embeds, vis = segment_inputs(tiny, segs[1:2], prompt)
    from mlb_core.selection.attention import last_query_attention

    ref = last_query_attention(tiny.language_model, embeds, params.score_layer)[0, vis]
    torch.testing.assert_close(batched[2:4].reshape(-1), ref)


def test_mlb_grid_1x1_no_tail_is_full(tiny, features):
    params = get_preset("tiny").replace(grid=(1, 1), tail_mode="none")
    prompt = render_prompt(tiny.family, "What is shown?")
    seq = {m: METHODS[m](MethodInput(tiny, features.tokens, features.frames, prompt, params))
           for m in ("mlb", "full")}
    assert torch.equal(seq["mlb"], seq["full"])
    logits = []
    for m in ("mlb", "full"):
        embeds, _ = tiny.build_inputs(prompt, seq[m])
        logits.append(tiny.prefill(embeds)[0])
    assert torch.equal(logits[0], logits[1])
    a = answer(tiny, features, "What is shown?", "mlb", params)
    b = answer(tiny, features, "What is shown?", "full", params)
    assert a.text == b.text and a.n_visual_tokens == b.n_visual_tokens == 4 * 64


def test_token_counts(tiny, features):
    params = get_preset("tiny")  # grid 2x2 on 8x8 -> 16 a frame; tail 1x1 -> 1 a frame
    counts = {m: answer(tiny, features, "What?", m, params).n_visual_tokens
              for m in ("full", "segattn-topk", "mlb-gapool", "mlb")}
    assert counts == {"full": 256, "segattn-topk": 64, "mlb-gapool": 64, "mlb": 68}


def test_same_answer_twice(tiny, features):
    params = get_preset("tiny").replace(max_new_tokens=6)
    a = answer(tiny, features, "What happens?", "mlb", params)
    b = answer(tiny, features, "What happens?", "mlb", params)
    assert a.text == b.text and a.text


def test_greedy_decode_equals_generate(tiny, features):
    prompt = render_prompt(tiny.family, "Describe it.")
    embeds, _ = tiny.build_inputs(prompt, features.tokens[:2].reshape(-1, 32))
    ours = tiny.generate(embeds, 8)
    with torch.inference_mode():
        ids = tiny.model.generate(inputs_embeds=embeds, max_new_tokens=8, do_sample=False,
                                  min_new_tokens=8, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long))
    assert ours == tiny.tokenizer.decode(ids[0][-8:], skip_special_tokens=True).strip()


def test_multiple_choice_prompt(tiny, features):
    out = answer(tiny, features, "Which animal?", "mlb", get_preset("tiny"), task="mc",
                 options=["rabbit", "bird", "cat"])
    assert isinstance(out.text, str)


def test_prompt_longer_than_context(features):
    from mlb_core.backbones.tiny import build_tiny_model

    small = build_tiny_model(max_position_embeddings=128)
    feats = VideoFeatures(features.path, features.frames, features.indices, small.encode_frames(features.frames))
    with pytest.raises(MLBError, match="exceeds the model's context of 128"):
        answer(small, feats, "What?", "mlb", get_preset("tiny").replace(grid=(1, 1)))
    # `full` keeps only the frames that fit.
    out = answer(small, feats, "What?", "full", get_preset("tiny").replace(max_new_tokens=2))
    assert out.n_visual_tokens == 64


def test_unknown_method(tiny, features):
    with pytest.raises(MLBError, match="unknown method"):
        answer(tiny, features, "What?", "nope", get_preset("tiny"))


def test_mlb_avg_is_mlb_with_plain_means_and_never_scores(tiny, features):
    """The attention-blind control: the same cells and tail as mlb, every cell a plain mean
    (checked against a plain loop over the cells), and stage one never runs."""
    params = get_preset("tiny").replace(grid=(2, 2), tail_grid=(2, 2))  # tail: a 2 x 2 summary, cells of 4 x 4
    prompt = render_prompt(tiny.family, "What colour is the circle?")
    inp = MethodInput(tiny, features.tokens, None, prompt, params)
    got = METHODS["mlb-avg"](inp)
    assert not inp.scored and inp.scorer.n_questions == 0
    t, h, w, d = features.tokens.shape
    body = [features.tokens[f, i:i + 2, j:j + 2].reshape(-1, d).mean(0)
            for f in range(t) for i in range(0, h, 2) for j in range(0, w, 2)]
    tail = [features.tokens[f, i:i + 4, j:j + 4].reshape(-1, d).mean(0)
            for f in range(t) for i in range(0, h, 4) for j in range(0, w, 4)]
    torch.testing.assert_close(got, torch.stack(body + tail), rtol=1e-5, atol=1e-6)
    same = METHODS["mlb"](MethodInput(tiny, features.tokens, None, prompt, params.replace(pool_mode="avg")))
    torch.testing.assert_close(got, same)
