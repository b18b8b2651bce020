"""Benchmark loaders for the IG-VLM CSV layouts, and video lookup (docs/architecture.md, "Videos").

Eight public benchmarks and the synthetic probe (:mod:`mlb_core.evaluation.synthetic`) load into one
list of :class:`Item`. The layouts are those of IG-VLM's ``data/`` folder (public code);
every file starts with an unnamed pandas index column, which is ignored:

=================  ==============================  =============================================
benchmark          default file                    columns
=================  ==============================  =============================================
``msvd-qa``        ``MSVD_QA.csv``                 ``video_id,answer,question,video_name,``
``msrvtt-qa``      ``MSRVTT_QA.csv``               ``question_id,question_type`` (open-ended)
``tgif-qa``        ``TGIF_FrameQA.csv``
``activitynet-qa`` ``ActivityNet_QA.csv``
``next-qa``        ``NExT_QA.csv``                 ``video_name,frame_count,width,height,question,
                                                   answer_number,question_id,question_type,
                                                   a0..a4,answer`` (multiple choice)
``egoschema``      ``EgoSchema.csv``               ``video_name,question_id,question,answer,a0..a4``
``intentqa``       ``IntentQA.csv``                ``video_name,question,question_id,answer,
                                                   video_id,question_type,a0..a4``
``vcgbench``       ``Generic_QA.csv``,             ``video_name,question,question_id,answer,
                   ``Temporal_QA.csv``,            question_type`` (open-ended, judged on five
                   ``Consistency_QA1.csv``,        criteria; QA1/QA2 rows pair by question_id)
                   ``Consistency_QA2.csv``
``synthetic``      ``synthetic.csv``               see :mod:`mlb_core.evaluation.synthetic`
``probe``          ``probe.csv``                   probe v2, see :mod:`mlb_core.evaluation.probe`
=================  ==============================  =============================================

In the multiple-choice files ``answer`` is the correct option's *text* (IG-VLM compares
option texts); NExT-QA also gives ``answer_number``. ``--data`` may name the CSV itself or a
folder holding it (also IG-VLM's ``open_ended_qa/``, ``multiple_choice_qa/`` and
``text_generation_benchmark/`` sub-folders).

Videos are the user's download. :class:`VideoFinder` looks for ``<root>/<video_name><ext>``
for the usual extensions, then (once, lazily) indexes the whole tree under ``root`` by file
stem, so nested layouts (NExT-QA's ``NExTVideo/1025/4010069381.mp4``) work too.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlb_core.errors import MLBError

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".gif", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")
OPEN_COLUMNS = ("video_id", "answer", "question", "video_name", "question_id", "question_type")
OPTION_COLUMNS = ("a0", "a1", "a2", "a3", "a4")
VCG_PARTS = {  # part -> file; generic is judged on correctness, detail and context
    "generic": "Generic_QA.csv",
    "temporal": "Temporal_QA.csv",
    "consistency1": "Consistency_QA1.csv",
    "consistency2": "Consistency_QA2.csv",
}
SUBFOLDERS = ("", "open_ended_qa", "multiple_choice_qa", "text_generation_benchmark")


@dataclass(frozen=True)
class BenchmarkSpec:
    """How one benchmark is laid out and scored.

    ``kind``: ``open`` (judge: yes/no + 0-5 score), ``mc`` (option parser), ``vcgbench``
    (five judge criteria) or ``synthetic`` (open and mc rows, offline judge).
    """

    name: str
    kind: str
    files: tuple[str, ...]
    columns: tuple[str, ...]
    n_rows: int | None = None  # size of the public file, for the docs


BENCHMARKS: dict[str, BenchmarkSpec] = {
    "msvd-qa": BenchmarkSpec("msvd-qa", "open", ("MSVD_QA.csv",), OPEN_COLUMNS, 6415),
    "msrvtt-qa": BenchmarkSpec("msrvtt-qa", "open", ("MSRVTT_QA.csv",), OPEN_COLUMNS, 12278),
    "tgif-qa": BenchmarkSpec("tgif-qa", "open", ("TGIF_FrameQA.csv",), OPEN_COLUMNS, 13691),
    "activitynet-qa": BenchmarkSpec("activitynet-qa", "open", ("ActivityNet_QA.csv",), OPEN_COLUMNS, 8000),
    "next-qa": BenchmarkSpec(
        "next-qa", "mc", ("NExT_QA.csv",),
        ("video_name", "question", "answer_number", "question_id", "question_type", *OPTION_COLUMNS, "answer"),
        4996),
    "egoschema": BenchmarkSpec(
        "egoschema", "mc", ("EgoSchema.csv",),
        ("video_name", "question_id", "question", "answer", *OPTION_COLUMNS), 500),
    "intentqa": BenchmarkSpec(
        "intentqa", "mc", ("IntentQA.csv",),
        ("video_name", "question", "question_id", "answer", "question_type", *OPTION_COLUMNS), 2044),
    "vcgbench": BenchmarkSpec(
        "vcgbench", "vcgbench", tuple(VCG_PARTS.values()),
        ("video_name", "question", "question_id", "answer"), None),
    "synthetic": BenchmarkSpec(
        "synthetic", "synthetic", ("synthetic.csv",),
        ("video_name", "question_id", "question", "answer", "question_type", "task", "position"), None),
    "probe": BenchmarkSpec(
        "probe", "synthetic", ("probe.csv",),
        ("video_name", "question_id", "question", "answer", "question_type", "task", "position", "slot",
         "segment", "size", "order"), None),
}
ALIASES = {"msvd": "msvd-qa", "msrvtt": "msrvtt-qa", "tgif": "tgif-qa", "tgif-frameqa": "tgif-qa",
           "activitynet": "activitynet-qa", "anet": "activitynet-qa", "nextqa": "next-qa",
           "next_qa": "next-qa", "vcg": "vcgbench", "synth": "synthetic"}


@dataclass
class Item:
    """One question about one video.

    Attributes:
        qid: unique within the benchmark (VCGBench: ``<part>/<question_id>``).
        video: the CSV's ``video_name`` (a file stem under the video root).
        task: ``open`` or ``mc``.
        answer: the reference answer; for ``mc`` the correct option's text.
        options: ``mc`` only; ``answer_index`` is the correct one (0-based).
        part: VCGBench part (``generic``, ``temporal``, ``consistency1``, ``consistency2``).
        position: synthetic probe only: where the evidence sits (``early``/``middle``/``late``).
    """

    qid: str
    video: str
    question: str
    answer: str
    task: str = "open"
    options: tuple[str, ...] = ()
    answer_index: int | None = None
    question_type: str = ""
    part: str = ""
    position: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {"qid": self.qid, "video": self.video, "question": self.question, "answer": self.answer,
             "task": self.task, "question_type": self.question_type}
        if self.task == "mc":
            d["options"] = list(self.options)
            d["answer_index"] = self.answer_index
        if self.part:
            d["part"] = self.part
        if self.position:
            d["position"] = self.position
        return d


def canonical_name(name: str) -> str:
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in BENCHMARKS:
        raise MLBError(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}")
    return key


# ---- CSV reading -------------------------------------------------------------------------
def _read_rows(path: Path, required: Iterable[str]) -> list[dict[str, str]]:
    """Rows of a CSV as dicts (the unnamed index column dropped); a clear error on missing columns."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h for h in (reader.fieldnames or []) if h]
            missing = [c for c in required if c not in header]
            if missing:
                raise MLBError(f"{path.name}: missing column(s) {', '.join(missing)} "
                               f"(found: {', '.join(header) or 'none'})")
            rows = [{k: (v or "").strip() for k, v in row.items() if k} for row in reader]
    except UnicodeDecodeError as exc:
        raise MLBError(f"{path.name}: not a UTF-8 CSV file ({exc.reason})") from None
    except csv.Error as exc:
        raise MLBError(f"{path.name}: malformed CSV ({exc})") from None
    return rows


