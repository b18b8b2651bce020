"""``mlb train-vision`` and ``mlb heldout``: train the embedded default's vision side, export the
trained tensors into the committed folder, and measure what the model sees (docs/architecture.md,
"Backbones")."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from mlb_core.backbones import vision_weights


def train_and_export(out: str | Path = vision_weights.WEIGHTS_DIR, seed: int = 0, minutes: float = 28.0,
                     threads: int = 2) -> dict[str, Any]:
    """Train from the seeded random vision side (the frozen LM is the real SmolLM2) and write
    the trained tower + projector, the model card and the training log to ``out``."""
    from mlb_core.backbones.embedded import ensure_embedded
    from mlb_core.train.vision import load_checkpoint, train_vision

    source = ensure_embedded(trained=False)
    work = Path(tempfile.mkdtemp(prefix="mlb-train-"))
    try:
        summary = train_vision(work / "checkpoint", seed=seed, minutes_budget=minutes, threads=threads, source=source)
        model, _, _ = load_checkpoint(work / "checkpoint")
        card = work / "checkpoint" / "MODEL_CARD.md"
        extra = {"training_log.json": json.dumps(summary, indent=1, default=str) + "\n"}
        if card.exists():
            extra["MODEL_CARD.md"] = card.read_text()
        vision_weights.export_vision(model, out, extra)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return summary
