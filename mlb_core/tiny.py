"""Tiny, config-built, seeded random models of the stock LLaVA classes, for fast tests
(as transformers' own ``ModelTester`` does). Built in memory in well under a second; the
tokenizer is the embedded default's (SmolLM2), extracted once from the shipped GGUF file.

One tiny model per backbone family of the study (architecture.md, "Models"); each has the
class, vision tower, feature selection and prompt family of its real counterpart, at toy
size:

============================  ==========================================  ==================  =======
family                        class (real checkpoint)                     vision, grid        prompt
============================  ==========================================  ==================  =======
``llava_next`` (default)      LlavaNext (the embedded default's layout)   CLIP 56 px, 8 x 8   smollm2
``llava_next_vicuna``         LlavaNext (llava-v1.6-vicuna-7b-hf)         CLIP 56 px, 8 x 8   vicuna
``llava_next_34b``            LlavaNext (llava-v1.6-34b-hf)               CLIP 56 px, 8 x 8   chatml
``llava``                     Llava (llava-1.5-7b-hf)                     CLIP 56 px, 8 x 8   vicuna
``llava_onevision``           LlavaOnevision (llava-onevision-qwen2-*)    SigLIP 63 px, 9x9   qwen2
============================  ==========================================  ==================  =======

The OneVision grid is 9 x 9 (the real one is 27 x 27), so GAPool cells of 2 x 2 do not
divide it. Its language model is a Qwen2 (attention biases, as the real one), the others
a Llama with grouped-query attention.
"""

from __future__ import annotations

from typing import Any

import torch

from .errors import MLBError
from .models import VideoLLM

# family -> prompt family (mlb_core.prompts)
TINY_FAMILIES: dict[str, str] = {
    "llava_next": "smollm2",
    "llava_next_vicuna": "vicuna",
    "llava_next_34b": "chatml",
    "llava": "vicuna",
    "llava_onevision": "qwen2",
}

_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=49152, max_position_embeddings=2048,
             bos_token_id=1, eos_token_id=2, pad_token_id=2)
_CLIP = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
             image_size=56, patch_size=7, projection_dim=16)
_PINPOINTS = [[56, 112], [112, 56]]
# SigLIP at 63 px, patch 7 -> 9 x 9 (real: 384 px, patch 14 -> 27 x 27); no CLS token.
_SIGLIP = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
               image_size=63, patch_size=7, vision_use_head=False)
_OV_PINPOINTS = [[63, 63], [63, 126], [126, 63], [126, 126]]


def tiny_text_config(**overrides: Any):
    """A 4-layer, hidden-32 GQA Llama config (vocabulary of the SmolLM2 tokenizer)."""
    from transformers import LlamaConfig

    return LlamaConfig(**{**_TEXT, **overrides})


def tiny_qwen2_config(**overrides: Any):
    """The Qwen2 counterpart of :func:`tiny_text_config` (LLaVA-OneVision's language model)."""
    from transformers import Qwen2Config

    return Qwen2Config(**{**_TEXT, "use_sliding_window": False, **overrides})


def _set_attn(config: Any, attn_implementation: str) -> None:
    for cfg in (config, config.text_config, config.vision_config):
        cfg._attn_implementation = attn_implementation


def build_tiny_model(
    family: str = "llava_next", seed: int = 0, attn_implementation: str = "sdpa",
    prompt_family: str | None = None, **text_overrides: Any,
) -> VideoLLM:
    """A random tiny model of ``family`` (see the module table). Deterministic for a given
    ``seed``; ``prompt_family`` overrides the family's prompt template; ``text_overrides``
    go to the language model's config.

    The default (``llava_next``) is a LLaVA-NeXT with a 4-layer GQA Llama (hidden 32) and a
    CLIP vision tower at 56 px, patch 7 -> an 8 x 8 token grid.
    """
    from .embedded import load_tokenizer

    if family not in TINY_FAMILIES:
        raise MLBError(f"no tiny model for family {family!r}; choose one of {', '.join(TINY_FAMILIES)}")
    torch.manual_seed(seed)
    if family.startswith("llava_next"):
        model, processor = _tiny_llava_next(attn_implementation, text_overrides)
    elif family == "llava":
        model, processor = _tiny_llava(attn_implementation, text_overrides)
    else:
        model, processor = _tiny_onevision(attn_implementation, text_overrides)
    model.eval().requires_grad_(False)
    name = f"tiny-{family.replace('_', '-')}-seed{seed}"
    return VideoLLM(model, load_tokenizer(), processor, prompt_family or TINY_FAMILIES[family], name)


def _tiny_llava_next(attn_implementation: str, text_overrides: dict[str, Any]) -> tuple[Any, Any]:
    from transformers import (
        CLIPVisionConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessorPil,
    )

    config = LlavaNextConfig(text_config=tiny_text_config(**text_overrides),
                             vision_config=CLIPVisionConfig(**_CLIP),
                             image_grid_pinpoints=_PINPOINTS, image_token_index=0)
    _set_attn(config, attn_implementation)
    processor = LlavaNextImageProcessorPil(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56},
                                           image_grid_pinpoints=_PINPOINTS)
    return LlavaNextForConditionalGeneration(config), processor


def _tiny_llava(attn_implementation: str, text_overrides: dict[str, Any]) -> tuple[Any, Any]:
    """LLaVA-1.5: one base-resolution image (resize + centre crop), CLS dropped, no any-res."""
    from transformers import CLIPImageProcessorPil, CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration

    config = LlavaConfig(text_config=tiny_text_config(**text_overrides), vision_config=CLIPVisionConfig(**_CLIP),
                         image_token_index=0)
    _set_attn(config, attn_implementation)
    processor = CLIPImageProcessorPil(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56})
    return LlavaForConditionalGeneration(config), processor


def _tiny_onevision(attn_implementation: str, text_overrides: dict[str, Any]) -> tuple[Any, Any]:
    """LLaVA-OneVision: SigLIP (no CLS, ``full`` feature strategy), Qwen2, anyres_max_9."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessorPil,
        SiglipVisionConfig,
    )

    config = LlavaOnevisionConfig(text_config=tiny_qwen2_config(**text_overrides),
                                  vision_config=SiglipVisionConfig(**_SIGLIP),
                                  image_grid_pinpoints=_OV_PINPOINTS, image_token_index=0, video_token_index=3,
                                  vision_feature_select_strategy="full", vision_feature_layer=-1)
    _set_attn(config, attn_implementation)
    processor = LlavaOnevisionImageProcessorPil(size={"height": 63, "width": 63},
                                                image_grid_pinpoints=_OV_PINPOINTS)
    return LlavaOnevisionForConditionalGeneration(config), processor
