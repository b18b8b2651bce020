"""Probe v2 results: accuracy by slot, by segment and by target size, with 95% intervals
(docs/method.md, "Where the bias bites"; the probe: :mod:`mlb_core.evaluation.probe`).

The paper's hypotheses, stated before the methods are run and reported as measured:
``segattn-topk`` loses early slots of a segment; ``mlb-gapool`` is flat across slots; ``mlb``
beats ``mlb-gapool`` when the evidence sits early in the video. :func:`hypotheses` reads the
three comparisons off the tables with their intervals and says which hold; it never decides
the design.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mlb_core.errors import MLBError

Z95 = 1.959964


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n`` (``nan`` bounds for ``n = 0``)."""
    if n == 0:
        return math.nan, math.nan
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def load_scored(folder: str | Path, benchmark: str = "probe") -> list[dict[str, Any]]:
    """Every scored record under ``<folder>/<benchmark>/`` (the runner's ``*.scored.jsonl``)."""
    root = Path(folder) / benchmark
    files = sorted(root.rglob("*.scored.jsonl"))
    if not files:
        raise MLBError(f"no scored predictions under {root} (run mlb eval --benchmark {benchmark} first)")
    out = []
    for path in files:
        for i, line in enumerate(path.read_text().splitlines(), start=1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    raise MLBError(f"{path} line {i}: not JSON") from None
    return out


def _exact(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` (of :func:`accuracy_by`) with ``accuracy``, ``lo`` and ``hi`` recomputed
    unrounded from its counts ``k`` of ``n``."""
    out = table.copy()
    bounds = [wilson(int(k), int(n)) for k, n in zip(out["k"], out["n"], strict=True)]
    out["accuracy"] = 100 * out["k"] / out["n"]
    out["lo"] = [100 * lo for lo, _ in bounds]
    out["hi"] = [100 * hi for _, hi in bounds]
    return out


def accuracy_by(records: Iterable[dict[str, Any]], by: Sequence[str],
                methods: Sequence[str] | None = None) -> pd.DataFrame:
    """Accuracy (%) with its 95% Wilson interval per group of ``by`` (e.g. ``method``, ``slot``).

    Only answered records count (``n``); a record is right when the judge or the option
    parser said so (``correct``). Methods keep the order of ``methods``."""
    rows = [r for r in records if r.get("status") == "answered" and (methods is None or r["method"] in methods)]
    if not rows:
        raise MLBError("no answered records to tabulate")
    df = pd.DataFrame([{**{k: r.get(k) for k in by}, "correct": bool(r.get("correct"))} for r in rows])
    out = df.groupby(list(by), sort=True, dropna=False)["correct"].agg(n="count", k="sum").reset_index()
    out = _exact(out)
    if methods is not None and "method" in by:
        out["method"] = pd.Categorical(out["method"], categories=list(methods), ordered=True)
        out = out.sort_values(["method", *[b for b in by if b != "method"]]).reset_index(drop=True)
        out["method"] = out["method"].astype(str)
    return out.round({"accuracy": 1, "lo": 1, "hi": 1})


def probe_tables(records: list[dict[str, Any]], methods: Sequence[str]) -> dict[str, pd.DataFrame]:
    """The probe's tables: by ``slot`` and by ``position`` (segment) in forward clips, by
    ``size``, by ``order`` (the reversed control), each per method, plus ``overall``."""
    forward = [r for r in records if r.get("order", "forward") == "forward"]
    return {
        "overall": accuracy_by(records, ["method"], methods),
        "slot": accuracy_by(forward, ["method", "slot"], methods),
        "segment": accuracy_by(forward, ["method", "position"], methods),
        "size": accuracy_by(records, ["method", "size"], methods),
        "order": accuracy_by(records, ["method", "order"], methods),
    }


def _row(df: pd.DataFrame, **where: Any) -> pd.Series | None:
    sel = df
    for k, v in where.items():
        sel = sel[sel[k] == v]
    return sel.iloc[0] if len(sel) else None


FLAT_MAX_WIDTH = 30.0  # points: the widest 95% interval with which "no two slots separate" means flat


def hypotheses(tables: dict[str, pd.DataFrame], n_slots: int) -> list[dict[str, Any]]:
    """The paper's three predictions, read off the tables. A prediction ``holds`` when the
    95% intervals separate in its direction, ``fails`` when they separate the other way (or,
    for flatness, when two slots separate), and is ``undecided`` otherwise; flatness also
    needs every slot's interval at most :data:`FLAT_MAX_WIDTH` points wide, or it is
    ``undecided`` (a probe too small, or a model at the floor, is flat by default)."""
    # the tables' accuracy and bounds are rounded for display: verdicts and the figures they
    # quote are recomputed from the counts, so that nothing is rounded twice
    slot, seg = _exact(tables["slot"]), _exact(tables["segment"])
    out = []

    def compare(name: str, a: pd.Series | None, b: pd.Series | None, claim: str) -> None:
        if a is None or b is None:
            out.append({"hypothesis": name, "claim": claim, "verdict": "not measured"})
            return
        verdict = ("holds" if a["hi"] < b["lo"] else "fails" if a["lo"] > b["hi"] else "undecided")
        out.append({"hypothesis": name, "claim": claim, "verdict": verdict,
                    "a": f"{a['accuracy']:.0f} [{a['lo']:.0f}, {a['hi']:.0f}]",
                    "b": f"{b['accuracy']:.0f} [{b['lo']:.0f}, {b['hi']:.0f}]"})

    compare("topk-early-slots", _row(slot, method="segattn-topk", slot=1),
            _row(slot, method="segattn-topk", slot=n_slots), "segattn-topk: slot 1 below the last slot")
    g = slot[slot["method"] == "mlb-gapool"]
    if len(g):
        lo_row, hi_row = g.loc[g["accuracy"].idxmin()], g.loc[g["accuracy"].idxmax()]
        widest = float((g["hi"] - g["lo"]).max())
        flat = ("fails" if lo_row["hi"] < hi_row["lo"] else
                f"undecided (no two slots separate, but intervals up to {widest:.0f} points wide cannot show "
                f"flatness; needs <= {FLAT_MAX_WIDTH:.0f})" if widest > FLAT_MAX_WIDTH else
                "holds (no two slots separate)")
        out.append({"hypothesis": "gapool-flat", "claim": "mlb-gapool: flat across slots", "verdict": flat,
                    "a": f"slot {lo_row['slot']}: {lo_row['accuracy']:.0f}", "b": f"slot {hi_row['slot']}: "
                                                                               f"{hi_row['accuracy']:.0f}"})
    else:
        out.append({"hypothesis": "gapool-flat", "claim": "mlb-gapool: flat across slots", "verdict": "not measured"})
    compare("tail-helps-early", _row(seg, method="mlb-gapool", position="first"),
            _row(seg, method="mlb", position="first"), "mlb above mlb-gapool when the evidence is in the first segment")
    return out


METHOD_COLOURS = {"segattn-topk": "#d95f02", "mlb-gapool": "#1b9e77", "mlb": "#7570b3", "full": "#e7298a",
                  "sf-llava": "#66a61e", "mlb-avg": "#a6761d"}


def plot_probe(tables: dict[str, pd.DataFrame], stem: str | Path, caption: str) -> list[Path]:
    """Two panels: accuracy against the evidence's slot inside its segment, and against its
    segment (forward clips), one line per method with 95% intervals. Writes PNG, PDF and CSVs."""
    import matplotlib.pyplot as plt

    from mlb_core.study.plots import add_caption, save_figure, setup_style

    setup_style()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, (key, label) in zip(axes, (("slot", "slot of the evidence frame in its segment"),
                                       ("position", "segment of the evidence frame")), strict=True):
        df = tables["slot" if key == "slot" else "segment"]
        order = sorted(df[key].unique(), key=lambda v: ("first", "middle", "last").index(v)
                       if v in ("first", "middle", "last") else int(v))
        for i, (method, g) in enumerate(df.groupby("method", sort=False)):
            g = g.set_index(key).reindex(order)
            x = [j + (i - len(METHOD_COLOURS) / 2) * 0.04 for j in range(len(order))]  # small dodge
            ax.errorbar(x, g["accuracy"], yerr=[g["accuracy"] - g["lo"], g["hi"] - g["accuracy"]], marker="o",
                        capsize=3, label=method, color=METHOD_COLOURS.get(method))
        ax.set_xticks(range(len(order)), [str(o) for o in order])
        ax.set_xlim(-0.5, len(order) - 0.5)
        ax.set_xlabel(label)
        ax.set_ylim(-2, 102)
    axes[0].set_ylabel("accuracy (%), 95% interval")
    axes[1].legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, title="method")
    add_caption(fig, caption, y=-0.02)
    paths = save_figure(fig, stem, {"slot": tables["slot"], "segment": tables["segment"]})
    plt.close(fig)
    return paths


# ---- what the answers name ---------------------------------------------------------------
NAMES = ("target", "distractor", "other", "none")  # what an answer's colour is, for its clip


def named_colour(record: dict[str, Any], clip: Any, vocabulary: Sequence[str], judge: Any = None) -> str:
    """What a probe answer names, for the clip it was asked about (a
    :class:`~mlb_core.evaluation.probe.ProbeClip`): ``target`` (the asked shape's colour),
    ``distractor`` (one of the clip's two distractor colours; in the no-distractor control,
    the colours its distractors would have had), ``other`` (another colour of ``vocabulary``)
    or ``none`` (no colour). An open answer names its first colour word (the keyword judge's
    rule; ``judge``: a :class:`~mlb_core.evaluation.judge.KeywordJudge` of ``vocabulary``, built
    here when not given); a multiple-choice answer names the option it picked."""
    if record.get("task") == "mc":
        idx, options = record.get("parsed_index"), record.get("options") or []
        said = str(options[idx]).lower() if idx is not None and 0 <= idx < len(options) else None
    else:
        if judge is None:
            from mlb_core.evaluation.judge import KeywordJudge

            judge = KeywordJudge(vocabulary)
        said = judge.first_mention(record.get("prediction"))
    if said is None:
        return "none"
    if said == clip.colour:
        return "target"
    return "distractor" if said in clip.distractor_colours else "other"


def answer_names(records: Iterable[dict[str, Any]], clips: dict[str, Any], methods: Sequence[str],
                 vocabulary: Sequence[str]) -> pd.DataFrame:
    """Per method, how many answered questions name the target's colour, a distractor's colour,
    another colour or none (:func:`named_colour`), and the share naming a distractor's colour
    (%) with its 95% Wilson interval. ``clips``: video name -> clip
    (:func:`mlb_core.evaluation.probe.clips_of`). A colour named at random from ``vocabulary``
    would name a distractor's colour 2 times in ``len(vocabulary)``."""
    from mlb_core.evaluation.judge import KeywordJudge

    judge = KeywordJudge(vocabulary)  # one regex for every answer
    counts: dict[str, dict[str, int]] = {m: dict.fromkeys(NAMES, 0) for m in methods}
    for r in records:
        if r.get("status") != "answered" or r.get("method") not in counts:
            continue
        clip = clips.get(r.get("video"))
        if clip is None:
            raise MLBError(f"record {r.get('qid')}: video {r.get('video')!r} is not in the probe's design "
                           "(answers and probe data from different runs?)")
        counts[r["method"]][named_colour(r, clip, vocabulary, judge)] += 1
    rows = []
    for method, c in counts.items():
        n = sum(c.values())
        if n == 0:
            continue
        lo, hi = wilson(c["distractor"], n)
        rows.append({"method": method, "n": n, **c, "distractor_pct": 100 * c["distractor"] / n,
                     "lo": 100 * lo, "hi": 100 * hi})
    if not rows:
        raise MLBError("no answered records of these methods to read")
    return pd.DataFrame(rows).round({"distractor_pct": 1, "lo": 1, "hi": 1})


NAME_COLOURS = {"target": "#1b9e77", "distractor": "#d95f02", "other": "#bbbbbb", "none": "#ffffff"}


def plot_answer_names(names: pd.DataFrame, stem: str | Path, caption: str, n_colours: int) -> list[Path]:
    """One stacked bar per method: the shares of its answers that name the target's colour, a
    distractor's, another colour or none; a last bar is a colour named at random from
    ``n_colours`` (1, 2 and ``n_colours - 3`` in ``n_colours``; a probe clip has a target and
    two distractors of other colours, so at least 3). Writes PNG, PDF and CSV."""
    import matplotlib.pyplot as plt

    if n_colours < 3:
        raise MLBError(f"n_colours must be >= 3 (a target and two distractor colours), got {n_colours}")

    from mlb_core.study.plots import add_caption, save_figure, setup_style

    setup_style()
    chance = {"target": 1 / n_colours, "distractor": 2 / n_colours, "other": (n_colours - 3) / n_colours, "none": 0.0}
    rows = [(m, {k: g[k] / g["n"] for k in NAMES}) for m, g in names.set_index("method").iterrows()]
    rows.append(("a colour at random", chance))
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(rows) + 1.2))  # 10 in: the caption wraps at 150 characters
    for i, (label, shares) in enumerate(rows):
        left = 0.0
        for k in NAMES:
            w = 100 * shares[k]
            ax.barh(i, w, left=left, color=NAME_COLOURS[k], edgecolor="#555555", linewidth=0.5,
                    label=k if i == 0 else None, hatch="//" if label == "a colour at random" else None)
            if w >= 8:
                ax.text(left + w / 2, i, f"{w:.0f}%", ha="center", va="center", fontsize=8)
            left += w
    ax.set_yticks(range(len(rows)), [label for label, _ in rows])
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("share of answers (%)")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, title="the answer names")
    add_caption(fig, caption, y=-0.04)
    paths = save_figure(fig, stem, names)
    plt.close(fig)
    return paths


# ---- the one-frame control: is it the slot, or the clips drawn for it? ---------------------
def with_frame(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records with ``frame``: the 1-based frame of the file that shows the target
    (``evidence_start + 1``)."""
    return [{**r, "frame": int(r["evidence_start"]) + 1} for r in records]


def difficulty_table(records: list[dict[str, Any]], alone: list[dict[str, Any]], methods: Sequence[str],
                     by: str = "slot") -> pd.DataFrame:
    """Per method and ``by`` (``slot``, ``frame``, ``position``), next to the method's accuracy,
    how often the same clips' target frame *alone* is named right (``alone``: the scored
    records of the one-frame control, ``mlb probe --isolated`` answered by ``full`` on one
    frame), and the method's accuracy on the clips whose target alone is named right
    (``given_alone``). Forward clips only. If the slots differ because the clips drawn for
    them differ, ``alone`` differs by slot the same way and ``given_alone`` is flat.

    Records are paired by question id; a method record without its one-frame answer is an
    error (the two runs are of different probes)."""
    truth = {r["qid"]: bool(r.get("correct")) for r in alone if r.get("status") == "answered"}
    if not truth:
        raise MLBError("no answered records in the one-frame control")
    rows = []
    for r in with_frame(records):
        if r.get("status") != "answered" or r.get("method") not in methods or r.get("order", "forward") != "forward":
            continue
        if r["qid"] not in truth:
            raise MLBError(f"question {r['qid']} has no answer in the one-frame control "
                           "(were both written from the same probe config?)")
        rows.append({"method": r["method"], by: r[by], "correct": bool(r.get("correct")), "alone": truth[r["qid"]]})
    if not rows:
        raise MLBError("no answered forward records of these methods")
    df = pd.DataFrame(rows)
    out = []
    for (method, key), g in df.groupby(["method", by], sort=False):
        k, n = int(g["correct"].sum()), len(g)
        a = int(g["alone"].sum())
        given = g[g["alone"]]
        lo, hi = wilson(k, n)
        glo, ghi = wilson(int(given["correct"].sum()), len(given))
        out.append({"method": method, by: key, "n": n, "k": k, "accuracy": 100 * k / n, "lo": 100 * lo, "hi": 100 * hi,
                    "alone_k": a, "alone": 100 * a / n, "given_alone_n": len(given),
                    "given_alone": 100 * given["correct"].mean() if len(given) else math.nan,
                    "given_alone_lo": 100 * glo, "given_alone_hi": 100 * ghi})
    table = pd.DataFrame(out)
    table["method"] = pd.Categorical(table["method"], categories=[m for m in methods if m in set(table["method"])],
                                     ordered=True)
    table = table.sort_values(["method", by]).reset_index(drop=True)
    table["method"] = table["method"].astype(str)
    return table.round(1)


def commonest_truth_share(records: Iterable[dict[str, Any]]) -> float:
    """Accuracy (%) of always giving the commonest true answer of ``records`` (one method's
    questions): the floor a method with one default answer reaches whatever it sees."""
    truths = [str(r["answer"]) for r in records]
    if not truths:
        raise MLBError("no records to take the commonest answer of")
    return 100 * max(truths.count(t) for t in set(truths)) / len(truths)


def plot_by_frame(table: pd.DataFrame, stem: str | Path, caption: str, segment_frames: int,
                  floor: float | None = None) -> list[Path]:
    """Accuracy against the frame that shows the target (one line per method, 95% intervals),
    with how often that frame alone is named right (grey; when ``table`` has ``alone``) and the
    segments' borders (dotted); ``floor``: a horizontal line at what always giving the commonest
    true answer scores (:func:`commonest_truth_share`). ``table``: :func:`difficulty_table`
    with ``by="frame"``, or :func:`accuracy_by` of :func:`with_frame` records by ``method`` and
    ``frame``. Writes PNG, PDF and CSV."""
    import matplotlib.pyplot as plt

    from mlb_core.study.plots import add_caption, save_figure, setup_style

    if "frame" not in table:
        raise MLBError("plot_by_frame needs a table by frame (difficulty_table(..., by='frame'))")
    setup_style()
    frames = sorted(int(f) for f in table["frame"].unique())
    fig, ax = plt.subplots(figsize=(10, 4))
    methods = list(dict.fromkeys(table["method"]))
    for i, method in enumerate(methods):
        g = table[table["method"] == method].set_index("frame").reindex(frames)
        x = [f + (i - len(methods) / 2) * 0.06 for f in frames]
        ax.errorbar(x, g["accuracy"], yerr=[g["accuracy"] - g["lo"], g["hi"] - g["accuracy"]], marker="o",
                    capsize=2, label=method, color=METHOD_COLOURS.get(method))
    if "alone" in table:  # the same clips for every method
        alone = table.groupby("frame")["alone"].first().reindex(frames)
        ax.plot(frames, alone, color="#777777", linestyle="--", marker="s", label="target frame alone (full, 1 frame)")
    if floor is not None:
        ax.axhline(floor, color="#bbbbbb", linestyle="-.", linewidth=1.2, label="always the commonest true colour")
    for b in range(segment_frames, frames[-1], segment_frames):
        ax.axvline(b + 0.5, color="#999999", linestyle=":", linewidth=1)
    ax.set_xticks(frames)
    ax.set_xlabel("frame of the clip that shows the target")
    ax.set_ylabel("accuracy (%), 95% interval")
    ax.set_ylim(-2, 102)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, title="method")
    add_caption(fig, caption, y=-0.02)
    paths = save_figure(fig, stem, table)
    plt.close(fig)
    return paths


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value of ``b`` pairs right only under A and ``c`` right only
    under B (a binomial test of ``min(b, c)`` in ``b + c`` at one half); 1.0 without discordant pairs."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def _clip_of(record: dict[str, Any]) -> str:
    """A sweep record's clip: its video name without the ``-s<segment>-<slot>`` suffix."""
    name = str(record["video"])
    if "-s" not in name:
        raise MLBError(f"{name} is not a sweep clip (write the probe with mlb probe --sweep)")
    return name.rsplit("-s", 1)[0]


def paired_slots(records: Iterable[dict[str, Any]], methods: Sequence[str], a: int, b: int) -> pd.DataFrame:
    """On a sweep (``mlb probe --sweep``: every clip's target at every frame), each method's
    answers with the target in slot ``a`` against slot ``b`` of the same segment of the same
    clip: pairs, right in ``a``, right in ``b``, the discordant pairs and the exact McNemar
    p-value. Forward clips only."""
    right: dict[tuple[str, str, int], dict[int, bool]] = {}
    for r in records:
        if r.get("status") != "answered" or r.get("method") not in methods or r.get("order", "forward") != "forward":
            continue
        if int(r["slot"]) in (a, b):
            right.setdefault((r["method"], _clip_of(r), int(r["segment"])), {})[int(r["slot"])] = bool(r.get("correct"))
    rows = []
    for method in methods:
        pairs = [v for (m, _, _), v in right.items() if m == method and a in v and b in v]
        if not pairs:
            continue
        only_a = sum(v[a] and not v[b] for v in pairs)
        only_b = sum(v[b] and not v[a] for v in pairs)
        rows.append({"method": method, "pairs": len(pairs), f"slot {a} right": sum(v[a] for v in pairs),
                     f"slot {b} right": sum(v[b] for v in pairs), f"only slot {a}": only_a, f"only slot {b}": only_b,
                     "p (exact McNemar)": round(mcnemar_exact(only_a, only_b), 4)})
    if not rows:
        raise MLBError(f"no clip answered with its target in both slot {a} and slot {b}")
    return pd.DataFrame(rows)


def paired_methods(records: Iterable[dict[str, Any]], a: str, b: str, **where: Any) -> dict[str, Any]:
    """Methods ``a`` and ``b`` on the same questions (those whose fields match ``where``, e.g.
    ``position="first"``): pairs, right under each, discordant pairs, exact McNemar p-value."""
    by: dict[str, dict[str, bool]] = {}
    for r in records:
        if r.get("status") != "answered" or r.get("method") not in (a, b):
            continue
        if all(r.get(k) == v for k, v in where.items()):
            by.setdefault(r["qid"], {})[r["method"]] = bool(r.get("correct"))
    pairs = [v for v in by.values() if a in v and b in v]
    if not pairs:
        raise MLBError(f"no question answered by both {a} and {b}")
    only_a = sum(v[a] and not v[b] for v in pairs)
    only_b = sum(v[b] and not v[a] for v in pairs)
    return {"a": a, "b": b, **where, "pairs": len(pairs), f"{a} right": sum(v[a] for v in pairs),
            f"{b} right": sum(v[b] for v in pairs), f"only {a}": only_a, f"only {b}": only_b,
            "p (exact McNemar)": round(mcnemar_exact(only_a, only_b), 4)}
