"""Reading the evaluation runner's runs back for the study's figures (paper Fig. 4).

The runner (:mod:`mlb_core.evaluation.runner`) writes, per run,
``<out>/<benchmark>/<model>/<preset>/<method>.metrics.json`` and the predictions file the
metrics name (one JSON line per question). :func:`load_runs` reads every run under a folder;
:func:`fig4_inputs` turns the runs of one benchmark and model into the points of Fig. 4
(:func:`mlb_core.study.analysis.fig4_points`), which :func:`~mlb_core.study.analysis.fig4_table`
tabulates.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlb_core.errors import MLBError
from mlb_core.study.analysis import fig4_points, grid_name, parse_grids


@dataclass(frozen=True)
class Run:
    """One evaluation run: its metrics dict and its predictions (one dict per question)."""

    path: Path  # the metrics file
    metrics: Mapping[str, Any]
    predictions: Sequence[Mapping[str, Any]]

    @property
    def method(self) -> str:
        return str(self.metrics["method"])

    @property
    def params(self) -> Mapping[str, Any]:
        return self.metrics.get("params") or {}

    @property
    def mean_visual_tokens(self) -> float:
        """Mean ``n_visual_tokens`` fed to stage two over the answered questions (NaN if none)."""
        n = [float(p["n_visual_tokens"]) for p in self.predictions
             if p.get("status") == "answered" and p.get("n_visual_tokens") is not None]
        return sum(n) / len(n) if n else math.nan


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_runs(folder: str | Path, methods: Sequence[str] | None = None) -> list[Run]:
    """Every run under ``folder`` (any depth; ``*.metrics.json`` and its predictions file),
    sorted by path; only those of ``methods`` if given."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MLBError(f"no evaluation runs at {folder}")
    runs = []
    for path in sorted(folder.rglob("*.metrics.json")):
        metrics = json.loads(path.read_text())
        if methods is not None and metrics.get("method") not in methods:
            continue
        preds = path.with_name(metrics.get("predictions") or path.name.replace(".metrics.json", ".predictions.jsonl"))
        if not preds.is_file():
            raise MLBError(f"{path}: its predictions file {preds.name} is missing")
        runs.append(Run(path, metrics, _read_jsonl(preds)))
    return runs


@dataclass(frozen=True)
class Fig4Inputs:
    """The points of Fig. 4 and the runs behind them (the first one describes the setting)."""

    points: list[dict[str, Any]]
    runs: list[Run]


def fig4_inputs(folder: str | Path, grids: str | Sequence[str] | None = None, method: str = "mlb-gapool",
                reference: str = "full", task: str = "all") -> Fig4Inputs:
    """The Fig. 4 points of the runs under ``folder`` (one benchmark and model:
    ``<out>/<benchmark>/<model_slug>``): one per run of ``method`` whose GAPool grid is among
    ``grids`` (all if None), plus the ``reference`` run (no compression). Tokens: each run's
    mean stage-two visual tokens over its answered questions."""
    runs = load_runs(folder, (method, reference))
    for run in runs:
        if math.isnan(run.mean_visual_tokens):
            raise MLBError(f"{run.path}: no answered question records its visual tokens")
    points = fig4_points([r.metrics for r in runs], [r.mean_visual_tokens for r in runs], reference, task)
    wanted = None if grids is None else {grid_name(g) for g in parse_grids(grids)}
    keep = [i for i, p in enumerate(points) if p["grid"] is None or wanted is None or p["grid"] in wanted]
    if not keep:
        raise MLBError(f"no {method} or {reference} runs under {folder}")
    return Fig4Inputs([points[i] for i in keep], [runs[i] for i in keep])
