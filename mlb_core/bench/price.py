"""7B-shaped timing: workers measuring a model of a real layer shape in fresh processes, and the
:class:`Pricer` that prices traced :class:`~mlb_core.bench.flops.Pass` es from their per-layer times
(short calls timed at their own size, long layer calls from a fit ``t(n) = c + a n + b n^2``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from mlb_core.bench.flops import SHAPES, LMShape, Pass
from mlb_core.bench.measure import Estimator, PeakMemory, Stopwatch, estimate, measure
from mlb_core.bench.trace import MethodTrace
from mlb_core.errors import MLBError

SMALL = 256  # layer calls with at most this many new positions are timed at their own size
QUESTION_THREADS = 1  # StageOneCache's default question_threads


# ---- the worker protocol (JSON between processes) ------------------------------------------
@dataclass(frozen=True)
class WorkerSpec:
    """One worker's job: ``kind`` ``early`` (early exit, cache and pricing) or ``eager`` (the
    eager reference), on a ``layers``-deep model of ``shape`` with a one-segment input."""

    kind: str
    shape: str
    layers: int
    repeats: int
    score_layer: int
    prefix: int
    visual: int
    suffix: int
    estimator: Estimator = "min"
    fit_lengths: list[int] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)  # {kind, batch, new, past}

    def to_json(self) -> str:
        return json.dumps(asdict(self))


@dataclass(frozen=True)
class CacheRun:
    """The stage-one cache on one segment: context once, then a question."""

    context_times_s: list[float]
    question_times_s: list[float]
    context_cpu_s: list[float]
    question_cpu_s: list[float]
    cache_bytes: int
    max_abs_diff_vs_uncached: float


@dataclass(frozen=True)
class Pricing:
    """One-layer times at ``fit_lengths``, every short call at its own size (``calls``:
    ``{kind, batch, new, past, s}``) and one LM-head row (``head_s``)."""

    fit_lengths: list[int]
    fit_times_s: list[float]
    calls: list[dict[str, Any]]
    head_s: float


@dataclass(frozen=True)
class WorkerResult:
    """What a worker measured (seconds, bytes)."""

    kind: str
    layers: int
    tokens: int
    build_s: float
    threads: int
    first_run_s: float
    first_run_cpu_s: float
    extra_bytes: int
    base_rss_bytes: int
    memory_method: str
    cpu_times_s: list[float]
    times_s: list[float]
    cache: CacheRun | None = None
    pricing: Pricing | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WorkerResult:
        cache, pricing = d.get("cache"), d.get("pricing")
        return cls(**{**d, "cache": CacheRun(**cache) if cache else None,
                      "pricing": Pricing(**pricing) if pricing else None})


# ---- the Vicuna-7B-shaped model --------------------------------------------------------------
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
              threads: int | None = QUESTION_THREADS, estimator: Estimator = "min") -> float:
    """Seconds of one decoder-layer call (``layer``) or one stage-one exit (``exit``), summarised
    by ``estimator``; calls after cached positions (question passes) run with ``threads`` CPU threads."""
    from mlb_core.selection.attention import last_query_probs, last_query_probs_cached
    from mlb_core.selection.scores import cpu_threads, fork_cache

    if past and threads is not None:  # a question pass: as StageOneCache runs it
        with cpu_threads(threads):
            return time_call(lm, kind, batch, new, past, repeats, None, estimator)
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
        return estimate(times if estimator == "min" else times[1:], estimator)


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


# ---- the workers -----------------------------------------------------------------------------
def worker(spec: WorkerSpec) -> WorkerResult:
    """One measurement in a fresh process (:mod:`mlb_core.bench.command`'s docstring)."""
    from mlb_core.selection.attention import last_query_attention, last_query_attention_eager
    from mlb_core.selection.scores import build_context, cpu_threads, score_question

    torch.manual_seed(0)
    shape, est = SHAPES[spec.shape], spec.estimator
    n_layers, layer, repeats = spec.layers, spec.score_layer, spec.repeats
    p, v, q = spec.prefix, spec.visual, spec.suffix
    t0 = time.perf_counter()
    lm = shaped_model(shape, n_layers, "sdpa" if spec.kind == "early" else "eager")
    x = torch.randn(1, p + v + q, shape.hidden)  # (1, L, D)
    build_s = time.perf_counter() - t0
    if spec.kind == "eager":
        read = min(layer, n_layers - 1)
        fn = lambda: last_query_attention_eager(lm, x, read)  # noqa: E731
    else:
        fn = lambda: last_query_attention(lm, x, layer)  # noqa: E731
    with PeakMemory() as mem, Stopwatch() as sw:
        first = fn()
    cpu_times: list[float] = []
    times = measure(fn, repeats, cpu_times)
    result = WorkerResult(kind=spec.kind, layers=n_layers, tokens=p + v + q, build_s=build_s,
                          threads=torch.get_num_threads(), first_run_s=sw.wall, first_run_cpu_s=sw.cpu,
                          extra_bytes=mem.extra, base_rss_bytes=mem.base, memory_method=mem.method,
                          cpu_times_s=cpu_times, times_s=times)
    if spec.kind == "eager":
        return result
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
    cache = CacheRun(context_times_s=ctx_times, question_times_s=q_times, context_cpu_s=ctx_cpu,
                     question_cpu_s=q_cpu, cache_bytes=ctx.nbytes(),
                     max_abs_diff_vs_uncached=float((cached - first).abs().max()))
    # pricing: one layer at the fit lengths, and every short call at its own size
    fit_times = [time_call(lm, "layer", 1, n, 0, repeats, estimator=est) for n in spec.fit_lengths]
    calls = []
    for c in spec.calls:
        reps = max(3, repeats) if c["new"] * c["batch"] <= SMALL else repeats
        calls.append({**c, "s": time_call(lm, c["kind"], c["batch"], c["new"], c["past"], reps, estimator=est)})
    head = torch.nn.Linear(shape.hidden, shape.vocab, bias=False)
    with torch.inference_mode():
        h1 = torch.randn(1, shape.hidden)
        head(h1)
        head_s = estimate(measure(lambda: head(h1), 5), est)
    pricing = Pricing(fit_lengths=list(spec.fit_lengths), fit_times_s=fit_times, calls=calls, head_s=head_s)
    return WorkerResult(**{**asdict(result), "cache": cache, "pricing": pricing})


def worker_main(spec_json: str) -> str:
    """The worker subprocess (``mlb bench --worker JSON``): a spec in, a JSON result out."""
    return json.dumps(asdict(worker(WorkerSpec(**json.loads(spec_json)))))


def run_worker(spec: WorkerSpec) -> WorkerResult:
    """Run :func:`worker` in a fresh Python process; its last stdout line is the JSON result."""
    cmd = [sys.executable, "-m", "mlb_core", "bench", "--worker", spec.to_json()]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise MLBError(f"benchmark worker {spec.kind} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return WorkerResult.from_dict(json.loads(proc.stdout.strip().splitlines()[-1]))


# ---- pricing ---------------------------------------------------------------------------------
class Pricer:
    """Seconds of a :class:`Pass` on the 7B-shaped layer, from a worker's :class:`Pricing` (or
    the same as a dict)."""

    def __init__(self, pricing: Pricing | Mapping[str, Any], shape: LMShape) -> None:
        if not isinstance(pricing, Pricing):
            pricing = Pricing(**pricing)
        self.shape = shape
        self.c, self.a, self.b = fit_layer_time(pricing.fit_lengths, pricing.fit_times_s)
        self.calls = {(c["kind"], c["batch"], c["new"], c["past"]): c["s"] for c in pricing.calls}
        self.head = pricing.head_s

    def layer(self, batch: int, new: int, past: int) -> float:
        """One decoder layer: measured at its size when it was, else from the fit. A long call after
        ``past`` cached positions (a question's suffix after the cached ``prefix + visual``)
        is the fit's ``t(past + new) - t(past)`` plus the fixed cost: its projections and MLP grow
        with ``new`` and its causal attention pairs are those of ``past + new`` positions less
        those of the ``past`` ones (:func:`mlb_core.bench.flops.attention_pairs`)."""
        if ("layer", batch, new, past) in self.calls:
            return self.calls[("layer", batch, new, past)]
        if ("layer", 1, new, past) in self.calls:
            return batch * self.calls[("layer", 1, new, past)]
        assert past == 0 or new > SMALL, f"no measurement for a layer call of {new} new after {past} cached positions"
        return batch * (self.c + self.a * new + self.b * ((past + new) ** 2 - past ** 2))

    def exit(self, batch: int, new: int, past: int) -> float:
        if ("exit", batch, new, past) in self.calls:
            return self.calls[("exit", batch, new, past)]
        return batch * self.calls[("exit", 1, new, past)]

    def __call__(self, passes: Iterable[Pass]) -> float:
        total = 0.0
        for p in passes:
            n = self.shape.layers if p.layers is None else p.layers
            total += n * self.layer(p.batch, p.new, p.past)
            if p.exit:
                total += self.exit(p.batch, p.new, p.past)
            if p.head:
                total += self.head
        return total


def calls_to_measure(traces: Mapping[str, MethodTrace]) -> list[dict[str, Any]]:
    """Distinct calls to time at their size, from every traced pass (stage one, and stage two with
    its cached prefix): short calls as they are, batched short calls after cached positions at
    batch 1, long exits at batch 1. Long layer calls are priced from the fit."""
    seen: set[tuple] = set()
    for rec in traces.values():
        for group in (rec.passes, rec.first, rec.later, *rec.stage_two()):
            for p in group or []:
                if p.new * p.batch <= SMALL:
                    seen.add(("layer", p.batch, p.new, p.past))
                elif p.past and p.new <= SMALL:
                    seen.add(("layer", 1, p.new, p.past))
                if p.exit:
                    seen.add(("exit", p.batch, p.new, p.past) if p.new * p.batch <= SMALL
                             else ("exit", 1, p.new, p.past))
    return [dict(zip(("kind", "batch", "new", "past"), c, strict=True)) for c in sorted(seen)]
