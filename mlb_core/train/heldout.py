"""Held-out accuracy of a (vision-trained) embedded checkpoint, by layout and sequence length.

Scenes come from :func:`mlb_core.train.scenes.sample_clip` with ``split="heldout"``
(video backgrounds only from the held-out ``carphone_*`` clips) and seeds from
:data:`~mlb_core.train.scenes.HELDOUT_SEED_BASE` on, which training never draws. One
object, on screen in every frame. Frames go through the checkpoint's own image processor
(as :meth:`mlb_core.models.VideoLLM.preprocess` does), the tower at the config's feature
layer, and the projector; then one of the conditions below; then greedy decoding after
the smollm2 open-ended prompt. An answer is right iff its first colour word (colour
questions) or first shape word (shape questions) is the truth, as the offline judge does.

Conditions (``tokens`` = visual tokens):

* ``single_raw``: one frame, 576 raw tokens (``full`` on an image);
* ``single_pool{k}``: one frame in k x k cells (k = 3: ``mlb``'s body cell; 12: its tail);
* ``mlb_{T}``: T-frame clip, 3 x 3 body + 12 x 12 tail (T = 20: 1360, T = 50: 3400 tokens);
* ``full_{T}``: T-frame clip, raw tokens of the frames that fit the 8192-token context
  (14 frames, uniform over the clip, 8064 tokens, as ``mlb_core.methods.full``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import layouts, scenes
from .vision import _prompt, encode, load_checkpoint

MAX_NEW_TOKENS = 10
CONTEXT = 8192


@dataclass(frozen=True)
class Condition:
    """One evaluated setting: a name, the clip length, and how frames become tokens."""

    name: str
    n_frames: int
    layout: str  # "raw", "pool" or "bodytail"
    cell: int
    n_clips: int


def default_conditions(n_single: int = 24, n_clips: int = 8, n_full: int = 3) -> list[Condition]:
    """The standard set (sample counts chosen to fit a CPU: ``full`` prompts are 8k tokens)."""
    return [
        Condition("single_raw", 1, "raw", 1, n_single),
        Condition("single_pool3", 1, "pool", 3, n_single),
        Condition("single_pool12", 1, "pool", 12, n_single),
        Condition("mlb_5", 5, "bodytail", 3, n_clips),
        Condition("mlb_20", 20, "bodytail", 3, n_clips),
        Condition("mlb_50", 50, "bodytail", 3, max(1, n_clips // 2)),
        Condition("full_20", 20, "raw", 1, n_full),
        Condition("full_50", 50, "raw", 1, n_full),
    ]


def preprocess(frames: np.ndarray, processor: Any) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, 336, 336) by the image processor's base-image path."""
    pixels = processor(list(frames), return_tensors="pt", image_grid_pinpoints=[[336, 336]])["pixel_values"]
    return pixels[:, 0] if pixels.dim() == 5 else pixels


