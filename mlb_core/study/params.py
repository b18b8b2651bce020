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
import re
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


# ---- the whole file: known keys, method names, grids, counts --------------------------------------
_STAGE_KEYS: dict[str, set[str]] = {  # each section's own keys; sections with a preset also take FIELDS
    "fig1": {"preset", "clip", "question", "top_fraction"},
    "fig2": {"preset", "source", "clips", "questions", "windows", "repeat_frame", "data", "limit"},
    "synth": {"n_videos", "n_frames", "seed"},
    "eval": {"preset", "benchmarks", "data", "models", "methods", "limit", "judge", "judge_model",
             "judge_base_url"},
    "fig4": {"preset", "benchmark", "grids", "method", "reference", "limit", "task", "metric", "judge",
             "judge_model"},
    "bench": {"preset", "parts", "repeats", "questions", "video", "methods", "threads"},
    "tables": {"digits", "specs"},
    "probe": {"preset", "n_frames", "segment_frames", "sizes", "orders", "forms", "repeats", "seed", "methods",
              "max_new_tokens", "mechanism"},
    "probe_control": {"repeats"},
    "probe_replication": {"seed", "repeats"},
    "probe_sweep": {"seed", "repeats"},
    "probe_paper": {"preset", "n_frames", "sizes", "orders", "repeats", "methods"},
    # train.recipe: a name of mlb_core.train.vision.RECIPES, checked by `mlb train-vision` before it
    # loads anything (the study wing does not import the training wing)
    "train": {"recipe", "seed", "minutes", "threads", "heldout_scale", "curve_scale", "redrawn_scale",
              "binding_scale", "sparse_scale"},
    "cost": {"grids", "sf_slow_frames", "fastv_r", "data"},
}
_COUNTS = {  # (section, key) -> the least value
    (None, "threads"): 0, (None, "notebook_threads"): 1, ("fig2", "windows"): 1, ("fig2", "limit"): 0,
    ("fig2", "repeat_frame"): 0,
    ("synth", "n_videos"): 1, ("synth", "n_frames"): 1, ("eval", "limit"): 0, ("fig4", "limit"): 0,
    ("bench", "repeats"): 1, ("bench", "questions"): 1, ("tables", "digits"): 0,
    ("probe", "repeats"): 1, ("probe", "n_frames"): 1, ("probe_control", "repeats"): 1,
    ("probe_replication", "repeats"): 1, ("probe_replication", "seed"): 0, ("probe_paper", "repeats"): 1,
    ("probe_sweep", "repeats"): 1, ("probe_sweep", "seed"): 0,
    ("probe_paper", "n_frames"): 1, ("train", "threads"): 1, ("bench", "threads"): 0,
}
# How the stages start `mlb eval`: one process; one per visible GPU (accelerate's default without a
# config file: every GPU, multi-GPU); or N CPU processes on one machine (torchrun sets RANK and
# WORLD_SIZE, the runner shards videos (or questions) and rank 0 merges; if a rank dies torchrun stops the rest).
LAUNCHERS = ("mlb", "accelerate launch -m mlb_core", "torchrun --standalone --nproc-per-node N -m mlb_core")


def launcher_ok(value: Any) -> bool:
    """Whether ``value`` is one of :data:`LAUNCHERS` (``N``: a positive process count)."""
    text = str(value)
    if text in LAUNCHERS[:2]:
        return True
    m = re.fullmatch(r"torchrun --standalone --nproc-per-node ([0-9]+) -m mlb_core", text)
    return bool(m) and int(m.group(1)) >= 1
_CHOICES = {("fig4", "task"): ("all", "open", "mc"), ("eval", "judge"): ("auto", "chat", "offline", "none"),
            ("fig4", "judge"): ("auto", "chat", "offline", "none")}


