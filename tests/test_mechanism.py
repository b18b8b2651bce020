"""Probe v2 mechanism metrics on the tiny model: the stage-two sequence is mlb's own, the
selections' evidence counts match a plain loop, and the attention-blind control scores 1."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlb_core.backbones.prompts import render_prompt
from mlb_core.config import get_preset
from mlb_core.evaluation.probe import ProbeConfig, generate_probe
from mlb_core.methods import METHODS
from mlb_core.methods.registry import MethodInput
from mlb_core.study.mechanism import evidence_mask, probe_mechanism, selection_evidence, summarise_mechanism


def test_evidence_mask_reads_the_target_colour():
    frame = np.full((64, 64, 3), 128, np.uint8)
    frame[8:24, 40:56] = (220, 30, 30)  # red, 2 x 2 cells of an 8 x 8 grid
    mask = evidence_mask(frame, "red", (8, 8))
    assert mask.sum() == 4 and mask[1:3, 5:7].all()


def test_selection_evidence_against_a_plain_loop():
    params = get_preset("tiny").replace(grid=(2, 2), segment_frames=2)
    gen = torch.Generator().manual_seed(0)
    ind = (torch.rand(4, 8, 8, generator=gen) > 0.8).float()
    scores = torch.rand(4, 8, 8, generator=gen)
    got = selection_evidence(ind, scores, params)
    k = 2 * 16
    topk = sum(float(ind[s:s + 2].reshape(-1)[scores[s:s + 2].reshape(-1).argsort(descending=True)[:k]].sum())
               for s in (0, 2))
    weighted = avg = 0.0
    for f in range(4):
        for i in range(0, 8, 2):
            for j in range(0, 8, 2):
                c, s = ind[f, i:i + 2, j:j + 2], scores[f, i:i + 2, j:j + 2]
                weighted += float((c * s).sum() / s.sum())
                avg += float(c.mean())
    assert got["segattn-topk"] == pytest.approx(topk)
    assert got["mlb-gapool"] == pytest.approx(weighted, rel=1e-5)
    assert got["mlb-avg"] == pytest.approx(avg, rel=1e-5)


def test_probe_mechanism_on_tiny(tiny, tmp_path):
    generate_probe(tmp_path, ProbeConfig(n_frames=4, segment_frames=2, side=64, sizes=("large",),
                                         orders=("forward",), forms=("open",)))
    params = get_preset("tiny").replace(n_frames=4, segment_frames=2, grid=(2, 2))
    df = probe_mechanism(tiny, tmp_path, params, progress=False)
    assert len(df) == 4 and set(df["slot"]) == {1, 2}
    assert sorted(df["frame"]) == [1, 2, 3, 4]  # the target's frame in the file, 1-based
    assert np.allclose(df["enrichment[mlb-avg]"], 1.0, atol=1e-5)  # attention-blind: exactly the budget's share
    assert ((df["body_attention[mlb]"] > 0) & (df["tail_attention[mlb]"] > 0)).all()
    summary = summarise_mechanism(df)
    assert list(summary["slot"]) == [1, 2] and (summary["n"] == 2).all()


def test_stage_two_sequence_is_mlbs(tiny):
    """The sequence whose attention is measured is the one the mlb method feeds stage two."""
    from mlb_core.selection.gapool import gapool, vstail
    from mlb_core.selection.scores import StageOneCache
    from mlb_core.selection.segattn import split_segments

    params = get_preset("tiny").replace(n_frames=4, segment_frames=2, grid=(2, 2))
    tokens = torch.randn(4, 8, 8, 32, generator=torch.Generator().manual_seed(1))
    prompt = render_prompt(tiny.family, "What colour is the circle in the video?")
    scores = StageOneCache().scores(tiny, tokens, prompt, params)
    body = torch.cat([gapool(x, s, params.grid, params.pool_mode) for x, s in
                      zip(split_segments(tokens, 2), split_segments(scores, 2), strict=True)])
    ours = torch.cat([body, vstail(tokens, scores, params.tail_grid, params.tail_mode)])
    theirs = METHODS["mlb"](MethodInput(tiny, tokens, None, prompt, params))
    torch.testing.assert_close(ours, theirs)