def find_annotation(data: str | Path, filename: str) -> Path:
    """``data`` itself if it is a file, else ``data/<filename>`` (or an IG-VLM sub-folder)."""
    path = Path(data)
    if path.is_file():
        return path
    if not path.exists():
        raise MLBError(f"annotations not found: {data}")
    for sub in SUBFOLDERS:
        candidate = path / sub / filename
        if candidate.is_file():
            return candidate
    raise MLBError(f"no {filename} in {data} (nor in its {', '.join(s for s in SUBFOLDERS if s)} sub-folders)")


def _options(row: dict[str, str], n: int = 5) -> tuple[str, ...]:
    """The non-empty options a0..a{n-1}, in order (an empty one ends the list)."""
    out = []
    for col in (f"a{i}" for i in range(n)):
        value = row.get(col, "")
        if not value:
            break
        out.append(value)
    return tuple(out)


def _answer_index(row: dict[str, str], options: tuple[str, ...], where: str) -> int:
    if row.get("answer_number", "") != "":
        try:
            idx = int(float(row["answer_number"]))
        except ValueError:
            raise MLBError(f"{where}: answer_number {row['answer_number']!r} is not a number") from None
        if not 0 <= idx < len(options):
            raise MLBError(f"{where}: answer_number {idx} out of range for {len(options)} options")
        return idx
    answer = row["answer"].strip()
    for i, opt in enumerate(options):
        if opt.strip() == answer:
            return i
    low = [o.strip().lower() for o in options]
    if answer.lower() in low:
        return low.index(answer.lower())
    raise MLBError(f"{where}: the answer {answer!r} is none of the options")


