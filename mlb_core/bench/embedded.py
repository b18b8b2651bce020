"""The embedded part: (b) and (d) on the embedded default (SmolLM2-135M LLaVA-NeXT) on a real
clip, every number measured end to end."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from mlb_core.bench.measure import Estimator, Stopwatch, estimate, log
from mlb_core.bench.results import (
    CpuCost,
    CpuTime,
    EmbeddedPart,
    MeasuredCost,
    Row,
    VideoCacheTiming,
    curve,
    method_rows,
)
from mlb_core.bench.settings import QUESTIONS, Settings
from mlb_core.errors import MLBError


@dataclass(frozen=True)
class _Info:
    """What one method's run gave: its token counts and whether it reads segment scores."""

    visual: int
    prompt: int
    uses_segment_scores: bool


def first_later(runs: list[list[float]], estimator: Estimator) -> tuple[float | None, float | None]:
    """The first question's and a later question's stage one over repeated runs of a video's
    questions (None without runs; the first again with one question)."""
    if not runs:
        return None, None
    first = estimate([r[0] for r in runs], estimator)
    return first, (estimate([x for r in runs for x in r[1:]], estimator) if len(runs[0]) > 1 else first)


def part_embedded(settings: Settings, methods: list[str], params: Any) -> tuple[EmbeddedPart, list[Row]]:
    """(b) and (d) on the embedded default, every number measured end to end."""
    from mlb_core.backbones.loading import load_model
    from mlb_core.backbones.prompts import render_prompt
    from mlb_core.methods import METHODS
    from mlb_core.methods.registry import MethodInput
    from mlb_core.pipeline import encode_video
    from mlb_core.selection.scores import StageOneCache
    from mlb_core.selection.segattn import stage_one

    est = settings.estimator
    vlm = load_model("embedded", device="cpu")
    feats = encode_video(vlm, settings.video, params.n_frames)
    tokens, frames = feats.tokens, feats.frames
    prompts = [render_prompt(vlm.family, q) for q in QUESTIONS[: settings.questions]]
    samples: dict[str, dict[str, list[float]]] = {m: {} for m in methods}
    info: dict[str, _Info] = {}
    errors: dict[str, str] = {}
    cache_runs: list[list[float]] = []
    cache_cpu: list[list[float]] = []
    diff, cache_bytes, load = None, 0, [os.getloadavg()[0]]
    for rep in range(settings.repeats):
        for name in methods:
            if rep and name in info and name not in errors and (
                    samples[name]["stage_one"][0] + samples[name]["compress"][0] + samples[name]["prefill"][0]
                    > settings.single_run_s):
                continue  # a long run is measured once (--single-run-s)
            log(f"embedded: {name} (repeat {rep + 1}/{settings.repeats})")
            inp = MethodInput(vlm, tokens, frames, prompts[0], params)
            try:
                with Stopwatch() as sw_method:
                    visual = METHODS[name](inp)
            except MLBError as exc:
                errors[name] = str(exc)
                info.pop(name, None)
                continue
            embeds, _ = vlm.build_inputs(prompts[0], visual)
            vlm.check_length(embeds.shape[1], params.max_new_tokens)
            with Stopwatch() as sw_prefill:
                vlm.prefill(embeds)
            stage = inp.timings.get("stage_one", 0.0)
            for key, val in (("stage_one", stage), ("compress", sw_method.wall - stage),
                             ("prefill", sw_prefill.wall), ("method_cpu", sw_method.cpu),
                             ("prefill_cpu", sw_prefill.cpu)):
                samples[name].setdefault(key, []).append(val)
            info[name] = _Info(int(visual.shape[0]), int(embeds.shape[1]), inp.scored)
            errors.pop(name, None)
            if name == "mlb":
                ref_scores = stage_one(vlm, tokens, prompts[0], params)  # the uncached path
        if "mlb" in methods:  # the stage-one cache over the questions of the video, through the method
            log(f"embedded: mlb with the stage-one cache, {len(prompts)} questions")
            cache, times, cpus = StageOneCache(), [], []
            for i, prompt in enumerate(prompts):
                inp = MethodInput(vlm, tokens, frames, prompt, params, scorer=cache)
                with Stopwatch() as sw:
                    METHODS["mlb"](inp)
                times.append(inp.timings["stage_one"])
                cpus.append(sw.cpu)
                if i == 0:
                    diff = float((cache.scores(vlm, tokens, prompt, params) - ref_scores).abs().max())
            cache_runs.append(times)
            cache_cpu.append(cpus)
            cache_bytes = cache.nbytes()
    load.append(os.getloadavg()[0])
    costs: dict[str, MeasuredCost] = {}
    cpu_costs: dict[str, CpuCost] = {}
    first, later = first_later(cache_runs, est)
    first_cpu, later_cpu = first_later(cache_cpu, est)
    for name in methods:
        if name in errors or name not in info:
            continue
        i = info[name]
        s = {k: estimate(v, est) for k, v in samples[name].items()}
        cached = i.uses_segment_scores and first is not None
        costs[name] = MeasuredCost(
            visual=i.visual, prompt=i.prompt, uses_segment_scores=i.uses_segment_scores, uncached=s["stage_one"],
            first=first if cached else s["stage_one"], later=later if cached else s["stage_one"],
            prefill=s["prefill"], compress=s["compress"], samples=samples[name])
        # CPU seconds; "stage one" here is the whole method call (stage one + compression)
        cpu_costs[name] = CpuCost(
            visual=i.visual, prompt=i.prompt, uses_segment_scores=i.uses_segment_scores,
            first=first_cpu if cached else s["method_cpu"], later=later_cpu if cached else s["method_cpu"],
            prefill=s["prefill_cpu"])
    t, h, w, _ = tokens.shape
    b = None
    if cache_runs:
        unc = costs["mlb"].uncached
        b = VideoCacheTiming(
            segments=t // params.segment_frames, first_s=first, later_s=later, uncached_s=unc,
            later_over_first=later / first, later_over_uncached=later / unc, question_times_s=cache_runs,
            question_cpu_s=cache_cpu, cache_bytes=cache_bytes, max_abs_diff_vs_uncached=diff)
    out = EmbeddedPart(model=vlm.name, video=str(feats.path), frames=t, grid=[h, w], preset=settings.preset,
                       encode_s=feats.timings.get("encode"), b=b, c=costs, c_curve=curve(costs), errors=errors,
                       cpu_time=CpuTime(c=cpu_costs, c_curve=curve(cpu_costs)),
                       load_average_1min={"start": load[0], "end": load[1]})
    rows = method_rows("embedded", "measured", "s", settings.preset, costs, settings.questions)
    return out, rows
