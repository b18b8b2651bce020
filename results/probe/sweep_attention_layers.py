"""Exploratory record (not a study stage): mlb's stage-two last-query attention, every layer, on probe_sweep.

For each sweep clip (target at frame 1..10), the sequence mlb feeds stage two (as
mlb_core.study.mechanism.mlb_visual, as clip_metrics uses it) runs once through the frozen LM with eager
attention; per layer, the last query's attention (heads averaged, normalised over the visual
tokens) on the target frame's body tokens and on frame 1's body tokens. Layer 2 reproduces
the stage's body_attention[mlb]. Run from the repository root (about 13 min on two cores):
    python results/probe/sweep_attention_layers.py [MODEL]
The committed .csv was made on 2026-12-04 with the weights committed then, before the adoption of
long-branch: MODEL = embedded:results/train/outline-committed repeats it, once those weights are restored
(results/train/outline-committed/README.md; the sweep's clips come from its seed); the default, embedded, is today's committed weights.
"""
import sys
from pathlib import Path

import pandas as pd
import torch

from mlb_core.backbones import load_model
from mlb_core.backbones.prompts import render_prompt
from mlb_core.config import get_preset
from mlb_core.evaluation.benchmarks import load_benchmark, resolve_videos
from mlb_core.pipeline import encode_video
from mlb_core.selection.scores import StageOneCache
from mlb_core.study.mechanism import mlb_visual

torch.set_num_threads(2)
data = "data/probe_sweep"
vlm = load_model(sys.argv[1] if len(sys.argv) > 1 else "embedded")
params = get_preset("cpu", n_frames=10, segment_frames=5)
lm = vlm.language_model
lm.config._attn_implementation = "eager"
items = [it for it in load_benchmark("probe", data) if it.task == "open"]
videos, _ = resolve_videos(items, Path(data) / "videos")
rows = []
for it in items:
    feats = encode_video(vlm, videos[it.video], params.n_frames)
    tokens = feats.tokens
    prompt = render_prompt(vlm.family, it.question)
    scores = StageOneCache().scores(vlm, tokens, prompt, params)
    visual, body_per, _ = mlb_visual(tokens, scores, params)
    embeds, vis = vlm.build_inputs(prompt, visual)
    with torch.inference_mode():
        out = lm(inputs_embeds=embeds, use_cache=False, output_attentions=True)
    tf = int(it.extra["evidence_start"])
    for layer, a in enumerate(out.attentions):
        att = a[0, :, -1, :].float().mean(0)[vis]
        att = att / att.sum()
        rows.append({"frame": tf + 1, "layer": layer, "body": float(att[tf * body_per:(tf + 1) * body_per].sum()),
                     "first_frame_body": float(att[0:body_per].sum())})

df = pd.DataFrame(rows)
df.to_csv("results/probe/sweep_attention_layers.csv", index=False)
tab = df.pivot_table(index="layer", columns="frame", values="body", aggfunc="mean")
print((100 * tab).round(1).to_string())