def _unique(items: list[Item]) -> list[Item]:
    """Make qids unique (``#2``, ``#3`` ... on repeats), deterministically in file order."""
    seen: dict[str, int] = {}
    for it in items:
        n = seen.get(it.qid, 0) + 1
        seen[it.qid] = n
        if n > 1:
            it.qid = f"{it.qid}#{n}"
    return items


def _load_open(path: Path, spec: BenchmarkSpec) -> list[Item]:
    items = []
    for i, row in enumerate(_read_rows(path, spec.columns), start=2):
        where = f"{path.name} line {i}"
        if not row["question"] or not row["video_name"]:
            raise MLBError(f"{where}: empty question or video_name")
        qid = row["question_id"] or f"row{i - 1}"
        items.append(Item(qid, row["video_name"], row["question"], row["answer"], "open",
                          question_type=row.get("question_type", "")))
    return items


def _load_mc(path: Path, spec: BenchmarkSpec) -> list[Item]:
    items = []
    for i, row in enumerate(_read_rows(path, spec.columns), start=2):
        where = f"{path.name} line {i}"
        if not row["question"] or not row["video_name"]:
            raise MLBError(f"{where}: empty question or video_name")
        options = _options(row)
        if len(options) < 2:
            raise MLBError(f"{where}: fewer than two options")
        idx = _answer_index(row, options, where)
        qid = row["question_id"] or f"row{i - 1}"
        items.append(Item(qid, row["video_name"], row["question"], options[idx], "mc", options, idx,
                          question_type=row.get("question_type", "")))
    return items


def _load_vcgbench(data: Path, spec: BenchmarkSpec) -> list[Item]:
    if data.is_file():
        raise MLBError("vcgbench needs the folder holding Generic_QA.csv, Temporal_QA.csv, "
                       "Consistency_QA1.csv and Consistency_QA2.csv, not one file")
    found: dict[str, Path] = {}
    for part, name in VCG_PARTS.items():
        try:
            found[part] = find_annotation(data, name)
        except MLBError:
            continue
    if not found:
        raise MLBError(f"no VCGBench file ({', '.join(VCG_PARTS.values())}) in {data}")
    if ("consistency1" in found) != ("consistency2" in found):
        raise MLBError("VCGBench consistency needs both Consistency_QA1.csv and Consistency_QA2.csv")
    items: list[Item] = []
    for part, path in found.items():
        for i, row in enumerate(_read_rows(path, spec.columns), start=2):
            if not row["question"] or not row["video_name"]:
                raise MLBError(f"{path.name} line {i}: empty question or video_name")
            qid = row["question_id"] or f"row{i - 1}"
            items.append(Item(f"{part}/{qid}", row["video_name"], row["question"], row["answer"], "open",
                              question_type=row.get("question_type", ""), part=part,
                              extra={"question_id": qid}))
    if "consistency1" in found:
        one = {it.extra["question_id"] for it in items if it.part == "consistency1"}
        two = {it.extra["question_id"] for it in items if it.part == "consistency2"}
        if one != two:
            raise MLBError(f"Consistency_QA1.csv and Consistency_QA2.csv pair {len(one & two)} question_ids; "
                           f"{len(one ^ two)} have no partner")
    return items


def _load_synthetic(path: Path, spec: BenchmarkSpec) -> list[Item]:
    items = []
    for i, row in enumerate(_read_rows(path, spec.columns), start=2):
        where = f"{path.name} line {i}"
        task = row["task"]
        if task not in ("open", "mc"):
            raise MLBError(f"{where}: task must be open or mc, got {task!r}")
        extra: dict[str, Any] = {}
        for k in ("evidence_start", "evidence_end", "slot", "segment"):
            if row.get(k):
                try:
                    extra[k] = int(row[k])
                except ValueError:
                    raise MLBError(f"{where}: {k} must be an integer, got {row[k]!r}") from None
        extra.update({k: row[k] for k in ("shape", "size", "order") if row.get(k)})
        if task == "mc":
            options = _options(row)
            idx = _answer_index(row, options, where)
            items.append(Item(row["question_id"], row["video_name"], row["question"], options[idx], "mc",
                              options, idx, row["question_type"], position=row["position"], extra=extra))
        else:
            items.append(Item(row["question_id"], row["video_name"], row["question"], row["answer"], "open",
                              question_type=row["question_type"], position=row["position"], extra=extra))
    return items


