"""A learnt slot read-out for the edge-energy tower's first layer (docs/training-record.md, "A learnt read-out").

The closed-form read-out (:func:`mlb_core.train.vision.fit_slot_readout`, ``readout="ridge"``)
is linear in the first layer's MLP units, whose free units (beyond the rectified edges) keep
the checkpoint's tiny random weights, on which ``quick_gelu`` is nearly linear; it explains
about a fifth of the slots' variance, so a colour slot averages about 0.4 on its own patches
where its target is about 1 (docs/training-record.md, "Where the one-frame misses sit"). With
``readout="learnt"`` the same first layer is fitted as what it is, a one-hidden-layer MLP of
the patch: :func:`learn_readout`

1. turns the free units into random features of the whole patch vector (the layer's second
   layer-norm output: colour and quadrant means, signed edges, the patch embedding's other,
   random filters, the position), each scaled to a pre-activation spread of ``gain`` and bent at
   a sampled patch;
2. starts the read-out (the MLP's second layer, into the reserved residual dimensions) at the
   weighted ridge fit from every unit to ``GELU^-1`` of the slot targets;
3. trains the free units and the read-out with Adam (a cosine learning rate, minibatches of
   patches) on the weighted squared error *after* the projector's GELU, the slots themselves.

The rectified edge units stay as :func:`mlb_core.train.tower_init.edge_energy_init` built them.
The layer norm's input does not depend on what is fitted (the first layer's attention output is
zero), so fitting on cached patch vectors is exact: the tower computes the same slots. No LM
is involved and no method's selection: the fit sees single rendered training frames only.
Everything is drawn from a ``torch.Generator`` seeded by ``seed``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F


def gelu_inverse(y: torch.Tensor) -> torch.Tensor:
    """The ``x >= 0`` branch of the inverse of the (exact) GELU, for ``y`` in [0, 3] (clamped): ``gelu(x) = y``.
    Bisection, 60 steps, in ``y``'s dtype."""
    y = y.clamp(0.0, 3.0)
    lo, hi = torch.zeros_like(y), torch.full_like(y, 3.5)
    for _ in range(60):
        mid = (lo + hi) / 2
        below = F.gelu(mid) < y
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return (lo + hi) / 2


def slots_of(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor,
             act: Any) -> torch.Tensor:
    """Patch vectors (N, D) -> the slots (N, S): ``GELU(w2 act(w1 x + b1) + b2)``, the first
    layer's MLP into the reserved dimensions, read by the projector's slot units (weight 1, bias 0)."""
    return F.gelu(act(x @ w1.T + b1) @ w2.T + b2)


def weighted_ridge(h: torch.Tensor, y: torch.Tensor, w: torch.Tensor,
                   ridge: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight (S, U), bias (S,)): the ridge fit ``y ~ h W^T + b`` with row weights ``w``
    (N,), the intercept not shrunk; in float64."""
    x = torch.cat([h.double(), torch.ones(len(h), 1, dtype=torch.float64)], 1)  # (N, U + 1)
    reg = ridge * torch.eye(x.shape[1], dtype=torch.float64)
    reg[-1, -1] = 0
    wd = w.double()[:, None]
    beta = torch.linalg.solve((x * wd).T @ x + reg, (x * wd).T @ y.double())  # (U + 1, S)
    return beta[:-1].T.float(), beta[-1].float()


def learn_readout(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, fc1: Any, act: Any, n_fixed: int, seed: int,
                  steps: int, lr: float = 1e-3, batch: int = 4096, gain: float = 2.0, ridge: float = 1.0,
                  ridge_every: int = 3) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Fit the first layer's free MLP units and the slot read-out (module docstring).

    Args:
        x: (N, D) patch vectors (the first layer's second layer-norm output).
        y: (N, S) slot targets; w: (N,) patch weights.
        fc1: the MLP's first linear layer (its first ``n_fixed`` units, the rectified edges,
            are kept; read, not written).
        act: the MLP's activation (``quick_gelu``).
        steps: Adam steps (cosine learning rate from ``lr`` to 0), ``batch`` patches each.
        ridge_every: the ridge start uses every ``ridge_every``-th patch.

    Returns:
        ``{"w1", "b1", "w2", "b2"}`` (the whole first linear layer (I, D), (I,), and the read-out
        (S, I), (S,)) and a log: the weighted loss of the ridge start and of the last 100 steps.
    """
    n, d = x.shape
    assert y.shape[0] == n and w.shape == (n,), (x.shape, y.shape, w.shape)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w1_fixed = fc1.weight[:n_fixed].detach().float().cpu()  # (E, D)
        b1_fixed = fc1.bias[:n_fixed].detach().float().cpu()
        n_free = fc1.out_features - n_fixed
        w1_free = torch.randn(n_free, d, generator=gen) / math.sqrt(d)  # (U, D)
        spread = (x[::max(1, n // 4096)] @ w1_free.T).std(0).clamp(min=1e-6)  # (U,)
        w1_free = w1_free / spread[:, None] * gain
        at = x[torch.randint(n, (n_free,), generator=gen)]  # (U, D): each unit bends at a sampled patch
        b1_free = -(w1_free * at).sum(1)
        sub = slice(None, None, ridge_every)
        h = act(x[sub] @ torch.cat([w1_fixed, w1_free]).T + torch.cat([b1_fixed, b1_free]))  # (N', I)
        w2, b2 = weighted_ridge(h, gelu_inverse(y[sub]), w[sub], ridge)
    w1_free.requires_grad_(True)
    b1_free.requires_grad_(True)
    w2.requires_grad_(True)
    b2.requires_grad_(True)
    opt = torch.optim.Adam([w1_free, b1_free, w2, b2], lr=lr)

    def loss_of(idx: torch.Tensor) -> torch.Tensor:
        pred = slots_of(x[idx], torch.cat([w1_fixed, w1_free]), torch.cat([b1_fixed, b1_free]), w2, b2, act)
        wi = w[idx]
        return (((pred - y[idx]) ** 2).sum(-1) * wi).sum() / wi.sum()

    with torch.no_grad():
        start = float(loss_of(torch.randint(n, (batch * 4,), generator=gen)))
    tail: list[float] = []
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        loss = loss_of(torch.randint(n, (batch,), generator=gen))
        opt.zero_grad()
        loss.backward()
        opt.step()
        tail = (tail + [float(loss.detach())])[-100:]
    with torch.no_grad():
        params = {"w1": torch.cat([w1_fixed, w1_free]).detach(), "b1": torch.cat([b1_fixed, b1_free]).detach(),
                  "w2": w2.detach().clone(), "b2": b2.detach().clone()}
    return params, {"loss_ridge_start": round(start, 4),
                    "loss_last100": round(sum(tail) / len(tail), 4) if tail else round(start, 4)}
