"""Tiny, config-built, seeded random models of the stock LLaVA classes, for fast tests
(as transformers' own ``ModelTester`` does). Built in memory in well under a second; the
tokenizer is the embedded default's (SmolLM2), extracted once from the shipped GGUF file.
"""

from __future__ import annotations

import torch

from .models import VideoLLM


def tiny_text_config(**overrides):
    from transformers import LlamaConfig

    kw = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2, vocab_size=49152, max_position_embeddings=2048,
              bos_token_id=1, eos_token_id=2, pad_token_id=2)
    kw.update(overrides)
    return LlamaConfig(**kw)


def build_tiny_model(
    family: str = "llava_next", seed: int = 0, attn_implementation: str = "sdpa", **text_overrides
) -> VideoLLM:
    """A random LLaVA-NeXT (default) with a 4-layer GQA Llama (hidden 32) and a CLIP vision
    tower at 56 px, patch 7 -> an 8 x 8 token grid. Deterministic for a given ``seed``."""
    from transformers import CLIPVisionConfig, LlavaNextConfig, LlavaNextForConditionalGeneration
    from transformers import LlavaNextImageProcessorPil

    from .embedded import load_tokenizer

    if family != "llava_next":
        raise ValueError(f"no tiny model for family {family!r} yet")
    torch.manual_seed(seed)
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                              num_attention_heads=2, image_size=56, patch_size=7, projection_dim=16)
    config = LlavaNextConfig(text_config=tiny_text_config(**text_overrides), vision_config=vision,
                             image_grid_pinpoints=[[56, 112], [112, 56]], image_token_index=0)
    config._attn_implementation = attn_implementation
    config.text_config._attn_implementation = attn_implementation
    config.vision_config._attn_implementation = attn_implementation
    model = LlavaNextForConditionalGeneration(config).eval().requires_grad_(False)
    processor = LlavaNextImageProcessorPil(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56},
                                           image_grid_pinpoints=[[56, 112], [112, 56]])
    return VideoLLM(model, load_tokenizer(), processor, "smollm2", f"tiny-llava-next-seed{seed}")
