"""The embedded part: (b) and (d) on the embedded default (SmolLM2-135M LLaVA-NeXT) on a real
clip, every number measured end to end (docs/architecture.md, "Bench").

Each method answers the video's questions as a deployment would: one stage-one cache
(:class:`~mlb_core.selection.scores.StageOneCache`) and one stage-two prefix cache
(:class:`~mlb_core.bench.prefix.PrefixCache`) per video, so that the first question pays for the
question-independent context and later questions only for their own part. Beside the cached
path, the plain uncached prefill of the first question is timed in the same run, and its logits
are compared with the cached path's. On a CUDA device the model runs there, times are CUDA
events and ``--warmup`` whole rounds run untimed first (:mod:`mlb_core.bench.measure`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mlb_core.backbones.adapter import VideoLLM
from mlb_core.backbones.prompts import Prompt
from mlb_core.bench.measure import Estimator, Stopwatch, bench_device, default_warmup, estimate, log
from mlb_core.bench.prefix import PrefillCost, PrefixCache
from mlb_core.bench.results import (
    CpuCost,
    CpuTime,
    EmbeddedPart,
    MeasuredCost,
    Row,
    VideoCacheTiming,
    curve,
    rows_by_questions,
)
from mlb_core.bench.settings import QUESTIONS, Settings
from mlb_core.config import MLBParams
from mlb_core.errors import MLBError
from mlb_core.selection.scores import StageOneCache


@dataclass(frozen=True)
class QuestionRun:
    """One question about the video through one method (seconds).

    Attributes:
        stage_one_s: the method's stage one (its ``stage_one`` timing; 0 when it reads no scores).
        method_s, method_cpu_s: the whole method call (stage one + compression), wall and CPU.
        prefill: stage two through the prefix cache.
    """

    stage_one_s: float
    method_s: float
    method_cpu_s: float
    prefill: PrefillCost


@dataclass(frozen=True)
class VideoRun:
    """One method over every question about the video, with both caches.

    Attributes:
        visual, prompt: visual tokens and stage-two prompt length of the first question.
        uses_segment_scores: the method read stage-one scores.
        reuse_visual: the stage-two cache held ``prefix + visual`` and every later question
            reused it (its visual tokens did not depend on the question).
        cached_tokens: stage-two positions cached (first question).
        questions: one :class:`QuestionRun` per question, in order.
        plain_prefill_s, plain_prefill_cpu_s: ``VideoLLM.prefill`` of the whole first prompt, no cache.
        max_abs_logit_diff: the cached path's last-position logits against the plain prefill's
            (first question; with ``check_later`` also the last question of a method whose visual prefix
            was cached).
    """

    visual: int
    prompt: int
    uses_segment_scores: bool
    reuse_visual: bool
    cached_tokens: int
    questions: list[QuestionRun]
    plain_prefill_s: float
    plain_prefill_cpu_s: float
    max_abs_logit_diff: float


def run_video(vlm: VideoLLM, tokens: torch.Tensor, frames: np.ndarray | None, prompts: Sequence[Prompt],
              name: str, params: MLBParams, scorer: StageOneCache, check_later: bool = False) -> VideoRun:
    """Answer ``prompts`` (the questions about one video) with method ``name`` up to the stage-two
    prefill, through ``scorer`` (a fresh stage-one cache) and a fresh :class:`PrefixCache`; the
    visual prefix is cached when the method reads no stage-one scores."""
    from mlb_core.methods import METHODS
    from mlb_core.methods.registry import MethodInput

    fn, prefix = METHODS[name], PrefixCache()
    runs: list[QuestionRun] = []
    diff, plain_s, plain_cpu, first = 0.0, 0.0, 0.0, (0, 0, False)
    for i, prompt in enumerate(prompts):
        inp = MethodInput(vlm, tokens, frames, prompt, params, scorer=scorer)
        with Stopwatch(vlm.device) as sw:
            visual = fn(inp)  # (N, D)
        embeds, _ = vlm.build_inputs(prompt, visual)  # (1, L, D)
        vlm.check_length(embeds.shape[1], params.max_new_tokens)
        logits = prefix.prefill(vlm, prompt, visual, reuse_visual=not inp.scored)  # (1, V)
        assert prefix.last_cost is not None
        runs.append(QuestionRun(inp.timings.get("stage_one", 0.0), sw.wall, sw.cpu, prefix.last_cost))
        # the last question checked too where it ran on the cache (its visual prefix reused); a
        # question-dependent method's stage two is already the plain pass (mlb_core.stage_two)
        if i == 0 or (check_later and i == len(prompts) - 1 and not inp.scored):
            with Stopwatch(vlm.device) as sw_plain:
                plain, _ = vlm.prefill(embeds)  # (1, V), the uncached path beside the cached one
            diff = max(diff, float((logits.float() - plain.float()).abs().max()))
            if i == 0:
                plain_s, plain_cpu = sw_plain.wall, sw_plain.cpu
                first = (int(visual.shape[0]), int(embeds.shape[1]), inp.scored)
    reused = not first[2] and all(q.prefill.reused for q in runs[1:])
    return VideoRun(visual=first[0], prompt=first[1], uses_segment_scores=first[2], reuse_visual=reused,
                    cached_tokens=runs[0].prefill.cached_tokens, questions=runs, plain_prefill_s=plain_s,
                    plain_prefill_cpu_s=plain_cpu, max_abs_logit_diff=diff)


def first_later(runs: list[list[float]], estimator: Estimator) -> tuple[float | None, float | None]:
    """The first question's and a later question's cost over repeated runs of a video's
    questions (None without runs; the first again with one question)."""
    if not runs:
        return None, None
    first = estimate([r[0] for r in runs], estimator)
    return first, (estimate([x for r in runs for x in r[1:]], estimator) if len(runs[0]) > 1 else first)


def method_costs(runs: list[VideoRun], estimator: Estimator) -> tuple[MeasuredCost, CpuCost]:
    """A method's measured wall-clock and CPU costs from its repeated :class:`VideoRun` s."""
    per_q = {
        "stage_one": [[q.stage_one_s for q in r.questions] for r in runs],
        "prefill_cached": [[q.prefill.total_s for q in r.questions] for r in runs],
        "method_cpu": [[q.method_cpu_s for q in r.questions] for r in runs],
        "prefill_cached_cpu": [[q.prefill.total_cpu_s for q in r.questions] for r in runs],
    }
    fl = {k: first_later(v, estimator) for k, v in per_q.items()}
    samples = {**{k: [x for r in v for x in r] for k, v in per_q.items()},
               "compress": [q.method_s - q.stage_one_s for r in runs for q in r.questions],
               "prefill": [r.plain_prefill_s for r in runs], "prefill_cpu": [r.plain_prefill_cpu_s for r in runs],
               "prefill_context": [r.questions[0].prefill.context_s for r in runs]}
    r0 = runs[0]
    wall = MeasuredCost(
        visual=r0.visual, prompt=r0.prompt, cached_tokens=r0.cached_tokens, reuse_visual=r0.reuse_visual,
        uses_segment_scores=r0.uses_segment_scores, first=fl["stage_one"][0], later=fl["stage_one"][1],
        prefill=estimate(samples["prefill"], estimator), prefill_first=fl["prefill_cached"][0],
        prefill_later=fl["prefill_cached"][1], compress=estimate(samples["compress"], estimator),
        max_abs_logit_diff=max(r.max_abs_logit_diff for r in runs), samples=samples)
    # CPU seconds; "stage one" here is the whole method call (stage one + compression)
    cpu = CpuCost(visual=r0.visual, prompt=r0.prompt, cached_tokens=r0.cached_tokens,
                  uses_segment_scores=r0.uses_segment_scores, first=fl["method_cpu"][0], later=fl["method_cpu"][1],
                  prefill_first=fl["prefill_cached_cpu"][0], prefill_later=fl["prefill_cached_cpu"][1])
    return wall, cpu