def _unknown_key(where: str, key: str, known: set[str]) -> MLBError:
    import difflib

    close = difflib.get_close_matches(key, sorted(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f"; known keys: {', '.join(sorted(known))}"
    return MLBError(f"{where}: unknown key {key!r}{hint}")


def check_sections(data: Mapping[str, Any], name: str = PARAMS) -> None:
    """Validate every value of a loaded params file that the stages read, so a typo fails in
    ``mlb study check`` and not hours into ``dvc repro``: known keys per section, method and
    benchmark names, grids (strings like ``3x3``), counts that must not be negative, choices."""
    from mlb_core.evaluation.benchmarks import BENCHMARKS, canonical_name
    from mlb_core.methods import METHODS

    def methods(where: str, value: Any) -> None:
        for m in split_list(str(value)) if value is not None else []:
            if m not in METHODS:
                raise MLBError(f"{name}: {where}: unknown method {m!r}; choose from {', '.join(sorted(METHODS))}")

    for (section, key), least in _COUNTS.items():
        holder = data if section is None else data.get(section)
        if isinstance(holder, Mapping) and key in holder:
            value = holder[key]
            where = key if section is None else f"{section}.{key}"
            if isinstance(value, bool) or not isinstance(value, int):
                raise MLBError(f"{name}: {where} must be an integer, got {value!r}")
            if value < least:
                raise MLBError(f"{name}: {where} must be >= {least}, got {value}")
    if not launcher_ok(data.get("launcher", "mlb")):
        raise MLBError(f"{name}: launcher must be one of {' | '.join(LAUNCHERS)}, got {data.get('launcher')!r}")
    for section, known in _STAGE_KEYS.items():
        body = data.get(section)
        if body is None:
            continue
        if not isinstance(body, Mapping):
            raise MLBError(f"{name}: {section} must be a section (a mapping), got {body!r}")
        allowed = known | (FIELDS if "preset" in known else set())
        for key in body:
            if key not in allowed:
                raise _unknown_key(f"{name}: {section}", str(key), allowed)
        for key, value in body.items():
            if (section, key) in _CHOICES and value not in _CHOICES[(section, key)]:
                raise MLBError(f"{name}: {section}.{key} must be one of {', '.join(_CHOICES[(section, key)])}, "
                               f"got {value!r}")
    for section, key in (("eval", "methods"), ("bench", "methods"), ("fig4", "method"), ("fig4", "reference"),
                         ("probe", "methods"), ("probe_paper", "methods")):
        if isinstance(data.get(section), Mapping) and key in data[section]:
            methods(f"{section}.{key}", data[section][key])
    for section, key in (("eval", "benchmarks"), ("fig4", "benchmark")):
        if isinstance(data.get(section), Mapping) and key in data[section]:
            for b in split_list(str(data[section][key])):
                try:
                    canonical_name(b)
                except MLBError:
                    raise MLBError(f"{name}: {section}.{key}: unknown benchmark {b!r}; choose from "
                                   f"{', '.join(BENCHMARKS)}") from None
    fig4 = data.get("fig4")
    if isinstance(fig4, Mapping) and "grids" in fig4:
        grids = fig4["grids"]
        if not isinstance(grids, str):
            raise MLBError(f"{name}: fig4.grids must be a comma-separated string like '2x2,3x3', got {grids!r} "
                           "(YAML reads 0x3 as a number)")
        try:
            for g in split_list(grids):
                parse_grid(g)
        except MLBError as exc:
            raise MLBError(f"{name}: fig4.grids: {exc}") from None
    if isinstance(data.get("cost"), Mapping):
        from mlb_core.study.cost import check_cost_section

        try:
            check_cost_section(data["cost"])
        except MLBError as exc:
            raise MLBError(f"{name}: {exc}") from None
    tables = data.get("tables")
    if isinstance(tables, Mapping) and tables.get("specs") is not None:
        specs = tables["specs"]
        if not isinstance(specs, Mapping):
            raise MLBError(f"{name}: tables.specs must be a mapping of tables")
        for table, spec in specs.items():
            if not isinstance(spec, Mapping):
                raise MLBError(f"{name}: tables.specs.{table} must be a mapping with source and methods")
            for key in spec:
                if key not in ("source", "methods"):
                    raise _unknown_key(f"{name}: tables.specs.{table}", str(key), {"source", "methods"})
            methods(f"tables.specs.{table}.methods", spec.get("methods"))


def paper_params(root: str | Path = ROOT) -> dict[str, Any]:
    """``params.yaml`` with ``params-paper.yaml`` applied, validated."""
    root = Path(root)
    merged = merge(load_yaml(root / PARAMS), load_yaml(root / PAPER_PARAMS))
    check_sections(merged, f"{PARAMS} + {PAPER_PARAMS}")
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
    data = load_yaml(root / PARAMS)
    check_sections(data)
    base = check_params(data)
    paper = check_params(paper_params(root))
    return {**{f"default {k}": v for k, v in base.items()}, **{f"paper {k}": v for k, v in paper.items()}}


def probe_paper_commands(data: dict[str, Any]) -> list[list[str]]:
    """The paper-scale probe (section ``probe_paper``, with ``probe``'s segment length, seed
    and answer length): ``mlb probe`` into ``data/probe_paper``, then ``mlb eval`` into
    ``results/eval/probe_paper`` (resumable). Hours on a CPU, so it is not a ``dvc repro``
    stage; ``mlb study probe-paper`` runs it."""
    p, pp = data["probe"], data["probe_paper"]
    launcher = str(data.get("launcher", "mlb")).split()
    make = ["mlb", "probe", "--out", "data/probe_paper", "--frames", str(pp["n_frames"]), "--segment-frames",
            str(p["segment_frames"]), "--sizes", str(pp["sizes"]), "--orders", str(pp["orders"]), "--forms", "open",
            "--repeats", str(pp["repeats"]), "--seed", str(p["seed"])]
    run = [*launcher, "eval", "--benchmark", "probe", "--data", "data/probe_paper", "--models", str(data["model"]),
           "--methods", str(pp["methods"]), "--preset", str(pp["preset"]), "--set", f"n_frames={pp['n_frames']}",
           "--set", f"segment_frames={p['segment_frames']}", "--set", f"max_new_tokens={p['max_new_tokens']}",
           "--out", "results/eval/probe_paper"]
    return [make, run]


def run_probe_paper(root: str | Path = ROOT, dry: bool = False) -> int:
    """``mlb study probe-paper``: the paper-scale probe from ``params.yaml`` (``--dry``: print it)."""
    root = Path(root)
    data = load_yaml(root / PARAMS)
    check_sections(data)
    for cmd in probe_paper_commands(data):
        print("$ " + " ".join(cmd), file=sys.stderr)
        if not dry and (rc := subprocess.call(cmd, cwd=root)) != 0:
            return rc
    return 0
