"""Accuracy against cost (docs/method.md, "Accuracy against cost"): probe v2 accuracy of each
method at several budgets against its prefill FLOPs and its measured seconds per question.

A *budget variant* is a method with the setting that sets its token count: the GAPool grid of
``mlb`` (with the tail) and ``mlb-gapool`` (without), the slow frames of ``sf-llava`` and FastV's
R (``params.yaml``'s ``cost`` section; the dvc stage ``eval_cost`` answers the probe with each
through ``mlb eval``, e.g. ``--set extra.fastv_r=0.9``). :func:`read_runs` finds every run of
those methods in the evaluation folders and :func:`cost_table` joins its accuracy (with a 95%
Wilson interval) with

- ``gflop_7b``: prefill FLOPs per question of the analytic model on Vicuna-7B's shape
  (:mod:`mlb_core.bench.flops`; the decoder passes traced on a stand-in, stage one included,
  one question a video, every question-independent prefix counted once), the paper's setting;
- ``gflop_embedded``: the same on the embedded model's shape (SmolLM2-135M), the model measured;
- ``seconds``: measured mean seconds per question of stage one, compression and stage-two
  prefill (decoding excluded) on the machine that ran the probe.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlb_core.config import MLBParams
from mlb_core.errors import MLBError
from mlb_core.parsing import parse_grid, split_list
from mlb_core.study.probe_analysis import wilson

CURVES = ("mlb", "mlb-gapool", "sf-llava", "fastv")  # the methods with a budget sweep, in legend order
TIME_KEYS = ("stage_one", "compress", "prefill")


def check_cost_section(section: Mapping[str, Any]) -> None:
    """Validate ``params.yaml``'s ``cost`` section: ``grids`` (like ``4x4,6x6``), ``sf_slow_frames``
    (positive integers) and ``fastv_r`` (fractions in [0, 1)), non-empty comma lists (the stage
    passes each to ``mlb eval``)."""
    for g in split_list(str(section.get("grids", ""))):
        parse_grid(g)
    for s in split_list(str(section.get("sf_slow_frames", ""))):
        if not s.isdigit() or int(s) < 1:
            raise MLBError(f"cost.sf_slow_frames: expected positive integers, got {s!r}")
    for r in split_list(str(section.get("fastv_r", ""))):
        try:
            ok = 0 <= float(r) < 1
        except ValueError:
            ok = False
        if not ok:
            raise MLBError(f"cost.fastv_r: expected fractions in [0, 1), got {r!r}")


def setting_of(method: str, params: MLBParams) -> str | None:
    """The curve label of a run's parameters; None for a method without a curve."""
    from mlb_core.methods.baselines import fastv_settings, sf_slow_frames

    if method in ("mlb", "mlb-gapool"):
        return f"{params.grid[0]}x{params.grid[1]}"
    if method == "sf-llava":
        return f"slow {sf_slow_frames(params, params.n_frames)}"
    if method == "fastv":
        return f"R={fastv_settings(params)[1]:g}"
    return None


def read_runs(folders: Sequence[str | Path]) -> pd.DataFrame:
    """Every ``*.metrics.json`` under ``folders`` of a method with a curve: one row per run with
    its setting, accuracy, counts, parameters and measured seconds. A variant found in two
    folders is kept once (the first folder wins)."""
    import json

    rows, seen = [], set()
    for folder in folders:
        for path in sorted(Path(folder).rglob("*.metrics.json")):
            m = json.loads(path.read_text())
            if m["method"] not in CURVES:
                continue
            params = MLBParams(**m["params"])
            setting = setting_of(m["method"], params)
            key = (m["method"], json.dumps(m["params"], sort_keys=True))
            if key in seen:
                continue
            seen.add(key)
            judged = m["counts"].get("judged", 0)
            correct = sum(v.get("correct", 0) for v in m.get("by_task", {}).values())
            times = m.get("time", {}).get("answer_mean_s", {})
            rows.append({"method": m["method"], "setting": setting, "n": judged, "correct": correct,
                         "accuracy": correct / judged if judged else float("nan"),
                         "seconds": sum(float(times.get(k, 0.0)) for k in TIME_KEYS),
                         "params": params, "model": m.get("model", "")})
    if not rows:
        raise MLBError(f"no run of {', '.join(CURVES)} found under {', '.join(map(str, folders))}")
    check_same_questions(folders)
    return pd.DataFrame(rows)


RERUN_COST = "mlb study rerun eval_cost"  # mlb_core.study.frozen


