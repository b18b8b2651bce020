"""GAPool, VSTail and top-k against naive loops (paper Fig. 4 token counts)."""

from __future__ import annotations

import pytest
import torch

from mlb_core.errors import MLBError
from mlb_core.selection.gapool import gapool, gapool_count, gapool_reference, topk_tokens, vstail

FIG4 = {(1, 2): 1440, (1, 3): 960, (2, 2): 720, (2, 3): 480, (3, 3): 320, (4, 4): 180, (6, 6): 80}


def _segment(t=5, h=24, w=24, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(t, h, w, d, generator=g), torch.rand(t, h, w, generator=g)


@pytest.mark.parametrize("grid,expected", FIG4.items())
def test_fig4_token_counts(grid, expected):
    tokens, scores = _segment()
    for mode in ("weighted", "max", "avg"):
        assert gapool(tokens, scores, grid, mode).shape == (expected, 8)
    assert 5 * gapool_count(24, 24, grid) == expected


@pytest.mark.parametrize("mode", ["weighted", "max", "avg"])
@pytest.mark.parametrize("shape,grid", [((5, 24, 24), (3, 3)), ((2, 27, 27), (2, 2)), ((3, 27, 27), (4, 4)),
                                        ((2, 9, 7), (2, 3)), ((1, 5, 5), (5, 5)), ((2, 6, 6), (1, 1))])
def test_gapool_matches_naive_loop(mode, shape, grid):
    tokens, scores = _segment(*shape)
    fast = gapool(tokens, scores, grid, mode)
    slow = gapool_reference(tokens, scores, grid, mode)
    assert fast.shape == slow.shape
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)


def test_nondividing_grid_counts():
    tokens, scores = _segment(1, 27, 27)
    assert gapool(tokens, scores, (2, 2)).shape[0] == 14 * 14
    assert gapool(tokens, scores, (3, 3)).shape[0] == 81


def test_weighted_follows_attention():
    # One token of each cell holds all the attention: weighted pooling returns exactly it.
    tokens, _ = _segment(2, 4, 4)
    scores = torch.zeros(2, 4, 4)
    scores[:, ::2, ::2] = 1.0
    out = gapool(tokens, scores, (2, 2), "weighted")
    torch.testing.assert_close(out, tokens[:, ::2, ::2].reshape(-1, 8))
    torch.testing.assert_close(gapool(tokens, scores, (2, 2), "max"), out)


def test_zero_scores_fall_back_to_mean():
    tokens, _ = _segment(1, 4, 4)
    scores = torch.zeros(1, 4, 4)
    scores[0, 2:, 2:] = torch.tensor([[1.0, 0.0], [0.0, 3.0]])  # only the last cell has attention
    out = gapool(tokens, scores, (2, 2), "weighted")
    means = [tokens[0, r:r + 2, c:c + 2].reshape(4, 8).mean(0) for r, c in ((0, 0), (0, 2), (2, 0))]
    last = 0.25 * tokens[0, 2, 2] + 0.75 * tokens[0, 3, 3]
    torch.testing.assert_close(out, torch.stack(means + [last]))


def test_grid_1x1_is_identity():
    tokens, scores = _segment(3, 6, 6)
    for mode in ("weighted", "max", "avg"):
        assert torch.equal(gapool(tokens, scores, (1, 1), mode), tokens.reshape(-1, 8))


def test_errors():
    tokens, scores = _segment(1, 8, 8)
    with pytest.raises(MLBError, match="larger than the token grid"):
        gapool(tokens, scores, (9, 2))
    with pytest.raises(MLBError, match="needs stage-one scores"):
        gapool(tokens, None, (2, 2), "weighted")
    with pytest.raises(MLBError, match="unknown GAPool mode"):
        gapool(tokens, scores, (2, 2), "median")
    with pytest.raises(MLBError, match="larger than the token grid"):
        vstail(tokens, scores, (9, 9), "pool")


def test_vstail_modes():
    tokens, scores = _segment(4, 24, 24)
    assert vstail(tokens, scores, (2, 2), "none").shape == (0, 8)
    pooled = vstail(tokens, scores, (2, 2), "pool")
    assert pooled.shape == (16, 8)
    # Frame 0, top-left output = mean of frame 0's top-left 12 x 12 quadrant.
    torch.testing.assert_close(pooled[0], tokens[0, :12, :12].reshape(-1, 8).mean(0))
    assert vstail(tokens, scores, (2, 2), "gapool").shape == (16, 8)


def test_topk_keeps_temporal_order():
    # Hand-computed: 2 frames of 2 x 2, token value = its index in time order. The 3 best scores
    # are at 3 (0.9), 5 (0.8), 1 (0.7); kept in time order: 1, 3, 5.
    tokens = torch.arange(8, dtype=torch.float32).reshape(2, 2, 2, 1)
    scores = torch.tensor([0.1, 0.7, 0.3, 0.9, 0.05, 0.8, 0.2, 0.6]).reshape(2, 2, 2)
    assert topk_tokens(tokens, scores, 3).reshape(-1).tolist() == [1.0, 3.0, 5.0]
    assert topk_tokens(tokens, scores, 100).reshape(-1).tolist() == list(range(8))  # k capped: all, in order


@pytest.mark.parametrize("k", [1, 10, 80])
def test_topk_matches_naive_loop(k):
    tokens, scores = _segment(5, 4, 4)
    flat = scores.reshape(-1).tolist()
    best = sorted(range(len(flat)), key=lambda i: flat[i], reverse=True)[:k]  # a plain ranking
    ref = torch.stack([tokens.reshape(-1, 8)[i] for i in sorted(best)])  # then time order
    assert torch.equal(topk_tokens(tokens, scores, k), ref)
