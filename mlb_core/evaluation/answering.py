"""Answering a benchmark's questions for the evaluation runner (:mod:`mlb_core.evaluation.runner`):
video by video, each video encoded once per frame count, every record appended as it is made.
A video's questions share its stage-one cache (:class:`~mlb_core.selection.scores.StageOneCache`)
and, per method, its stage-two prefix (:class:`~mlb_core.stage_two.StageTwoPrefix`: a method whose
visual tokens do not depend on the question prefills them once per video)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from mlb_core.backbones.adapter import VideoLLM
from mlb_core.errors import MLBError
from mlb_core.evaluation.benchmarks import Item
from mlb_core.evaluation.features import FRAME_METHODS, FeatureCache
from mlb_core.evaluation.store import PredictionFile, Variant
from mlb_core.pipeline import VideoFeatures, answer
from mlb_core.selection.scores import StageOneCache
from mlb_core.stage_two import StageTwoPrefix


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
    reuse_prefix: bool = True,
) -> dict[str, int]:
    """Answer every (item, variant) without a line yet, video by video; append each record.
    ``reuse_prefix``: stage two reuses a question-independent prefix across a video's questions
    (False: every question's prompt is prefilled in full, the reference path)."""
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
            prefixes: dict[Variant, StageTwoPrefix] = {}  # this video's, one per method: freed with it
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
                                     options=list(it.options) if it.task == "mc" else None, scorer=stage_one,
                                     prefix=prefixes.setdefault(v, StageTwoPrefix()) if reuse_prefix else None)
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
                                   video_timings=dict(f.timings), features_cached=cached[v.params.n_frames],
                                   prefix_reused=ans.prefix_reused)
                files[v].append(rec)
                counts[rec["status"]] += 1
                bar.update(1)
    finally:
        bar.close()
    return counts
