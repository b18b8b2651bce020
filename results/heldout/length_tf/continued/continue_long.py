# Exploratory (not part of mlb_core): run from the repository root as
#   OMP_NUM_THREADS=2 python results/heldout/length_tf/continued/continue_long.py 20
# It writes /tmp/x/long2_ckpt (a full checkpoint folder), /tmp/x/long2_log.json and /tmp/x/long2_tower.json.
"""Exploratory: stage 3 (codebook columns only, tower's real slots) continued from the committed
weights, 70% of steps on layouts of 2,000-4,000 tokens (every family, as sample_layout draws
them), 30% on layouts up to 600; stops at a wall-clock limit; then teacher-forced reading."""
import json, shutil, sys, time
from pathlib import Path
import numpy as np
import torch
import torch.nn.functional as F
from mlb_core.backbones.embedded import ensure_embedded
from mlb_core.train import vision, scenes, ceiling, layouts

wall_min = float(sys.argv[1])
out = Path("/tmp/x/long2_ckpt")
if out.exists():
    shutil.rmtree(out)
shutil.copytree(Path(ensure_embedded(trained=True)), out)
torch.set_num_threads(2)
torch.manual_seed(11)
model, tok, proc = vision.load_checkpoint(out)
for p in model.parameters():
    p.requires_grad_(False)
recipe = vision.RECIPES["committed"]
rng = np.random.default_rng([11, 3])
bank = scenes.VideoBank()
lin = model.model.multi_modal_projector.linear_2
book = torch.nn.Parameter(lin.weight[:, :vision.N_SLOTS].detach().clone())
opt = torch.optim.AdamW([book], lr=recipe.lr_codebook_finetune, weight_decay=0.0)
log, t0 = [], time.perf_counter()
while time.perf_counter() - t0 < wall_min * 60:
    if rng.random() < 0.7:
        layout = layouts.sample_layout(rng, 4000)
        while layout.n_tokens < 2000:
            layout = layouts.sample_layout(rng, 4000)
    else:
        layout = layouts.sample_layout(rng, 600)
    spec = vision._sample_spec(rng, layout.n_frames, recipe)
    q = vision.pick_question(rng, spec, recipe.p_mc)
    text = vision.lm_text(model, tok, q)
    frames, cover = scenes.render_clip(spec, bank)
    with torch.no_grad():
        act = vision.slots(model, vision.pixel_values(frames, proc))
    tokens = F.linear(act, book, lin.bias)
    loss = vision.answer_loss(model, text, layouts.arrange(tokens, layout), recipe.key_weight)
    opt.zero_grad(); loss.backward(); opt.step()
    log.append({"layout": layout.name, "tokens": layout.n_tokens, "lm": round(loss.item(), 4)})
with torch.no_grad():
    lin.weight[:, :vision.N_SLOTS] = book
print("wall", round(time.perf_counter() - t0), "steps", len(log), "long", sum(r["tokens"] >= 2000 for r in log), flush=True)
json.dump(log, open("/tmp/x/long2_log.json", "w"))
model.save_pretrained(out)
r = ceiling.ideal_accuracy(n_clips=8, tokens="tower", shape_target="outline", source=out,
                           layout_names=("raw1x1", "bodytail3x20", "bodytail3x50", "raw1x8"))
print(ceiling.format_ideal(r))
json.dump(r, open("/tmp/x/long2_tower.json", "w"), indent=1)
