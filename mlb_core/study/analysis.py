"""Every computation behind the study's figures and tables, as pure functions.

The notebooks under ``notebooks/`` only load inputs, call these functions and plot; the
logic lives here and is unit-tested (``tests/test_analysis.py``). Nothing here loads a
model or touches the disk.

- Fig. 1 (paper): where the top 25% of a 5-frame segment's tokens fall, global top-k
  against GAPool (:func:`topk_mask`, :func:`gapool_pick_mask`, :func:`fig1_table`).
- Fig. 2 (paper): last-query attention maps averaged over clips for frames in order,
  reversed and one frame repeated (:func:`frame_order`, :func:`normalise_maps`,
  :func:`frame_shares`, :func:`fig2_maps_table`, :func:`fig2_shares_table`).
- Fig. 4 (paper): answer quality against the number of tokens fed to stage two for the
  seven GAPool grids (:func:`grid_token_counts`, :func:`fig4_table`).
- Tables: open-ended QA, multiple choice, component ablation, prefill time
  (:func:`qa_table`, :func:`ablation_table`, :func:`prefill_table`, :func:`markdown_table`;
  each table's spec is in :mod:`mlb_core.study.tables`).
- Written numbers: every float the study writes (figure CSVs, tables, ``shares.json``) is
  rounded to :data:`SIG_DIGITS` significant digits (:func:`round_sig`, :func:`round_frame`,
  :data:`FLOAT_FORMAT`), so reruns give the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from mlb_core.errors import MLBError
from mlb_core.parsing import parse_grid, split_list
from mlb_core.selection.gapool import gapool_count
from mlb_core.study.bias import CONDITIONS, frame_order

__all__ = ["CONDITIONS", "frame_order"]  # re-exported: defined with the maps they order (mlb_core.study.bias)

EMBEDDED = "embedded"
CONDITION_LABELS = {
    "in_order": "(a) frames in order",
    "reversed": "(b) frames reversed",
    "repeated": "(c) one frame repeated",
}


# ---- numbers as written ------------------------------------------------------------------------
SIG_DIGITS = 6
FLOAT_FORMAT = f"%.{SIG_DIGITS}g"  # pandas' float_format for every CSV of the study


def round_sig(value: float, digits: int = SIG_DIGITS) -> float:
    """``value`` rounded to ``digits`` significant digits (NaN and infinities unchanged)."""
    value = float(value)
    return value if not math.isfinite(value) else float(f"{value:.{digits}g}")


def round_frame(df: pd.DataFrame, digits: int = SIG_DIGITS) -> pd.DataFrame:
    """A copy of ``df`` with every float column rounded to ``digits`` significant digits."""
    out = df.copy()
    for col in out.columns:
        if pd.api.types.is_float_dtype(out[col]):
            out[col] = [round_sig(v, digits) for v in out[col]]
    return out


# ---- parsing of the study's compact parameter strings -------------------------------------
def grid_name(grid: Sequence[int]) -> str:
    return f"{grid[0]}x{grid[1]}"


def parse_grids(text: str | Sequence[str]) -> list[tuple[int, int]]:
    """``"1x2,1x3,2x2"`` -> ``[(1, 2), (1, 3), (2, 2)]``."""
    return [parse_grid(g) for g in split_list(text)]


# ---- Fig. 1: global top-k against GAPool -------------------------------------------------
def topk_count(n_tokens: int, fraction: float) -> int:
    """k = round(fraction * n_tokens): 720 of 2880 for the paper's 25%."""
    if not 0 < fraction <= 1:
        raise MLBError(f"the top fraction must be in (0, 1], got {fraction}")
    return max(1, int(round(fraction * n_tokens)))


def topk_mask(scores: np.ndarray, k: int) -> np.ndarray:
    """(T, h, w) bool: the ``k`` highest-scoring tokens over *all* frames (global top-k,
    the biased selection of Fig. 1; ties broken by the lower flat index, as a stable sort)."""
    flat = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not 1 <= k <= flat.size:
        raise MLBError(f"k must be in [1, {flat.size}], got {k}")
    order = np.argsort(-flat, kind="stable")[:k]
    mask = np.zeros(flat.size, dtype=bool)
    mask[order] = True
    return mask.reshape(np.shape(scores))


