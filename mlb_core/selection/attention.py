"""Stage-one scoring: the last query token's attention at one decoder layer (paper Fig. 2).

:func:`last_query_attention` runs the decoder only up to the scoring layer and never
materialises an (L x L) attention matrix: a removable forward pre-hook on the scoring
layer's self-attention takes its (normed) input, computes queries for the *last* position
only and keys for all positions with the module's own projections and rotary embedding,
and stops the forward pass there. Memory at the scoring layer is O(heads x L), not
O(heads x L^2), and no layer after it runs.

:func:`last_query_attention_eager` is the naive reference: a full eager forward with
``output_attentions=True``.

For a stage-one KV cache (:mod:`mlb_core.selection.scores`, issue 5) the scoring is split in
two: :func:`scoring_keys` gives the scoring layer's (rotary-embedded) keys of the
question-independent positions once, and :func:`last_query_probs_cached` scores the last
query of a question's new tokens against those cached keys plus the new keys.
:func:`stop_hook` is the generic removable early-exit hook both use.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


class _StopForward(Exception):
    """Raised by the scoring hook to end the forward pass at the scoring layer."""


def _rotary(module: nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Apply the attention module's own rotary embedding to ``x`` (B, H, L, hd)."""
    apply = sys.modules[type(module).__module__].apply_rotary_pos_emb
    return apply(x, x, cos, sin)[0]


