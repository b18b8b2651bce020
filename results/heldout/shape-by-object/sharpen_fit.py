"""Fit the projector-side sharpening of a pooled shape on training frames (no LM, no held-out clip).

An exploratory record, not part of the package (docs/training-record.md, "Shape by the object").
Each shape unit becomes ``GELU(a (2 p_s - p_o - p_o') + b m + c)``, what one GELU unit of the stock
projector can compute: ``p`` is the softmax pool of the committed tower's rectified shape slots over
patches of the same saturated colour (``variants._softmax_pool``), ``m`` the patch's own shape mass;
``a``, ``b``, ``c`` (shared by the three shapes) are fitted by Adam to the training's outline shape
targets on 300 training-split frames of the project's own generator. Writes ``sharpen.json``;
``variants.py softmax-pooled-sharpened`` reads it. Run from the repository root (about 1 min).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from mlb_core.backbones.embedded import ensure_embedded
from mlb_core.train import scenes
from mlb_core.train.vision import N_SLOTS, SLOT_GROUPS, load_checkpoint, pixel_values, slot_targets, slots

HERE = Path(__file__).parent
SHAPE = SLOT_GROUPS["shape"]


def contrast(p: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3): each shape against the other two, 2 p_s - p_o - p_o'."""
    return 3 * p - p.sum(-1, keepdim=True)


def sharpen(p: torch.Tensor, m: torch.Tensor, a: float, b: float, c: float) -> torch.Tensor:
    """The fitted shape units: GELU(a contrast(p) + b m + c), (..., 3)."""
    return torch.nn.functional.gelu(a * contrast(p) + b * m + c)


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(HERE))
    from variants import _softmax_pool

    model, _, processor = load_checkpoint(ensure_embedded(trained=True))
    rng = np.random.default_rng([20261205, 7])  # training-split scenes, a stream no stage draws
    bank = scenes.VideoBank()
    feats, targets = [], []
    with torch.no_grad():
        for _ in range(300):
            spec = scenes.sample_clip(int(rng.integers(1 << 31)), 1, "train", 1, 0.0)
            frames, cover = scenes.render_clip(spec, bank)
            act = slots(model, pixel_values(frames, processor)).reshape(1, -1, N_SLOTS)  # (1, 576, 10)
            pooled = _softmax_pool(act)[0]  # (576, 3)
            mass = act[0, :, SHAPE].clamp(min=0).sum(-1, keepdim=True)  # (576, 1)
            feats.append(torch.cat([pooled, mass], -1))
            targets.append(slot_targets(torch.from_numpy(cover), spec, "outline").reshape(-1, N_SLOTS)[:, SHAPE])
    x, y = torch.cat(feats), torch.cat(targets)  # (300 * 576, 4), (300 * 576, 3)
    params = torch.tensor([1.0, 1.0, 0.0], requires_grad=True)
    opt = torch.optim.Adam([params], lr=0.05)
    for _ in range(600):
        loss = ((sharpen(x[:, :3], x[:, 3:], *params) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    a, b, c = (float(v) for v in params.detach())
    base = float(((x[:, :3] * 0 - y) ** 2).mean())
    out = {"a": a, "b": b, "c": c, "mse": float(loss.detach()), "mse_of_zero": base, "frames": 300,
           "note": "fitted on training-split frames of the project's generator; no held-out clip, no LM"}
    (HERE / "sharpen.json").write_text(json.dumps(out, indent=1) + "\n")
    print(out)
