"""Thin entry points of the reproducible study (``dvc.yaml``, ``params.yaml``, notebooks).

- :func:`params_from_yaml` builds an :class:`~mlb_core.config.MLBParams` from one section
  of ``params.yaml`` (its ``preset`` plus any MLBParams field it names); the notebooks
  build theirs from the papermill parameters with :func:`mlb_params`.
- :func:`run_eval` runs models x benchmarks through the evaluation runner
  (:mod:`mlb_core.evaluate`) for the table and Fig. 4 stages;
  :func:`module_deps` lists the exact ``mlb_core`` modules a stage's code imports.
- Paper mode (README, "The study"): ``params-paper.yaml`` overlays ``params.yaml`` with
  the paper's setting; ``python -m mlb_core.study paper`` runs ``dvc exp run -S key=value
  ...`` with it (``--dry`` prints the plan), ``python -m mlb_core.study check`` validates
  both files.

Logic of the figures and tables lives in :mod:`mlb_core.analysis`, plotting in
:mod:`mlb_core.plots`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from .config import MLBParams, get_preset
from .errors import MLBError

ROOT = Path(__file__).resolve().parent.parent
PARAMS = "params.yaml"
PAPER_PARAMS = "params-paper.yaml"
FIELDS = {f.name for f in dataclasses.fields(MLBParams)} - {"extra"}
GRID_FIELDS = ("grid", "tail_grid")


# ---- params.yaml -> MLBParams -------------------------------------------------------------
# (study.py does not import mlb_core.analysis, so that the evaluation stages, which run this
# module, do not rerun when only the tables' or figures' code changes.)
def parse_grid(value: str | Sequence[int]) -> tuple[int, int]:
    """``"3x3"`` or ``[3, 3]`` -> ``(3, 3)`` (as :func:`mlb_core.analysis.parse_grid`)."""
    parts = value.lower().replace(" ", "").split("x") if isinstance(value, str) else list(value)
    try:
        gh, gw = (int(p) for p in parts)
    except (TypeError, ValueError):
        raise MLBError(f"a grid must look like 3x3, got {value!r}") from None
    return gh, gw


def split_list(text: str) -> list[str]:
    """``"a, b"`` -> ``["a", "b"]``: the study's list parameters are comma-separated strings."""
    out = [s.strip() for s in str(text).split(",") if s.strip()]
    if not out:
        raise MLBError(f"expected a comma-separated list, got {text!r}")
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping; a one-line :class:`MLBError` when it is missing or malformed."""
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
def _imports(source: str, package_file: str | None) -> set[str]:
    """``mlb_core`` modules imported anywhere in ``source`` (lazy imports included)."""
    import ast

    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "mlb_core" or a.name.startswith("mlb_core."):
                    found.add(a.name.split(".")[1] if "." in a.name else "__init__")
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level and package_file is not None:  # relative, inside mlb_core
                base = mod.split(".")[0] if mod else ""
            elif mod == "mlb_core" or mod.startswith("mlb_core."):
                base = mod.split(".")[1] if "." in mod else ""
            else:
                continue
            if base:
                found.add(base)
            else:  # from mlb_core import analysis, plots (modules or names of __init__)
                found.add("__init__")
                found.update(a.name for a in node.names)
    return found


def module_deps(files: Sequence[str | Path], root: str | Path = ROOT) -> list[str]:
    """Every ``mlb_core/*.py`` that ``files`` (notebooks or scripts) import, transitively,
    with ``mlb_core/__init__.py`` (run by any import): a stage's exact code deps."""
    import nbformat

    root = Path(root)
    pkg = root / "mlb_core"
    todo: set[str] = set()
    for f in files:
        f = Path(f)
        if f.suffix == ".ipynb":
            nb = nbformat.read(str(root / f), as_version=4)
            src = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        else:
            src = (root / f).read_text()
        todo |= _imports(src, str(f) if Path(f).parent.name == "mlb_core" else None)
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        path = pkg / f"{name}.py"
        if name in seen or not path.is_file():
            continue
        seen.add(name)
        todo |= _imports(path.read_text(), str(path))
    seen.add("__init__")
    return sorted(f"mlb_core/{n}.py" for n in seen)


# ---- command line -------------------------------------------------------------------------
def _run(cmd: list[str], cwd: str | Path) -> int:
    print("$ " + " ".join(cmd), file=sys.stderr)
    return subprocess.call(cmd, cwd=cwd)


def cmd_paper(args: argparse.Namespace) -> int:
    root = Path(args.root)
    paper_params(root)  # validate before handing over to DVC
    cmd = [sys.executable, "-m", "dvc", "exp", "run", *set_param_args(load_yaml(root / PAPER_PARAMS))]
    if args.dry:
        cmd.append("--dry")
    return _run(cmd, root)


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``["n_frames=10", "grid=2x2"]`` -> ``{"n_frames": 10, "grid": (2, 2)}`` (YAML values)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key.strip() not in FIELDS:
            raise MLBError(f"--set needs KEY=VALUE with an MLBParams field, got {pair!r}")
        v = yaml.safe_load(value)
        out[key.strip()] = parse_grid(v) if key.strip() in GRID_FIELDS else v
    return out


def run_eval(
    benchmarks: Sequence[str],
    data: str | Path,
    models: Sequence[str],
    methods: Sequence[str],
    preset: str,
    out: str | Path,
    overrides: Mapping[str, Any] | None = None,
    grids: Sequence[tuple[int, int]] | None = None,
    reference: Sequence[str] = (),
    limit: int | None = None,
    judge: str = "auto",
    judge_model: str | None = None,
    videos: str | Path | None = None,
    progress: bool = True,
    judge_base_url: str | None = None,
) -> list[dict[str, Any]]:
    """Every model x benchmark through :func:`mlb_core.evaluate.evaluate` (the resumable
    runner), the model loaded once per model. ``<data>/<benchmark>/`` holds each
    benchmark's annotation CSV and (default) its ``videos/``. ``grids`` sweeps the GAPool
    grid of ``methods``; ``reference`` methods (e.g. ``full``) run once, without the sweep.
    Returns the metrics of every run."""
    from .evaluate import evaluate
    from .judge import DEFAULT_BASE_URL, DEFAULT_JUDGE_MODEL
    from .models import load_model

    results: list[dict[str, Any]] = []
    for model in models:
        vlm = load_model(model)
        for bench in benchmarks:
            common = dict(data=Path(data) / bench, presets=[preset], model=model, out=out,
                          overrides=dict(overrides or {}), limit=limit, judge=judge,
                          judge_model=judge_model or DEFAULT_JUDGE_MODEL,
                          judge_base_url=judge_base_url or DEFAULT_BASE_URL, vlm=vlm, progress=progress,
                          videos=Path(videos) / bench if videos else None)
            results += evaluate(bench, methods=list(methods), grids=list(grids) if grids else None, **common)
            if reference:
                results += evaluate(bench, methods=list(reference), **common)
    return results


def cmd_eval(args: argparse.Namespace) -> int:
    grids = [parse_grid(g) for g in split_list(args.grids)] if args.grids else None
    run_eval(split_list(args.benchmarks), args.data, split_list(args.models), split_list(args.methods),
             args.preset, args.out, parse_overrides(args.set), grids,
             split_list(args.reference) if args.reference else (), args.limit or None, args.judge,
             args.judge_model, args.videos or None, not args.quiet, args.judge_base_url)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    root = Path(args.root)
    base = check_params(load_yaml(root / PARAMS))
    paper = check_params(paper_params(root))
    for name, params in {**{f"default {k}": v for k, v in base.items()},
                         **{f"paper {k}": v for k, v in paper.items()}}.items():
        print(f"{name}: {json.dumps(params.to_dict())}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mlb_core.study", description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(ROOT), help="the repository (params.yaml, dvc.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("paper", help="run the study in paper mode: dvc exp run -S <params-paper.yaml>")
    p.add_argument("--dry", action="store_true", help="only print the plan (dvc exp run --dry)")
    p.set_defaults(func=cmd_paper)
    c = sub.add_parser("check", help="validate params.yaml and params.yaml + params-paper.yaml")
    c.set_defaults(func=cmd_check)
    e = sub.add_parser("eval", help="models x benchmarks through the evaluation runner (a dvc stage)")
    e.add_argument("--benchmarks", required=True, help="comma list, e.g. synthetic or msvd-qa,next-qa")
    e.add_argument("--data", default="data", help="folder holding one sub-folder per benchmark")
    e.add_argument("--videos", default="", help="video root holding one sub-folder per benchmark "
                                                 "(default: <data>/<benchmark>/videos)")
    e.add_argument("--models", required=True, help="comma list: embedded, hub ids or folders")
    e.add_argument("--methods", required=True, help="comma list of methods")
    e.add_argument("--preset", default="cpu")
    e.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="MLBParams override")
    e.add_argument("--grids", default="", help="GAPool grids to sweep for --methods, e.g. 1x2,2x2")
    e.add_argument("--reference", default="", help="methods run once without the grid sweep (e.g. full)")
    e.add_argument("--limit", type=int, default=0, help="first N questions of each benchmark (0: all)")
    e.add_argument("--judge", default="auto", help="auto, chat, offline or none")
    e.add_argument("--judge-model", default=None, help="pinned judge model id (chat judge)")
    e.add_argument("--judge-base-url", default=None, help="OpenAI-compatible server root (chat judge)")
    e.add_argument("--out", required=True)
    e.add_argument("-q", "--quiet", action="store_true")
    e.set_defaults(func=cmd_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    import os
    import warnings

    args = build_parser().parse_args(argv)
    if not os.environ.get("MLB_DEBUG"):
        warnings.filterwarnings("ignore")
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    try:
        return args.func(args)
    except MLBError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["params_from_yaml", "mlb_params", "paper_params", "set_param_args", "run_eval", "module_deps", "main"]
