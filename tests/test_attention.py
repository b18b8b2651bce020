"""Stage-one scoring against eager attention; early exit; hooks leave no trace."""

from __future__ import annotations

import pytest
import torch

from mlb_core.backbones.tiny import build_tiny_model
from mlb_core.errors import MLBError
from mlb_core.selection.attention import last_query_attention, last_query_attention_eager


def _embeds(b=3, length=70, d=32, seed=1):
    return torch.randn(b, length, d, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("layer", [0, 1, 2, 3])
def test_matches_eager_output_attentions(tiny_eager, layer):
    cfg = tiny_eager.model.config.text_config
    assert cfg.num_key_value_heads < cfg.num_attention_heads  # grouped-query attention
    x = _embeds()
    fast = last_query_attention(tiny_eager.language_model, x, layer)
    ref = last_query_attention_eager(tiny_eager.language_model, x, layer)
    assert fast.shape == ref.shape == (3, 70)
    assert (fast - ref).abs().max().item() <= 1e-5
    torch.testing.assert_close(fast.sum(-1), torch.ones(3))


def test_sdpa_model_gives_the_same_scores(tiny, tiny_eager):
    x = _embeds(2, 40)
    a = last_query_attention(tiny.language_model, x, 2)
    b = last_query_attention_eager(tiny_eager.language_model, x, 2)
    assert (a - b).abs().max().item() <= 1e-5


def test_no_layer_after_the_scoring_layer_runs(tiny):
    calls = {i: 0 for i in range(len(tiny.layers))}
    handles = [layer.register_forward_pre_hook(lambda m, a, i=i: calls.__setitem__(i, calls[i] + 1))
               for i, layer in enumerate(tiny.layers)]
    try:
        last_query_attention(tiny.language_model, _embeds(), 1)
    finally:
        for h in handles:
            h.remove()
    assert calls == {0: 1, 1: 1, 2: 0, 3: 0}


def test_hooks_removed_and_model_unchanged():
    fresh = build_tiny_model(seed=3)
    used = build_tiny_model(seed=3)
    x = _embeds(1, 30)
    last_query_attention(used.language_model, x, 2)
    with pytest.raises(MLBError):
        last_query_attention(used.language_model, x, 99)
    for module in used.model.modules():
        assert not module._forward_pre_hooks and not module._forward_hooks
    with torch.inference_mode():
        a = fresh.model(inputs_embeds=x).logits
        b = used.model(inputs_embeds=x).logits
    assert torch.equal(a, b)
    for (na, pa), (nb, pb) in zip(fresh.model.state_dict().items(), used.model.state_dict().items(), strict=True):
        assert na == nb and torch.equal(pa, pb)


def test_hook_removed_after_an_error_inside_the_forward(tiny):
    with pytest.raises(RuntimeError):
        last_query_attention(tiny.language_model, torch.randn(1, 5, 7), 1)  # wrong width
    assert not tiny.layers[1].self_attn._forward_pre_hooks
