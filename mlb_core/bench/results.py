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
    """What a row and a curve need, in the part's unit: stage one of the first and of a later
    question about a video (``first``, ``later``; equal without a cache) and stage two of the
    first and of a later question with the question-independent prefix cached
    (``prefill_first``, ``prefill_later``; :func:`mlb_core.bench.flops.stage_two_passes`)."""

    visual: int
    prompt: int
    cached_tokens: int
    first: float
    later: float
    prefill_first: float
    prefill_later: float


def per_question(c: MethodCost, n_questions: int) -> tuple[float, float]:
    """Stage one and stage two per question, amortised over ``n_questions`` about one video."""
    return amortised(c.first, c.later, n_questions), amortised(c.prefill_first, c.prefill_later, n_questions)


def question_counts(n_questions: int) -> tuple[int, ...]:
    """The questions per video of the rows: one (TGIF-QA, EgoSchema) and ``n_questions``."""
    return tuple(sorted({1, n_questions}))


@dataclass(frozen=True)
class PricedCost:
    """A traced method priced in seconds (7B shape) or GFLOP (FLOPs model). ``uncached``: stage
    one without the cache; ``prefill``: stage two without any cache (one whole prefill)."""

    visual: int
    prompt: int
    cached_tokens: int
    reuse_visual: bool
    uncached: float
    first: float
    later: float
    prefill: float
    prefill_first: float
    prefill_later: float


@dataclass(frozen=True)
class MeasuredCost:
    """A method measured end to end on the embedded default (seconds; ``samples``: every run).
    ``prefill``: the plain uncached prefill of the first question, timed beside the cached path;
    ``max_abs_logit_diff``: the cached path's logits against the plain prefill's."""

    visual: int
    prompt: int
    cached_tokens: int
    reuse_visual: bool
    uses_segment_scores: bool
    first: float
    later: float
    prefill: float
    prefill_first: float
    prefill_later: float
    compress: float
    max_abs_logit_diff: float
    samples: dict[str, list[float]]


@dataclass(frozen=True)
class CpuCost:
    """Process CPU seconds of a method; stage one here is the whole method call."""

    visual: int
    prompt: int
    cached_tokens: int
    uses_segment_scores: bool
    first: float
    later: float
    prefill_first: float
    prefill_later: float


@dataclass(frozen=True)
class Curve:
    """Per-question total over sf-llava's, both amortised over the same questions per video, its
    asymptote (later questions only), and the break-even (the fewest questions for which the
    method is at most 0.95x sf-llava)."""

    by_questions: dict[int, float]
    asymptote: float
    break_even_questions: int | None

    def to_json(self) -> dict[str, Any]:
        return {"total_over_sf_llava_by_questions": self.by_questions, "asymptote": self.asymptote,
                "break_even_questions_for_0.95": self.break_even_questions}


@dataclass(frozen=True)
class Row:
    """One row of ``prefill.csv`` (its columns, in order): per question, over ``n_questions``
    questions about one video. ``cached_tokens``: stage-two positions cached once per video;
    ``prefill``: stage two per question, amortised like ``stage_one``."""

    model: str
    basis: str
    unit: str
    preset: str
    method: str
    visual_tokens: int
    prompt_tokens: int
    cached_tokens: int
    n_questions: int
    stage_one_first: float
    stage_one_later: float
    stage_one: float
    prefill_first: float
    prefill_later: float
    prefill: float
    total: float
    total_over_sf_llava: float | None = None


COLUMNS = [f.name for f in dataclasses.fields(Row)]


def method_rows(model: str, basis: str, unit: str, preset: str, costs: Mapping[str, MethodCost],
                n_questions: int) -> list[Row]:
    """One row per method, stage one and stage two amortised over ``n_questions``."""
    rows = []
    for name, c in costs.items():
        stage, prefill = per_question(c, n_questions)
        rows.append(Row(model=model, basis=basis, unit=unit, preset=preset, method=name, visual_tokens=c.visual,
                        prompt_tokens=c.prompt, cached_tokens=c.cached_tokens, n_questions=n_questions,
                        stage_one_first=c.first, stage_one_later=c.later, stage_one=stage,
                        prefill_first=c.prefill_first, prefill_later=c.prefill_later, prefill=prefill,
                        total=stage + prefill))
    ref = next((r.total for r in rows if r.method == REFERENCE), None)
    return [dataclasses.replace(r, total_over_sf_llava=r.total / ref if ref else None) for r in rows]


