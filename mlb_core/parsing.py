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
    """``"3x3"`` or ``[3, 3]`` -> ``(3, 3)``; both sides positive integers.

    A bare number is refused: YAML reads ``grid: 0x3`` as the hexadecimal integer 3 (and
    ``3x3`` would be a string), so a number here is always a mistake."""
    if isinstance(value, bool) or isinstance(value, (int, float)):
        raise MLBError(f"a grid must look like 3x3, got the number {value!r} (YAML reads 0x3 as hexadecimal 3; "
                       "write grids as strings, e.g. '3x3')")
    try:
        parts = value.lower().replace(" ", "").split("x") if isinstance(value, str) else list(value)
        if len(parts) != 2 or any(isinstance(p, (bool, float)) for p in parts):
            raise ValueError
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
    """``["n_frames=10", "grid=2x2", "extra.fastv_r=0.75"]`` -> ``{"n_frames": 10, "grid": (2, 2),
    "extra": {"fastv_r": 0.75}}``; keys must be :class:`~mlb_core.config.MLBParams` fields, or
    ``extra.NAME`` for a method's own setting (``fastv_k``, ``fastv_r``, ``sf_slow_frames``,
    ``ts_sampled_tokens``: docs/method.md, "Baselines"; the method checks the value)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        head, dot, name = key.partition(".")
        if sep and head == "extra" and dot and name.isidentifier():
            out.setdefault("extra", {})[name] = parse_value(value)
            continue
        if not sep or key not in FIELDS:
            raise MLBError(f"--set needs KEY=VALUE with KEY one of {', '.join(sorted(FIELDS))} or extra.NAME; "
                           f"got {pair!r}")
        out[key] = parse_grid(str(value)) if key in GRID_FIELDS else parse_value(value)
    return out


def parse_device(text: str | None) -> str | None:
    """``cpu``, ``cuda``, ``cuda:1``, ``mps`` ... checked before any model is loaded: a
    one-line error for a name torch does not know or a device this machine lacks."""
    if text is None:
        return None
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise MLBError(f"unknown device {text!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise MLBError(f"--device {text}: no CUDA GPU is available on this machine; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise MLBError(f"--device {text}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise MLBError(f"--device {text}: MPS is not available on this machine")
    elif device.type != "cpu":
        raise MLBError(f"unsupported device {text!r}; use cpu, cuda or cuda:N")
    return text


def parse_options(text: str | None) -> list[str] | None:
    """Multiple-choice options separated by ``;``: at least two, none empty."""
    if text is None:
        return None
    options = [o.strip() for o in text.split(";")]
    if len(options) < 2 or any(not o for o in options):
        raise MLBError(f"--options needs two or more non-empty options separated by ';', got {text!r}")
    return options


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
