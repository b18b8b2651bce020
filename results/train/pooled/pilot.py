"""Pilot of the pooled tower before any training run (docs/training-record.md, "A tower that pools shape").

An exploratory record, not part of the package. Builds `--recipe pooled`'s tower on seed 0 without
the LM stages (edge tower, learnt read-out, then mlb_core/train/pool.py), and
1. on 80 fresh *training-stream* frames (not held out), the shape of each object read from the
   first layer's own shape slots (averaged over the object's patches, as `mlb heldout --slots`)
   and from the pooled, sharpened ones the projector now reads; and, on the object's outline
   patches, how often a patch's own argmax is its object's shape, and how peaked its shape slots are
   (the largest over their sum);
2. saves the tower with the committed weights' codebook in the projector (`/tmp/pooled-pilot`), so that
   `ceiling.ideal_accuracy(tokens="tower")` can read the 48 one-frame clips of "Shape by the object"
   teacher-forced: a check that the LM reads the new slots, not a selection (the recipe is fixed before it).
Run from the repository root: `python results/train/pooled/pilot.py [--lm] [--learnt]` (about 5 min,
2 threads; `--learnt`: the learnt sharpening instead of the one-hot). What it printed for the recipe as
trained, and the four builds before it, is in docs/training-record.md, "A tower that pools shape".
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch

from mlb_core.backbones.embedded import ensure_embedded
from mlb_core.train import ceiling, scenes
from mlb_core.train.pool import mark_patches
from mlb_core.train.tower_init import edge_energy_init, structured_init
from mlb_core.train.vision import (
    N_SLOTS,
    RECIPES,
    Codebook,
    default_source,
    fit_slot_readout,
    install_codebook,
    load_checkpoint,
    pixel_values,
    slot_targets,
    slots,
    stage_pool,
)

torch.set_num_threads(2)
recipe = RECIPES["pooled"]
if "--learnt" in sys.argv:  # the other sharpening
    from dataclasses import replace

    recipe = replace(recipe, pool_sharpen="learnt")
seed = 0
torch.manual_seed(seed)
model, tokenizer, processor = load_checkpoint(default_source())
model.config.vision_feature_layer = recipe.feature_layer
bank = scenes.VideoBank()
tower = model.model.vision_tower
structured_init(tower, seed)
reserved = edge_energy_init(tower, recipe.reserved)
mark_patches(tower, reserved)
for p in model.parameters():
    p.requires_grad_(False)
codebook = Codebook(model.get_input_embeddings(), tokenizer)
committed = ensure_embedded(trained=True)
from safetensors.torch import load_file  # noqa: E402

committed_codebook = Path(__file__).parents[3] / "mlb_core/weights/embedded-vision/codebook.safetensors"
codebook.load_state_dict(load_file(str(committed_codebook)))
install_codebook(model, codebook)
readout = fit_slot_readout(model, processor, bank, reserved, seed, recipe)
print("readout", json.dumps(readout))
# the first layer's own shape slots: hidden state 1 (after layer 1) at the reserved slot dimensions, through GELU
own_dims = reserved[6:9]
pool = stage_pool(model, processor, bank, reserved, seed, recipe)
print("pool", json.dumps(pool))
rng = np.random.default_rng([seed, 99])
counts = {"objects": 0, "own": 0, "pooled": 0, "sharp": 0, "patches": 0, "own_patch": 0, "pooled_patch": 0,
          "sharp_patch": 0}
peak = {"own": [], "pooled": [], "sharp": []}
from mlb_core.train import pool as P  # noqa: E402

with torch.no_grad():
    for _ in range(80):
        spec = scenes.sample_clip(int(rng.integers(1 << 31)), 1, "train", 1, 0.0)
        frames, cover = scenes.render_clip(spec, bank)
        pv = pixel_values(frames, processor)
        hidden = tower(pv, output_hidden_states=True).hidden_states
        own = torch.nn.functional.gelu(hidden[1][0, 1:, own_dims])  # (576, 3)
        new = slots(model, pv)[0].reshape(-1, N_SLOTS)[:, 6:9]  # (576, 3): the sharpened slots
        pooled = hidden[3][0, 1:, reserved[P.POOLED]]  # (576, 3): what the head pooled
        cov = torch.from_numpy(cover)
        mask = cov[0, 0].reshape(-1) >= 0.05
        if not mask.any():
            continue
        truth = scenes.SHAPES.index(spec.objects[0].shape)
        counts["objects"] += 1
        counts["own"] += int(own[mask].mean(0).argmax() == truth)
        counts["sharp"] += int(new[mask].mean(0).argmax() == truth)
        counts["pooled"] += int(pooled[mask].mean(0).argmax() == truth)
        outline = slot_targets(cov, spec, "outline")[0].reshape(-1, N_SLOTS)[:, 6:9].sum(-1) > 0.5
        counts["patches"] += int(outline.sum())
        for name, s in (("own", own), ("pooled", pooled), ("sharp", new)):
            counts[f"{name}_patch"] += int((s[outline].argmax(-1) == truth).sum())
            pos = s[outline].clamp(min=0)
            peak[name].append((pos.max(-1).values / pos.sum(-1).clamp(min=1e-6)).mean().item())
print("objects", json.dumps(counts), {k: round(float(np.mean(v)), 3) for k, v in peak.items()})
model.save_pretrained("/tmp/pooled-pilot")
tokenizer.save_pretrained("/tmp/pooled-pilot")
processor.save_pretrained("/tmp/pooled-pilot")
if "--lm" in sys.argv:
    result = ceiling.ideal_accuracy(n_clips=48, tokens="tower", source="/tmp/pooled-pilot", shape_target="outline",
                                    layout_names=("raw1x1",))
    print("lm", json.dumps(result["layouts"]))
