"""Loading a checkpoint as a :class:`~mlb_core.backbones.adapter.VideoLLM`: the embedded
default, a local folder, a hub id, or a tiny test model (docs/architecture.md, "Backbones")."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from mlb_core.backbones.adapter import VideoLLM, infer_family
from mlb_core.backbones.prompts import FAMILIES, PROMPT_STYLES, resolve_family
from mlb_core.errors import MLBError


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def split_prompt(name: str, family: str | None = None) -> tuple[str, str | None]:
    """``"model@setting"`` -> ``("model", "setting")``; a name without a known setting after
    its last ``@`` is returned whole. A setting in the name and a different ``family`` clash."""
    head, sep, tail = name.rpartition("@")
    if not sep or tail not in (*PROMPT_STYLES, *FAMILIES):
        return name, family
    if family not in (None, tail):
        raise MLBError(f"model {name!r} names the prompt {tail!r} but {family!r} was also asked for")
    return head, tail


def load_model(
    name: str = "embedded",
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    family: str | None = None,
    attn_implementation: str = "sdpa",
) -> VideoLLM:
    """Load a LLaVA checkpoint as a :class:`VideoLLM`.

    Args:
        name: ``embedded`` (built on first use, see :mod:`mlb_core.backbones.embedded`), a local
            checkpoint folder, or a hub id such as ``llava-hf/llava-v1.6-vicuna-7b-hf``
            (downloaded by ``huggingface_hub`` on a machine with network; set
            ``HF_HUB_OFFLINE=1`` to use only the local cache), or ``tiny:<family>`` (a seeded
            random test model of :mod:`mlb_core.backbones.tiny`, e.g. ``tiny:llava_onevision``).
            A suffix ``@<prompt setting>`` chooses the prompt (``family``) in the name itself,
            e.g. ``llava-hf/llava-v1.6-vicuna-7b-hf@sf-llava``: evaluation folders and record
            fingerprints are keyed by the whole name, so two prompt settings never mix.
        device: default CUDA if available, else CPU.
        dtype: default bfloat16 on GPU, float32 on CPU (CPU bf16 matmuls are slow).
        family: the prompt setting: a prompt family, or ``native`` (the default: the family
            inferred from ``name`` and the config), or ``sf-llava`` (SF-LLaVA's prompts in the
            variant for the inferred family, e.g. ``sf-llava-vicuna`` for a Vicuna checkpoint);
            see :func:`~mlb_core.backbones.prompts.resolve_family` and docs/prompts.md.
    """
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

    label = name
    name, family = split_prompt(name, family)
    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    if name.startswith("tiny:"):  # tiny:<family>: a random test model (mlb_core.backbones.tiny), for CLI tests
        from mlb_core.backbones.tiny import build_tiny_model

        vlm = build_tiny_model(name.split(":", 1)[1], attn_implementation=attn_implementation)
        vlm.model.to(device=device, dtype=dtype)
        vlm.family = resolve_family(family or "native", vlm.family)
        vlm.name = label
        return vlm
    if name == "embedded":
        from mlb_core.backbones.embedded import ensure_embedded

        path = str(ensure_embedded())
    else:
        path = name
    is_local = Path(path).is_dir()
    if not is_local and (Path(path).exists() or path.startswith((".", "/", "~"))):
        raise MLBError(f"model folder not found: {path}")
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        why = "the hub is not reachable (offline)" if offline else str(exc).splitlines()[0]
        raise MLBError(f"cannot load model {name!r}: not a local checkpoint folder and {why}") from None
    if config.model_type not in ("llava", "llava_next", "llava_onevision"):
        raise MLBError(f"model {name!r} is a {config.model_type!r}, not a LLaVA image LLM")
    chosen = resolve_family(family or "native", infer_family(name, config))  # before the weights load
    model = AutoModelForImageTextToText.from_pretrained(
        path, dtype=dtype, attn_implementation=attn_implementation,
        # "cuda:k" (one data-parallel rank) keeps the whole model on GPU k; plain "cuda" spreads it
        device_map=(({"": str(device)} if device.index is not None else "auto")
                    if device.type == "cuda" else None),
    )
    if device.type != "cuda":
        model.to(device)
    model.eval().requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(path)
    image_processor = AutoImageProcessor.from_pretrained(path, backend="pil")
    return VideoLLM(model, tokenizer, image_processor, chosen, label)
