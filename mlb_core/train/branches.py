"""Several questions about one clip for the price of one pass over its visual tokens.

A training step's cost is the frozen LM's forward and backward over ``prefix + visual +
question + answer``; on a long layout (2,000-4,000 visual tokens) nearly all of it is the
shared ``prefix + visual`` part. :func:`branched_answer_loss` runs that part once, keeps its
keys and values, and runs every question + answer as a *branch* that attends to the shared
part and to itself only, at the positions it would have had alone. It is exactly the mean of
:func:`mlb_core.train.vision.answer_loss` over the questions, each asked in its own sequence
(tested against that loop in ``tests/test_train.py``), for much less: at 3,000 visual tokens on
two cores, four questions took 31.6 and 30.9 s in branches, 118.4 and 89.1 s in separate
sequences, and one question alone 19.8 and 21.8 s, in two runs of ``python -m
mlb_core.train.branches``, which times them side by side (docs/training-record.md, "Branched questions").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from . import scenes

if TYPE_CHECKING:
    from .vision import LMText


def pick_questions(rng: np.random.Generator, spec: scenes.ClipSpec, p_mc: float, k: int) -> list[scenes.Question]:
    """``k`` different questions about the clip (fewer if it has fewer), drawn without
    replacement; each form gets the weight :func:`~mlb_core.train.vision.pick_question` gives
    it (multiple choice ``p_mc``, open ``1 - p_mc``), shared equally among its questions."""
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    qs = scenes.make_questions(spec, int(rng.integers(1 << 31)), forms=("open", "mc"))
    n_mc = sum(q.form == "mc" for q in qs)
    n_open = len(qs) - n_mc
    w = np.array([(p_mc / n_mc if q.form == "mc" else (1 - p_mc) / n_open) for q in qs])
    keep = w > 0
    idx = np.flatnonzero(keep)
    take = min(k, len(idx))
    chosen = rng.choice(idx, size=take, replace=False, p=w[idx] / w[idx].sum())
    return [qs[i] for i in chosen]


def key_terms(logits: torch.Tensor, text: LMText, key_weight: float, lead_weight: float) -> torch.Tensor | float:
    """The extra terms of an answer's loss, from its logits (A, V) (each predicting the answer's
    next token): ``key_weight`` times the cross-entropy at the key token (the colour or shape word,
    or the option letter: what the picture says) and ``lead_weight`` times that at the token just
    before it, the answer's own word that leads to the key (" a" in " the red object is a circle.",
    " is" in " the circle is red."; none when the key opens the answer). In long layouts the frozen
    LM's free answers leave the template there ("the red object is the red object"), naming no
    shape (docs/training-record.md, "The shape is read, then not said")."""
    extra: torch.Tensor | float = 0.0
    k = text.key
    if k is None:
        return extra
    if key_weight:
        extra = extra + key_weight * F.cross_entropy(logits[k:k + 1], text.answer[k:k + 1])
    if lead_weight and k >= 1:
        extra = extra + lead_weight * F.cross_entropy(logits[k - 1:k], text.answer[k - 1:k])
    return extra


def branched_answer_loss(model: Any, texts: list[LMText], visual: torch.Tensor,
                         key_weight: float = 0.0, lead_weight: float = 0.0) -> torch.Tensor:
    """Mean over ``texts`` of the answer loss of ``prefix + visual (N, D) + suffix + answer``.

    The shared ``prefix + visual`` runs once (its keys and values cached, with their graph);
    the ``B`` branches ``suffix + answer`` run as one right-padded batch at positions
    ``P .. P + len - 1`` (``P`` = shared length), so a branch never sees another branch and a
    padded slot comes after every real token of its row (causal), which makes padding
    invisible. Every text must have the same prefix (the chat template's system turn)."""
    from transformers import DynamicCache

    assert texts, "at least one question"
    prefix = texts[0].prefix
    for t in texts[1:]:
        assert torch.equal(t.prefix, prefix), "branches share one prefix"
    lm = model.model.language_model
    embed = model.get_input_embeddings()
    shared = torch.cat([prefix, visual])[None]  # (1, P, D)
    p = shared.shape[1]
    cache = DynamicCache()
    lm(inputs_embeds=shared, cache=cache, use_cache=True)
    with torch.no_grad():
        rows = [torch.cat([t.suffix, embed(t.answer)]) for t in texts]  # (S_b + A_b, D) each
    b, width = len(rows), max(len(r) for r in rows)
    x = shared.new_zeros(b, width, shared.shape[-1])  # (B, W, D), right-padded
    for i, r in enumerate(rows):
        x[i, :len(r)] = r
    cache.batch_repeat_interleave(b)  # (1, H, P, d) -> (B, H, P, d), differentiable
    pos = (p + torch.arange(width, device=x.device))[None].expand(b, width)  # (B, W)
    hidden = lm(inputs_embeds=x, cache=cache, position_ids=pos, use_cache=True).last_hidden_state
    losses = []
    for i, t in enumerate(texts):
        s, a = len(t.suffix), len(t.answer)
        logits = model.lm_head(hidden[i, s - 1:s + a - 1]).float()  # (A, V): each predicts the next token
        losses.append(F.cross_entropy(logits, t.answer) + key_terms(logits, t, key_weight, lead_weight))
    return torch.stack(losses).mean()


def branch_tokens(texts: list[LMText]) -> int:
    """Tokens the branches add to the shared pass (every branch's question and answer after
    the first's): what the training's cost model charges for them."""
    return sum(len(t.suffix) + len(t.answer) for t in texts[1:])


def bench(tokens: int = 3000, questions: int = 4, threads: int = 2, seed: int = 0) -> dict[str, Any]:
    """Time one training step's LM forward and backward over ``tokens`` visual tokens with
    ``questions`` questions, asked in branches and as separate sequences, side by side in one
    run (the embedded LM, fp32, random visual tokens; the vision side plays no part), and how
    far apart the two gradients are."""
    import time

    from .vision import answer_loss, default_source, lm_text, load_checkpoint

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model, tokenizer, _ = load_checkpoint(default_source())
        for p in model.parameters():
            p.requires_grad_(False)
        rng = np.random.default_rng(seed)
        spec = scenes.sample_clip(seed, 1, "train", 1)
        texts = [lm_text(model, tokenizer, q) for q in pick_questions(rng, spec, 0.25, questions)]
        torch.manual_seed(seed)
        base = 0.02 * torch.randn(tokens, model.config.text_config.hidden_size)

        def step(fn: Any) -> tuple[float, torch.Tensor]:
            vis = base.clone().requires_grad_(True)
            t0 = time.perf_counter()
            fn(vis).backward()
            return time.perf_counter() - t0, vis.grad

        def branched(v: torch.Tensor) -> torch.Tensor:
            return branched_answer_loss(model, texts, v, 1.0)

        def separate(v: torch.Tensor) -> torch.Tensor:
            return torch.stack([answer_loss(model, t, v, 1.0) for t in texts]).mean()

        def single(v: torch.Tensor) -> torch.Tensor:
            return answer_loss(model, texts[0], v, 1.0)

        step(single)  # warm-up
        t_single, _ = step(single)
        t_branched, g_branched = step(branched)
        t_separate, g_separate = step(separate)
        return {"tokens": tokens, "questions": len(texts), "threads": threads,
                "one_question_s": round(t_single, 2), "branched_s": round(t_branched, 2),
                "separate_s": round(t_separate, 2), "speedup": round(t_separate / t_branched, 2),
                "branched_over_one": round(t_branched / t_single, 2),
                "grad_rel_diff": float((g_branched - g_separate).norm() / g_separate.norm())}
    finally:
        torch.set_num_threads(old)


def main(argv: list[str] | None = None) -> int:
    """``python -m mlb_core.train.branches [--tokens N] [--questions K] [--threads T]``: print
    :func:`bench`'s side-by-side times."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m mlb_core.train.branches",
                                 description="Time a training step's questions in branches against separate "
                                             "sequences, side by side (the embedded LM, fp32)")
    ap.add_argument("--tokens", type=int, default=3000, help="visual tokens (default 3000)")
    ap.add_argument("--questions", type=int, default=4, help="questions about the clip (default 4)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    if a.tokens < 1 or a.questions < 1 or a.threads < 1:
        ap.error("--tokens, --questions and --threads must be at least 1")
    r = bench(a.tokens, a.questions, a.threads)
    print(f"{r['tokens']:,} visual tokens, {r['questions']} questions, {r['threads']} threads: "
          f"one question {r['one_question_s']} s; all of them in branches {r['branched_s']} s, in separate "
          f"sequences {r['separate_s']} s: {r['speedup']}x faster in branches, {r['branched_over_one']}x one "
          f"question's time; gradients differ by {r['grad_rel_diff']:.1e} (relative)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
