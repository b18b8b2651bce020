"""The FLOPs part (the analytic model on real shapes) and the 7B part (a model of Vicuna-7B's
layer shape timed in fresh processes, the traced methods priced from its per-layer times)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from mlb_core.bench.flops import SHAPES, Pass, flops, predict_cached, predict_stage_one
from mlb_core.bench.measure import estimate, log
from mlb_core.bench.price import Pricer, WorkerSpec, calls_to_measure, run_worker
from mlb_core.bench.results import (
    EagerTiming,
    EarlyExitTiming,
    FlopsPart,
    PricingCheck,
    Row,
    SegmentCacheTiming,
    ShapedPart,
    StageOneTiming,
    WorkersInfo,
    curve,
    rows_by_questions,
    trace_costs,
)
from mlb_core.bench.settings import Settings
from mlb_core.bench.trace import MethodTrace

GRID_TOKENS = 576  # 24 x 24 visual tokens a frame


def part_flops(traces: Mapping[str, Mapping[str, MethodTrace]], params: Any, preset: str,
               n_questions: int) -> tuple[dict[str, FlopsPart], list[Row]]:
    """The analytic FLOPs model on the real 7B and 34B shapes, from the stand-in passes
    (``traces``: ``{shape name: {method: trace}}``, the methods that ran); rows at one question a
    video and at ``n_questions``, every question-independent prefix cached (docs/architecture.md,
    "Bench")."""
    out, rows = {}, []
    for name, tr in traces.items():
        shape = SHAPES[name]
        ref = tr["mlb"]
        prefix, suffix = ref.prefix_tokens, ref.suffix_tokens
        segment = params.segment_frames * GRID_TOKENS
        costs = trace_costs(tr, lambda ps, s=shape: flops(s, ps) / 1e9)
        out[name] = FlopsPart(shape=shape, segment_tokens=prefix + segment + suffix,
                              a=predict_stage_one(shape, prefix + segment + suffix, params.score_layer),
                              b=predict_cached(shape, params.n_frames // params.segment_frames,
                                               prefix + segment, suffix, params.score_layer),
                              c=costs, c_curve=curve(costs))
        rows += rows_by_questions(name, "flops", "GFLOP", preset, costs, n_questions)
    return out, rows


def part_7b(settings: Settings, traces: Mapping[str, MethodTrace], params: Any) -> tuple[ShapedPart, list[Row]]:
    """(a), (b), (c) on the Vicuna-7B shape (``settings.shape``): workers in fresh processes."""
    shape, est = SHAPES[settings.shape], settings.estimator
    mlb = traces["mlb"]
    prefix, suffix = mlb.prefix_tokens, mlb.suffix_tokens
    context = prefix + params.segment_frames * GRID_TOKENS
    assert mlb.first[0].new == context, "unexpected stage-one passes"
    n = settings.layers

    def spec(kind: str, layers: int, repeats: int, **kw: Any) -> WorkerSpec:
        return WorkerSpec(kind=kind, shape=settings.shape, layers=layers, repeats=repeats,
                          score_layer=params.score_layer, prefix=prefix, visual=params.segment_frames * GRID_TOKENS,
                          suffix=suffix, estimator=est, **kw)

    log(f"7B shape: early exit, cache and per-layer pricing ({n} layers; about 4-8 min)")
    # the traced calls, and the uncached one-segment pass priced for (a)
    calls = calls_to_measure(traces) + [{"kind": "exit", "batch": 1, "new": context + suffix, "past": 0}]
    early = run_worker(spec("early", n, settings.repeats_7b, fit_lengths=list(settings.fit_lengths), calls=calls))
    log(f"7B shape: eager reference at {n} layers")
    eager = run_worker(spec("eager", n, settings.repeats_7b))
    load = [os.getloadavg()[0]]
    log("7B shape: eager reference at 1 layer (memory slope)")
    eager1 = run_worker(spec("eager", 1, 0))
    assert early.cache is not None and early.pricing is not None
    # the first run (memory probe) is timed too: best of 1 + --repeats-7b runs
    t_early = estimate([early.first_run_s] + early.times_s, est)
    t_eager = estimate([eager.first_run_s] + eager.times_s, est)
    cpu_early = estimate([early.first_run_cpu_s] + early.cpu_times_s, est)
    cpu_eager = estimate([eager.first_run_cpu_s] + eager.cpu_times_s, est)
    per_layer_s = t_eager / n
    slope_b = (eager.extra_bytes - eager1.extra_bytes) / (n - 1)
    depth = shape.layers
    eager32_bytes = eager.extra_bytes + (depth - n) * slope_b
    eager32_s = per_layer_s * depth
    model = (f"{shape.name} layer shape (hidden {shape.hidden}, {shape.heads} heads, "
             f"MLP {shape.intermediate}), random weights, fp32, {n} layers built")
    a = StageOneTiming(
        tokens=early.tokens, model=model, score_layer=params.score_layer,
        early_exit=EarlyExitTiming(
            measured_s=t_early, times_s=early.times_s, first_run_s=early.first_run_s,
            extra_bytes=early.extra_bytes,
            note=f"measured; no layer after the scoring layer runs, so it holds at {depth} layers"),
        eager=EagerTiming(
            layers_measured=n, measured_s=t_eager, times_s=eager.times_s, extra_bytes=eager.extra_bytes,
            extra_bytes_1_layer=eager1.extra_bytes, per_layer_s=per_layer_s, per_layer_bytes=slope_b,
            extrapolated_s=eager32_s, extrapolated_bytes=eager32_bytes,
            note=f"measured at {n} and 1 layers; {depth} layers = per-layer time x {depth} and "
                 f"memory at {n} layers + {depth - n} x per-layer slope"),
        full_depth=depth, time_ratio=eager32_s / t_early, memory_ratio=early.extra_bytes / eager32_bytes,
        cpu_time_ratio=cpu_eager / n * depth / cpu_early, time_ratio_measured_depth=t_eager / t_early,
        memory_method=early.memory_method)
    cache = early.cache
    ctx_s = estimate(cache.context_times_s, est)
    q_s = estimate(cache.question_times_s, est)
    b = SegmentCacheTiming(
        segments=1, context_s=ctx_s, question_s=q_s, first_s=ctx_s + q_s, uncached_s=t_early,
        later_over_first=q_s / (ctx_s + q_s), later_over_uncached=q_s / t_early,
        cpu_later_over_first=estimate(cache.question_cpu_s, est) / (
            estimate(cache.context_cpu_s, est) + estimate(cache.question_cpu_s, est)),
        cache_bytes_one_segment_fp32=cache.cache_bytes, max_abs_diff_vs_uncached=cache.max_abs_diff_vs_uncached)
    pricing = early.pricing
    pricer = Pricer(pricing, shape)
    costs = trace_costs(traces, pricer)
    early_priced = pricer([Pass(1, early.tokens, 0, params.score_layer, True)])
    context_priced = pricer([Pass(1, context, 0, params.score_layer, True)])
    check = PricingCheck(
        early_exit_measured_s=t_early, early_exit_priced_s=early_priced, context_measured_s=ctx_s,
        context_priced_s=context_priced, fit_c_a_b=[pricer.c, pricer.a, pricer.b],
        fit_lengths=pricing.fit_lengths, fit_times_s=pricing.fit_times_s,
        fit_predicted_s=[pricer.layer(1, k, 0) for k in pricing.fit_lengths], head_s=pricer.head,
        early_exit_priced_over_measured=early_priced / t_early, context_priced_over_measured=context_priced / ctx_s)
    out = ShapedPart(a=a, b=b, c=costs, c_curve=curve(costs), pricing_check=check, pricing_calls=pricing.calls,
                     workers=WorkersInfo(early_build_s=early.build_s, eager_build_s=eager.build_s,
                                         threads=early.threads),
                     load_average_1min={"end": load[0]})
    rows = rows_by_questions(f"{settings.shape}-shape", "cpu-priced", "s", settings.preset, costs, settings.questions)
    return out, rows
