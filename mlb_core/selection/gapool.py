"""GAPool: Gridded Attention Pooling (paper Sec. "GAPool", Fig. 3 and the Fig. 4 ablation).

Global top-k by attention keeps mostly last-frame tokens (the positional bias of Fig. 1).
GAPool instead cuts every frame's ``h x w`` token grid into cells of ``gh x gw`` tokens and
emits exactly one token per cell, so every frame and every region keeps tokens. Output
order is frame-major, then row-major over cells (spatio-temporal structure preserved).

Cells need not divide the grid: a 27 x 27 SigLIP grid with 2 x 2 cells has 14 x 14 cells,
the last row and column of cells being 1 token thick (ceil division, as adaptive pooling
does for the *count* of cells; see :func:`cell_bounds`).
"""

from __future__ import annotations

import math

import torch

from mlb_core.errors import MLBError


def cell_bounds(size: int, cell: int) -> list[tuple[int, int]]:
    """Half-open ``[start, end)`` bounds of the cells of length ``cell`` along an axis of
    length ``size``: ``ceil(size / cell)`` cells, the last one possibly shorter."""
    if cell < 1:
        raise MLBError(f"GAPool cell size must be >= 1, got {cell}")
    if cell > size:
        raise MLBError(f"GAPool grid cell {cell} is larger than the token grid side {size}")
    return [(s, min(s + cell, size)) for s in range(0, size, cell)]


def gapool_count(h: int, w: int, grid: tuple[int, int]) -> int:
    """Tokens GAPool emits per frame for an ``h x w`` grid and ``grid = (gh, gw)`` cells."""
    return math.ceil(h / grid[0]) * math.ceil(w / grid[1])


def _cell_index(h: int, w: int, grid: tuple[int, int], device: torch.device) -> torch.Tensor:
    """(h*w,) long: the row-major cell id of every token of an ``h x w`` grid."""
    gh, gw = grid
    cell_bounds(h, gh), cell_bounds(w, gw)  # validates
    rows = torch.arange(h, device=device) // gh  # (h,)
    cols = torch.arange(w, device=device) // gw  # (w,)
    n_cols = math.ceil(w / gw)
    return (rows[:, None] * n_cols + cols[None, :]).reshape(-1)  # (h*w,)


def gapool(
    tokens: torch.Tensor,
    scores: torch.Tensor | None,
    grid: tuple[int, int],
    mode: str = "weighted",
) -> torch.Tensor:
    """Pool every frame's token grid to one token per ``grid`` cell.

    Args:
        tokens: (T, h, w, D) visual tokens of the frames (one segment or the whole video).
        scores: (T, h, w) stage-one attention scores; needed by ``weighted`` and ``max``.
        grid: cell size ``(gh, gw)`` in tokens.
        mode: ``weighted`` — the cell's tokens averaged with weights = scores renormalised
            within the cell; ``max`` — the cell's highest-scoring token; ``avg`` — the plain
            mean (attention-blind).

    Returns:
        (T * ceil(h/gh) * ceil(w/gw), D), frame-major then row-major over cells.
    """
    assert tokens.dim() == 4, f"tokens must be (T, h, w, D), got {tuple(tokens.shape)}"
    t, h, w, d = tokens.shape
    if mode not in ("weighted", "max", "avg"):
        raise MLBError(f"unknown GAPool mode {mode!r}")
    if mode != "avg":
        if scores is None:
            raise MLBError(f"GAPool mode {mode!r} needs stage-one scores")
        assert scores.shape == (t, h, w), f"scores {tuple(scores.shape)} != {(t, h, w)}"
    cell = _cell_index(h, w, grid, tokens.device)  # (h*w,)
    n_cells = gapool_count(h, w, grid)
    flat = tokens.reshape(t, h * w, d)  # (T, hw, D)
    index = cell.expand(t, -1)  # (T, hw)
    if mode == "max":
        s = scores.reshape(t, h * w).float()  # (T, hw)
        # Best score per cell, then the first token that reaches it (ties -> lowest index).
        best = torch.full((t, n_cells), -torch.inf, device=s.device).scatter_reduce(
            1, index, s, reduce="amax", include_self=True
        )  # (T, C)
        is_best = s == best.gather(1, index)  # (T, hw)
        pos = torch.arange(h * w, device=s.device).expand(t, -1)
        big = torch.full_like(pos, h * w)
        first = big[:, :n_cells].scatter_reduce(
            1, index, torch.where(is_best, pos, big), reduce="amin", include_self=True
        )  # (T, C)
        out = flat.gather(1, first[..., None].expand(-1, -1, d))  # (T, C, D)
        return out.reshape(t * n_cells, d)
    if mode == "avg":
        weights = torch.ones(t, h * w, device=tokens.device, dtype=torch.float32)
    else:
        weights = scores.reshape(t, h * w).float().clamp_min(0)
    denom = torch.zeros(t, n_cells, device=tokens.device).scatter_add(1, index, weights)
    # A cell whose scores are all zero falls back to the plain mean.
    zero = denom == 0  # (T, C)
    if zero.any():
        weights = torch.where(zero.gather(1, index), torch.ones_like(weights), weights)
        denom = torch.zeros_like(denom).scatter_add(1, index, weights)
    weights = weights / denom.gather(1, index)  # (T, hw), sums to 1 in each cell
    pooled = torch.zeros(t, n_cells, d, device=tokens.device, dtype=torch.float32)
    pooled.scatter_add_(1, index[..., None].expand(-1, -1, d), flat.float() * weights[..., None])
    return pooled.to(tokens.dtype).reshape(t * n_cells, d)


