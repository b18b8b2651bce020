"""Analytic FLOPs and memory model of stage one and stage two (issue 5; paper: "lower pre-filling time").

A decoder pass is described by :class:`Pass`: ``batch`` sequences, ``new`` positions run
after ``past`` cached ones, through ``layers`` whole decoder layers, optionally ending with
the stage-one *early exit* (the scoring layer's keys of the new positions and one query,
:func:`mlb_core.selection.attention.last_query_probs`) and optionally one row of LM-head logits
(stage-two prefill, ``logits_to_keep=1``). FLOPs count a multiply-add as 2; norms, rotary,
softmax and residual adds are left out (under 1% at these shapes).

Per decoder layer and new position: ``2 * (D*Hq*hd + 2*D*Hk*hd + Hq*hd*D + 3*D*I)`` for the
projections and the SwiGLU MLP; attention adds ``4 * Hq * hd`` per (query, key) pair, with
``new*past + new*(new+1)/2`` pairs under a causal kernel that skips masked blocks (SDPA/flash)
and ``new*(past+new)`` when the whole matrix is computed (eager attention).

On a GPU the long passes here are compute-bound, so time ratios follow FLOPs ratios
(:func:`predict_stage_one`, :func:`predict_cached`); the eager reference also writes and
reads every layer's (H, L, L) probabilities, which makes the FLOPs ratio of goal (a) a
lower bound of the time ratio. Memory: :func:`eager_extra_bytes` (``output_attentions``
keeps every layer's probabilities) against :func:`activation_bytes` (the early exit keeps
one layer's activations).

Questions per video: every method reuses the question-independent part of its input across
the questions about one video (docs/architecture.md, "Bench"). Stage one's prefix + segment
state is the stage-one cache (:func:`context_passes`, :func:`question_passes`). In stage two
the prompt is ``prefix + visual + suffix`` and only the suffix holds the question, so a method
whose visual tokens do not depend on the question (``full``, ``sf-llava``, ``mlb-avg``, ...)
computes the KV cache of ``prefix + visual`` once per video and each question adds only its
suffix; a method whose visual tokens depend on the question (``mlb`` and every method that reads
stage-one scores, ``fastv`` too) runs its whole prompt for every question (:func:`stage_two_passes`).
Per question over ``n`` questions: :func:`amortised`; against a reference: :func:`break_even`.

Shapes (:data:`SHAPES`): ``vicuna-7b`` (LLaVA-NeXT-7B's Vicuna-7B v1.5), ``yi-34b``
(LLaVA-NeXT-34B's Nous-Hermes-2-Yi-34B), ``smollm2-135m`` (the embedded default).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class LMShape:
    """Decoder shape: ``layers`` x (attention with ``heads`` query / ``kv_heads`` KV heads of
    ``head_dim``, SwiGLU MLP of width ``intermediate``), ``vocab`` LM-head rows, ``context``."""

    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    context: int
    head_dim: int = 0

    def __post_init__(self) -> None:
        if not self.head_dim:
            object.__setattr__(self, "head_dim", self.hidden // self.heads)

    @classmethod
    def from_config(cls, config: Any, name: str = "") -> LMShape:
        """From a transformers text config (``LlamaConfig``, ``Qwen2Config``, ...)."""
        heads = config.num_attention_heads
        return cls(name or config.model_type, config.num_hidden_layers, config.hidden_size, heads,
                   getattr(config, "num_key_value_heads", None) or heads, config.intermediate_size,
                   config.vocab_size, config.max_position_embeddings,
                   getattr(config, "head_dim", None) or config.hidden_size // heads)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


SHAPES: dict[str, LMShape] = {
    # lmsys/vicuna-7b-v1.5 as in llava-hf/llava-v1.6-vicuna-7b-hf (vocab 32064 with the image tokens)
    "vicuna-7b": LMShape("vicuna-7b", 32, 4096, 32, 32, 11008, 32064, 4096),
    # NousResearch/Nous-Hermes-2-Yi-34B as in llava-hf/llava-v1.6-34b-hf
    "yi-34b": LMShape("yi-34b", 60, 7168, 56, 8, 20480, 64064, 4096),
    # HuggingFaceTB/SmolLM2-135M-Instruct (the embedded default)
    "smollm2-135m": LMShape("smollm2-135m", 30, 576, 9, 3, 1536, 49152, 8192),
    # a tiny shape, for smoke tests of the benchmark
    "tiny": LMShape("tiny", 4, 64, 4, 2, 128, 256, 4096),
}


@dataclass(frozen=True)
class Pass:
    """One forward of the decoder stack.

    Attributes:
        batch: sequences (e.g. stage-one segments scored together).
        new: positions computed in this pass, per sequence.
        past: positions already in the KV cache, per sequence.
        layers: whole decoder layers run; ``None`` = all of the model's layers.
        exit: after them, the stage-one early exit at the next layer: keys of the ``new``
            positions and the last position's query against ``past + new`` keys.
        causal: ``False`` for eager attention, which computes the whole (L x L) matrix.
        head: one row of LM-head logits at the end (stage-two prefill).
    """

    batch: int
    new: int
    past: int = 0
    layers: int | None = None
    exit: bool = False
    causal: bool = True
    head: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def linear_flops(shape: LMShape, n: int) -> float:
    """Projections + MLP of one layer for ``n`` positions."""
    d, hd = shape.hidden, shape.head_dim
    per_token = (d * shape.heads * hd + 2 * d * shape.kv_heads * hd + shape.heads * hd * d
                 + 3 * d * shape.intermediate)
    return 2.0 * n * per_token


def attention_pairs(new: int, past: int = 0, causal: bool = True) -> float:
    """(query, key) pairs a kernel computes for ``new`` queries after ``past`` cached keys."""
    return new * past + (new * (new + 1) / 2 if causal else new * new)


def attention_flops(shape: LMShape, new: int, past: int = 0, causal: bool = True) -> float:
    """``Q K^T`` and ``P V`` of one layer: 2 matmuls x 2 FLOPs x Hq x hd per pair."""
    return 4.0 * shape.heads * shape.head_dim * attention_pairs(new, past, causal)


def layer_flops(shape: LMShape, new: int, past: int = 0, causal: bool = True) -> float:
    return linear_flops(shape, new) + attention_flops(shape, new, past, causal)


def exit_flops(shape: LMShape, new: int, past: int = 0) -> float:
    """Stage-one early exit at the scoring layer: keys of ``new`` positions, one query, its
    logits over ``past + new`` keys (:func:`mlb_core.selection.attention.last_query_probs`)."""
    d, hd = shape.hidden, shape.head_dim
    return 2.0 * (new * d * shape.kv_heads * hd + d * shape.heads * hd + shape.heads * hd * (past + new))


def head_flops(shape: LMShape, rows: int = 1) -> float:
    return 2.0 * rows * shape.hidden * shape.vocab


def pass_flops(shape: LMShape, p: Pass) -> float:
    """FLOPs of one :class:`Pass` on ``shape``."""
    n_layers = shape.layers if p.layers is None else p.layers
    total = n_layers * layer_flops(shape, p.new, p.past, p.causal)
    if p.exit:
        total += exit_flops(shape, p.new, p.past)
    total *= p.batch
    if p.head:
        total += p.batch * head_flops(shape)
    return total


def flops(shape: LMShape, passes: list[Pass]) -> float:
    return sum(pass_flops(shape, p) for p in passes)


# ---- the passes of stage one and stage two ------------------------------------------------
def stage_one_passes(segments: int, length: int, layer: int, batch_size: int = 4) -> list[Pass]:
    """Uncached stage one: every segment's ``prefix + segment + suffix`` (``length``
    positions) to the scoring ``layer``, ``batch_size`` segments a pass."""
    full, rest = divmod(segments, batch_size)
    return ([Pass(batch_size, length, 0, layer, True)] * full
            + ([Pass(rest, length, 0, layer, True)] if rest else []))


def context_passes(segments: int, context: int, layer: int, batch_size: int = 4) -> list[Pass]:
    """Cached stage one, once per video: ``prefix + segment`` (``context`` positions)."""
    return stage_one_passes(segments, context, layer, batch_size)


def question_passes(segments: int, context: int, suffix: int, layer: int, batch_size: int = 4) -> list[Pass]:
    """Cached stage one, per question: the ``suffix`` positions after ``context`` cached ones."""
    full, rest = divmod(segments, batch_size)
    return ([Pass(batch_size, suffix, context, layer, True)] * full
            + ([Pass(rest, suffix, context, layer, True)] if rest else []))


def prefill_passes(tokens: int) -> list[Pass]:
    """Stage two: the full model over ``tokens`` positions, one row of logits."""
    return [Pass(1, tokens, head=True)]


def stage_two_passes(prefix: int, visual: int, suffix: int, reuse_visual: bool) -> tuple[list[Pass], list[Pass]]:
    """Stage two of the first and of a later question about a video, with the question-independent
    part of ``prefix + visual + suffix`` cached once per video (:mod:`mlb_core.stage_two`).

    ``reuse_visual``: the visual tokens do not depend on the question, so ``prefix + visual`` is
    cached and a question runs its ``suffix`` after them; the first question builds the cache (no
    logits) and then runs as a later one; under a causal kernel its FLOPs equal one uncached
    :func:`prefill_passes` over the whole prompt. Otherwise nothing is cached
    (:mod:`mlb_core.stage_two` says why): every question runs its whole prompt in one pass.

    Returns:
        ``(first, later)``: the passes of the first and of a later question.
    """
    if not reuse_visual:
        whole = [Pass(1, prefix + visual + suffix, 0, head=True)]
        return whole, whole
    later = [Pass(1, suffix, prefix + visual, head=True)]
    return [Pass(1, prefix + visual)] + later, later


def eager_passes(tokens: int) -> list[Pass]:
    """The naive reference: the full model with eager attention (``output_attentions=True``)."""
    return [Pass(1, tokens, causal=False)]


# ---- memory ---------------------------------------------------------------------------
def eager_extra_bytes(shape: LMShape, tokens: int, layers: int | None = None, dtype_bytes: int = 4,
                      batch: int = 1) -> float:
    """Extra memory of the eager reference: ``layers`` retained (B, Hq, L, L) probabilities,
    one more in flight (the logits before softmax), the (L, L) causal mask and one layer's
    activations."""
    n = shape.layers if layers is None else layers
    probs = batch * shape.heads * tokens * tokens * dtype_bytes
    mask = batch * tokens * tokens * dtype_bytes
    return (n + 1) * probs + mask + activation_bytes(shape, tokens, dtype_bytes, batch)


def activation_bytes(shape: LMShape, tokens: int, dtype_bytes: int = 4, batch: int = 1) -> float:
    """Peak activations of one decoder layer without an (L x L) matrix: the residual stream,
    its norm, q/k/v, the attention output, the MLP's gate/up/product."""
    hd = shape.head_dim
    per_token = (3 * shape.hidden + (shape.heads + 2 * shape.kv_heads) * hd + shape.heads * hd
                 + 3 * shape.intermediate)
    return batch * tokens * per_token * dtype_bytes


