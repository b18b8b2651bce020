"""Evaluation at scale: benchmark x method x preset x model (docs/architecture.md, "Evaluation at scale").

Python API: :func:`evaluate` (answer, merge, score), :func:`score_saved` (re-score saved
predictions), :func:`summarize` (a tidy list of dicts over every metrics file). CLI:
``mlb eval`` (see ``mlb eval --help``).

Output layout (one folder per benchmark, model and preset label)::

    OUT/<benchmark>/<model>/<preset>/<method>.predictions.jsonl   one JSON line per question
    OUT/<benchmark>/<model>/<preset>/<method>.scored.jsonl        predictions + verdicts
    OUT/<benchmark>/<model>/<preset>/<method>.metrics.json        judge, counts, accuracy / score
    OUT/judge-cache.jsonl                                         judge replies (shared, keyed)

``<model>`` is the model name with ``/`` turned into ``--``; ``<preset>`` is the preset name,
plus ``+key=value`` for each parameter override (``cpu+grid=2x2``).

How it runs:

- **Resumable.** Each answer is one JSON line, appended and flushed as soon as it is made.
  On start the runner reads what is there (a torn last line from a kill is cut off) and
  answers only the questions that have no line yet, so a killed run, rerun, ends with the
  same predictions as an uninterrupted one, with no duplicates.
- **Encode once.** Questions are answered video by video; each video is decoded and
  encoded once per frame count and shared by every method / grid setting, and a question's
  stage-one scores are shared by every method that uses them (its measured stage-one time
  is still recorded for each). ``feature_cache=DIR`` also keeps grid tokens on disk across
  runs.
- **Data-parallel.** Under ``accelerate launch`` (or ``torchrun``: ``RANK``/``WORLD_SIZE``),
  rank ``r`` answers the videos ``r, r + W, ...`` into ``<method>.predictions.rank<r>of<W>.jsonl``
  on its own device (``cuda:LOCAL_RANK``); rank 0 waits until every question has a line,
  merges the shards into ``<method>.predictions.jsonl`` (benchmark order) and scores.
  The output folder must be shared by all ranks (one node, or a shared file system).
- **One run per folder.** ``evaluate`` / ``score_saved`` hold an OS lock on ``OUT/.mlb-eval.lock``
  (rank 0 for a multi-rank launch): a second run on the same ``out`` fails at once, naming the
  holder's pid, and changes nothing. A ``failed`` record is retried by the next run.
- **Progress.** A tqdm bar per rank: done / total, rate and ETA.
- Missing videos raise one error listing them, or with ``skip_missing`` are recorded as
  ``status: skipped``; an undecodable video or a prompt that does not fit is recorded as
  ``status: failed`` with its error. Both are counted in the metrics, never dropped.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mlb_core.backbones.adapter import VideoLLM
from mlb_core.config import MLBParams, get_preset
from mlb_core.errors import MLBError
from mlb_core.evaluation.benchmarks import (
    BENCHMARKS,
    Item,
    canonical_name,
    default_video_root,
    load_benchmark,
    resolve_videos,
)
from mlb_core.evaluation.judge import (
    DEFAULT_BASE_URL,
    DEFAULT_JUDGE_MODEL,
    DEFAULT_KEY_ENV,
    ChatJudge,
    Judge,
    KeywordJudge,
    read_jsonl,
)
from mlb_core.evaluation.scoring import metrics, score_records
from mlb_core.methods import METHODS
from mlb_core.pipeline import VideoFeatures, answer, encode_video
from mlb_core.selection.scores import StageOneCache
from mlb_core.video import load_video

EMBEDDED_NOTE = ("embedded default: real SmolLM2-135M language model, untrained (seeded random) vision "
                 "tower; its answers about video content are not meaningful")


# ---- variants and paths ------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    """One (method, parameters) to evaluate; ``label`` names its output folder."""

    method: str
    params: MLBParams
    label: str

    @property
    def preset(self) -> str:
        return self.label.split("+", 1)[0]

    def fingerprint(self, model: str) -> str:
        """A short hash of (model, method, all parameters): stamped on every record, so a
        resumed run never mixes in answers made with other settings."""
        blob = json.dumps([model, self.method, self.params.to_dict()], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _fmt(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return "x".join(str(v) for v in value)
    return str(value)


def make_variants(
    methods: Sequence[str],
    presets: Sequence[str] = ("cpu",),
    overrides: dict[str, Any] | None = None,
    grids: Sequence[tuple[int, int]] | None = None,
) -> list[Variant]:
    """methods x presets (x GAPool grids), each with ``overrides`` applied."""
    if not methods:
        raise MLBError("no method given")
    for m in methods:
        if m not in METHODS:
            raise MLBError(f"unknown method {m!r}; choose one of {', '.join(sorted(METHODS))}")
    out = []
    for preset in presets:
        for grid in (grids or [None]):
            changes = dict(overrides or {})
            if grid is not None:
                changes["grid"] = tuple(grid)
            params = get_preset(preset, **changes)
            label = preset + "".join(f"+{k}={_fmt(v)}" for k, v in sorted(changes.items()))
            out.extend(Variant(m, params, label) for m in methods)
    return out


def model_slug(name: str) -> str:
    """A folder name for a model: ``llava-hf/llava-v1.6-vicuna-7b-hf`` -> ``llava-hf--llava-v1.6-vicuna-7b-hf``;
    a local folder -> its base name."""
    path = Path(name)
    if path.is_dir():
        name = path.resolve().name
    return re.sub(r"[^\w.+=-]", "-", name.replace("/", "--").replace(":", "-"))


def variant_dir(out: str | Path, benchmark: str, model: str, label: str) -> Path:
    return Path(out) / benchmark / model_slug(model) / label


def predictions_path(out: str | Path, benchmark: str, model: str, variant: Variant) -> Path:
    return variant_dir(out, benchmark, model, variant.label) / f"{variant.method}.predictions.jsonl"


def _shard_files(main: Path) -> list[Path]:
    return sorted(main.parent.glob(main.name.replace(".jsonl", ".rank*of*.jsonl")))


# ---- distributed ---------------------------------------------------------------------------------
def shard_info() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the launcher's environment (``accelerate
    launch`` and ``torchrun`` set ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); ``(0, 1, 0)`` alone."""
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_RANK", rank))
    if not 0 <= rank < world:
        raise MLBError(f"RANK={rank} is not in [0, WORLD_SIZE={world})")
    return rank, world, local


