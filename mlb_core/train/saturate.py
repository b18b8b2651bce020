"""Saturated slots: the projector's slot units made to clip at 0 and 1 (docs/training-record.md, "Saturated slots").

A patch token of the trained embedded model is ``sum_j slot_j * v_j``: the slot activations
(the projector's first layer, then its GELU) times the codebook columns ``v_j`` of its second
layer. The closed-form read-out leaves the slots weak (a colour slot averages about 0.4 on the
patches its colour covers, where the target is about 1), and the LM reads a weak colour slot as
a neighbouring colour. With the swap diagnostic (``mlb heldout --ideal --ideal-swap``) the
slots set to their targets are read right on every clip, so here each chosen slot ``j`` is
mapped to ``clamp(a_j * z_j + b_j, 0, 1)``, ``z_j`` its pre-activation, with ``a_j, b_j`` fitted
by least squares to the slot targets on training frames.

The clamp is built from two GELU units of the stock projector, so the checkpoint stays a stock
``LlavaNextForConditionalGeneration``: with ``u = a z + b`` and a gain ``g``,

    (GELU(g u) - GELU(g u - g)) / g  ~=  clamp(u, 0, 1)

(exact for ``g -> inf``; at ``g = 4`` within 0.05 of it). Slot unit ``j`` computes
``GELU(g u)`` and a free unit ``n_slots + j`` computes ``GELU(g u - g)``; the second layer's
columns become ``v_j / g`` and ``-v_j / g``. A checkpoint says which slots are paired through
its weights alone (:func:`slot_gains`), so nothing else needs to record it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F


def clamp_pair(u: torch.Tensor, gain: float, act: Callable[[torch.Tensor], torch.Tensor] = F.gelu) -> torch.Tensor:
    """``(act(gain u) - act(gain u - gain)) / gain``: what a pair of units gives, close to
    ``clamp(u, 0, 1)`` for a large ``gain`` (``act``: the exact GELU, or a tower's ``quick_gelu``)."""
    return (act(gain * u) - act(gain * u - gain)) / gain


def fit_saturation(z: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, gain: float,
                   steps: int = 600, lr: float = 0.05,
                   act: Callable[[torch.Tensor], torch.Tensor] = F.gelu) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-slot ``a, b`` (each ``(S,)``) minimising the weighted squared error between
    ``clamp_pair(a z + b, gain)`` and ``target``.

    Args:
        z: slot pre-activations, ``(N, S)`` (N patches).
        target: slot targets, ``(N, S)``.
        weight: per-patch weight, ``(N,)``.
        gain: the pair's gain (:func:`clamp_pair`); ``act`` its units' activation.
        steps, lr: full-batch Adam from ``a = 1, b = 0``; deterministic for given inputs.
    """
    assert z.shape == target.shape and z.ndim == 2, (z.shape, target.shape)
    assert weight.shape == z.shape[:1], weight.shape
    z, target, weight = z.detach().float(), target.detach().float(), weight.detach().float()
    a = torch.ones(z.shape[1], requires_grad=True)
    b = torch.zeros(z.shape[1], requires_grad=True)
    opt = torch.optim.Adam([a, b], lr=lr)
    for _ in range(steps):
        err = (clamp_pair(z * a + b, gain, act) - target).pow(2)  # (N, S)
        loss = (err * weight[:, None]).sum() / weight.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return a.detach(), b.detach()


def _check_gelu(projector: Any) -> None:
    probe = torch.tensor([-1.0, 0.5, 2.0])
    if not torch.allclose(projector.act(probe), F.gelu(probe), atol=1e-6):
        raise ValueError("saturated slots need the projector's activation to be the exact GELU")


def saturate_slots(projector: Any, a: torch.Tensor, b: torch.Tensor, slots: list[int], n_slots: int,
                   gain: float) -> None:
    """Rewrite a LLaVA projector (``linear_1``, ``act``, ``linear_2``) in place so that slot
    ``j`` of ``slots`` becomes ``clamp_pair(a[j] z_j + b[j], gain)`` (module docstring), using
    the free hidden unit ``n_slots + j``.

    Args:
        projector: ``model.model.multi_modal_projector``; its hidden units ``n_slots..2 n_slots``
            must be unused (their ``linear_2`` columns zero).
        a, b: ``(n_slots,)`` from :func:`fit_saturation`; only ``slots`` are used.
        slots: which of the ``n_slots`` slot units to saturate.
        n_slots: how many hidden units carry the codebook.
        gain: the pair's gain.
    """
    _check_gelu(projector)
    lin1, lin2 = projector.linear_1, projector.linear_2
    assert lin1.bias is not None, "the projector's first layer needs a bias"
    assert lin1.out_features >= 2 * n_slots, (lin1.out_features, n_slots)
    with torch.no_grad():
        for j in slots:
            k = n_slots + j
            if lin2.weight[:, k].any():
                raise ValueError(f"projector unit {k} is in use; cannot pair it with slot {j}")
            v = lin2.weight[:, j].clone()  # (D,) the codebook vector
            row = lin1.weight[j] * a[j] * gain  # (H,)
            bias = (lin1.bias[j] * a[j] + b[j]) * gain
            lin1.weight[j], lin1.bias[j] = row, bias
            lin1.weight[k], lin1.bias[k] = row, bias - gain
            lin2.weight[:, j], lin2.weight[:, k] = v / gain, -v / gain


def slot_gains(projector: Any, n_slots: int) -> dict[int, float]:
    """Which slot units :func:`saturate_slots` paired, and their gains, read from the weights:
    slot ``j`` is paired when unit ``n_slots + j`` has ``j``'s first-layer row and the opposite
    second-layer column (its bias lower by the gain). Unsaturated checkpoints give ``{}``."""
    lin1, lin2 = projector.linear_1, projector.linear_2
    if lin1.bias is None or lin1.out_features < 2 * n_slots:
        return {}
    gains: dict[int, float] = {}
    for j in range(n_slots):
        k = n_slots + j
        col = lin2.weight[:, j]
        if (col.any() and torch.equal(lin2.weight[:, k], -col)
                and torch.equal(lin1.weight[k], lin1.weight[j])):
            gains[j] = float((lin1.bias[j] - lin1.bias[k]).detach())
    return gains


def effective_slots(act: torch.Tensor, gains: dict[int, float], n_slots: int) -> torch.Tensor:
    """The slot values a patch token carries, ``(..., n_slots)``, from the projector's hidden
    activations ``act`` (``(..., H)``, after the GELU): ``act[..., j]``, or
    ``(act[..., j] - act[..., n_slots + j]) / gain`` for a paired slot."""
    out = act[..., :n_slots].clone()
    for j, g in gains.items():
        out[..., j] = (act[..., j] - act[..., n_slots + j]) / g
    return out


def codebook_columns(projector: Any, n_slots: int) -> torch.Tensor:
    """The codebook vectors the slots multiply, ``(D, n_slots)``: the projector's second-layer
    columns, a paired slot's scaled back by its gain (so that a token is ``columns @ slots``
    with :func:`effective_slots`' values, saturated or not)."""
    cols = projector.linear_2.weight[:, :n_slots].detach().clone()
    for j, gain in slot_gains(projector, n_slots).items():
        cols[:, j] *= gain
    return cols