def kv_cache_bytes(shape: LMShape, context: int, layer: int, segments: int, dtype_bytes: int = 2) -> float:
    """The stage-one cache of one video: layers 0..K-1 keys and values plus layer K's keys."""
    return segments * context * (2 * layer + 1) * shape.kv_heads * shape.head_dim * dtype_bytes


# ---- predicted ratios ---------------------------------------------------------------------
def predict_stage_one(shape: LMShape, tokens: int, layer: int) -> dict[str, float]:
    """Goal (a): eager full forward vs early exit, one segment of ``tokens`` positions."""
    early = pass_flops(shape, Pass(1, tokens, 0, layer, True))
    eager = flops(shape, eager_passes(tokens))
    mem_early = activation_bytes(shape, tokens)
    mem_eager = eager_extra_bytes(shape, tokens)
    return {"early_exit_gflop": early / 1e9, "eager_full_gflop": eager / 1e9, "time_ratio": eager / early,
            "early_exit_extra_gb": mem_early / 1e9, "eager_extra_gb": mem_eager / 1e9,
            "memory_ratio": mem_early / mem_eager}


def predict_cached(shape: LMShape, segments: int, context: int, suffix: int, layer: int,
                   batch_size: int = 4) -> dict[str, float]:
    """Goal (b): a later question's stage one against the first (context + question) and
    against uncached stage one."""
    ctx = flops(shape, context_passes(segments, context, layer, batch_size))
    question = flops(shape, question_passes(segments, context, suffix, layer, batch_size))
    uncached = flops(shape, stage_one_passes(segments, context + suffix, layer, batch_size))
    return {"context_gflop": ctx / 1e9, "question_gflop": question / 1e9, "uncached_gflop": uncached / 1e9,
            "later_over_first": question / (ctx + question), "later_over_uncached": question / uncached}


def amortised(first: float, later: float, n_questions: int) -> float:
    """Mean per-question cost over ``n_questions`` questions about one video."""
    return (first + (n_questions - 1) * later) / n_questions


def break_even(first: float, later: float, ref_first: float, ref_later: float, ratio: float = 0.95,
               limit: int = 10_000) -> int | None:
    """Fewest questions per video for which a method's per-question cost is at most ``ratio`` times
    the reference's, both amortised over the same questions: ``amortised(first, later, n) <=
    ratio * amortised(ref_first, ref_later, n)`` (``first``, ``later``: the total cost of the first
    and of a later question). ``None`` when no ``n`` up to ``limit`` gets there."""
    for n in range(1, limit + 1):
        if amortised(first, later, n) <= ratio * amortised(ref_first, ref_later, n):
            return n
    return None