def rows_by_questions(model: str, basis: str, unit: str, preset: str, costs: Mapping[str, MethodCost],
                      n_questions: int) -> list[Row]:
    """:func:`method_rows` at every count of :func:`question_counts` (one question a video first)."""
    return [r for n in question_counts(n_questions) for r in method_rows(model, basis, unit, preset, costs, n)]


def curve(costs: Mapping[str, MethodCost]) -> dict[str, Curve]:
    """:class:`Curve` of every method, against :data:`REFERENCE` (empty without it)."""
    if REFERENCE not in costs:
        return {}
    r = costs[REFERENCE]

    def total(c: MethodCost, n: int) -> float:
        return sum(per_question(c, n))

    return {name: Curve({n: total(c, n) / total(r, n) for n in NQ_CURVE},
                        (c.later + c.prefill_later) / (r.later + r.prefill_later),
                        break_even(c.first + c.prefill_first, c.later + c.prefill_later, r.first + r.prefill_first,
                                   r.later + r.prefill_later, GOALS["c_mlb_over_sf_llava_max"]))
            for name, c in costs.items()}


def mlb_over_reference(costs: Mapping[str, MethodCost], n_questions: int) -> float | None:
    """mlb's per-question total over sf-llava's, both over ``n_questions`` (None without both)."""
    if "mlb" not in costs or REFERENCE not in costs:
        return None
    return sum(per_question(costs["mlb"], n_questions)) / sum(per_question(costs[REFERENCE], n_questions))


@dataclass(frozen=True)
class RatioRow:
    """One method's per-question total over sf-llava's at each number of questions per video
    (the side-by-side view of the rows: one question a video and ``--questions``)."""

    model: str
    basis: str
    method: str
    total_over_sf_llava: dict[int, float | None]


def ratio_table(rows: list[Row]) -> list[RatioRow]:
    """The rows' ratios to sf-llava, one :class:`RatioRow` per (model, basis, method), in row order."""
    out: dict[tuple[str, str, str], dict[int, float | None]] = {}
    for r in rows:
        out.setdefault((r.model, r.basis, r.method), {})[r.n_questions] = r.total_over_sf_llava
    return [RatioRow(m, b, name, ratios) for (m, b, name), ratios in out.items()]


def trace_costs(traces: Mapping[str, MethodTrace], price: Callable[[list[Pass]], float]) -> dict[str, PricedCost]:
    """Price every traced method's passes (stage one uncached, first and later question; stage
    two uncached, first and later question with the question-independent prefix cached)."""
    costs = {}
    for name, rec in traces.items():
        uncached = price(rec.passes)
        two_first, two_later = rec.stage_two()
        costs[name] = PricedCost(visual=rec.visual, prompt=rec.prompt, cached_tokens=rec.cached_tokens,
                                 reuse_visual=rec.reuse_visual, uncached=uncached,
                                 first=price(rec.first) if rec.first is not None else uncached,
                                 later=price(rec.later) if rec.later is not None else uncached,
                                 prefill=price([Pass(1, rec.prompt, head=True)]),
                                 prefill_first=price(two_first), prefill_later=price(two_later))
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
    note: str = ("every method answers the video's questions with its own stage-one cache and stage-two "
                 "prefix cache (prefix + visual when its visual tokens do not depend on the question, else "
                 "nothing: the whole prompt in one pass); prefill: the plain uncached prefill of the first "
                 "question, timed beside them")


@dataclass(frozen=True)
class Meta:
    """How, where and with what the benchmark ran. ``device``, ``dtype`` and ``clock`` are the
    embedded part's (:func:`mlb_core.bench.measure.clock_name`); the 7B part always runs on the CPU
    in fp32 with ``time.perf_counter``."""

    date: str
    host: str
    cpu: str
    torch: str
    threads: int
    dtype: str
    device: str
    clock: str
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
        return {**out, "goals": self.goals, "ratios": ratio_table(self.rows), "rows": self.rows}


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
