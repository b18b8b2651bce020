"""Token layouts: how the project's methods lay out a clip's visual tokens for the LM.

A clip's tokens are a (T, 24, 24, D) grid of *projected* patch tokens. The methods feed
the LM one of three layout families (cell pooling is a plain average of projected tokens,
frame-major then row-major over cells, as :func:`mlb_core.gapool.gapool` with ``avg``):

* ``raw``: every patch token of every frame (``full``): T * 576 tokens;
* ``pool``: every frame's grid average-pooled in cells of k x k patches:
  T * (24 / k)^2 tokens;
* ``bodytail``: the ``pool`` body in time order, then a tail of every frame pooled in
  12 x 12 cells (2 x 2 tokens per frame, VSTail ``pool``): T * ((24 / k)^2 + 4) tokens.
  ``mlb`` with its defaults is ``bodytail`` with k = 3 (20 frames -> 1360 tokens).

:func:`sample_layout` draws a layout uniformly over families, then uniformly over cell
sizes, then log-uniformly over frame counts that fit a token budget; no family, cell size
or length is favoured beyond that. :func:`sample_long_layout` draws the same way among the
layouts that reach a token range (long sequences, where the LM's reading fades: docs/training-record.md,
"Long layouts do move the cliff").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

FAMILIES: tuple[str, ...] = ("raw", "pool", "bodytail")
POOL_CELLS: tuple[int, ...] = (2, 3, 4, 6, 8, 12)
BODY_CELLS: tuple[int, ...] = (2, 3, 4, 6)
TAIL_CELL = 12
MAX_FRAMES = 50
CELLS: dict[str, tuple[int, ...]] = {"raw": (1,), "pool": POOL_CELLS, "bodytail": BODY_CELLS}  # per family


@dataclass(frozen=True)
class Layout:
    """A layout family, its body cell size ``cell`` (1 for ``raw``) and the frame count."""

    family: str
    cell: int
    n_frames: int

    @property
    def per_frame(self) -> int:
        """Tokens per frame on a 24 x 24 grid."""
        body = (24 // self.cell) ** 2
        return body + ((24 // TAIL_CELL) ** 2 if self.family == "bodytail" else 0)

    @property
    def n_tokens(self) -> int:
        return self.per_frame * self.n_frames

    @property
    def name(self) -> str:
        return f"{self.family}{self.cell}x{self.n_frames}"


def pool_cells(grid: torch.Tensor, cell: int) -> torch.Tensor:
    """(T, h, w, D) -> (T * (h / cell) * (w / cell), D): cell averages, frame-major then
    row-major over cells (``cell`` must divide h and w)."""
    t, h, w, d = grid.shape
    assert h % cell == 0 and w % cell == 0, f"cell {cell} does not divide {h}x{w}"
    if cell == 1:
        return grid.reshape(t * h * w, d)
    x = F.avg_pool2d(grid.permute(0, 3, 1, 2), cell)  # (T, D, h/cell, w/cell)
    return x.permute(0, 2, 3, 1).reshape(-1, d)


def arrange(grid: torch.Tensor, layout: Layout) -> torch.Tensor:
    """Projected tokens (T, 24, 24, D) -> the layout's visual sequence (N, D)."""
    assert grid.shape[0] == layout.n_frames, (tuple(grid.shape), layout)
    body = pool_cells(grid, layout.cell)  # (T * cells, D)
    if layout.family == "bodytail":
        return torch.cat([body, pool_cells(grid, TAIL_CELL)])  # (T * (cells + 4), D)
    return body


def parse_layout(name: str) -> Layout:
    """A layout from its :attr:`Layout.name`, e.g. ``raw1x8`` or ``bodytail3x50`` (one-line
    :class:`~mlb_core.errors.MLBError` for anything else)."""
    import re

    from mlb_core.errors import MLBError

    m = re.fullmatch(rf"({'|'.join(FAMILIES)})(\d+)x(\d+)", name.strip())
    if m is None or int(m[2]) not in CELLS[m[1]] or not 1 <= int(m[3]) <= MAX_FRAMES:
        pools, bodies = ",".join(map(str, POOL_CELLS)), ",".join(map(str, BODY_CELLS))
        raise MLBError(f"not a layout: {name!r} (FAMILY CELLxFRAMES: raw1xT, pool{{{pools}}}xT "
                       f"or bodytail{{{bodies}}}xT, 1 <= T <= {MAX_FRAMES})")
    return Layout(m[1], int(m[2]), int(m[3]))


def sample_layout(rng: np.random.Generator, max_tokens: int) -> Layout:
    """A random layout of at most ``max_tokens`` tokens (family, then cell, then a
    log-uniform frame count in 1..min(MAX_FRAMES, what fits))."""
    family = str(rng.choice(FAMILIES))
    cell = 1 if family == "raw" else int(rng.choice(CELLS[family]))  # raw draws no cell
    per = Layout(family, cell, 1).per_frame
    most = max(1, min(MAX_FRAMES, max_tokens // per))
    n = int(np.floor(np.exp(rng.uniform(0.0, np.log(most + 1)))))
    return Layout(family, cell, max(1, min(n, most)))


def sample_long_layout(rng: np.random.Generator, lo: int, hi: int) -> Layout:
    """A random layout of ``lo`` to ``hi`` tokens: a family, then a cell size, among those
    that reach the range within :data:`MAX_FRAMES` frames, then a log-uniform frame count in
    the range (docs/training-record.md, "A recipe with long layouts")."""
    reach = {f: [c for c in CELLS[f] if frames_in(Layout(f, c, 1).per_frame, lo, hi)] for f in FAMILIES}
    families = [f for f in FAMILIES if reach[f]]
    assert families, f"no layout has {lo}..{hi} tokens"
    family = str(rng.choice(families))
    cell = int(rng.choice(reach[family]))
    first, last = frames_in(Layout(family, cell, 1).per_frame, lo, hi)  # type: ignore[misc]
    n = int(np.floor(np.exp(rng.uniform(np.log(first), np.log(last + 1)))))
    layout = Layout(family, cell, max(first, min(n, last)))
    assert lo <= layout.n_tokens <= hi, (layout, lo, hi)
    return layout


def frames_in(per_frame: int, lo: int, hi: int) -> tuple[int, int] | None:
    """The frame counts (first, last) whose layouts have ``lo`` to ``hi`` tokens, or None."""
    first, last = -(-lo // per_frame), min(MAX_FRAMES, hi // per_frame)
    return (max(1, first), last) if max(1, first) <= last else None
