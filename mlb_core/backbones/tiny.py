"""Tiny, config-built, seeded random models of the stock LLaVA classes, for fast tests
(as transformers' own ``ModelTester`` does). Built in memory in well under a second; the
tokenizer is the embedded default's (SmolLM2), extracted once from the shipped GGUF file.

One tiny model per backbone family of the study (docs/architecture.md, "Backbones"); each has the
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

The 34B's Llama shares one KV head among 4 query heads (Yi-34B: 7 per head). The
OneVision grid is 9 x 9 (the real one is 27 x 27), so GAPool cells of 2 x 2 do not
divide it. Its language model is a Qwen2 (attention biases, as the real one), the others
a Llama with grouped-query attention.
"""

from __future__ import annotations

from typing import Any

import torch

from mlb_core.backbones.adapter import VideoLLM
from mlb_core.errors import MLBError

# family -> prompt family (mlb_core.backbones.prompts)
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
# SigLIP at 63 px, patch 7 -> 9 x 9 (real: 384 px, patch 14 -> 27 x 27); no CLS token.
_SIGLIP = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
               image_size=63, patch_size=7, vision_use_head=False)


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
    prompt_family: str | None = None, vision_overrides: dict[str, Any] | None = None,
    image_grid_pinpoints: list[list[int]] | None = None, **text_overrides: Any,
) -> VideoLLM:
    """A random tiny model of ``family`` (see the module table). Deterministic for a given
    ``seed``; ``prompt_family`` overrides the family's prompt template; ``text_overrides``
    go to the language model's config, ``vision_overrides`` to the vision tower's (e.g.
    ``dict(image_size=336, patch_size=14)`` for the real 24 x 24 grid; the image processor
    follows its ``image_size``), ``image_grid_pinpoints`` replace the any-res resolutions
    (default: base x 2base and 2base x base; OneVision also base x base and 2base x 2base).

    The default (``llava_next``) is a LLaVA-NeXT with a 4-layer GQA Llama (hidden 32) and a
    CLIP vision tower at 56 px, patch 7 -> an 8 x 8 token grid.
    """
    from mlb_core.backbones.embedded import load_tokenizer

    if family not in TINY_FAMILIES:
        raise MLBError(f"no tiny model for family {family!r}; choose one of {', '.join(TINY_FAMILIES)}")
    torch.manual_seed(seed)
    vision = {**(_SIGLIP if family == "llava_onevision" else _CLIP), **(vision_overrides or {})}
    s = vision["image_size"]
    if family == "llava_next_34b":  # Yi-34B: 7 query heads per KV head; here 4 per 1
        text_overrides = {"num_key_value_heads": 1, **text_overrides}
    if family.startswith("llava_next"):
        pinpoints = image_grid_pinpoints or [[s, 2 * s], [2 * s, s]]
        model, processor = _tiny_llava_next(attn_implementation, text_overrides, vision, pinpoints)
    elif family == "llava":
        model, processor = _tiny_llava(attn_implementation, text_overrides, vision)
    else:
        pinpoints = image_grid_pinpoints or [[s, s], [s, 2 * s], [2 * s, s], [2 * s, 2 * s]]
        model, processor = _tiny_onevision(attn_implementation, text_overrides, vision, pinpoints)
    model.eval().requires_grad_(False)
    name = f"tiny-{family.replace('_', '-')}-seed{seed}"
    return VideoLLM(model, load_tokenizer(), processor, prompt_family or TINY_FAMILIES[family], name)


def _tiny_llava_next(attn_implementation: str, text_overrides: dict[str, Any], vision: dict[str, Any],
                     pinpoints: list[list[int]]) -> tuple[Any, Any]:
    from transformers import (
        CLIPVisionConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessorPil,
    )

    config = LlavaNextConfig(text_config=tiny_text_config(**text_overrides),
                             vision_config=CLIPVisionConfig(**vision),
                             image_grid_pinpoints=pinpoints, image_token_index=0)
    _set_attn(config, attn_implementation)
    s = vision["image_size"]
    processor = LlavaNextImageProcessorPil(size={"shortest_edge": s}, crop_size={"height": s, "width": s},
                                           image_grid_pinpoints=pinpoints)
    return LlavaNextForConditionalGeneration(config), processor


def _tiny_llava(attn_implementation: str, text_overrides: dict[str, Any], vision: dict[str, Any]) -> tuple[Any, Any]:
    """LLaVA-1.5: one base-resolution image (resize + centre crop), CLS dropped, no any-res."""
    from transformers import CLIPImageProcessorPil, CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration

    config = LlavaConfig(text_config=tiny_text_config(**text_overrides), vision_config=CLIPVisionConfig(**vision),
                         image_token_index=0)
    _set_attn(config, attn_implementation)
    s = vision["image_size"]
    processor = CLIPImageProcessorPil(size={"shortest_edge": s}, crop_size={"height": s, "width": s})
    return LlavaForConditionalGeneration(config), processor


def _tiny_onevision(attn_implementation: str, text_overrides: dict[str, Any], vision: dict[str, Any],
                    pinpoints: list[list[int]]) -> tuple[Any, Any]:
    """LLaVA-OneVision: SigLIP (no CLS, ``full`` feature strategy), Qwen2, anyres_max_9."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessorPil,
        SiglipVisionConfig,
    )

    config = LlavaOnevisionConfig(text_config=tiny_qwen2_config(**text_overrides),
                                  vision_config=SiglipVisionConfig(**vision),
                                  image_grid_pinpoints=pinpoints, image_token_index=0, video_token_index=3,
                                  vision_feature_select_strategy="full", vision_feature_layer=-1)
    _set_attn(config, attn_implementation)
    s = vision["image_size"]
    processor = LlavaOnevisionImageProcessorPil(size={"height": s, "width": s}, image_grid_pinpoints=pinpoints)
    return LlavaOnevisionForConditionalGeneration(config), processor