def shard_items(items: list[Item], rank: int, world: int) -> list[Item]:
    """The items of rank ``rank``: whole videos, round-robin in first-appearance order, so
    each video is encoded by one rank only."""
    videos = list(dict.fromkeys(it.video for it in items))
    mine = set(videos[rank::world])
    return [it for it in items if it.video in mine]


# ---- the output folder's lock --------------------------------------------------------------------
LOCK_NAME = ".mlb-eval.lock"


class OutputLocked(MLBError):
    """Another process holds the output folder."""


_held: dict[str, list[Any]] = {}  # resolved folder -> [open lock file, depth] (re-entrant per process)
_held_guard = threading.Lock()


def _try_lock(fd: int) -> bool:
    if os.name == "nt":  # pragma: no cover - Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except (BlockingIOError, PermissionError):
        return False


@contextlib.contextmanager
def output_lock(folder: str | Path) -> Iterator[None]:
    """Hold an exclusive OS file lock on ``folder/.mlb-eval.lock`` for the block (re-entrant in
    one process). A second run on the same folder fails at once with :class:`OutputLocked`
    naming the folder and the holder; a killed holder's lock is freed by the OS."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = str(folder.resolve())
    with _held_guard:
        if key in _held:
            _held[key][1] += 1
        else:
            path = folder / LOCK_NAME
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            if not _try_lock(fd):
                try:
                    holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
                finally:
                    os.close(fd)
                raise OutputLocked(f"output folder {folder} is in use by another mlb run ({holder}); "
                                   "wait for it to finish or use another --out")
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                          f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
            _held[key] = [fd, 1]
    try:
        yield
    finally:
        with _held_guard:
            _held[key][1] -= 1
            if _held[key][1] == 0:
                fd = _held.pop(key)[0]
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
                os.close(fd)  # closing the descriptor releases the lock


# ---- the prediction files ------------------------------------------------------------------------
def _is_done(rec: dict[str, Any]) -> bool:
    """A record that needs no new answer: anything but ``status: failed`` (retried on the next run)."""
    return "qid" in rec and rec.get("status") != "failed"


class PredictionFile:
    """An append-only JSONL of prediction records, one per question (``qid``); a question
    whose record is ``failed`` is not done, and a later record replaces it when merged."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.done = {r["qid"] for r in read_jsonl(path, repair=True) if _is_done(r)}
        self._f = None

    def append(self, record: dict[str, Any]) -> None:
        if record["qid"] in self.done:
            return
        if self._f is None:
            self._f = open(self.path, "a", encoding="utf-8")
        self._f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())
        self.done.add(record["qid"])

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def _done_qids(main: Path, fingerprint: str | None = None, include_failed: bool = False) -> set[str]:
    """qids with a record in ``main`` or its shards (``failed`` ones only with
    ``include_failed``); with ``fingerprint``, a record made with other settings is an error
    (use another ``out`` or delete the old files)."""
    done: set[str] = set()
    for p in [main, *_shard_files(main)]:
        for r in read_jsonl(p):
            if fingerprint and r.get("fingerprint", fingerprint) != fingerprint:
                raise MLBError(f"{p} holds answers made with other settings (model, method or parameters); "
                               "use another --out or delete that file")
            if "qid" in r and (include_failed or _is_done(r)):
                done.add(r["qid"])
    return done