def part_embedded(settings: Settings, methods: list[str], params: Any) -> tuple[EmbeddedPart, list[Row]]:
    """(b) and (d) on the embedded default, every number measured end to end."""
    from mlb_core.backbones.loading import load_model
    from mlb_core.backbones.prompts import render_prompt
    from mlb_core.pipeline import encode_video
    from mlb_core.selection.segattn import stage_one

    est = settings.estimator
    device = bench_device(settings.device)
    warm = default_warmup(device, settings.warmup)
    vlm = load_model("embedded", device=device)
    feats = encode_video(vlm, settings.video, params.n_frames)
    tokens, frames = feats.tokens, feats.frames
    prompts = [render_prompt(vlm.family, q) for q in QUESTIONS[: settings.questions]]
    runs: dict[str, list[VideoRun]] = {}
    errors: dict[str, str] = {}
    uncached: list[float] = []
    diff, cache_bytes, load = None, 0, [os.getloadavg()[0]]
    for rep in range(warm + settings.repeats):
        for name in methods:
            done = runs.get(name)
            if done and name not in errors and (
                    done[0].questions[0].method_s + done[0].questions[0].prefill.total_s > settings.single_run_s):
                continue  # a long run is measured once (--single-run-s)
            label = "warm-up" if rep < warm else f"repeat {rep - warm + 1}/{settings.repeats}"
            log(f"embedded: {name}, {len(prompts)} question(s) with both caches ({label})")
            scorer = StageOneCache()
            try:
                run = run_video(vlm, tokens, frames, prompts, name, params, scorer, check_later=rep == 0)
            except MLBError as exc:
                errors[name] = str(exc)
                runs.pop(name, None)
                continue
            errors.pop(name, None)
            if rep < warm:
                continue
            runs.setdefault(name, []).append(run)
            if name == "mlb":  # (b): the uncached stage one beside the cached one
                with Stopwatch(device) as sw:
                    ref_scores = stage_one(vlm, tokens, prompts[0], params)
                uncached.append(sw.wall)
                diff = float((scorer.scores(vlm, tokens, prompts[0], params) - ref_scores).abs().max())
                cache_bytes = scorer.nbytes()
    load.append(os.getloadavg()[0])
    costs: dict[str, MeasuredCost] = {}
    cpu_costs: dict[str, CpuCost] = {}
    for name in methods:
        if name in runs and name not in errors:
            costs[name], cpu_costs[name] = method_costs(runs[name], est)
    t, h, w, _ = tokens.shape
    b = None
    if "mlb" in costs:
        m, unc = costs["mlb"], estimate(uncached, est)
        b = VideoCacheTiming(
            segments=t // params.segment_frames, first_s=m.first, later_s=m.later, uncached_s=unc,
            later_over_first=m.later / m.first, later_over_uncached=m.later / unc,
            question_times_s=[[q.stage_one_s for q in r.questions] for r in runs["mlb"]],
            question_cpu_s=[[q.method_cpu_s for q in r.questions] for r in runs["mlb"]], cache_bytes=cache_bytes,
            max_abs_diff_vs_uncached=diff)
    out = EmbeddedPart(model=vlm.name, video=str(feats.path), frames=t, grid=[h, w], preset=settings.preset,
                       encode_s=feats.timings.get("encode"), b=b, c=costs, c_curve=curve(costs), errors=errors,
                       cpu_time=CpuTime(c=cpu_costs, c_curve=curve(cpu_costs)),
                       load_average_1min={"start": load[0], "end": load[1]})
    rows = rows_by_questions("embedded", "measured", "s", settings.preset, costs, settings.questions)
    return out, rows
