"""The results of the benchmark's parts as dataclasses, the rows of ``prefill.csv``, and
:func:`jsonable`, which writes them as the JSON of ``bench.json``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from mlb_core.bench.flops import LMShape, Pass, amortised, break_even
from mlb_core.bench.trace import MethodTrace, TraceError

REFERENCE = "sf-llava"
GOALS = {"a_time_ratio_min": 8.0, "a_memory_ratio_max": 0.1, "b_later_over_first_max": 0.10,
         "c_mlb_over_sf_llava_max": 0.95}
NQ_CURVE = (1, 2, 3, 5, 10, 20, 50)


# ---- per-method costs ------------------------------------------------------------------------
class MethodCost(Protocol):
    """What a row and a curve need: stage one per question (``first``, ``later``: equal without
    a cache) and the stage-two ``prefill``, in the part's unit."""

    visual: int
    prompt: int
    first: float
    later: float
    prefill: float


@dataclass(frozen=True)
class PricedCost:
    """A traced method priced in seconds (7B shape) or GFLOP (FLOPs model)."""

    visual: int
    prompt: int
    uncached: float
    first: float
    later: float
    prefill: float


@dataclass(frozen=True)
class MeasuredCost:
    """A method measured end to end on the embedded default (seconds; ``samples``: every run)."""

    visual: int
    prompt: int
    uses_segment_scores: bool
    uncached: float
    first: float
    later: float
    prefill: float
    compress: float
    samples: dict[str, list[float]]


@dataclass(frozen=True)
class CpuCost:
    """Process CPU seconds of a method; stage one here is the whole method call."""

    visual: int
    prompt: int
    uses_segment_scores: bool
    first: float
    later: float
    prefill: float


@dataclass(frozen=True)
class Curve:
    """Per-question total over sf-llava's for several questions per video, its asymptote, and
    the break-even (the fewest questions for which the method is at most 0.95x sf-llava)."""

    by_questions: dict[int, float]
    asymptote: float
    break_even_questions: int | None

    def to_json(self) -> dict[str, Any]:
        return {"total_over_sf_llava_by_questions": self.by_questions, "asymptote": self.asymptote,
                "break_even_questions_for_0.95": self.break_even_questions}


@dataclass(frozen=True)
class Row:
    """One row of ``prefill.csv`` (its columns, in order)."""

    model: str
    basis: str
    unit: str
    preset: str
    method: str
    visual_tokens: int
    prompt_tokens: int
    n_questions: int
    stage_one_first: float
    stage_one_later: float
    stage_one: float
    prefill: float
    total: float
    total_over_sf_llava: float | None = None


COLUMNS = [f.name for f in dataclasses.fields(Row)]


def method_rows(model: str, basis: str, unit: str, preset: str, costs: Mapping[str, MethodCost],
                n_questions: int) -> list[Row]:
    """One row per method (stage one amortised over ``n_questions``)."""
    rows = []
    for name, c in costs.items():
        stage = amortised(c.first, c.later, n_questions)
        rows.append(Row(model=model, basis=basis, unit=unit, preset=preset, method=name, visual_tokens=c.visual,
                        prompt_tokens=c.prompt, n_questions=n_questions, stage_one_first=c.first,
                        stage_one_later=c.later, stage_one=stage, prefill=c.prefill, total=stage + c.prefill))
    ref = next((r.total for r in rows if r.method == REFERENCE), None)
    return [dataclasses.replace(r, total_over_sf_llava=r.total / ref if ref else None) for r in rows]


def curve(costs: Mapping[str, MethodCost]) -> dict[str, Curve]:
    """:class:`Curve` of every method, against :data:`REFERENCE` (empty without it)."""
    if REFERENCE not in costs:
        return {}
    ref = costs[REFERENCE].first + costs[REFERENCE].prefill
    return {name: Curve({n: (amortised(c.first, c.later, n) + c.prefill) / ref for n in NQ_CURVE},
                        (c.later + c.prefill) / ref,
                        break_even(c.first, c.later, c.prefill, GOALS["c_mlb_over_sf_llava_max"] * ref))
            for name, c in costs.items()}


def mlb_over_reference(costs: Mapping[str, MethodCost], n_questions: int) -> float | None:
    """mlb's per-question total over sf-llava's (None without both)."""
    if "mlb" not in costs or REFERENCE not in costs:
        return None
    m, r = costs["mlb"], costs[REFERENCE]
    return (amortised(m.first, m.later, n_questions) + m.prefill) / (r.first + r.prefill)


def trace_costs(traces: Mapping[str, MethodTrace], price: Callable[[list[Pass]], float]) -> dict[str, PricedCost]:
    """Price every traced method's passes (uncached, first and later question, prefill)."""
    costs = {}
    for name, rec in traces.items():
        uncached = price(rec.passes)
        costs[name] = PricedCost(visual=rec.visual, prompt=rec.prompt, uncached=uncached,
                                 first=price(rec.first) if rec.first is not None else uncached,
                                 later=price(rec.later) if rec.later is not None else uncached,
                                 prefill=price([Pass(1, rec.prompt, head=True)]))
    return costs


