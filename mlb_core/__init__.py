"""mlb_core: the LLaVA-MLB pipeline (arXiv 2503.11205) on stock Hugging Face LLaVA models.

SegAttn (two-stage, attention-guided token selection), GAPool (gridded attention pooling)
and VSTail (a visual summary at the sequence's tail) for a frozen Image LLM.

The Python API (docs/api.md)::

    import mlb_core as mlb

    vlm = mlb.load_model("embedded")                      # or a hub id, a folder, tiny:<family>
    video = mlb.encode_video(vlm, "bigbuckbunny.mp4", 20)  # decode + encode once
    mlb.answer(vlm, video, "What animal appears?", "mlb", mlb.get_preset("cpu")).text

``load_model``, ``encode_video``, ``answer``, ``evaluate``, ``run_eval``, ``summarize`` and
``METHODS`` are loaded on first use (module ``__getattr__``), so ``import mlb_core`` stays as
cheap as the paper-term functions it imports eagerly.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mlb_core.config import PRESETS, MLBParams, get_preset
from mlb_core.errors import MLBError
from mlb_core.logs import setup_logging
from mlb_core.selection.attention import last_query_attention
from mlb_core.selection.gapool import gapool, vstail
from mlb_core.selection.segattn import segattn, stage_one

if TYPE_CHECKING:  # what the lazy names are, for type checkers and editors
    from mlb_core.backbones.adapter import VideoLLM
    from mlb_core.backbones.loading import load_model
    from mlb_core.evaluation.runner import evaluate, run_eval, summarize
    from mlb_core.methods import METHODS
    from mlb_core.pipeline import Answer, VideoFeatures, answer, encode_video

# public name -> module that defines it, imported on first access
_LAZY: dict[str, str] = {
    "load_model": "mlb_core.backbones.loading",
    "VideoLLM": "mlb_core.backbones.adapter",
    "encode_video": "mlb_core.pipeline",
    "answer": "mlb_core.pipeline",
    "VideoFeatures": "mlb_core.pipeline",
    "Answer": "mlb_core.pipeline",
    "METHODS": "mlb_core.methods",
    "evaluate": "mlb_core.evaluation.runner",
    "run_eval": "mlb_core.evaluation.runner",
    "summarize": "mlb_core.evaluation.runner",
}

__all__ = [
    # eager: parameters and the paper's terms (cheap beside torch, which they need anyway)
    "MLBParams", "PRESETS", "get_preset", "MLBError", "gapool", "vstail", "segattn", "stage_one",
    "last_query_attention", "setup_logging",
    # lazy (_LAZY): models, the pipeline, the methods, evaluation
    "load_model", "VideoLLM", "encode_video", "answer", "VideoFeatures", "Answer", "METHODS",
    "evaluate", "run_eval", "summarize",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """Import a lazy public name's module on first access and cache the value here."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mlb_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