def merge_predictions(main: Path, items: list[Item]) -> list[dict[str, Any]]:
    """Merge ``main`` and its rank shards into ``main`` in benchmark order (the first record of
    a qid wins, except that a ``failed`` record gives way to a later one: a retry; records of
    questions no longer in ``items`` are kept at the end), written atomically; the shards are
    then removed. Returns the records of ``items``' questions. The caller holds the output
    folder's lock (:func:`output_lock`), so no other process appends meanwhile."""
    shards = _shard_files(main)
    by_qid: dict[str, dict[str, Any]] = {}
    for p in [main, *shards]:
        for rec in read_jsonl(p):
            q = rec.get("qid", "")
            if q not in by_qid or not _is_done(by_qid[q]):
                by_qid[q] = rec
    order = [it.qid for it in items]
    known = set(order)
    records = [by_qid[q] for q in order if q in by_qid]
    extras = [r for q, r in by_qid.items() if q not in known and q]
    tmp = main.with_name(f".{main.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for rec in records + extras:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, main)
    for p in shards:
        p.unlink(missing_ok=True)
    return records


# ---- feature caches --------------------------------------------------------------------------------
FRAME_METHODS = ("ig-vlm", "ts-llava")  # methods that re-encode the decoded frames as an image
CACHE_FORMAT = 1


class FeatureCache:
    """Grid tokens per (model, video file, n_frames, backend): in memory for the run, and
    on disk under ``folder`` when given.

    On disk: one ``<key>.safetensors`` per entry holding only tensors (``tokens``, ``indices``)
    and JSON metadata (timings, shape), so loading runs no code. Decoded frames are *not*
    stored: a method that needs them (:data:`FRAME_METHODS`) gets them decoded again
    (:meth:`frames`). Written through a unique temporary name and ``os.replace``, so runs
    sharing a folder never collide; an unreadable file (truncated, empty, garbage) is a miss
    with one warning line naming it, and is overwritten."""

    def __init__(self, vlm: VideoLLM, folder: str | Path | None = None, backend: str = "auto"):
        self.vlm, self.backend = vlm, backend
        self.folder = Path(folder) if folder else None
        self._mem: dict[tuple[str, int], VideoFeatures] = {}
        self.hits = 0

    def _key(self, path: Path, n_frames: int) -> str:
        st = path.stat()
        w = next(self.vlm.model.model.multi_modal_projector.parameters())  # a fingerprint of the weights
        blob = json.dumps([self.vlm.name, str(self.vlm.dtype), str(path.resolve()), st.st_size, st.st_mtime_ns,
                           n_frames, self.backend, float(w.flatten()[:64].float().sum())])
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def _read(self, disk: Path, path: Path, n_frames: int) -> VideoFeatures | None:
        from safetensors import safe_open

        try:
            with safe_open(str(disk), framework="pt") as f:
                meta = f.metadata() or {}
                tokens, indices = f.get_tensor("tokens"), f.get_tensor("indices")
            timings = json.loads(meta.get("timings", "{}"))
            if (int(meta.get("format", -1)) != CACHE_FORMAT or tokens.dim() != 4 or tokens.shape[0] != n_frames
                    or tuple(indices.shape) != (n_frames,) or not isinstance(timings, dict)):
                raise ValueError("unexpected contents")
        except Exception as exc:  # safetensors raises its own errors on a torn or foreign file
            print(f"warning: feature cache file {disk} is unreadable ({_short(exc)}); encoding again",
                  file=sys.stderr)
            return None
        return VideoFeatures(str(path), None, indices.numpy(), tokens.to(self.vlm.device),  # type: ignore[arg-type]
                             {k: float(v) for k, v in timings.items()})

    def _write(self, disk: Path, feats: VideoFeatures) -> None:
        from safetensors.torch import save_file

        disk.parent.mkdir(parents=True, exist_ok=True)
        tmp = disk.with_name(f".{disk.name}.{os.getpid()}.{threading.get_ident()}.{time.time_ns()}.tmp")
        try:
            save_file({"tokens": feats.tokens.detach().cpu().contiguous(),
                       "indices": torch.as_tensor(np.asarray(feats.indices, dtype=np.int64))},
                      str(tmp), metadata={"format": str(CACHE_FORMAT), "timings": json.dumps(feats.timings),
                                          "model": self.vlm.name, "video": feats.path})
            os.replace(tmp, disk)
        finally:
            tmp.unlink(missing_ok=True)

    def get(self, path: Path, n_frames: int) -> tuple[VideoFeatures, bool]:
        """``(features, cached)``; ``cached`` is True when no encoding was needed. Features
        read from disk have ``frames=None`` (see :meth:`frames`)."""
        mem_key = (str(path), n_frames)
        if mem_key in self._mem:
            return self._mem[mem_key], True
        disk = self.folder / f"{self._key(path, n_frames)}.safetensors" if self.folder else None
        feats = self._read(disk, path, n_frames) if disk is not None and disk.exists() else None
        cached = feats is not None
        if feats is not None:
            self.hits += 1
        else:
            feats = encode_video(self.vlm, path, n_frames, self.backend)
            if disk is not None:
                self._write(disk, feats)
        self._mem = {mem_key: feats} | {k: v for k, v in self._mem.items() if k[0] == str(path)}
        return feats, cached

    def frames(self, feats: VideoFeatures, n_frames: int) -> VideoFeatures:
        """``feats`` with its decoded frames (decoded again when they came from disk)."""
        if feats.frames is None:
            frames, indices = load_video(feats.path, n_frames, self.backend)
            if not np.array_equal(indices, feats.indices):
                raise MLBError(f"{feats.path} decodes to other frames than its cached features; "
                               "delete the feature cache")
            feats.frames = frames
        return feats


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0][:120] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ---- answering ---------------------------------------------------------------------------------------
def _base_record(item: Item, benchmark: str, model: str, variant: Variant, rank: int = 0) -> dict[str, Any]:
    rec = {"qid": item.qid, "benchmark": benchmark, "model": model, "method": variant.method,
           "preset": variant.label, "fingerprint": variant.fingerprint(model), **item.to_dict(), "rank": rank}
    for k, v in item.extra.items():
        rec.setdefault(k, v)
    return rec


