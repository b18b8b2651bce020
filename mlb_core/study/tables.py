"""The study's benchmark tables (the ``table`` stage of ``dvc.yaml``, ``notebooks/tables.ipynb``).

One :class:`TableSpec` per table kind (:data:`TABLES`): open-ended QA (``openqa``), multiple
choice (``mc``), the component ablation (``ablation``) and prefill time (``prefill``). A spec
builds its long-format frame from a stage's results (:meth:`TableSpec.build`: the evaluation
runner's folder or the efficiency benchmark's ``prefill.csv``), and renders the Markdown
table with its title, metadata and caption (:meth:`TableSpec.markdown`); :func:`write_table`
writes ``<table>.csv`` and ``<table>.md``. The computations are in
:mod:`mlb_core.study.analysis`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mlb_core.errors import MLBError
from mlb_core.parsing import split_list
from mlb_core.study.analysis import (
    EMBEDDED,
    FLOAT_FORMAT,
    ablation_table,
    caption,
    markdown_table,
    prefill_table,
    qa_table,
    qa_wide,
    round_frame,
)


# ---- builders: a stage's results -> the table's long-format frame -------------------------------
def _eval_rows(source: str | Path) -> list[dict[str, Any]]:
    from mlb_core.evaluation.runner import summarize

    if not Path(source).is_dir():
        raise MLBError(f"no evaluation results at {source}")
    return summarize(source)


def _build_openqa(source: str | Path, methods: Sequence[str] | None) -> pd.DataFrame:
    return qa_table(_eval_rows(source), "open", methods)


def _build_mc(source: str | Path, methods: Sequence[str] | None) -> pd.DataFrame:
    return qa_table(_eval_rows(source), "mc", methods)


def _build_ablation(source: str | Path, methods: Sequence[str] | None) -> pd.DataFrame:
    return ablation_table(_eval_rows(source), methods)


def _build_prefill(source: str | Path, methods: Sequence[str] | None) -> pd.DataFrame:
    if not Path(source).is_file():
        raise MLBError(f"no prefill results at {source}")
    return prefill_table(pd.read_csv(source).to_dict("records"), methods)


# ---- metadata: what the Markdown names above the table -----------------------------------------
def _joined(values) -> str:
    return ", ".join(sorted({str(v) for v in values}))


def _qa_meta(df: pd.DataFrame, judge_note: str = "") -> dict[str, str]:
    return {"model": _joined(df["model"]), "preset": _joined(df["preset"]),
            "benchmark": _joined(df["benchmark"]), "judge": _joined(df["judge"]) + judge_note}


def _qa_meta_with_questions(df: pd.DataFrame) -> dict[str, str]:
    n = df.groupby("benchmark")["n"].max()
    return {**_qa_meta(df), "questions": ", ".join(f"{b}: {int(k)}" for b, k in n.items())}


def _ablation_meta(df: pd.DataFrame) -> dict[str, str]:
    return _qa_meta(df, " (open-ended); option parser (multiple choice)")


def _prefill_meta(df: pd.DataFrame) -> dict[str, str]:
    return {"model": _joined(df["model"]), "preset": _joined(df["preset"]),
            "benchmark": "efficiency benchmark (mlb_core.bench.command): one video, every method at its default budget",
            "basis": ", ".join(f"{b} ({u})" for b, u in sorted(set(zip(df["basis"], df["unit"], strict=True)))),
            "judge": "none (timings)"}


@dataclass(frozen=True)
class TableSpec:
    """One table kind: its title, caption note, how it is built and how it is laid out.

    Attributes:
        name: the table's key (``params.yaml`` ``tables.specs``; the file names).
        title: the Markdown title.
        note: the caption (the untrained-vision caveat is added for the embedded model).
        build: ``(source, methods) -> DataFrame`` in long format (one row per run, naming model,
            preset, benchmark and judge); ``methods`` selects and orders the rows.
        meta: the metadata listed above the Markdown table, from the frame.
        wide: Markdown in the paper's layout (a row per method, a column per benchmark,
            :func:`~mlb_core.study.analysis.qa_wide`) instead of the long frame.
        cells: what the wide layout's cells hold (prefixed to the caption).
        timed: the numbers are timings (they differ between runs and machines).
    """

    name: str
    title: str
    note: str
    build: Callable[[str | Path, Sequence[str] | None], pd.DataFrame]
    meta: Callable[[pd.DataFrame], dict[str, str]]
    wide: bool = False
    cells: str = ""
    timed: bool = False

    def caption(self, df: pd.DataFrame) -> str:
        models = sorted(set(df["model"]))
        model = EMBEDDED if EMBEDDED in models else models[0]
        return caption(f"{self.cells} {self.note}" if self.cells else self.note, model)

    def markdown(self, df: pd.DataFrame, digits: int = 2) -> str:
        """The self-describing Markdown table of a :meth:`build` frame."""
        shown = qa_wide(df) if self.wide else df
        return markdown_table(shown, self.title, self.meta(df), self.caption(df), digits)


TABLES: dict[str, TableSpec] = {spec.name: spec for spec in (
    TableSpec(
        "openqa", "Open-ended video QA: accuracy (%) and score (0-5) by the judge",
        "Open-ended answers judged yes/no and 0-5 by the judge; accuracy = yes / judged.",
        _build_openqa, _qa_meta_with_questions, wide=True, cells="Cells: accuracy (%) / score (0-5)."),
    TableSpec(
        "mc", "Multiple-choice video QA: accuracy (%)",
        "The option letter parsed from the answer (scoring.parse_option); accuracy = correct / answered.",
        _build_mc, _qa_meta_with_questions, wide=True, cells="Cells: accuracy (%)."),
    TableSpec(
        "ablation", "Component ablation: SegAttn top-k -> + GAPool -> + VSTail (accuracy %, score 0-5)",
        "n: questions (open-ended and multiple choice). early / middle / late: accuracy on the questions whose "
        "evidence sits in the first, middle or last third of the video (synthetic probe). segattn-topk: SegAttn "
        "with global top-k per segment; mlb-gapool: + GAPool; mlb: + VSTail.",
        _build_ablation, _ablation_meta),
    TableSpec(
        "prefill", "Prefill per question, both stages, each method reusing what does not depend on the question "
        "(stage-one context; question-independent visual prefix), at 1 and n questions a video",
        "`measured`: wall-clock seconds on this machine's CPU (fp32); `cpu-priced`: a model of Vicuna-7B's "
        "layer shape priced from per-layer times measured here; `flops`: GFLOP of the analytic model. "
        "`total_over_sf_llava`: total relative to SF-LLaVA.",
        _build_prefill, _prefill_meta, timed=True),
)}


def get_table(name: str) -> TableSpec:
    if name not in TABLES:
        raise MLBError(f"unknown table {name!r}; use one of {', '.join(TABLES)}")
    return TABLES[name]


@dataclass(frozen=True)
class WrittenTable:
    frame: pd.DataFrame  # as written to the CSV (floats rounded to SIG_DIGITS significant digits)
    markdown: str
    paths: list[Path]


def write_table(name: str, source: str | Path, methods: str | Sequence[str] | None, out: str | Path,
                digits: int = 2) -> WrittenTable:
    """Build table ``name`` from ``source`` and write ``<out>/<name>.csv`` (long format, floats
    to 6 significant digits) and ``<out>/<name>.md`` (numbers to ``digits`` decimals). The
    Markdown is rendered from the rounded frame, so both files follow from the same numbers."""
    spec = get_table(name)
    method_list = split_list(methods) if isinstance(methods, str) else methods
    df = round_frame(spec.build(source, method_list))
    md = spec.markdown(df, int(digits))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv, md_path = out / f"{name}.csv", out / f"{name}.md"
    df.to_csv(csv, index=False, float_format=FLOAT_FORMAT)
    md_path.write_text(md)
    return WrittenTable(df, md, [csv, md_path])


def write_tables(specs: Mapping[str, Mapping[str, Any]], out: str | Path, digits: int = 2,
                 only: str | Sequence[str] | None = None) -> dict[str, WrittenTable]:
    """Every table of ``specs`` (``params.yaml``'s ``tables.specs``: table -> its ``source`` and
    ``methods``), in order, by :func:`write_table`; ``only``: a subset of their names. One call
    makes all the study's tables (one notebook run, one stage)."""
    names = list(specs) if only is None else (split_list(only) if isinstance(only, str) else list(only))
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise MLBError(f"no spec for table(s) {', '.join(unknown)}; specs: {', '.join(specs)}")
    return {n: write_table(n, specs[n]["source"], specs[n]["methods"], out, digits) for n in names}
