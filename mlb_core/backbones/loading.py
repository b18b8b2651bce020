"""Loading a checkpoint as a :class:`~mlb_core.backbones.adapter.VideoLLM`: the embedded
default, a local folder, a hub id, or a tiny test model (docs/architecture.md, "Backbones")."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from mlb_core.backbones.adapter import VideoLLM, infer_family
from mlb_core.backbones.prompts import FAMILIES, PROMPT_STYLES, resolve_family
from mlb_core.errors import MLBError

logger = logging.getLogger(__name__)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def warn_cpu_load(name: str, device: torch.device, dtype: torch.dtype) -> bool:
    """One warning line when a real checkpoint (a hub id or a local folder; not ``embedded``, not
    ``tiny:``) is about to load on the CPU, where it runs in float32 and is slow (README, "Real
    checkpoints (GPU)"; docs/api.md, "Logging and warnings"). Says why there is no GPU: a
    CPU-only torch build, CUDA not usable (no GPU, an old driver), or ``device="cpu"`` asked.
    Returns whether it warned."""
    if device.type != "cpu" or name == "embedded" or name.startswith("tiny:"):
        return False
    if torch.cuda.is_available():
        why = "as asked"
    elif torch.version.cuda is None:
        why = "this torch build has no CUDA"
    else:
        why = "CUDA is not usable here (no GPU, or an NVIDIA driver too old for this torch)"
    precision = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype))
    logger.warning("loading %s on the CPU (%s): it runs in %s there and will be slow", name, why, precision)
    return True


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
        name: ``embedded`` (built on first use, see :mod:`mlb_core.backbones.embedded`; or
            ``embedded:<folder>``, the same with the vision side of a weights folder that
            ``mlb train-vision --out`` wrote, to evaluate a candidate recipe), a local
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
        if label != name:  # a prompt setting in the name: keep it in the model's name
            vlm.name = f"{vlm.name}@{family}"
        return vlm
    if name == "embedded" or name.startswith("embedded:"):  # embedded:<folder>: another trained vision side
        from mlb_core.backbones.embedded import ensure_embedded

        path = str(ensure_embedded(weights=name.split(":", 1)[1] if ":" in name else None))
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
    warn_cpu_load(name, device, dtype)
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