def answer_items(
    vlm: VideoLLM,
    items: list[Item],
    videos: dict[str, Path],
    variants: list[Variant],
    files: dict[Variant, PredictionFile],
    benchmark: str,
    model: str,
    feature_cache: FeatureCache,
    progress: bool = True,
    desc: str = "eval",
    rank: int = 0,
) -> dict[str, int]:
    """Answer every (item, variant) without a line yet, video by video; append each record."""
    todo = [(it, v) for it in items for v in variants if it.qid not in files[v].done]
    total = len(items) * len(variants)
    counts = {"answered": 0, "skipped": 0, "failed": 0}
    bar = tqdm(total=total, initial=total - len(todo), desc=desc, unit="ans", disable=not progress,
               dynamic_ncols=True, mininterval=1.0, file=sys.stderr)
    by_video: dict[str, list[tuple[Item, Variant]]] = {}
    stage_one = StageOneCache(max_entries=max(2, len(variants)))  # reused across a video's questions
    for it, v in todo:
        by_video.setdefault(it.video, []).append((it, v))
    try:
        for video, work in by_video.items():
            path = videos.get(video)
            if path is None:
                for it, v in work:
                    files[v].append({**_base_record(it, benchmark, model, v, rank), "status": "skipped",
                                     "error": "video not found"})
                    counts["skipped"] += 1
                    bar.update(1)
                continue
            feats: dict[int, VideoFeatures | MLBError] = {}
            cached: dict[int, bool] = {}
            for n in sorted({v.params.n_frames for _, v in work}):
                try:
                    feats[n], cached[n] = feature_cache.get(path, n)
                except MLBError as exc:
                    feats[n] = exc
                except torch.cuda.OutOfMemoryError:  # one huge video must not end a long run
                    torch.cuda.empty_cache()
                    feats[n] = MLBError(f"CUDA out of memory encoding {n} frames")
            for it, v in work:
                rec = _base_record(it, benchmark, model, v, rank)
                f = feats[v.params.n_frames]
                if isinstance(f, MLBError):
                    rec.update(status="failed", error=str(f))
                else:
                    try:
                        if v.method in FRAME_METHODS:
                            f = feature_cache.frames(f, v.params.n_frames)
                        ans = answer(vlm, f, it.question, v.method, v.params, task=it.task,
                                     options=list(it.options) if it.task == "mc" else None, scorer=stage_one)
                    except MLBError as exc:
                        rec.update(status="failed", error=str(exc))
                    except torch.cuda.OutOfMemoryError:
                        torch.cuda.empty_cache()
                        rec.update(status="failed", error="CUDA out of memory")
                    else:
                        timings = dict(ans.timings)
                        shared = None
                        if "stage_one" in timings:  # what this question's scores cost, also when shared
                            cost = stage_one.last_cost
                            timings.update(stage_one=cost["context"] + cost["question"],
                                           stage_one_context=cost["context"], stage_one_question=cost["question"])
                            shared = stage_one.last_shared
                        rec.update(status="answered", prediction=ans.text, n_visual_tokens=ans.n_visual_tokens,
                                   n_prompt_tokens=ans.n_prompt_tokens, timings=timings, stage_one_shared=shared,
                                   video_timings=dict(f.timings), features_cached=cached[v.params.n_frames])
                files[v].append(rec)
                counts[rec["status"]] += 1
                bar.update(1)
    finally:
        bar.close()
    return counts


