"""Parameters of the reproducible study (``dvc.yaml``, ``params.yaml``, notebooks).

- :func:`params_from_yaml` builds an :class:`~mlb_core.config.MLBParams` from one section
  of ``params.yaml`` (its ``preset`` plus any MLBParams field it names); the notebooks
  build theirs from the papermill parameters with :func:`mlb_params`.
- Paper mode (README, "The study"): ``params-paper.yaml`` overlays ``params.yaml`` with
  the paper's setting; ``mlb study paper`` runs ``dvc exp run -S key=value ...`` with it
  (``--dry`` prints the plan), ``mlb study check`` validates both files.

Logic of the figures and tables lives in :mod:`mlb_core.study.analysis`, plotting in
:mod:`mlb_core.study.plots`.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlb_core.config import MLBParams, get_preset
from mlb_core.errors import MLBError
from mlb_core.parsing import GRID_FIELDS, load_yaml, parse_grid, parse_overrides, split_list  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
PARAMS = "params.yaml"
PAPER_PARAMS = "params-paper.yaml"
FIELDS = {f.name for f in dataclasses.fields(MLBParams)} - {"extra"}


# ---- params.yaml -> MLBParams -------------------------------------------------------------
# (study.py does not import mlb_core.study.analysis, so that the evaluation stages, which run this
# module, do not rerun when only the tables' or figures' code changes.)
def mlb_params(preset: str = "mlb", **fields: Any) -> MLBParams:
    """``preset`` with every MLBParams field in ``fields`` applied (``None`` = keep the
    preset's value; grids may be ``"3x3"`` strings); other keys are ignored."""
    changes = {k: v for k, v in fields.items() if k in FIELDS and v is not None}
    for name in GRID_FIELDS:
        if name in changes:
            changes[name] = parse_grid(changes[name])
    if "budget" in changes and changes["budget"] in ("null", "none", 0):
        changes["budget"] = None
    return get_preset(preset, **changes)


def params_from_yaml(source: str | Path | Mapping[str, Any], section: str | None = None) -> MLBParams:
    """The MLBParams of one ``params.yaml`` section.

    Args:
        source: the file, or the already-loaded mapping (whole file or one section).
        section: the section's name (``fig1``, ``fig4``, ...); ``None`` when ``source`` is
            the section itself.

    The section's ``preset`` key (default ``mlb``) gives the defaults of the code
    (:data:`mlb_core.config.PRESETS`); every key that names an MLBParams field overrides
    it and is validated; other keys belong to the stage (clip, question ...).
    """
    data = load_yaml(source) if isinstance(source, (str, Path)) else dict(source)
    if section is not None:
        if section not in data or not isinstance(data[section], Mapping):
            raise MLBError(f"params has no section {section!r}")
        data = dict(data[section])
    preset = str(data.pop("preset", "mlb"))
    return mlb_params(preset, **data)


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (the keys DVC's ``-S`` and ``params:`` use)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overlay``'s leaves replaced; an overlay key unknown to ``base`` is an
    error (a typo would otherwise be silently ignored by every stage)."""
    out = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in base.items()}
    for key, value in overlay.items():
        if key not in out:
            raise MLBError(f"the overlay sets {key!r}, which params.yaml does not have")
        if isinstance(value, Mapping):
            if not isinstance(out[key], Mapping):
                raise MLBError(f"the overlay makes {key!r} a section; params.yaml has a value")
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def mlb_sections(data: Mapping[str, Any]) -> list[str]:
    """Sections that hold MLBParams (they have a ``preset`` key)."""
    return [k for k, v in data.items() if isinstance(v, Mapping) and "preset" in v]


def check_params(data: Mapping[str, Any]) -> dict[str, MLBParams]:
    """Validate every MLBParams section of a loaded params file; returns them by name."""
    return {name: params_from_yaml(data, name) for name in mlb_sections(data)}


def paper_params(root: str | Path = ROOT) -> dict[str, Any]:
    """``params.yaml`` with ``params-paper.yaml`` applied, validated."""
    root = Path(root)
    merged = merge(load_yaml(root / PARAMS), load_yaml(root / PAPER_PARAMS))
    check_params(merged)
    return merged


def set_param_args(overlay: Mapping[str, Any]) -> list[str]:
    """``dvc exp run`` arguments ``-S key=value`` for every leaf of ``overlay``. DVC reads
    ``-S`` values with Hydra's override grammar, where ``a,b`` is a sweep: strings are
    therefore single-quoted (``'a,b'`` is one string); numbers and booleans stay bare."""
    args: list[str] = []
    for key, value in flatten(overlay).items():
        if isinstance(value, str):
            text = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
        elif value is None:
            text = "null"
        elif isinstance(value, bool):
            text = str(value).lower()
        elif isinstance(value, (int, float)):
            text = repr(value)
        else:
            raise MLBError(f"{key}: paper-mode values must be strings or numbers, got {value!r}")
        args += ["-S", f"{key}={text}"]
    return args


# ---- stage dependencies -------------------------------------------------------------------
def run_paper(root: str | Path = ROOT, dry: bool = False) -> int:
    """Paper mode: ``dvc exp run -S <every key of params-paper.yaml>`` (``--dry``: the plan only)."""
    root = Path(root)
    paper_params(root)  # validate before handing over to DVC
    cmd = [sys.executable, "-m", "dvc", "exp", "run", *set_param_args(load_yaml(root / PAPER_PARAMS))]
    if dry:
        cmd.append("--dry")
    print("$ " + " ".join(cmd), file=sys.stderr)
    return subprocess.call(cmd, cwd=root)


def check_study(root: str | Path = ROOT) -> dict[str, MLBParams]:
    """Validate ``params.yaml`` and ``params.yaml`` + ``params-paper.yaml``; the parameters of
    every section, labelled ``default <section>`` and ``paper <section>``."""
    root = Path(root)
    base = check_params(load_yaml(root / PARAMS))
    paper = check_params(paper_params(root))
    return {**{f"default {k}": v for k, v in base.items()}, **{f"paper {k}": v for k, v in paper.items()}}
