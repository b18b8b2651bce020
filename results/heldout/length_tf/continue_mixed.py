# Exploratory (not part of mlb_core): OMP_NUM_THREADS=2 python results/heldout/length_tf/continue_mixed.py 15
"""Exploratory: the committed weights' stage 3 (codebook columns through the frozen LM, on the
tower's real slots) continued on layouts up to 4000 tokens; then teacher-forced reading by length."""
import dataclasses, json, shutil, sys, time
from pathlib import Path
import torch
from mlb_core.backbones.embedded import ensure_embedded
from mlb_core.train import vision, scenes, ceiling

budget_min = float(sys.argv[1])
src = Path(ensure_embedded(trained=True))
out = Path("/tmp/x/long_ckpt")
if out.exists():
    shutil.rmtree(out)
shutil.copytree(src, out)
torch.set_num_threads(2)
torch.manual_seed(7)
model, tok, proc = vision.load_checkpoint(out)
for p in model.parameters():
    p.requires_grad_(False)
recipe = dataclasses.replace(vision.RECIPES["committed"], codebook_min_tokens=1500, finetune_max_tokens=4000)
log = []
t = time.perf_counter()
vision.stage_finetune(model, tok, proc, scenes.VideoBank(), budget_min * 60, 7, recipe, 2, log)
print("finetune wall", round(time.perf_counter() - t), "steps", len(log),
      "tokens", sorted(r["tokens"] for r in log)[::max(1, len(log) // 10)], flush=True)
json.dump(log, open("/tmp/x/long_log.json", "w"))
model.save_pretrained(out)
r = ceiling.ideal_accuracy(n_clips=8, tokens="tower", shape_target="outline", source=out,
                           layout_names=("raw1x1", "bodytail3x20", "bodytail3x50", "raw1x8"))
print(ceiling.format_ideal(r))
json.dump(r, open("/tmp/x/long_tower.json", "w"), indent=1)
