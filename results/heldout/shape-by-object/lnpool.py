"""Can softmax attention pool the shape slots by colour as ``ceiling.pool_shape_by_colour`` does?

An exploratory record, not part of the package (docs/training-record.md, "Shape by the object").
On the 80 held-out one-frame objects of ``mlb heldout --slots``, the committed tower's shape read
as the argmax of a shape vector averaged over the patches the object covers by at least 0.05:
its own slots (``own-mean``, what ``--slots`` prints), the exact colour-weighted pool
(``exact-pool``), and softmax attention over the frame's patches with gain ``g``, whose queries and
keys are the colour dimensions (``ln``: of the layer-normed residual stream a fourth layer would
read, with the values the layer-normed shape pre-activations, or ``raw-v`` the shape slots, the
projector's GELU units; ``slots``: the rectified colour slots themselves, a three-layer tower's best case;
``saturated slots``: those colour slots saturated first, ``clamp(4 c - 0.4, 0, 1)``).
Run from the repository root: ``python results/heldout/shape-by-object/lnpool.py`` (1 min).
"""
import sys
from pathlib import Path

import numpy as np
import torch

from mlb_core.backbones.embedded import ensure_embedded
from mlb_core.train import ceiling, scenes
from mlb_core.train.vision import N_SLOTS, load_checkpoint, pixel_values, slots

sys.path.insert(0, str(Path(__file__).parent))
from variants import _softmax_pool  # noqa: E402  (the colour slots saturated: 0 below 0.1, 1 from 0.35)

model, _, processor = load_checkpoint(ensure_embedded(trained=True))
lin1 = model.model.multi_modal_projector.linear_1
W = lin1.weight[:N_SLOTS]  # (10, 256): each slot unit reads one reserved residual dimension
dims = [int(W[i].abs().argmax()) for i in range(N_SLOTS)]
print("slot dims", dims, "row nnz", [int((W[i].abs() > 1e-8).sum()) for i in range(N_SLOTS)])
rng = np.random.default_rng([scenes.HELDOUT_SEED_BASE, 0, 5])  # the objects of mlb heldout --slots
bank = scenes.VideoBank()
gains = [0.5, 1, 2, 4, 8, 16, 32]
kinds = ("ln", "ln raw-v", "slots", "saturated slots")
names = ["own-mean", "exact-pool", *(f"{kind} g={g}" for kind in kinds for g in gains)]
right = dict.fromkeys(names, 0)
n, sig = 0, []
with torch.no_grad():
    for _ in range(80):
        spec = scenes.sample_clip(int(rng.integers(1 << 31)), 1, "heldout", 1, 0.0)
        frames, cover = scenes.render_clip(spec, bank)
        pv = pixel_values(frames, processor)
        hidden = model.model.vision_tower(pv, output_hidden_states=True).hidden_states
        h1 = hidden[model.config.vision_feature_layer][0, 1:]  # (576, 256), CLS dropped
        act = slots(model, pv)[0].reshape(-1, N_SLOTS)  # (576, 10)
        mask = torch.from_numpy(cover[0, 0]).reshape(-1) >= 0.05
        if not mask.any():
            continue
        truth = scenes.SHAPES.index(spec.objects[0].shape)
        n += 1

        def hit(shape: torch.Tensor, mask: torch.Tensor = mask, truth: int = truth) -> int:
            return int(shape[mask].mean(0).argmax() == truth)

        right["own-mean"] += hit(act[:, 6:9])
        right["exact-pool"] += hit(ceiling.pool_shape_by_colour(act))
        x = torch.nn.functional.layer_norm(h1, (h1.shape[-1],))  # (576, 256), no affine
        sig.append(h1.std(-1).numpy())
        xc = x[:, dims[:6]] - x[:, dims[:6]].mean(-1, keepdim=True)
        xs = x[:, dims[6:9]] - x[:, dims[6:9]].mean(-1, keepdim=True)
        c = act[:, :6].clamp(min=0)
        for g in gains:
            a = torch.softmax(g * xc @ xc.T, -1)  # (576, 576)
            right[f"ln g={g}"] += hit(a @ xs)
            right[f"ln raw-v g={g}"] += hit(a @ act[:, 6:9])
            right[f"slots g={g}"] += hit(torch.softmax(g * c @ c.T, -1) @ act[:, 6:9])
            right[f"saturated slots g={g}"] += hit(_softmax_pool(act[None], g)[0])
print("n", n, {k: round(v / n, 3) for k, v in right.items()})
q = np.percentile(np.concatenate(sig), [0, 5, 50, 95, 100])
print("sigma of the residual over a patch's 256 dimensions: min {:.3f} p5 {:.3f} median {:.3f} p95 {:.3f} max {:.3f}"
      .format(*q))