def check_same_questions(folders: Sequence[str | Path]) -> None:
    """Raise if the runs under ``folders`` answered different probes (another set of question
    ids, or the same ids with other questions or truths). The cost sweep is a frozen stage with
    committed answers, so after the probe changes it must be rerun (:data:`RERUN_COST`)."""
    import json

    seen: dict[frozenset, Path] = {}
    for folder in folders:
        for path in sorted(Path(folder).rglob("*.predictions.jsonl")):
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            seen.setdefault(frozenset((r.get("qid"), r.get("question"), str(r.get("answer"))) for r in rows), path)
    if len(seen) > 1:
        a, b = list(seen.values())[:2]
        raise MLBError(f"{a} and {b} answer different probes: rerun the cost sweep on the current probe "
                       f"({RERUN_COST})")


def prefill_gflop(method: str, params: MLBParams, shape: str, family: str) -> tuple[int, float]:
    """``(visual tokens, GFLOP per question)`` of ``method`` at ``params`` on the analytic model's
    ``shape``: stage one (first question of a video) plus stage two's prefill (first question,
    the question-independent prefix computed once), traced on a stand-in."""
    from mlb_core.bench.flops import SHAPES, flops
    from mlb_core.bench.results import trace_costs
    from mlb_core.bench.trace import TraceError, trace_methods

    traces = trace_methods(SHAPES[shape], family, params, [method], 1)
    tr = traces[method]
    if isinstance(tr, TraceError):
        raise MLBError(f"{method}: {tr.error}")
    c = trace_costs({method: tr}, lambda ps: flops(SHAPES[shape], ps) / 1e9)[method]
    return tr.visual, c.first + c.prefill_first


def cost_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Each run with its 95% interval, visual tokens (as the embedded model, 8K context, ran it) and
    GFLOP per question on the 7B shape (with its 4K context: ``full`` and ``fastv`` fit fewer
    frames there) and on the embedded shape."""
    out = []
    for row in runs.itertuples(index=False):
        _, g7 = prefill_gflop(row.method, row.params, "vicuna-7b", "vicuna")  # its 4K context: fewer frames fit
        visual, ge = prefill_gflop(row.method, row.params, "smollm2-135m", "smollm2")  # the model that answered
        lo, hi = wilson(int(row.correct), int(row.n))
        out.append({"method": row.method, "setting": row.setting, "visual_tokens": visual, "n": int(row.n),
                    "correct": int(row.correct), "accuracy": row.accuracy, "ci_low": lo, "ci_high": hi,
                    "gflop_7b": round(g7, 1), "gflop_embedded": round(ge, 2), "seconds": round(row.seconds, 3)})
    df = pd.DataFrame(out)
    order = {m: i for i, m in enumerate(CURVES)}
    return df.sort_values(["method", "gflop_7b"], key=lambda s: s.map(order) if s.name == "method" else s,
                          ignore_index=True)


def plot_cost(df: pd.DataFrame, caption: str) -> Any:
    """Accuracy (95% intervals) against GFLOP per question on the 7B shape (left) and measured
    seconds per question (right), one line per method through its budgets."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    from mlb_core.study.plots import add_caption, setup_style
    from mlb_core.study.probe_analysis import METHOD_COLOURS

    setup_style()
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    offsets = {"mlb": (4, 5), "mlb-gapool": (4, -11), "sf-llava": (-4, 5), "fastv": (4, 5)}  # labels apart
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.0), sharey=True)
    for ax, x, label in ((axes[0], "gflop_7b", "prefill GFLOP per question, Vicuna-7B shape (analytic)"),
                         (axes[1], "seconds", "measured s per question (stage one + prefill), embedded")):
        for method in CURVES:
            d = df[df["method"] == method].sort_values(x)
            if d.empty:
                continue
            colour = METHOD_COLOURS.get(method)
            err = np.vstack([d["accuracy"] - d["ci_low"], d["ci_high"] - d["accuracy"]]) * 100
            ax.errorbar(d[x], d["accuracy"] * 100, yerr=err, marker="o", capsize=3, label=method, color=colour)
            dx, dy = offsets[method]
            for xi, yi, s in zip(d[x], d["accuracy"] * 100, d["setting"], strict=True):
                ax.annotate(s, (xi, yi), textcoords="offset points", xytext=(dx, dy), fontsize=7, color=colour,
                            ha="left" if dx >= 0 else "right")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain)
        ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.set_xlabel(label)
    axes[0].set_ylabel("probe v2 accuracy (%)")
    axes[0].set_ylim(-2, 102)
    axes[0].legend(fontsize=8, loc="upper left")
    add_caption(fig, caption, y=-0.04)
    fig.tight_layout()
    return fig
