"""The explorer's logic (mlb_core/explore/explorer.py) on the tiny model, against plain references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlb_core.backbones.prompts import render_prompt
from mlb_core.config import get_preset
from mlb_core.errors import MLBError
from mlb_core.explore import explorer as E
from mlb_core.selection.scores import StageOneCache

QUESTION = "What is the animal doing?"


@pytest.fixture(scope="module")
def explorer(tiny):
    return E.Explorer.from_model(tiny, preset="tiny")


def test_slot_shares_and_normalised_scores_are_per_segment():
    scores = torch.rand(6, 3, 4)
    shares = E.slot_shares(scores, 3)  # (2 segments, 3 slots)
    assert shares.shape == (2, 3)
    np.testing.assert_allclose(shares.sum(1), 1.0)
    ref = [[float(scores[s * 3 + f].sum() / scores[s * 3:(s + 1) * 3].sum()) for f in range(3)] for s in range(2)]
    np.testing.assert_allclose(shares, ref, rtol=1e-6)
    norm = E.normalise_segments(scores, 3)
    np.testing.assert_allclose(norm.reshape(2, -1).sum(1), 1.0)
    with pytest.raises(MLBError, match="does not divide"):
        E.slot_shares(scores, 4)


def _kept(tiny, method, params, tokens):
    cache = StageOneCache()
    kept, n = E.kept_map(tiny, tokens, None, QUESTION, method, params, cache)
    scores = cache.scores(tiny, tokens, render_prompt(tiny.family, QUESTION), params)
    return kept, n, scores


def test_kept_map_of_segattn_topk_is_the_per_segment_topk_mask(tiny):
    params = get_preset("tiny")  # 4 frames, segments of 2, grid 2x2 -> k = 2 * 16 per segment
    tokens = torch.randn(4, 8, 8, tiny.model.config.text_config.hidden_size)
    kept, n, scores = _kept(tiny, "segattn-topk", params, tokens)
    k = 2 * (8 // 2) * (8 // 2)
    ref = np.zeros((4, 8, 8))
    for s in range(2):  # a plain per-segment top-k over the flattened segment
        flat = scores[2 * s:2 * s + 2].reshape(-1)
        idx = torch.topk(flat, k).indices.numpy()
        seg = np.zeros(flat.numel())
        seg[idx] = 1
        ref[2 * s:2 * s + 2] = seg.reshape(2, 8, 8)
    np.testing.assert_allclose(kept, ref, atol=1e-6)
    assert n == 2 * k


def test_kept_map_of_attention_blind_pooling_is_uniform(tiny):
    params = get_preset("tiny")  # avg cells of 2x2 patches (1/4 each), tail 1x1 (1/64 each)
    tokens = torch.randn(4, 8, 8, tiny.model.config.text_config.hidden_size)
    kept, n, _ = _kept(tiny, "mlb-avg", params, tokens)
    np.testing.assert_allclose(kept, np.full((4, 8, 8), 1 / 4 + 1 / 64), rtol=1e-5)
    assert n == 4 * 16 + 4
    assert kept.sum() == pytest.approx(n)


def test_kept_map_of_mlb_weights_each_cell_by_its_attention(tiny):
    params = get_preset("tiny").replace(tail_mode="none")
    tokens = torch.randn(4, 8, 8, tiny.model.config.text_config.hidden_size)
    kept, n, scores = _kept(tiny, "mlb-gapool", params, tokens)
    cells = scores.reshape(4, 4, 2, 4, 2).permute(0, 1, 3, 2, 4).reshape(4, 4, 4, 4)  # (T, cell r, cell c, 4)
    ref = (cells / cells.sum(-1, keepdim=True)).reshape(4, 4, 4, 2, 2).permute(0, 1, 3, 2, 4).reshape(4, 8, 8)
    np.testing.assert_allclose(kept, ref.numpy(), rtol=1e-4, atol=1e-6)
    assert kept.sum() == pytest.approx(n, rel=1e-5)


def test_ask_encodes_once_and_reports_each_method(explorer, tiny, monkeypatch):
    calls = []
    real = tiny.encode_frames
    monkeypatch.setattr(tiny, "encode_frames", lambda frames, **kw: calls.append(len(frames)) or real(frames, **kw))
    params = explorer.params()
    seen = []
    views = explorer.ask("bigbuckbunny.mp4", QUESTION, ["mlb", "full", "sf-llava"], params,
                         progress=lambda what, frac: seen.append(frac))
    assert [v.method for v in views] == ["mlb", "full", "sf-llava"]
    for v in views:
        assert v.error is None and isinstance(v.answer, str)
        assert v.kept.shape == (4, 8, 8)
        assert v.kept.sum() + v.image_tokens == pytest.approx(v.n_visual_tokens, abs=1e-3)
        assert {"prefill", "generate"} <= set(v.timings)
    assert "stage_one" in views[0].timings
    assert seen[-1] == 1.0 and seen == sorted(seen)
    att = explorer.attention("bigbuckbunny.mp4", "Another question?", params.replace(score_layer=0))
    assert att.shares.shape == (2, 2) and att.layer == 0 and att.seconds > 0
    (again,) = explorer.ask("bigbuckbunny.mp4", "Another question?", ["mlb-gapool"],
                            params.replace(grid=(4, 4), score_layer=0))
    assert again.timings["stage_one"] > 0, "the scores' cost is reported, though attention() computed them"
    assert calls == [4], "the video is encoded once, whatever the question or the settings"


def test_ask_keeps_going_when_one_method_fails(explorer):
    params = explorer.params(extra={"fastv_k": 99})  # past the tiny model's last layer
    views = explorer.ask("bigbuckbunny.mp4", QUESTION, ["fastv", "mlb"], params)
    assert views[0].error and "fastv_k" in views[0].error
    assert views[1].error is None and views[1].answer is not None


@pytest.mark.parametrize("call, match", [
    (lambda ex, p: ex.ask("bigbuckbunny.mp4", " ", ["mlb"], p), "question is empty"),
    (lambda ex, p: ex.ask("bigbuckbunny.mp4", QUESTION, [], p), "at least one method"),
    (lambda ex, p: ex.ask("bigbuckbunny.mp4", QUESTION, ["nope"], p), "unknown method"),
    (lambda ex, p: ex.ask("/no/such/video.mp4", QUESTION, ["mlb"], p), "video not found"),
])
def test_bad_requests_are_one_line_errors(explorer, call, match):
    with pytest.raises(MLBError, match=match):
        call(explorer, explorer.params())


def test_bad_settings_are_one_line_errors(explorer):
    with pytest.raises(MLBError, match="does not divide"):
        explorer.params(segment_frames=3)


def test_figures_render(explorer):
    params = explorer.params()
    feats = explorer.features("bigbuckbunny.mp4", params.n_frames)
    att = explorer.attention("bigbuckbunny.mp4", QUESTION, params)
    png = E.figure_png(E.plot_attention(feats.frames, att))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    views = explorer.ask("bigbuckbunny.mp4", QUESTION, ["mlb", "segattn-topk"], params)
    assert E.figure_png(E.plot_kept(feats.frames, views))[:4] == b"\x89PNG"
    import pandas as pd

    table = pd.DataFrame([v.row() for v in views])
    assert list(table["method"]) == ["mlb", "segattn-topk"]


def test_video_choices_lists_clips_and_probe(tmp_path):
    (tmp_path / E.PROBE_DIR).mkdir(parents=True)
    (tmp_path / E.PROBE_DIR / "probe000f.mp4").write_bytes(b"x")
    choices = E.video_choices(tmp_path)
    assert "clip: bigbuckbunny.mp4" in choices
    assert choices["probe: probe000f"].endswith("probe000f.mp4")


def test_switching_model_drops_encoded_videos(tiny):
    ex = E.Explorer.from_model(tiny, preset="tiny")
    ex.features("bigbuckbunny.mp4", 4)
    assert ex._features
    ex.set_model("tiny:llava")
    assert not ex._features and ex._vlm is None


# ---- the widgets, without a browser ----------------------------------------------------------
def test_app_answers_and_shows_both_images(tiny):
    from mlb_core.explore.app import ExplorerApp

    app = ExplorerApp(E.Explorer.from_model(tiny, preset="tiny"))
    app.model.value = tiny.name
    app.grid.value = "2x2"
    app.segment.value = 2
    app.n_frames.value = 5  # 5 frames: segments of 2 do not divide them
    assert not app.run()
    assert "does not divide" in app.status.value and app.progress.description == "error"
    app.n_frames.value = 10
    app.layer.value = 99
    assert not app.run() and "past the model" in app.status.value
    app.layer.value = 1
    app.methods.value = ("mlb", "full")
    app.question.value = "What happens at the end?"  # setting the question runs it
    assert app.attention_image.value[:4] == b"\x89PNG" and app.kept_image.value[:4] == b"\x89PNG"
    assert "mlb-answers" in app.answers.value and "<td>full</td>" in app.answers.value
    assert app.progress.value == 1.0 and not app.ask_button.disabled


def test_app_any_path(tiny, tmp_path):
    from mlb_core.explore.app import ANY_PATH, ExplorerApp
    from mlb_core.parsing import parse_grid

    app = ExplorerApp(E.Explorer.from_model(tiny, preset="tiny"))
    app.model.value = tiny.name
    app.video.value = ANY_PATH
    assert not app.path.disabled
    assert not app.run() and "type a video path" in app.status.value
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    app.path.value = str(tmp_path / "bad.mp4")
    assert not app.run() and "error" in app.status.value
    assert parse_grid("4x2") == (4, 2)
    with pytest.raises(MLBError, match="3x3"):
        parse_grid("big")