@torch.inference_mode()
def greedy(model: Any, tokenizer: Any, embeds: torch.Tensor, max_new_tokens: int = MAX_NEW_TOKENS) -> str:
    """Greedy answer for prompt embeddings (1, L, D), stopping at ``<|im_end|>``/EOS."""
    stop = {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")}
    out = model(inputs_embeds=embeds, use_cache=True, logits_to_keep=1)
    cache = out.cache if hasattr(out, "cache") else out.past_key_values
    logits, n_past, ids = out.logits[:, -1], embeds.shape[1], []
    for step in range(max_new_tokens):
        nxt = int(logits.argmax(-1))
        if nxt in stop:
            break
        ids.append(nxt)
        out = model(input_ids=torch.tensor([[nxt]]), cache=cache, use_cache=True,
                    position_ids=torch.tensor([[n_past + step]]))
        logits = out.logits[:, -1]
        cache = out.cache if hasattr(out, "cache") else out.past_key_values
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


def first_word(text: str, vocab: tuple[str, ...]) -> str | None:
    """The first word of ``text`` that is in ``vocab`` (the judge's reading)."""
    for word in text.lower().replace(".", " ").replace(",", " ").split():
        if word in vocab:
            return word
    return None


def visual_tokens(model: Any, processor: Any, frames: np.ndarray, cond: Condition,
                  text_len: int) -> torch.Tensor:
    """Frames (T, 336, 336, 3) -> the condition's visual sequence (N, D)."""
    if cond.layout == "raw":
        per = 576
        n = min(len(frames), (CONTEXT - text_len - MAX_NEW_TOKENS) // per)
        frames = frames[np.unique(np.linspace(0, len(frames) - 1, n).round().astype(int))]
    grid = encode(model, preprocess(frames, processor))  # (T, 24, 24, D)
    return layouts.arrange(grid, layouts.Layout(cond.layout, cond.cell, len(frames)))


def evaluate_heldout(
    folder: str | Path,
    conditions: list[Condition] | None = None,
    seed_base: int = scenes.HELDOUT_SEED_BASE,
    threads: int = 1,
    log: Any = None,
) -> dict[str, Any]:
    """Held-out accuracy per condition.

    Returns:
        ``{"conditions": {name: {"tokens", "n_frames", "layout", "n_clips", "colour_acc",
        "shape_acc", "acc", "n_questions", "seconds"}}, "by_length": [{"tokens", "name",
        "acc", "n_questions"}...], "samples": [...]}`` (``acc``: colour and shape questions
        together; ``samples``: the first answers of each condition, for eyeballing).
    """
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model, tokenizer, processor = load_checkpoint(Path(folder))
        embed = model.get_input_embeddings()
        bank = scenes.VideoBank()
        results: dict[str, Any] = {}
        samples: list[dict[str, str]] = []
        for c_idx, cond in enumerate(conditions or default_conditions()):
            t0 = time.perf_counter()
            right = {"colour": 0, "shape": 0}
            asked = {"colour": 0, "shape": 0}
            n_tokens = 0
            for i in range(cond.n_clips):
                # single-frame conditions share their scenes; clip conditions by length
                seed = (seed_base, cond.n_frames, i)
                spec = scenes.sample_clip(seed, cond.n_frames, "heldout", n_objects=1, p_partial=0.0)
                frames, _ = scenes.render_clip(spec, bank)
                qs = [q for q in scenes.make_questions(spec, seed, forms=("open",)) if q.kind in right]
                visual = None
                for q in qs:
                    prefix, suffix = _prompt(q.question, "open", ())
                    pre = tokenizer(prefix, add_special_tokens=True, return_tensors="pt").input_ids[0]
                    suf = tokenizer(suffix, add_special_tokens=False, return_tensors="pt").input_ids[0]
                    with torch.inference_mode():
                        if visual is None:
                            visual = visual_tokens(model, processor, frames, cond, len(pre) + len(suf))
                        embeds = torch.cat([embed(pre), visual, embed(suf)])[None]  # (1, L, D)
                    answer = greedy(model, tokenizer, embeds)
                    vocab = scenes.COLOURS if q.kind == "colour" else scenes.SHAPES
                    ok = first_word(answer, vocab) == q.truth
                    right[q.kind] += int(ok)
                    asked[q.kind] += 1
                    n_tokens = visual.shape[0]
                    if i < 2:
                        samples.append({"condition": cond.name, "question": q.question, "truth": q.truth,
                                        "answer": answer})
            n_q = sum(asked.values())
            results[cond.name] = {
                "tokens": n_tokens, "n_frames": cond.n_frames, "layout": f"{cond.layout}{cond.cell}",
                "n_clips": cond.n_clips, "n_questions": n_q,
                "colour_acc": right["colour"] / max(1, asked["colour"]),
                "shape_acc": right["shape"] / max(1, asked["shape"]),
                "acc": sum(right.values()) / max(1, n_q),
                "seconds": round(time.perf_counter() - t0, 1),
            }
            if log is not None:
                log(f"[heldout] {c_idx}: {cond.name} {results[cond.name]}")
        by_length = sorted(({"tokens": r["tokens"], "name": k, "acc": r["acc"], "n_questions": r["n_questions"]}
                            for k, r in results.items()), key=lambda r: r["tokens"])
        return {"conditions": results, "by_length": by_length, "samples": samples, "seed_base": seed_base}
    finally:
        torch.set_num_threads(old)