def load_benchmark(name: str, data: str | Path, limit: int | None = None) -> list[Item]:
    """Load a benchmark's questions.

    Args:
        name: one of :data:`BENCHMARKS` (or an alias such as ``msvd``).
        data: the annotation CSV, or the folder that holds it (VCGBench: the folder).
        limit: keep the first ``limit`` questions (VCGBench consistency pairs stay whole).

    Returns:
        the items in file order, with unique ``qid``.
    """
    spec = BENCHMARKS[canonical_name(name)]
    data = Path(data)
    if spec.kind == "vcgbench":
        items = _load_vcgbench(data, spec)
    else:
        path = find_annotation(data, spec.files[0])
        loader = {"open": _load_open, "mc": _load_mc, "synthetic": _load_synthetic}[spec.kind]
        items = loader(path, spec)
    if not items:
        raise MLBError(f"{name}: the annotation file has no questions")
    items = _unique(items)
    if limit is not None:
        if limit < 1:
            raise MLBError(f"--limit must be >= 1, got {limit}")
        items = _limit(items, limit)
    return items


def _limit(items: list[Item], limit: int) -> list[Item]:
    kept = items[:limit]
    pairs = {it.extra.get("question_id") for it in kept if it.part.startswith("consistency")}
    if pairs:  # keep both halves of every VCGBench consistency pair that was cut
        have = {it.qid for it in kept}
        kept += [it for it in items[limit:] if it.part.startswith("consistency")
                 and it.extra.get("question_id") in pairs and it.qid not in have]
    return kept


def default_video_root(name: str, data: str | Path) -> Path:
    """``<annotation folder>/videos``: where :mod:`mlb_core.evaluation.synthetic` writes its clips."""
    path = Path(data)
    return (path.parent if path.is_file() else path) / "videos"


# ---- videos ------------------------------------------------------------------------------
class VideoFinder:
    """Find ``video_name`` under ``root``: direct ``<root>/<name><ext>`` first, then a one-time
    index of every video file in the tree by stem (and by file name)."""

    def __init__(self, root: str | Path, extensions: tuple[str, ...] = VIDEO_EXTENSIONS):
        self.root = Path(root)
        self.extensions = extensions
        self._index: dict[str, Path] | None = None
        if not self.root.is_dir():
            raise MLBError(f"video root not found (or not a folder): {root}")

    def _candidates(self, name: str) -> list[str]:
        names = [name]
        if name.startswith("v_"):  # ActivityNet ids are stored with and without "v_"
            names.append(name[2:])
        return names

    def _build_index(self) -> dict[str, Path]:
        index: dict[str, Path] = {}
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            for fn in sorted(filenames):
                p = Path(dirpath) / fn
                if p.suffix.lower() in self.extensions:
                    index.setdefault(p.stem, p)
                    index.setdefault(p.name, p)
        return index

    def find(self, name: str) -> Path | None:
        for cand in self._candidates(name):
            direct = self.root / cand
            if Path(cand).suffix.lower() in self.extensions and direct.is_file():
                return direct
            for ext in self.extensions:
                p = self.root / f"{cand}{ext}"
                if p.is_file():
                    return p
        if self._index is None:
            self._index = self._build_index()
        for cand in self._candidates(name):
            if cand in self._index:
                return self._index[cand]
        return None


def resolve_videos(
    items: list[Item], root: str | Path, skip_missing: bool = False
) -> tuple[dict[str, Path], list[str]]:
    """Map every item's video to a file.

    Returns ``(found, missing)``. Unless ``skip_missing``, any missing video raises one
    :class:`MLBError` that names how many are missing and the first few.
    """
    finder = VideoFinder(root)
    found: dict[str, Path] = {}
    missing: list[str] = []
    for video in dict.fromkeys(it.video for it in items):
        path = finder.find(video)
        if path is None:
            missing.append(video)
        else:
            found[video] = path
    if missing and not skip_missing:
        n_q = sum(it.video in set(missing) for it in items)
        shown = ", ".join(missing[:5]) + (f" (and {len(missing) - 5} more)" if len(missing) > 5 else "")
        raise MLBError(
            f"{len(missing)} of {len(found) + len(missing)} videos ({n_q} questions) not found under {root} "
            f"(tried {', '.join(VIDEO_EXTENSIONS[:6])}, ... and sub-folders): {shown}; "
            f"pass --skip-missing to record them as skipped")
    return found, missing