# ---- the parts -------------------------------------------------------------------------------
@dataclass(frozen=True)
class FlopsPart:
    """The analytic FLOPs model on one real shape (``a``, ``b``: :mod:`mlb_core.bench.flops`'s
    predictions; ``c``: the traced methods in GFLOP)."""

    shape: LMShape
    segment_tokens: int
    a: dict[str, float]
    b: dict[str, float]
    c: dict[str, PricedCost]
    c_curve: dict[str, Curve]


@dataclass(frozen=True)
class EarlyExitTiming:
    measured_s: float
    times_s: list[float]
    first_run_s: float
    extra_bytes: int
    note: str


@dataclass(frozen=True)
class EagerTiming:
    layers_measured: int
    measured_s: float
    times_s: list[float]
    extra_bytes: int
    extra_bytes_1_layer: int
    per_layer_s: float
    per_layer_bytes: float
    extrapolated_s: float
    extrapolated_bytes: float
    note: str


@dataclass(frozen=True)
class StageOneTiming:
    """(a): the early exit against the eager full forward, extrapolated to ``full_depth``."""

    tokens: int
    model: str
    score_layer: int
    early_exit: EarlyExitTiming
    eager: EagerTiming
    full_depth: int
    time_ratio: float
    memory_ratio: float
    cpu_time_ratio: float
    time_ratio_measured_depth: float
    memory_method: str


@dataclass(frozen=True)
class SegmentCacheTiming:
    """(b) on the 7B shape: a later question on one cached segment against the first."""

    segments: int
    context_s: float
    question_s: float
    first_s: float
    uncached_s: float
    later_over_first: float
    later_over_uncached: float
    cpu_later_over_first: float
    cache_bytes_one_segment_fp32: int
    max_abs_diff_vs_uncached: float


@dataclass(frozen=True)
class PricingCheck:
    """Priced against directly measured seconds, and the layer-time fit."""

    early_exit_measured_s: float
    early_exit_priced_s: float
    context_measured_s: float
    context_priced_s: float
    fit_c_a_b: list[float]
    fit_lengths: list[int]
    fit_times_s: list[float]
    fit_predicted_s: list[float]
    head_s: float
    early_exit_priced_over_measured: float
    context_priced_over_measured: float


@dataclass(frozen=True)
class WorkersInfo:
    early_build_s: float
    eager_build_s: float
    threads: int


@dataclass(frozen=True)
class ShapedPart:
    """(a), (b), (c) on the 7B shape (``7b`` in ``bench.json``)."""

    a: StageOneTiming
    b: SegmentCacheTiming
    c: dict[str, PricedCost]
    c_curve: dict[str, Curve]
    pricing_check: PricingCheck
    pricing_calls: list[dict[str, Any]]
    workers: WorkersInfo
    load_average_1min: dict[str, float]


@dataclass(frozen=True)
class VideoCacheTiming:
    """(b) on the embedded default: the stage-one cache over the questions of one video."""

    segments: int
    first_s: float
    later_s: float
    uncached_s: float
    later_over_first: float
    later_over_uncached: float
    question_times_s: list[list[float]]
    question_cpu_s: list[list[float]]
    cache_bytes: int
    max_abs_diff_vs_uncached: float | None


@dataclass(frozen=True)
class CpuTime:
    c: dict[str, CpuCost]
    c_curve: dict[str, Curve]
    note: str = "process CPU seconds; stage one = the whole method call (with compression)"


@dataclass(frozen=True)
class EmbeddedPart:
    """(b) and (d) on the embedded default, every number measured end to end."""

    model: str
    video: str
    frames: int
    grid: list[int]
    preset: str
    encode_s: float | None
    b: VideoCacheTiming | None
    c: dict[str, MeasuredCost]
    c_curve: dict[str, Curve]
    errors: dict[str, str]
    cpu_time: CpuTime
    load_average_1min: dict[str, float]
    note: str = "segattn-topk reads the same stage-one scores as mlb: its cached stage one is mlb's"


@dataclass(frozen=True)
class Meta:
    """How, where and with what the benchmark ran."""

    date: str
    host: str
    cpu: str
    torch: str
    threads: int
    dtype: str
    device: str
    estimator: str
    preset: str
    params: dict[str, Any]
    questions_per_video: int
    methods: list[str]
    methods_not_registered: list[str]
    parts: frozenset[str]
    command: str


@dataclass
class BenchResult:
    """Everything ``bench.json`` holds; a part that did not run is ``None`` (and left out)."""

    meta: Meta
    traces: dict[str, dict[str, MethodTrace | TraceError]] | None = None
    flops: dict[str, FlopsPart] | None = None
    embedded: EmbeddedPart | None = None
    shaped: ShapedPart | None = None
    goals: dict[str, Any] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"meta": self.meta}
        for key, val in (("traces", self.traces), ("flops", self.flops), ("embedded", self.embedded),
                         ("7b", self.shaped)):
            if val is not None:
                out[key] = val
        return {**out, "goals": self.goals, "rows": self.rows}


def jsonable(x: Any) -> Any:
    """``x`` as JSON-able values: dataclasses as dicts of their fields (or their ``to_json()``),
    sets as sorted lists, dict keys as strings, NaN as None."""
    if hasattr(x, "to_json") and not isinstance(x, type):
        return jsonable(x.to_json())
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: jsonable(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (set, frozenset)):
        return sorted(jsonable(v) for v in x)
    if isinstance(x, float) and x != x:
        return None
    return x
