"""Thin entry points of the reproducible study (``dvc.yaml``, ``params.yaml``, notebooks).

- :func:`params_from_yaml` builds an :class:`~mlb_core.config.MLBParams` from one section
  of ``params.yaml`` (its ``preset`` plus any MLBParams field it names); the notebooks
  build theirs from the papermill parameters with :func:`mlb_params`.
- :func:`attention_scores` and :func:`attention_bias_maps` compute the stage-one maps
  behind Fig. 1 and Fig. 2 (paper) on any :class:`~mlb_core.models.VideoLLM`.
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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from .analysis import CONDITIONS, frame_order, parse_grid, split_list
from .config import MLBParams, get_preset
from .errors import MLBError

ROOT = Path(__file__).resolve().parent.parent
PARAMS = "params.yaml"
PAPER_PARAMS = "params-paper.yaml"
FIELDS = {f.name for f in dataclasses.fields(MLBParams)} - {"extra"}
GRID_FIELDS = ("grid", "tail_grid")


# ---- params.yaml -> MLBParams -------------------------------------------------------------
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
    return mlb_params(str(data.get("preset", "mlb")), **data)


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
    """``dvc exp run`` arguments ``-S key=value`` for every leaf of ``overlay`` (values as
    flow-style YAML, which DVC parses back)."""
    args: list[str] = []
    for key, value in flatten(overlay).items():
        text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
        text = text.removesuffix("\n...").removesuffix("...").strip()
        args += ["-S", f"{key}={text}"]
    return args


# ---- Fig. 1 and Fig. 2: stage-one attention maps ------------------------------------------
def attention_scores(vlm: Any, tokens: torch.Tensor, question: str, score_layer: int) -> np.ndarray:
    """Last-query attention at ``score_layer`` over the visual tokens of *one* input of T
    frames (T, h, w, D), as in paper Fig. 1/2 -> (T, h, w) float32 (the visual part of the
    softmax over the whole prompt; it sums to less than 1)."""
    from .prompts import render_prompt
    from .segattn import stage_one

    t = tokens.shape[0]
    params = MLBParams(n_frames=t, segment_frames=t, score_layer=score_layer)
    prompt = render_prompt(vlm.family, question)
    return stage_one(vlm, tokens, prompt, params).float().numpy()


def attention_bias_maps(
    vlm: Any,
    videos: Sequence[str | Path],
    questions: Sequence[str],
    n_frames: int = 5,
    windows: int = 1,
    score_layer: int = 2,
    repeat_frame: int | None = None,
    conditions: Sequence[str] = CONDITIONS,
    progress: bool = True,
    loader: Callable[[str | Path, int], np.ndarray] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[str]]:
    """Stage-one maps of every input under every condition of paper Fig. 2.

    Each video gives ``windows`` inputs of ``n_frames`` consecutive frames among
    ``windows * n_frames`` uniformly sampled ones; every input is asked every question.
    ``in_order`` feeds the frames as sampled, ``reversed`` backwards, ``repeated`` one frame
    (``repeat_frame``, default the middle one) ``n_frames`` times.

    Returns:
        ``(maps, orders, labels)``: maps[condition] is (N, n_frames, h, w) float32 with
        N = len(videos) * windows * len(questions); orders[condition] (n_frames,) the frame
        shown at each position; labels the N inputs (``video#window|question``).
    """
    from tqdm.auto import tqdm

    from .video import load_video

    load = loader or (lambda v, n: load_video(v, n)[0])
    orders = {c: frame_order(c, n_frames, repeat_frame) for c in conditions}
    maps: dict[str, list[np.ndarray]] = {c: [] for c in conditions}
    labels: list[str] = []
    total = len(videos) * windows * len(questions) * len(conditions)
    bar = tqdm(total=total, desc="stage one", disable=not progress)
    for video in videos:
        frames = load(video, windows * n_frames)  # (W*n, H, W, 3)
        tokens = vlm.encode_frames(frames)  # (W*n, h, w, D)
        for win in range(windows):
            seg = tokens[win * n_frames:(win + 1) * n_frames]  # (n, h, w, D)
            for q in questions:
                labels.append(f"{Path(str(video)).name}#{win + 1}|{q}")
                for c in conditions:
                    order = torch.as_tensor(orders[c])
                    maps[c].append(attention_scores(vlm, seg[order], q, score_layer))
                    bar.update()
    bar.close()
    return {c: np.stack(m) for c, m in maps.items()}, orders, labels


def benchmark_inputs(benchmark: str, data: str | Path, videos: str | Path | None,
                     limit: int) -> tuple[list[Path], list[str]]:
    """Paper mode of Fig. 2: the first ``limit`` questions of a benchmark (e.g. ANet-QA),
    as ``(video paths, questions)`` pairs (one question per video)."""
    from .benchmarks import default_video_root, load_benchmark, resolve_videos

    items = load_benchmark(benchmark, data, limit=limit)
    found, _ = resolve_videos(items, videos or default_video_root(benchmark, data))
    return [found[it.video] for it in items], [it.question for it in items]


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
        todo |= _imports(src, None)
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
def _run(cmd: list[str]) -> int:
    print("$ " + " ".join(cmd), file=sys.stderr)
    return subprocess.call(cmd, cwd=ROOT)


def cmd_paper(args: argparse.Namespace) -> int:
    root = Path(args.root)
    paper_params(root)  # validate before handing over to DVC
    cmd = [sys.executable, "-m", "dvc", "exp", "run", *set_param_args(load_yaml(root / PAPER_PARAMS))]
    if args.dry:
        cmd.append("--dry")
    return _run(cmd)


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except MLBError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["params_from_yaml", "mlb_params", "attention_scores", "attention_bias_maps", "paper_params",
           "set_param_args", "split_list", "main"]
