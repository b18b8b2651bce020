"""One parser per kind of value the command line and ``params.yaml`` carry.

Every function raises :class:`~mlb_core.errors.MLBError` with a one-line message, so the
command line reports ``error: ...`` and never a traceback.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from mlb_core.config import MLBParams
from mlb_core.errors import MLBError

FIELDS = {f.name for f in dataclasses.fields(MLBParams)} - {"extra"}
GRID_FIELDS = ("grid", "tail_grid")


def parse_grid(value: str | Sequence[int]) -> tuple[int, int]:
    """``"3x3"`` or ``[3, 3]`` -> ``(3, 3)``; both sides positive integers."""
    parts = value.lower().replace(" ", "").split("x") if isinstance(value, str) else list(value)
    try:
        gh, gw = (int(p) for p in parts)
    except (TypeError, ValueError):
        raise MLBError(f"a grid must look like 3x3, got {value!r}") from None
    if gh < 1 or gw < 1:
        raise MLBError(f"a grid needs positive sides, got {value!r}")
    return gh, gw


def split_list(text: str | Sequence[str], sep: str = ",") -> list[str]:
    """``"a, b"`` -> ``["a", "b"]``: list values are ``sep``-separated strings (DVC passes scalars)."""
    items = text.split(sep) if isinstance(text, str) else [str(t) for t in text]
    out = [s.strip() for s in items if s.strip()]
    if not out:
        raise MLBError(f"expected a {sep!r}-separated list, got {text!r}")
    return out


def parse_value(text: str) -> Any:
    """A ``KEY=VALUE`` value: read as YAML (numbers, lists, null); ``3x3`` stays a string."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``["n_frames=10", "grid=2x2"]`` -> ``{"n_frames": 10, "grid": (2, 2)}``; keys must be
    :class:`~mlb_core.config.MLBParams` fields."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or key not in FIELDS:
            raise MLBError(f"--set needs KEY=VALUE with KEY one of {', '.join(sorted(FIELDS))}; got {pair!r}")
        out[key] = parse_grid(str(value)) if key in GRID_FIELDS else parse_value(value)
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping; a one-line error when it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise MLBError(f"parameter file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise MLBError(f"{path.name}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise MLBError(f"{path.name}: expected a mapping of sections")
    return data
