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


# ---- order and scope of the MLB variants (docs/method.md, "SegAttn" step 5, "Variants") --------
class FixedScores:
    """A stand-in for the stage-one cache: the methods read scores only through ``scores``."""

    def __init__(self, scores: torch.Tensor) -> None:
        self.value = scores  # (T, h, w)

    def scores(self, vlm, tokens, prompt, params, frames=None, segment_frames=None):
        assert frames is None and segment_frames is None, "the MLB variants score every frame in segments"
        return self.value


def _labelled(t=4, h=8, w=8, d=32, seed=0):
    """(T, h, w, D) tokens that say where they come from: channel 0 = frame index, channel 1 =
    raster index inside the frame, the other channels random."""
    x = torch.randn(t, h, w, d, generator=torch.Generator().manual_seed(seed))
    x[..., 0] = torch.arange(t, dtype=torch.float32)[:, None, None]
    x[..., 1] = torch.arange(h * w, dtype=torch.float32).reshape(h, w)
    return x


def _method(vlm, name, tokens, scores, params):
    inp = MethodInput(vlm, tokens, None, render_prompt(vlm.family, "What?"), params, scorer=FixedScores(scores))
    return METHODS[name](inp)


def test_mlb_is_body_in_time_order_then_tail(tiny):
    """``mlb`` = the GAPool body of frame 0, 1, ... (cells row by row), then the VSTail of every
    frame, compared with a plain loop over frames and cells."""
    params = get_preset("tiny")  # 4 frames of 8 x 8, segments of 2, 2 x 2 cells -> 16 a frame, 1 x 1 tail
    tokens = _labelled()
    scores = torch.rand(4, 8, 8, generator=torch.Generator().manual_seed(1))
    out = _method(tiny, "mlb", tokens, scores, params)
    assert out.shape == (4 * 16 + 4, 32)
    frames = out[:, 0].round().long().tolist()
    assert frames == [0] * 16 + [1] * 16 + [2] * 16 + [3] * 16 + [0, 1, 2, 3]
    body = []
    for f in range(4):
        for r in range(0, 8, 2):
            for c in range(0, 8, 2):
                cell, s = tokens[f, r:r + 2, c:c + 2].reshape(4, 32), scores[f, r:r + 2, c:c + 2].reshape(4)
                body.append((cell * (s / s.sum())[:, None]).sum(0))  # attention-weighted cell mean
    tail = [tokens[f].reshape(64, 32).mean(0) for f in range(4)]  # each frame pooled to 1 x 1
    torch.testing.assert_close(out, torch.stack(body + tail), rtol=1e-5, atol=1e-5)


def test_segattn_topk_keeps_topk_per_segment(tiny):
    """Segment 1 (frames 2-3) outscores segment 0 everywhere, so one top-k over the video would
    take every token from segment 1 (``global-topk`` does); ``segattn-topk`` keeps the same
    number from each segment, each segment's best, in time order."""
    params = get_preset("tiny")  # k per segment = 2 frames x 16 GAPool cells = 32
    tokens = _labelled()
    scores = torch.rand(4, 8, 8, generator=torch.Generator().manual_seed(2))
    scores[2:] += 1.0  # every score of segment 1 is above every score of segment 0
    out = _method(tiny, "segattn-topk", tokens, scores, params)
    assert out.shape == (64, 32)
    ref = []
    for seg in (0, 1):
        ranked = sorted(((float(scores[f, i, j]), f, i, j) for f in (2 * seg, 2 * seg + 1)
                         for i in range(8) for j in range(8)), reverse=True)[:32]
        ref += [tokens[f, i, j] for _, f, i, j in sorted(ranked, key=lambda x: x[1:])]  # time order
    assert torch.equal(out, torch.stack(ref))
    seg_of = (out[:, 0] // 2).long().tolist()
    assert seg_of == [0] * 32 + [1] * 32
    # the premise: one top-k over the whole video keeps nothing of segment 0
    glob = _method(tiny, "global-topk", tokens, scores, params)
    assert glob.shape == (68, 32) and (glob[:, 0] >= 2).all()
    # a set budget is spread over the segments: 40 -> 20 each
    out = _method(tiny, "segattn-topk", tokens, scores, params.replace(budget=40))
    assert (out[:, 0] // 2).long().tolist() == [0] * 20 + [1] * 20


def test_global_topk_matches_naive_loop(tiny):
    """``global-topk``: the k best tokens of all frames by the segments' scores, in time order
    (k = the MLB budget, or ``budget``)."""
    tokens = _labelled(seed=3)
    scores = torch.rand(4, 8, 8, generator=torch.Generator().manual_seed(3))
    for params, k in ((get_preset("tiny"), 68), (get_preset("tiny").replace(budget=10), 10)):
        out = _method(tiny, "global-topk", tokens, scores, params)
        flat = scores.reshape(-1).tolist()
        keep = sorted(sorted(range(len(flat)), key=lambda i: -flat[i])[:k])
        assert torch.equal(out, tokens.reshape(-1, 32)[keep])