# ---- judges ------------------------------------------------------------------------------------------
def make_judge(kind: str, benchmark: str, out: str | Path, model: str = DEFAULT_JUDGE_MODEL,
               base_url: str = DEFAULT_BASE_URL, key_env: str = DEFAULT_KEY_ENV,
               cache: str | Path | None = None, workers: int = 4, **chat_kwargs: Any) -> Judge | None:
    """``auto``: the offline keyword judge for ``synthetic``, none for multiple choice, the
    chat judge otherwise; ``chat``, ``offline`` (keyword match) or ``none`` explicitly."""
    spec = BENCHMARKS[canonical_name(benchmark)]
    if kind == "auto":
        kind = "offline" if spec.kind == "synthetic" else "none" if spec.kind == "mc" else "chat"
    if kind == "none":
        return None
    if kind == "offline":
        if spec.kind == "vcgbench":
            raise MLBError("VCGBench needs an LLM judge (--judge chat)")
        if spec.kind == "synthetic":
            from mlb_core.evaluation.synthetic import PALETTE

            return KeywordJudge(PALETTE)
        return KeywordJudge()
    if kind == "chat":
        return ChatJudge(model, base_url, key_env, cache or Path(out) / "judge-cache.jsonl", workers=workers,
                         **chat_kwargs)
    raise MLBError(f"unknown judge {kind!r}; use auto, chat, offline or none")


def _judge_info(judge: Judge | None, records: list[dict[str, Any]]) -> dict[str, Any]:
    """What scored the answers: the judge (open-ended) and/or the option parser (mc)."""
    parser = "scoring.parse_option"
    if any(r.get("task") == "open" for r in records):
        info = judge.describe() if judge else {"name": None, "note": "open-ended answers not judged"}
        if any(r.get("task") == "mc" for r in records):
            info = {**info, "mc": parser}
        return info
    return {"name": "option-parser", "rule": parser}


# ---- scoring -----------------------------------------------------------------------------------------
def _timing_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    answered = [r for r in records if r.get("status") == "answered"]
    if not answered:
        return {}
    stages: dict[str, float] = {}
    for r in answered:
        for k, v in r.get("timings", {}).items():
            stages[k] = stages.get(k, 0.0) + v
    mean = {k: v / len(answered) for k, v in stages.items()}
    per_video = {r["video"]: sum(r.get("video_timings", {}).values()) for r in answered}
    encode = sum(per_video.values())
    return {"answer_mean_s": mean, "answer_s": sum(mean.values()),
            "encode_per_video_s": encode / len(per_video),
            "per_question_s": sum(mean.values()) + encode / len(answered)}


