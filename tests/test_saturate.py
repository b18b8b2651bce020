"""Saturated slots (mlb_core.train.saturate): the two-GELU clamp, the projector rewrite against a
naive reference, reading the pairs back from the weights, and the least-squares fit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers.activations import ACT2FN

from mlb_core.train.saturate import (
    clamp_pair,
    codebook_columns,
    effective_slots,
    fit_saturation,
    saturate_slots,
    slot_gains,
)

N = 10  # slot units, as in the embedded model


class Projector(torch.nn.Module):
    """LLaVA's projector shape: linear_1, act, linear_2 (hidden 32, output 12)."""

    def __init__(self, act: str = "gelu") -> None:
        super().__init__()
        self.linear_1 = torch.nn.Linear(8, 32)
        self.act = ACT2FN[act]
        self.linear_2 = torch.nn.Linear(32, 12)
        with torch.no_grad():
            self.linear_2.weight[:, N:] = 0  # only the slot units carry the codebook
            self.linear_2.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


def test_clamp_pair_is_close_to_a_clamp():
    u = torch.linspace(-3, 4, 701)
    assert (clamp_pair(u, 4.0) - u.clamp(0, 1)).abs().max() < 0.06
    assert (clamp_pair(u, 40.0) - u.clamp(0, 1)).abs().max() < 0.006
    assert clamp_pair(torch.tensor([-10.0, 10.0]), 4.0).tolist() == pytest.approx([0.0, 1.0], abs=1e-4)


def test_saturate_slots_matches_the_naive_reference():
    torch.manual_seed(0)
    proj = Projector()
    x = torch.randn(50, 8)
    z = proj.linear_1(x)[:, :N].detach()  # (50, N) pre-activations before the rewrite
    book = proj.linear_2.weight[:, :N].detach().clone()  # (12, N) codebook columns
    a, b = torch.rand(N) * 3 + 0.5, torch.randn(N)
    chosen = [0, 2, 5]
    saturate_slots(proj, a, b, chosen, N, gain=4.0)
    # naive: every slot its GELU, the chosen ones the clamp pair, tokens a plain sum of columns
    s = F.gelu(z).clone()
    for j in chosen:
        s[:, j] = clamp_pair(a[j] * z[:, j] + b[j], 4.0)
    want = torch.stack([sum(s[i, j] * book[:, j] for j in range(N)) for i in range(len(x))])  # (50, 12)
    assert torch.allclose(proj(x), want, atol=1e-5)
    gains = slot_gains(proj, N)
    assert gains == {j: pytest.approx(4.0) for j in chosen}
    act = proj.act(proj.linear_1(x))
    assert torch.allclose(effective_slots(act, gains, N), s, atol=1e-5)


def test_an_unsaturated_projector_reads_as_before():
    torch.manual_seed(1)
    proj = Projector()
    assert slot_gains(proj, N) == {}
    act = torch.rand(3, 32)
    assert torch.equal(effective_slots(act, {}, N), act[:, :N])


def test_saturate_slots_refuses_a_used_unit_or_another_activation():
    proj = Projector()
    with torch.no_grad():
        proj.linear_2.weight[0, N + 1] = 1.0
    with pytest.raises(ValueError, match="unit 11 is in use"):
        saturate_slots(proj, torch.ones(N), torch.zeros(N), [1], N, 4.0)
    with pytest.raises(ValueError, match="exact GELU"):
        saturate_slots(Projector("relu"), torch.ones(N), torch.zeros(N), [0], N, 4.0)


def test_fit_saturation_recovers_a_clamp():
    torch.manual_seed(2)
    z = torch.randn(4000, 2) * 1.5
    a_true, b_true = torch.tensor([2.0, 0.7]), torch.tensor([-1.0, 0.3])
    target = (z * a_true + b_true).clamp(0, 1)
    a, b = fit_saturation(z, target, torch.ones(len(z)), gain=40.0, steps=1500)
    assert torch.allclose(a, a_true, atol=0.1) and torch.allclose(b, b_true, atol=0.1)


def test_recipe_checks_saturate():
    from mlb_core.train.vision import RECIPES, Recipe

    with pytest.raises(ValueError, match="saturate must be one of"):
        Recipe(saturate="some")
    with pytest.raises(ValueError, match="saturate_frames"):
        Recipe(saturate="colour", saturate_frames=0)
    assert RECIPES["saturated"].saturate == "colour"


def test_card_describes_stage_four():
    from mlb_core.train.card import stage_four

    summary = {"recipe": {"saturate_gain": 4.0},
               "saturate": {"slots": [0, 1, 2, 3, 4, 5], "frames": 320, "on_before": 0.42, "on_after": 0.77,
                            "off_before": 0.013, "off_after": 0.004}}
    line = stage_four(summary)
    assert "the six colour slots" in line and "0.42 to 0.77" in line and "320 fresh training frames" in line
    assert stage_four({"recipe": {}}) == ""


def test_codebook_columns_undo_the_pair_scaling():
    torch.manual_seed(3)
    proj = Projector()
    before = proj.linear_2.weight[:, :N].detach().clone()
    assert torch.equal(codebook_columns(proj, N), before)
    saturate_slots(proj, torch.ones(N), torch.zeros(N), [1, 7], N, 4.0)
    torch.testing.assert_close(codebook_columns(proj, N), before)
    x = torch.randn(5, 8)
    act = proj.act(proj.linear_1(x))
    torch.testing.assert_close(proj(x), effective_slots(act, slot_gains(proj, N), N) @ codebook_columns(proj, N).T)
