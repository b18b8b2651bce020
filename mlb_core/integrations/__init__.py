"""Integrations with other tools' plug-in mechanisms (optional extras; docs/lmms-eval.md).

``lmms_eval_models`` is the target of this package's ``lmms_eval.models`` entry point
(``pyproject.toml``, ``[project.entry-points."lmms_eval.models"]``): lmms-eval (>= 0.7) reads
that group when it builds its model registry, so ``lmms-eval --model llava_mlb`` finds
:class:`~mlb_core.integrations.lmms_eval_model.LlavaMLB` once ``mlb-core`` is installed in the
same environment, with no import hook and no environment variable. Nothing here imports
lmms-eval until lmms-eval itself asks.
"""

from __future__ import annotations

from typing import Any

LMMS_EVAL_MODEL = "llava_mlb"
LMMS_EVAL_CLASS = "mlb_core.integrations.lmms_eval_model.LlavaMLB"


def lmms_eval_models() -> list[Any]:
    """The model manifests lmms-eval registers from this package: ``llava_mlb``."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id=LMMS_EVAL_MODEL, simple_class_path=LMMS_EVAL_CLASS)]