def last_query_probs(
    module: nn.Module, hidden: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    """Softmax attention of the last position over all positions, averaged over heads.

    Args:
        module: a transformers self-attention module (Llama, Mistral, Qwen2, ...), with
            ``q_proj``, ``k_proj``, ``head_dim``, ``scaling``.
        hidden: (B, L, D) the module's input (after the layer's input norm).
        position_embeddings: ``(cos, sin)``, each (B, L, hd).

    Returns:
        (B, L) float32, each row sums to 1. Causality holds trivially: the last query may
        attend to every position. Sequences must not be padded.
    """
    b, seq, _ = hidden.shape
    hd = module.head_dim
    cos, sin = position_embeddings
    q = module.q_proj(hidden[:, -1:]).view(b, 1, -1, hd).transpose(1, 2)  # (B, Hq, 1, hd)
    k = module.k_proj(hidden).view(b, seq, -1, hd).transpose(1, 2)  # (B, Hk, L, hd)
    if hasattr(module, "q_norm"):  # Qwen3-style per-head norms
        q, k = module.q_norm(q), module.k_norm(k)
    q = _rotary(module, q, cos[:, -1:], sin[:, -1:])
    k = _rotary(module, k, cos, sin)
    hq, hk = q.shape[1], k.shape[1]
    q = q.reshape(b, hk, hq // hk, hd)  # (B, Hk, rep, hd): query head i uses kv head i // rep
    logits = torch.einsum("bgrd,bgld->bgrl", q.float(), k.float()) * module.scaling  # (B, Hk, rep, L)
    probs = logits.softmax(-1)
    return probs.reshape(b, hq, seq).mean(1)  # (B, L)


def scoring_keys(
    module: nn.Module, hidden: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    """Keys of the scoring layer as :func:`last_query_probs` computes them, for caching.

    Args:
        module: the scoring layer's self-attention.
        hidden: (B, L, D) the module's input (after the layer's input norm).
        position_embeddings: ``(cos, sin)``, each (B, L, hd), of these L positions.

    Returns:
        (B, Hk, L, hd) rotary-embedded keys (Qwen3-style ``k_norm`` applied), input dtype.
    """
    b, seq, _ = hidden.shape
    cos, sin = position_embeddings
    k = module.k_proj(hidden).view(b, seq, -1, module.head_dim).transpose(1, 2)  # (B, Hk, L, hd)
    if hasattr(module, "k_norm"):
        k = module.k_norm(k)
    return _rotary(module, k, cos, sin)


def last_query_probs_cached(
    module: nn.Module,
    hidden: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor],
    past_keys: torch.Tensor,
) -> torch.Tensor:
    """:func:`last_query_probs` for a sequence whose first positions are cached.

    Args:
        module: the scoring layer's self-attention.
        hidden: (B, Q, D) the module's input for the Q *new* positions only.
        position_embeddings: ``(cos, sin)``, each (B, Q, hd), of the new positions.
        past_keys: (B, Hk, C, hd) :func:`scoring_keys` of the C cached positions.

    Returns:
        (B, C + Q) float32: the last new position's attention over cached + new positions,
        heads averaged; equal (up to rounding) to :func:`last_query_probs` on all C + Q.
    """
    b = hidden.shape[0]
    hd = module.head_dim
    cos, sin = position_embeddings
    q = module.q_proj(hidden[:, -1:]).view(b, 1, -1, hd).transpose(1, 2)  # (B, Hq, 1, hd)
    if hasattr(module, "q_norm"):
        q = module.q_norm(q)
    q = _rotary(module, q, cos[:, -1:], sin[:, -1:])
    k_new = scoring_keys(module, hidden, position_embeddings)  # (B, Hk, Q, hd)
    hq, hk = q.shape[1], k_new.shape[1]
    q = q.reshape(b, hk, hq // hk, hd).float()  # (B, Hk, rep, hd)
    # logits against cached and new keys separately (no copy of the cached keys), then joined
    logits = torch.cat([torch.einsum("bgrd,bgld->bgrl", q, past_keys.float()),
                        torch.einsum("bgrd,bgld->bgrl", q, k_new.float())], -1)  # (B, Hk, rep, C+Q)
    logits = logits * module.scaling
    return logits.softmax(-1).reshape(b, hq, -1).mean(1)  # (B, C+Q)


@contextmanager
def stop_hook(attn: nn.Module, fn: Any, sink: dict[str, Any], key: str) -> Iterator[None]:
    """Early exit at ``attn``: ``sink[key] = fn(module, hidden, position_embeddings)``, then
    the forward pass stops. Removed on exit (even on errors)."""

    def pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        sink[key] = fn(module, hidden, kwargs["position_embeddings"])
        raise _StopForward

    handle = attn.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


@torch.inference_mode()
def last_query_attention(language_model: nn.Module, inputs_embeds: torch.Tensor, layer: int) -> torch.Tensor:
    """Stage-one scores: last-query attention at decoder ``layer`` (0-based), heads averaged.

    Args:
        language_model: the decoder stack (``VideoLLM.language_model``, e.g. ``LlamaModel``).
        inputs_embeds: (B, L, D): B equal-length, unpadded sequences (e.g. segments).
        layer: the scoring layer [paper: the 3rd, index 2].

    Returns:
        (B, L) float32 attention probabilities of the last position.
    """
    return run_to_layer(language_model, layer, last_query_probs, inputs_embeds=inputs_embeds, use_cache=False)


@torch.inference_mode()
def run_to_layer(language_model: nn.Module, layer: int, fn: Any, **forward_kwargs: Any) -> Any:
    """Run the decoder stack up to ``layer``'s self-attention, return ``fn(module, hidden,
    position_embeddings)`` computed there; no later layer runs (the early exit of
    :func:`last_query_attention`, with any scoring function and forward arguments, e.g. a cache)."""
    layers = language_model.layers
    if not 0 <= layer < len(layers):
        from mlb_core.errors import MLBError

        raise MLBError(f"score_layer {layer} is out of range: the model has {len(layers)} layers")
    sink: dict[str, Any] = {}
    with stop_hook(layers[layer].self_attn, fn, sink, "out"):
        try:
            language_model(**forward_kwargs)
        except _StopForward:
            pass
    assert "out" in sink, "the scoring layer was never reached"
    return sink["out"]


@torch.inference_mode()
def last_query_attention_eager(language_model: nn.Module, inputs_embeds: torch.Tensor, layer: int) -> torch.Tensor:
    """Naive reference: full eager forward, ``output_attentions=True``, last row, head mean.

    The model must use eager attention (``attn_implementation="eager"``). Materialises
    every layer's (B, H, L, L) attention matrix.
    """
    out = language_model(inputs_embeds=inputs_embeds, use_cache=False, output_attentions=True)
    return out.attentions[layer][:, :, -1, :].float().mean(1)  # (B, L)
