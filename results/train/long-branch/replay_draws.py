# Exploratory record (not part of mlb_core): run from the repository root as
#   python results/train/long-branch/replay_draws.py [SEED]
# (about 10 s). Seed 0 prints: steps 124, tokens 132556, long steps 41, questions 496, long questions 164
"""Replay long-branch's stage-3 draws to count its long steps and questions. The draws (layouts,
scenes, questions) and the cost model's clock do not depend on any LM pass, so this repeats the
training's stream without training; the step and token counts match its training_log.json."""
import sys

import numpy as np

from mlb_core.train import branches, layouts, vision

r = vision.RECIPES["long-branch"]
seed, threads, minutes = int(sys.argv[1]) if len(sys.argv) > 1 else 0, 2, 30.0
model, tok, _ = vision.load_checkpoint(vision.default_source())  # the LM's embeddings and tokenizer
rng = np.random.default_rng([seed, 3])
budget = minutes * 60 * r.finetune_share
spent, rows = 0.0, []
while spent < budget:
    cap = vision._curriculum(spent, budget, r.codebook_min_tokens, r.finetune_max_tokens)
    if r.p_long and rng.random() < r.p_long:
        lay = layouts.sample_long_layout(rng, r.long_min_tokens, r.long_max_tokens)
    else:
        lay = layouts.sample_layout(rng, cap)
    spec = vision._sample_spec(rng, lay.n_frames, r)
    texts = [vision.lm_text(model, tok, q) for q in branches.pick_questions(rng, spec, r.p_mc, r.branches)]
    spent += vision.finetune_step_cost(lay, texts, r, threads)
    rows.append((lay.n_tokens, len(texts)))
long = [x for x in rows if x[0] >= r.long_min_tokens]
print(f"steps {len(rows)}, tokens {sum(x[0] for x in rows)}, long steps {len(long)}, "
      f"questions {sum(x[1] for x in rows)}, long questions {sum(x[1] for x in long)}")