def score_variant(
    main: Path,
    items: list[Item],
    judge: Judge | None,
    benchmark: str,
    model: str,
    variant: Variant,
    progress: bool = True,
) -> dict[str, Any]:
    """Score one variant's merged predictions; write ``.scored.jsonl`` and ``.metrics.json``."""
    spec = BENCHMARKS[canonical_name(benchmark)]
    by_qid = {r["qid"]: r for r in read_jsonl(main) if "qid" in r}
    records = [by_qid[it.qid] for it in items if it.qid in by_qid]
    missing = len(items) - len(records)
    per_part = {"generic": 3, "temporal": 1, "consistency1": 1, "consistency2": 0}  # judge calls per record
    n_requests = sum(per_part.get(r.get("part", ""), 1) for r in records
                     if r.get("status") == "answered" and r.get("task") == "open")
    bar = tqdm(total=n_requests, desc=f"judge {variant.method}", unit="q", file=sys.stderr, mininterval=1.0,
               disable=not progress or not isinstance(judge, ChatJudge) or n_requests == 0)
    try:
        scored = score_records(records, judge, progress=bar.update)
    finally:
        bar.close()
    m = metrics(scored, spec.kind)
    m["counts"]["missing"] = missing
    result = {
        "benchmark": canonical_name(benchmark), "model": model, "method": variant.method,
        "preset": variant.label, "params": variant.params.to_dict(), "judge": _judge_info(judge, records),
        **m, "time": _timing_summary(records),
        "predictions": main.name, "scored": main.name.replace(".predictions.", ".scored."),
    }
    if model_slug(model).startswith("embedded"):
        result["note"] = EMBEDDED_NOTE
    base = main.parent / main.name.replace(".predictions.jsonl", "")
    tmp = Path(f"{base}.scored.jsonl.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for rec in scored:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    os.replace(tmp, f"{base}.scored.jsonl")
    _write_atomic(Path(f"{base}.metrics.json"), json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return result


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` through a unique temporary sibling and ``os.replace``: readers see the old
    or the new file, never a torn one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ---- the runner ----------------------------------------------------------------------------------------
def evaluate(
    benchmark: str,
    data: str | Path,
    methods: Sequence[str] = ("mlb",),
    presets: Sequence[str] = ("cpu",),
    model: str = "embedded",
    out: str | Path = "results/eval",
    videos: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    grids: Sequence[tuple[int, int]] | None = None,
    skip_missing: bool = False,
    limit: int | None = None,
    judge: str | Judge | None = "auto",
    judge_model: str = DEFAULT_JUDGE_MODEL,
    judge_base_url: str = DEFAULT_BASE_URL,
    judge_key_env: str = DEFAULT_KEY_ENV,
    judge_cache: str | Path | None = None,
    judge_workers: int = 4,
    score: bool = True,
    device: str | None = None,
    backend: str = "auto",
    feature_cache: str | Path | None = None,
    vlm: VideoLLM | None = None,
    progress: bool = True,
    merge_poll_s: float = 2.0,
) -> list[dict[str, Any]]:
    """Evaluate ``methods`` x ``presets`` (x ``grids``) of ``model`` on a benchmark.

    Args:
        benchmark: a name in :data:`mlb_core.evaluation.benchmarks.BENCHMARKS`.
        data: the annotation CSV or its folder (synthetic: the folder ``mlb synth`` wrote).
        videos: the video root; default ``<data folder>/videos``.
        model: a :func:`mlb_core.backbones.adapter.load_model` name; with ``vlm`` given, only its label.
        judge: ``auto``, ``chat``, ``offline``, ``none`` or a :class:`Judge`.
        score: False only answers (e.g. on GPU nodes without network); :func:`score_saved` later.
        feature_cache: a folder to keep grid tokens across runs (in memory only by default).

    Returns:
        the metrics dict of every variant (on rank 0; other ranks return ``[]``).
    """
    bench = canonical_name(benchmark)
    variants = make_variants(methods, presets, overrides, grids)
    items = load_benchmark(bench, data, limit)
    root = Path(videos) if videos else default_video_root(bench, data)
    found, _missing = resolve_videos(items, root, skip_missing)
    judge_obj = (make_judge(judge or "none", bench, out, judge_model, judge_base_url, judge_key_env, judge_cache,
                            judge_workers) if not isinstance(judge, Judge) else judge)
    rank, world, local_rank = shard_info()
    if score and rank == 0 and isinstance(judge_obj, ChatJudge) and BENCHMARKS[bench].kind != "mc":
        judge_obj.check_ready()
    # rank 0 holds the output folder for the whole run (the other ranks of this launch only
    # write their own shards): a second run on the same folder fails at once
    with output_lock(out) if rank == 0 else contextlib.nullcontext():
        if vlm is None:
            from mlb_core.backbones.loading import load_model

            if device is None and world > 1 and torch.cuda.is_available():
                device = f"cuda:{local_rank % torch.cuda.device_count()}"
            vlm = load_model(model, device=device)
        mains = {v: predictions_path(out, bench, model, v) for v in variants}
        shard_names = {v: (mains[v] if world == 1 else
                           mains[v].with_name(mains[v].name.replace(".jsonl", f".rank{rank}of{world}.jsonl")))
                       for v in variants}
        files = {v: PredictionFile(shard_names[v]) for v in variants}
        for v in variants:  # what any rank (or an earlier run with another world size) already wrote
            files[v].done |= _done_qids(mains[v], v.fingerprint(model))
        mine = shard_items(items, rank, world)
        desc = f"{bench} {model_slug(model)}" + (f" [rank {rank}/{world}]" if world > 1 else "")
        t0 = time.perf_counter()
        try:
            counts = answer_items(vlm, mine, found, variants, files, bench, model,
                                  FeatureCache(vlm, feature_cache, backend), progress, desc, rank)
        finally:
            for f in files.values():
                f.close()
        n_new = sum(counts.values())
        if progress and n_new:
            dt = time.perf_counter() - t0
            print(f"{desc}: {counts['answered']} answered, {counts['skipped']} skipped, {counts['failed']} failed "
                  f"in {dt:.1f} s ({dt / n_new:.2f} s per answer)", file=sys.stderr)
        if rank != 0:
            return []
        if world > 1:
            _wait_for_all(mains, items, merge_poll_s, progress)
        for v in variants:
            merge_predictions(mains[v], items)
        if not score:
            return []
        return [score_variant(mains[v], items, judge_obj, bench, model, v, progress) for v in variants]


def _wait_for_all(mains: dict[Variant, Path], items: list[Item], poll_s: float, progress: bool) -> None:
    """Rank 0: wait until every question of every variant has a line in some shard."""
    need = {it.qid for it in items}
    announced = False
    while True:
        left = 0
        for p in mains.values():  # a shard line (even failed) or a finished line of the merged file
            have = _done_qids(p)
            for shard in _shard_files(p):
                have |= {r["qid"] for r in read_jsonl(shard) if "qid" in r}
            left += len(need - have)
        if not left:
            return
        if progress and not announced:
            print(f"rank 0: waiting for the other ranks ({left} answers left)", file=sys.stderr)
            announced = True
        time.sleep(poll_s)


def score_saved(
    benchmark: str,
    data: str | Path,
    methods: Sequence[str] = ("mlb",),
    presets: Sequence[str] = ("cpu",),
    model: str = "embedded",
    out: str | Path = "results/eval",
    overrides: dict[str, Any] | None = None,
    grids: Sequence[tuple[int, int]] | None = None,
    limit: int | None = None,
    judge: str | Judge | None = "auto",
    judge_model: str = DEFAULT_JUDGE_MODEL,
    judge_base_url: str = DEFAULT_BASE_URL,
    judge_key_env: str = DEFAULT_KEY_ENV,
    judge_cache: str | Path | None = None,
    judge_workers: int = 4,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Re-score saved predictions (merging any rank shards first); no model is loaded."""
    bench = canonical_name(benchmark)
    variants = make_variants(methods, presets, overrides, grids)
    items = load_benchmark(bench, data, limit)
    judge_obj = (make_judge(judge or "none", bench, out, judge_model, judge_base_url, judge_key_env, judge_cache,
                            judge_workers) if not isinstance(judge, Judge) else judge)
    if isinstance(judge_obj, ChatJudge) and BENCHMARKS[bench].kind != "mc":
        judge_obj.check_ready()
    results = []
    with output_lock(out):
        for v in variants:
            main = predictions_path(out, bench, model, v)
            if not main.exists() and not _shard_files(main):
                raise MLBError(f"no predictions at {main}; run mlb eval first")
            merge_predictions(main, items)
            results.append(score_variant(main, items, judge_obj, bench, model, v, progress))
    return results


# ---- summary ----------------------------------------------------------------------------------------------
def summarize(out: str | Path, groups: Iterable[str] = ("task", "type", "position")) -> list[dict[str, Any]]:
    """A tidy table over every ``*.metrics.json`` under ``out``: one row per (benchmark,
    model, preset, method, group, value), where ``group`` is ``all`` or one of ``groups``
    (``task``, ``type``, ``position``, ``task_position``). Columns: ``n``, ``answered``,
    ``accuracy``, ``score``, ``judge``, ``per_question_s`` (and the five VCGBench scores
    on ``all`` rows). ``pandas.DataFrame(summarize(out))`` is the table.
    """
    rows: list[dict[str, Any]] = []
    for path in sorted(Path(out).rglob("*.metrics.json")):
        try:
            m = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(m, dict):
                raise ValueError("not a JSON object")
            m["counts"], m["benchmark"]  # noqa: B018 - the keys every row needs
        except (ValueError, KeyError, UnicodeDecodeError) as exc:
            raise MLBError(f"{path}: not a readable metrics file ({type(exc).__name__}); "
                           "re-score it with mlb eval --score-only or delete it") from None
        base = {"benchmark": m["benchmark"], "model": m["model"], "preset": m["preset"], "method": m["method"],
                "judge": (m.get("judge") or {}).get("name")}
        c = m["counts"]
        row = {**base, "group": "all", "value": "all", "n": c["total"], "answered": c["answered"],
               "skipped": c["skipped"], "failed": c["failed"], "accuracy": m.get("accuracy"),
               "score": m.get("score"), "per_question_s": (m.get("time") or {}).get("per_question_s")}
        if "vcgbench" in m:
            row.update({f"vcg_{k}": v for k, v in m["vcgbench"]["scores"].items()})
        rows.append(row)
        for g in groups:
            table = m.get(f"by_{g}") or {}
            if g == "task_position":
                table = {f"{t}/{p}": s for t, sub in table.items() for p, s in sub.items()}
            for value, s in table.items():
                rows.append({**base, "group": g, "value": value, "n": s["n"], "answered": s["answered"],
                             "skipped": s["skipped"], "failed": s["failed"], "accuracy": s["accuracy"],
                             "score": s.get("score"), "per_question_s": None})
    return rows


def benchmark_data(data: str | Path, benchmark: str, n_benchmarks: int = 1) -> Path:
    """The annotation CSV or folder of ``benchmark``: ``<data>/<benchmark>`` when that folder
    exists or several benchmarks share ``data``, else ``data`` itself."""
    sub = Path(data) / benchmark
    return sub if sub.is_dir() or n_benchmarks > 1 else Path(data)


def run_eval(
    benchmarks: Sequence[str],
    data: str | Path,
    models: Sequence[str],
    methods: Sequence[str],
    presets: Sequence[str] = ("cpu",),
    grids: Sequence[tuple[int, int]] | None = None,
    reference: Sequence[str] = (),
    videos: str | Path | None = None,
    device: str | None = None,
    **runner: Any,
) -> list[dict[str, Any]]:
    """Every model x benchmark through :func:`evaluate`, each model loaded once.

    ``data`` is one benchmark's CSV or folder, or a folder with one sub-folder per benchmark
    (:func:`benchmark_data`); ``videos`` likewise. ``grids`` sweeps the GAPool grid of
    ``methods``; ``reference`` methods (e.g. ``full``) run once, without the sweep. Other
    keyword arguments go to :func:`evaluate`. Returns the metrics of every run."""
    from mlb_core.backbones.loading import load_model

    results: list[dict[str, Any]] = []
    out = runner.get("out", "results/eval")
    with output_lock(out) if shard_info()[0] == 0 else contextlib.nullcontext():  # before any model loads
        for model in models:
            vlm = runner.pop("vlm", None) or load_model(model, device=device)
            for bench in benchmarks:
                common = dict(data=benchmark_data(data, bench, len(benchmarks)), presets=list(presets),
                              model=model, vlm=vlm,
                              videos=benchmark_data(videos, bench, len(benchmarks)) if videos else None, **runner)
                results += evaluate(bench, methods=list(methods), grids=list(grids) if grids else None, **common)
                if reference:
                    results += evaluate(bench, methods=list(reference), **common)
    return results