def gapool_reference(
    tokens: torch.Tensor, scores: torch.Tensor | None, grid: tuple[int, int], mode: str
) -> torch.Tensor:
    """Naive GAPool: a plain Python loop over frames and cells (the tests' reference)."""
    t, h, w, d = tokens.shape
    out = []
    for f in range(t):
        for r0, r1 in cell_bounds(h, grid[0]):
            for c0, c1 in cell_bounds(w, grid[1]):
                cell = tokens[f, r0:r1, c0:c1].reshape(-1, d).float()
                if mode == "avg":
                    out.append(cell.mean(0))
                    continue
                s = scores[f, r0:r1, c0:c1].reshape(-1).float()
                if mode == "max":
                    out.append(cell[int(torch.argmax(s))])
                elif s.clamp_min(0).sum() == 0:
                    out.append(cell.mean(0))
                else:
                    wts = s.clamp_min(0) / s.clamp_min(0).sum()
                    out.append((cell * wts[:, None]).sum(0))
    return torch.stack(out).to(tokens.dtype)


def topk_tokens(tokens: torch.Tensor, scores: torch.Tensor, k: int) -> torch.Tensor:
    """Global top-k by score over all frames, kept in their original (temporal) order.

    The biased selection of Fig. 1 (``segattn-topk``, ``global-topk`` and ``fastv``).
    tokens: (T, h, w, D); scores: (T, h, w) -> (k, D).
    """
    d = tokens.shape[-1]
    flat_s = scores.reshape(-1)
    k = min(k, flat_s.numel())
    idx = torch.topk(flat_s.float(), k).indices.sort().values  # (k,)
    return tokens.reshape(-1, d)[idx]


def vstail(
    tokens: torch.Tensor,
    scores: torch.Tensor | None,
    tail_grid: tuple[int, int],
    mode: str = "pool",
) -> torch.Tensor:
    """VSTail: a compact summary of the *whole* video, placed at the end of the visual
    sequence where the positional bias makes the LLM look most (paper Sec. "VSTail", Fig. 3).

    Args:
        tokens: (T, h, w, D) tokens of every sampled frame.
        scores: (T, h, w) stage-one scores (``gapool`` mode only).
        tail_grid: ``(th, tw)``: every frame becomes ``th * tw`` tokens.
        mode: ``none`` (empty tail), ``pool`` (adaptive average pooling of each frame to
            ``th x tw``) or ``gapool`` (GAPool with cells chosen to give ``th x tw`` cells).

    Returns:
        (T * th * tw, D), or (0, D) for ``none``.
    """
    t, h, w, d = tokens.shape
    if mode == "none":
        return tokens.new_zeros(0, d)
    th, tw = tail_grid
    if th > h or tw > w:
        raise MLBError(f"tail_grid {th}x{tw} is larger than the token grid {h}x{w}")
    if mode == "pool":
        x = tokens.permute(0, 3, 1, 2).float()  # (T, D, h, w)
        x = torch.nn.functional.adaptive_avg_pool2d(x, (th, tw))  # (T, D, th, tw)
        return x.permute(0, 2, 3, 1).reshape(t * th * tw, d).to(tokens.dtype)
    if mode == "gapool":
        cell = (math.ceil(h / th), math.ceil(w / tw))
        return gapool(tokens, scores, cell, "weighted")
    raise MLBError(f"unknown VSTail mode {mode!r}")
