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
  rank ``r`` answers the videos ``r, r + W, ...`` (the questions, when a few videos would leave
  ranks idle: :func:`~mlb_core.evaluation.store.shard_items`) into ``<method>.predictions.rank<r>of<W>.jsonl``
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
import json
import os
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from mlb_core.backbones.adapter import VideoLLM
from mlb_core.errors import MLBError
from mlb_core.evaluation.answering import answer_items
from mlb_core.evaluation.benchmarks import (
    BENCHMARKS,
    Item,
    canonical_name,
    default_video_root,
    load_benchmark,
    resolve_videos,
)
from mlb_core.evaluation.chat import ChatJudge
from mlb_core.evaluation.features import FeatureCache
from mlb_core.evaluation.judge import (
    DEFAULT_BASE_URL,
    DEFAULT_JUDGE_MODEL,
    DEFAULT_KEY_ENV,
    Judge,
    KeywordJudge,
    read_jsonl,
)
from mlb_core.evaluation.scoring import metrics, score_records
from mlb_core.evaluation.store import (  # noqa: F401 - LOCK_NAME, OutputLocked, variant_dir: re-exported
    LOCK_NAME,
    OutputLocked,
    PredictionFile,
    Variant,
    _done_qids,
    _shard_files,
    _write_atomic,
    make_variants,
    merge_predictions,
    model_slug,
    output_lock,
    predictions_path,
    shard_info,
    shard_items,
    variant_dir,
)


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
        from mlb_core.backbones.vision_weights import caveat

        result["note"] = caveat()
    base = main.parent / main.name.replace(".predictions.jsonl", "")
    tmp = Path(f"{base}.scored.jsonl.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for rec in scored:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    os.replace(tmp, f"{base}.scored.jsonl")
    _write_atomic(Path(f"{base}.metrics.json"), json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return result



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