def gapool_pick_mask(scores: np.ndarray, grid: Sequence[int]) -> np.ndarray:
    """(T, h, w) bool: the token GAPool keeps in every ``grid`` cell of every frame in
    ``max`` mode (the cell's highest score, ties -> the first token in row-major order).

    In ``weighted`` mode GAPool emits a mix of the whole cell instead, but the count per
    frame is the same: ``ceil(h / gh) * ceil(w / gw)``.
    """
    s = np.asarray(scores, dtype=np.float64)
    t, h, w = s.shape
    gh, gw = parse_grid(grid)
    if gh > h or gw > w:
        raise MLBError(f"grid {gh}x{gw} is larger than the token grid {h}x{w}")
    mask = np.zeros_like(s, dtype=bool)
    for r0 in range(0, h, gh):
        for c0 in range(0, w, gw):
            cell = s[:, r0:r0 + gh, c0:c0 + gw]  # (T, ch, cw)
            cw = cell.shape[2]
            best = cell.reshape(t, -1).argmax(1)  # first maximum, row-major
            mask[np.arange(t), r0 + best // cw, c0 + best % cw] = True
    return mask


def frame_counts(mask: np.ndarray) -> np.ndarray:
    """(T,) int: selected tokens per frame of a (T, h, w) mask."""
    return np.asarray(mask).reshape(np.shape(mask)[0], -1).sum(1).astype(int)


def fig1_table(scores: np.ndarray, fraction: float, grid: Sequence[int]) -> pd.DataFrame:
    """One row per token: ``frame`` (1-based), ``row``, ``col``, ``score``, ``topk`` and
    ``gapool`` (selected by each). k = ``fraction`` of all tokens; GAPool's grid is
    ``grid`` (2x2 keeps exactly 25%, the paper's 720 of 2880)."""
    s = np.asarray(scores, dtype=np.float64)
    t, h, w = s.shape
    k = topk_count(s.size, fraction)
    top = topk_mask(s, k)
    gap = gapool_pick_mask(s, grid)
    f, r, c = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij")
    return pd.DataFrame({
        "frame": f.reshape(-1) + 1, "row": r.reshape(-1), "col": c.reshape(-1),
        "score": s.reshape(-1), "topk": top.reshape(-1), "gapool": gap.reshape(-1),
    })


def fig1_counts(table: pd.DataFrame) -> pd.DataFrame:
    """Per-frame selected tokens of :func:`fig1_table`, long format:
    ``frame``, ``selection`` (``global top-k`` / ``GAPool``), ``tokens``, ``share``."""
    rows = []
    for col, label in (("topk", "global top-k"), ("gapool", "GAPool")):
        per = table.groupby("frame")[col].sum()
        total = per.sum()
        for frame, n in per.items():
            rows.append({"frame": int(frame), "selection": label, "tokens": int(n),
                         "share": float(n / total) if total else 0.0})
    return pd.DataFrame(rows)


# ---- Fig. 2: attention maps for frames in order, reversed, repeated ---------------------
def normalise_maps(maps: np.ndarray) -> np.ndarray:
    """(N, T, h, w) -> the same with each input's visual attention summing to 1, so inputs
    with more or less attention on text weigh the same in an average."""
    m = np.asarray(maps, dtype=np.float64)
    total = m.reshape(m.shape[0], -1).sum(1)
    if np.any(total <= 0):
        raise MLBError("an attention map has no mass on the visual tokens")
    return m / total[:, None, None, None]


def frame_shares(maps: np.ndarray) -> np.ndarray:
    """Share of the visual attention at each position: (T, h, w) -> (T,), or
    (N, T, h, w) -> (N, T); every row sums to 1."""
    m = np.asarray(maps, dtype=np.float64)
    per = m.reshape(*m.shape[:-2], -1).sum(-1)  # (..., T)
    return per / per.sum(-1, keepdims=True)


def average_map(maps: np.ndarray) -> np.ndarray:
    """(N, T, h, w) -> (T, h, w): the mean of the normalised maps (sums to 1)."""
    return normalise_maps(maps).mean(0)


def fig2_maps_table(maps: Mapping[str, np.ndarray], orders: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """The averaged maps of every condition, long format: ``condition``, ``position``
    (1-based input slot), ``frame`` (1-based sampled frame shown there), ``row``, ``col``,
    ``attention`` (mean normalised attention)."""
    parts = []
    for cond, m in maps.items():
        avg = average_map(m)  # (T, h, w)
        t, h, w = avg.shape
        p, r, c = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij")
        parts.append(pd.DataFrame({
            "condition": cond, "position": p.reshape(-1) + 1,
            "frame": np.asarray(orders[cond])[p.reshape(-1)] + 1,
            "row": r.reshape(-1), "col": c.reshape(-1), "attention": avg.reshape(-1),
        }))
    return pd.concat(parts, ignore_index=True)


def fig2_shares_table(maps: Mapping[str, np.ndarray], orders: Mapping[str, np.ndarray],
                      labels: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-input, per-position shares: ``condition``, ``input``, ``position``, ``frame``,
    ``share``. ``labels`` names the inputs (e.g. ``clip#window|question``)."""
    rows = []
    for cond, m in maps.items():
        shares = frame_shares(m)  # (N, T)
        for i, row in enumerate(shares):
            for pos, share in enumerate(row):
                rows.append({"condition": cond, "input": labels[i] if labels else i,
                             "position": pos + 1, "frame": int(orders[cond][pos]) + 1,
                             "share": float(share)})
    return pd.DataFrame(rows)


def share_summary(shares: pd.DataFrame) -> pd.DataFrame:
    """Mean (and standard error) share per condition and position: the numbers of the
    note, one row per condition, columns ``pos1..posT`` and ``n_inputs``."""
    g = shares.groupby(["condition", "position"])["share"]
    mean = g.mean().unstack("position")
    mean.columns = [f"pos{c}" for c in mean.columns]
    mean["n_inputs"] = shares.groupby("condition")["input"].nunique()
    order = [c for c in CONDITIONS if c in mean.index] + [c for c in mean.index if c not in CONDITIONS]
    return mean.loc[order]


def shares_record(summary: pd.DataFrame, meta: Mapping[str, Any]) -> dict[str, Any]:
    """The ``shares.json`` metrics of Fig. 2: ``meta`` (model, source, score layer ...), the mean
    share per condition and position (a list per condition, rounded to :data:`SIG_DIGITS`
    significant digits) and the number of inputs, from :func:`share_summary`."""
    pos = [c for c in summary.columns if str(c).startswith("pos")]
    return {**meta,
            "shares": {str(c): [round_sig(x) for x in row[pos]] for c, row in summary.iterrows()},
            "n_inputs": int(summary["n_inputs"].iloc[0])}


# ---- Fig. 4: quality against stage-two tokens for the GAPool grids -----------------------
def grid_token_counts(n_frames: int, h: int, w: int, grids: Iterable[Sequence[int]]) -> list[int]:
    """Tokens fed to stage two by GAPool (no tail) for each grid: 1440, 960, 720, 480,
    320, 180, 80 for 5 frames of 24 x 24 and the paper's seven grids (Fig. 4)."""
    return [n_frames * gapool_count(h, w, parse_grid(g)) for g in grids]


def fig4_points(metrics: Sequence[Mapping[str, Any]], tokens: Sequence[float], reference: str = "full",
                task: str = "all") -> list[dict[str, Any]]:
    """One Fig. 4 point per evaluation run: the run's GAPool grid (``None`` for the
    ``reference`` method: no compression), its mean stage-two visual tokens and its accuracy
    (percent) and judge score over ``task`` (``all``, ``open`` or ``mc``).

    ``metrics`` are :mod:`mlb_core.evaluation.runner` metrics dicts; ``tokens`` the mean
    ``n_visual_tokens`` of each run's predictions."""
    if len(metrics) != len(tokens):
        raise MLBError("one token count per run is needed")
    points = []
    for m, t in zip(metrics, tokens, strict=True):
        stats = m if task == "all" else (m.get("by_task") or {}).get(task)
        if stats is None:
            raise MLBError(f"run {m.get('method')} {m.get('preset')} has no {task!r} questions")
        points.append({
            "grid": None if m["method"] == reference else grid_name(m["params"]["grid"]),
            "method": m["method"], "tokens": int(round(float(t))),
            "accuracy": 100 * float(stats["accuracy"]) if stats.get("accuracy") is not None else math.nan,
            "score": float(stats["score"]) if stats.get("score") is not None else math.nan,
            "n": int(stats.get("n", (m.get("counts") or {}).get("total", 0))),
        })
    return points


def fig4_table(results: Sequence[Mapping[str, Any]], metric: str = "accuracy") -> pd.DataFrame:
    """Rows ``{"grid": "2x2" | None (no compression), "tokens": int, metric: float, "n": int}``
    -> a frame sorted by tokens with a ``label`` per point (``"2x2 (720)"``)."""
    df = pd.DataFrame(list(results))
    missing = {"grid", "tokens", metric} - set(df.columns)
    if missing:
        raise MLBError(f"Fig. 4 results lack {sorted(missing)}")
    df["compression"] = df["grid"].notna()
    df["label"] = [f"{g} ({t})" if isinstance(g, str) else f"no compression ({t})"
                   for g, t in zip(df["grid"], df["tokens"], strict=True)]
    return df.sort_values(["compression", "tokens"], ascending=[False, False]).reset_index(drop=True)


# ---- tables -------------------------------------------------------------------------------
def _ordered(df: pd.DataFrame, methods: Sequence[str] | None) -> pd.DataFrame:
    """Rows of ``methods`` only, in that order (all methods, in first-seen order, if None)."""
    if methods is None:
        return df.reset_index(drop=True)
    df = df[df["method"].isin(methods)].copy()
    df["_o"] = df["method"].map({m: i for i, m in enumerate(methods)})
    return df.sort_values(["model", "benchmark", "_o"], kind="stable").drop(columns="_o").reset_index(drop=True)


def qa_table(rows: Sequence[Mapping[str, Any]], task: str, methods: Sequence[str] | None = None) -> pd.DataFrame:
    """Open-ended (``task="open"``: accuracy and score) or multiple-choice (``"mc"``:
    accuracy) results, one row per (model, preset, benchmark, method), from the tidy rows of
    :func:`mlb_core.evaluation.runner.summarize` (their ``task`` group). Accuracy in percent."""
    if task not in ("open", "mc"):
        raise MLBError(f"task must be open or mc, got {task!r}")
    df = pd.DataFrame(list(rows))
    if df.empty:
        raise MLBError("no evaluation results to tabulate")
    sel = df[(df["group"] == "task") & (df["value"] == task)]
    if sel.empty:
        raise MLBError(f"the evaluation results hold no {task!r} questions")
    judge = sel["judge"] if task == "open" else "option parser"
    out = pd.DataFrame({
        "model": sel["model"], "preset": sel["preset"], "benchmark": sel["benchmark"], "judge": judge,
        "method": sel["method"], "n": sel["n"].astype(int), "answered": sel["answered"].astype(int),
        "accuracy": sel["accuracy"].astype(float) * 100,
    })
    if task == "open":
        out["score"] = sel["score"].astype(float)
    return _ordered(out, methods)


def qa_wide(df: pd.DataFrame, digits: int = 1) -> pd.DataFrame:
    """The paper's layout of a :func:`qa_table`: one row per (model, method), one column per
    benchmark, cells ``accuracy / score`` (open-ended) or ``accuracy`` (multiple choice)."""
    has_score = "score" in df.columns
    cell = [f"{a:.{digits}f} / {s:.2f}" if has_score and not math.isnan(s) else f"{a:.{digits}f}"
            for a, s in zip(df["accuracy"], df["score"] if has_score else [math.nan] * len(df), strict=True)]
    wide = df.assign(cell=cell).pivot_table(index=["model", "method"], columns="benchmark", values="cell",
                                            aggfunc="first", sort=False)
    wide.columns.name = None
    return wide.reset_index()


def ablation_table(rows: Sequence[Mapping[str, Any]], methods: Sequence[str]) -> pd.DataFrame:
    """Component ablation (``segattn-topk``, ``mlb-gapool``, ``mlb``): per (model, preset,
    benchmark, method) the accuracy (percent) on open-ended and multiple-choice questions and,
    where the benchmark records it (the synthetic probe), by evidence position."""
    df = pd.DataFrame(list(rows))
    if df.empty:
        raise MLBError("no evaluation results to tabulate")
    keys = ["model", "preset", "benchmark", "method"]
    base = df[df["group"] == "all"][keys + ["judge", "n"]].drop_duplicates(keys)
    cols = [("task", "open", "accuracy", "open_acc"), ("task", "open", "score", "open_score"),
            ("task", "mc", "accuracy", "mc_acc"), ("position", "early", "accuracy", "early_acc"),
            ("position", "middle", "accuracy", "middle_acc"), ("position", "late", "accuracy", "late_acc")]
    out = base.copy()
    for group, value, metric, name in cols:
        part = df[(df["group"] == group) & (df["value"] == value)][keys + [metric]]
        if part.empty:
            continue
        part = part.rename(columns={metric: name})
        if metric == "accuracy":
            part[name] = part[name].astype(float) * 100
        out = out.merge(part, on=keys, how="left")
    return _ordered(out, methods)


PREFILL_COLUMNS = ("model", "basis", "unit", "preset", "method", "visual_tokens", "n_questions",
                   "stage_one", "prefill", "total", "total_over_sf_llava")


def prefill_table(rows: Sequence[Mapping[str, Any]], methods: Sequence[str] | None = None) -> pd.DataFrame:
    """Prefill time (or cost) per question and method, from the efficiency benchmark's
    ``prefill.csv`` (:mod:`mlb_core.bench.command`): ``stage_one`` (amortised over the questions
    of a video), stage-two ``prefill`` and their ``total``, in ``unit`` (s or GFLOP), by
    ``basis`` (``measured`` on this machine, ``cpu-priced`` 7B shape, ``flops``)."""
    df = pd.DataFrame(list(rows))
    missing = [c for c in PREFILL_COLUMNS if c not in df.columns]
    if df.empty or missing:
        raise MLBError(f"prefill results lack {missing or 'rows'}")
    df = df[list(PREFILL_COLUMNS)].copy()
    for c in ("stage_one", "prefill", "total", "total_over_sf_llava"):
        df[c] = pd.to_numeric(df[c], errors="coerce")
    if methods is None:
        return df.reset_index(drop=True)
    df = df[df["method"].isin(methods)].copy()
    df["_o"] = df["method"].map({m: i for i, m in enumerate(methods)})
    return df.sort_values(["model", "basis", "_o"], kind="stable").drop(columns="_o").reset_index(drop=True)


def _fmt(value: Any, digits: int) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "-" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


COLUMN_LABELS = {
    "accuracy": "accuracy (%)", "score": "score (0-5)", "open_acc": "open-ended acc. (%)",
    "open_score": "open-ended score", "mc_acc": "multiple-choice acc. (%)", "early_acc": "early acc. (%)",
    "middle_acc": "middle acc. (%)", "late_acc": "late acc. (%)", "visual_tokens": "visual tokens",
    "n_questions": "questions / video", "stage_one": "stage one", "prefill": "stage-two prefill",
    "total_over_sf_llava": "total / SF-LLaVA",
}


def markdown_table(df: pd.DataFrame, title: str, meta: Mapping[str, Any], caption: str = "",
                   digits: int = 3, labels: Mapping[str, str] | None = None) -> str:
    """A self-describing Markdown table: a title, the run's metadata (model, preset,
    benchmark, judge ...), the table and a caption. Columns named in ``meta`` that hold one
    value only are left out of the body (the metadata names them); ``labels`` (default
    :data:`COLUMN_LABELS`) renames the header."""
    labels = COLUMN_LABELS if labels is None else labels
    body = df[[c for c in df.columns if not (c in meta and df[c].nunique(dropna=False) <= 1)]]
    lines = [f"**{title}**", ""]
    lines += [f"- {k}: `{v}`" for k, v in meta.items()]
    lines += ["", "| " + " | ".join(labels.get(c, str(c)) for c in body.columns) + " |",
              "|" + "|".join("---" for _ in body.columns) + "|"]
    for row in body.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v, digits) for v in row) + " |")
    if caption:
        lines += ["", caption]
    return "\n".join(lines) + "\n"


def caption(text: str, model: str) -> str:
    """``text`` plus the embedded default's sight caveat when it is the model
    (:func:`mlb_core.backbones.vision_weights.caveat`)."""
    from mlb_core.backbones.vision_weights import caveat

    return f"{text} {caveat()}" if model == EMBEDDED else text
