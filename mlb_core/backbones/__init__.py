"""Backbones: the one adapter over stock transformers LLaVA classes, checkpoint loading, prompt
templates, the embedded default and tiny test models (docs/architecture.md, "Wings")."""

from mlb_core.backbones.adapter import VideoLLM, infer_family
from mlb_core.backbones.loading import default_device, load_model
from mlb_core.backbones.prompts import Prompt, render_prompt

__all__ = ["Prompt", "VideoLLM", "default_device", "infer_family", "load_model", "render_prompt"]
