"""The FLOPs model against hand counts and torch's FLOP counter; the clocks (the CUDA one through a
stand-in for ``torch.cuda``: there is no GPU here); the benchmark on a tiny config."""

from __future__ import annotations

import csv
import dataclasses
import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from mlb_core.bench.flops import (
    SHAPES,
    LMShape,
    Pass,
    amortised,
    attention_flops,
    attention_pairs,
    break_even,
    eager_extra_bytes,
    exit_flops,
    flops,
    kv_cache_bytes,
    linear_flops,
    pass_flops,
    predict_cached,
    predict_stage_one,
    prefill_passes,
    question_passes,
    stage_one_passes,
    stage_two_passes,
)
from mlb_core.bench.measure import PeakMemory, Stopwatch, bench_device, clock_name, estimate, measure
from mlb_core.bench.price import Pricer, calls_to_measure, fit_layer_time, shaped_model
from mlb_core.bench.results import (
    Curve,
    PricedCost,
    curve,
    jsonable,
    method_rows,
    mlb_over_reference,
    ratio_table,
    rows_by_questions,
)
from mlb_core.bench.trace import to_passes, trace_methods, trace_passes
from mlb_core.cli import main
from mlb_core.errors import MLBError

TOY = LMShape("toy", 3, 64, 4, 2, 96, 256, 4096)  # head_dim 16, GQA 2 query heads per KV head


# ---- FLOPs model ---------------------------------------------------------------------------
def test_hand_counts():
    s = LMShape("hand", 1, 2, 1, 1, 3, 10, 100)  # D=2, one head of 2, MLP 3
    # q 2x2 + k,v 2 x 2x2 + o 2x2 + MLP 3 x 2x3 = 34 multiply-adds a token
    assert linear_flops(s, 5) == 2 * 34 * 5
    assert attention_pairs(4) == 10 and attention_pairs(4, causal=False) == 16
    assert attention_pairs(2, past=3) == 2 * 3 + 3
    assert attention_flops(s, 4) == 4 * 1 * 2 * 10
    # exit: keys of 4 positions (4 x 2x2), one query (2x2), logits over 7 keys (7 x 2)
    assert exit_flops(s, 4, past=3) == 2 * (16 + 4 + 14)
    p = Pass(batch=3, new=4, past=0, layers=1, exit=True)
    assert pass_flops(s, p) == 3 * (2 * 34 * 4 + 4 * 2 * 10 + 2 * (16 + 4 + 8))
    assert pass_flops(s, Pass(1, 4, head=True)) == 2 * 34 * 4 + 4 * 2 * 10 + 2 * 2 * 10


def test_paper_shapes_have_their_parameter_counts():
    """Per-layer linear FLOPs / 2 = weights per layer; plus embeddings and head = model size."""
    v, y = SHAPES["vicuna-7b"], SHAPES["yi-34b"]
    vicuna = v.layers * linear_flops(v, 1) / 2 + 2 * v.vocab * v.hidden
    yi = y.layers * linear_flops(y, 1) / 2 + 2 * y.vocab * y.hidden
    assert 6.7e9 < vicuna < 6.8e9  # Vicuna-7B: 6.74 B
    assert 34.3e9 < yi < 34.5e9  # Yi-34B: 34.4 B
    assert y.head_dim == v.head_dim == 128


def test_passes_match_torch_flop_counter():
    """Eager attention computes whole (L x L) matrices: ``causal=False`` counts them exactly."""
    from mlb_core.selection.attention import last_query_attention
    from mlb_core.selection.scores import build_context, score_question

    lm = shaped_model(TOY, TOY.layers, "eager")
    assert LMShape.from_config(lm.config) == LMShape(lm.config.model_type, 3, 64, 4, 2, 96, 256, 4096)
    x = torch.randn(2, 50, 64, generator=torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False) as fc, torch.inference_mode():
        lm(inputs_embeds=x, use_cache=False)
    assert fc.get_total_flops() == pass_flops(TOY, Pass(2, 50, causal=False))
    with FlopCounterMode(display=False) as fc:
        last_query_attention(lm, x, 2)
    assert fc.get_total_flops() == pass_flops(TOY, Pass(2, 50, 0, 2, True, causal=False))
    ctx = build_context(lm, x[:, :40], 2)
    with FlopCounterMode(display=False) as fc:
        score_question(lm, ctx, x[:, 40:], 2)
    assert fc.get_total_flops() == pass_flops(TOY, Pass(2, 10, 40, 2, True, causal=False))


def test_stage_one_batches_and_ratios():
    ps = stage_one_passes(10, 2899, 2, batch_size=4)
    assert [p.batch for p in ps] == [4, 4, 2] and all(p.layers == 2 and p.exit for p in ps)
    assert flops(TOY, ps) == pytest.approx(10 * pass_flops(TOY, Pass(1, 2899, 0, 2, True)))
    qs = question_passes(10, 2883, 16, 2)
    assert sum(p.batch for p in qs) == 10 and all(p.past == 2883 for p in qs)
    v = SHAPES["vicuna-7b"]
    a = predict_stage_one(v, 2899, 2)
    # eager runs 32 layers with whole matrices, the early exit 2 layers + keys: ratio ~ 16
    assert 14 < a["time_ratio"] < 18 and a["memory_ratio"] < 0.05
    assert a["eager_extra_gb"] > 32 * 32 * 2899**2 * 4 / 1e9  # 32 layers of (32, L, L) fp32
    b = predict_cached(v, 10, 2883, 16, 2)
    assert b["later_over_first"] < 0.01
    assert b["context_gflop"] + b["question_gflop"] == pytest.approx(b["uncached_gflop"], rel=0.01)


def test_memory_model():
    assert eager_extra_bytes(TOY, 10, layers=2, dtype_bytes=4) > 3 * 4 * 100 * 4
    # one video: 10 segments x 2883 positions x (2 layers x K,V + layer-2 K) x 32 heads x 128 x fp16
    assert kv_cache_bytes(SHAPES["vicuna-7b"], 2883, 2, 10) == 10 * 2883 * 5 * 32 * 128 * 2


def test_amortised_and_break_even():
    assert amortised(10.0, 1.0, 1) == 10.0 and amortised(10.0, 1.0, 10) == pytest.approx(1.9)
    # against a reference with no cache (8 a question): (15 + 6 (n-1)) / n <= 8  <=>  n >= 4.5
    assert break_even(15.0, 6.0, 8.0, 8.0, ratio=1.0) == 5
    assert break_even(15.0, 9.0, 8.0, 8.0, ratio=1.0) is None
    # the reference caches too (8, then 1): the method falls further behind with every question
    assert break_even(15.0, 6.0, 8.0, 1.0, ratio=1.0) is None
    assert break_even(6.0, 0.5, 8.0, 1.0) == 1  # 6 <= 0.95 x 8


def test_stage_two_passes_cache_the_question_independent_prefix():
    """The first question costs one uncached prefill; a later one only its uncached part."""
    v = SHAPES["vicuna-7b"]
    p, n, s = 35, 3680, 20
    for reuse in (True, False):
        first, later = stage_two_passes(p, n, s, reuse)
        assert first[-1] == later[0] and later[0].head and first[0].head is not reuse
        assert flops(v, first) == pytest.approx(flops(v, prefill_passes(p + n + s)), rel=1e-12)
    _, later = stage_two_passes(p, n, s, True)
    assert later == [Pass(1, s, p + n, head=True)]  # the suffix after prefix + visual
    first, later = stage_two_passes(p, n, s, False)
    assert first == later == [Pass(1, p + n + s, 0, head=True)]  # question-dependent: the whole prompt
    # sf-llava's later question: under 1% of its first (20 of 3735 positions, attending to 3715)
    first, later = stage_two_passes(p, n, s, True)
    assert flops(v, later) / flops(v, first) < 0.01


def test_fit_layer_time_is_exact_on_a_quadratic():
    lengths = [100, 200, 400]
    times = [2e-3 * n + 1e-6 * n * n for n in lengths]
    assert fit_layer_time(lengths, times) == pytest.approx((0.0, 2e-3, 1e-6), rel=1e-6)
    lengths = [100, 200, 400, 800]  # four lengths: the fixed cost is fitted too
    times = [0.5 + 2e-3 * n + 1e-6 * n * n for n in lengths]
    assert fit_layer_time(lengths, times) == pytest.approx((0.5, 2e-3, 1e-6), rel=1e-6)


def test_pricer_by_hand():
    pricing = {"fit_lengths": [1, 2, 3], "fit_times_s": [1.0, 2.0, 3.0], "head_s": 0.5,  # t(n) = n
               "calls": [{"kind": "layer", "batch": 4, "new": 16, "past": 100, "s": 0.2},
                         {"kind": "exit", "batch": 1, "new": 1000, "past": 0, "s": 0.1},
                         {"kind": "exit", "batch": 4, "new": 16, "past": 100, "s": 0.05}]}
    price = Pricer(pricing, TOY)
    assert price([Pass(2, 1000, 0, 2, True)]) == pytest.approx(2 * (2 * 1000 + 0.1))
    assert price([Pass(4, 16, 100, 2, True)]) == pytest.approx(2 * 0.2 + 0.05)
    assert price([Pass(1, 10, head=True)]) == pytest.approx(TOY.layers * 10 + 0.5)
    # a long pass after a cached prefix: t(past + new) - t(past) a layer
    assert price([Pass(1, 1000, 30, head=True)]) == pytest.approx(TOY.layers * 1000 + 0.5)
    quad = Pricer({**pricing, "fit_times_s": [1.0, 4.0, 9.0]}, TOY)  # t(n) = n^2
    assert quad.layer(1, 1000, 30) == pytest.approx(1030**2 - 30**2)
    with pytest.raises(AssertionError):  # a short pass after a cache must have been measured
        price([Pass(1, 20, 3000, head=True)])


def test_calls_to_measure_include_stage_two_suffixes():
    traces = trace_methods(SHAPES["tiny"], "vicuna", "tiny", ["mlb", "sf-llava"], 2)
    calls = {tuple(c.values()) for c in calls_to_measure(traces)}
    sf = traces["sf-llava"]
    suffix = sf.stage_two_later[0]
    assert ("layer", 1, suffix.new, suffix.past) in calls  # sf-llava's question after its cached video
    # no method caches a text prefix alone any more (stage_two.py): no call of the prefix's length
    assert ("layer", 1, sf.prefix_tokens, 0) not in calls


def test_estimator_is_explicit():
    import mlb_core.bench.command as command

    assert estimate([3.0, 1.0, 2.0, 10.0]) == 1.0
    assert estimate([3.0, 1.0, 2.0, 10.0], "median") == 2.5
    with pytest.raises(ValueError):
        estimate([1.0], "mean")
    assert not hasattr(command, "ESTIMATOR")


def _cost(first: float, later: float, prefill_first: float, prefill_later: float, reuse: bool) -> PricedCost:
    return PricedCost(visual=10, prompt=20, cached_tokens=15 if reuse else 5, reuse_visual=reuse, uncached=first,
                      first=first, later=later, prefill=prefill_first, prefill_first=prefill_first,
                      prefill_later=prefill_later)


def test_rows_and_curve_as_in_bench_json():
    # mlb: stage one 4 then 1, stage two 2 every question; sf-llava: 5, then 0.5 (its cached video)
    costs = {"mlb": _cost(4.0, 1.0, 2.0, 2.0, False), "sf-llava": _cost(0.0, 0.0, 5.0, 0.5, True)}
    rows = method_rows("m", "flops", "GFLOP", "p", costs, 2)
    assert [r.method for r in rows] == ["mlb", "sf-llava"]
    assert rows[0].stage_one == 2.5 and rows[0].prefill == 2.0 and rows[0].total == 4.5
    assert rows[1].prefill == 2.75 and rows[1].total == 2.75 and rows[1].cached_tokens == 15
    assert rows[0].total_over_sf_llava == pytest.approx(4.5 / 2.75)
    assert mlb_over_reference(costs, 1) == pytest.approx(6 / 5) and mlb_over_reference(costs, 2) == pytest.approx(
        4.5 / 2.75)
    both = rows_by_questions("m", "flops", "GFLOP", "p", costs, 5)
    assert [(r.method, r.n_questions) for r in both] == [("mlb", 1), ("sf-llava", 1), ("mlb", 5), ("sf-llava", 5)]
    table = ratio_table(both)
    assert table[0].method == "mlb" and table[0].total_over_sf_llava == {1: pytest.approx(1.2),
                                                                          5: pytest.approx((1.6 + 2) / 1.4)}
    c = curve(costs)
    assert isinstance(c["mlb"], Curve) and c["mlb"].break_even_questions is None
    assert c["mlb"].asymptote == pytest.approx(3.0 / 0.5)
    out = jsonable(c)["mlb"]
    assert list(out) == ["total_over_sf_llava_by_questions", "asymptote", "break_even_questions_for_0.95"]
    assert out["total_over_sf_llava_by_questions"]["1"] == pytest.approx(1.2)
    cheap = {**costs, "mlb": _cost(1.0, 0.0, 3.0, 0.2, False)}
    assert curve(cheap)["mlb"].break_even_questions == 1  # 4 <= 0.95 x 5
    assert jsonable(costs["mlb"]) == {"visual": 10, "prompt": 20, "cached_tokens": 5, "reuse_visual": False,
                                      "uncached": 4.0, "first": 4.0, "later": 1.0, "prefill": 2.0,
                                      "prefill_first": 2.0, "prefill_later": 2.0}


# ---- measuring and tracing -------------------------------------------------------------------
class FakeCuda:
    """A stand-in for ``torch.cuda`` (NOT a GPU test: there is no GPU on this machine). Its events
    read a fake device clock that the test advances, and it logs the calls the clock makes."""

    def __init__(self) -> None:
        self.now_ms = 0.0
        self.calls: list[str] = []

    def current_stream(self, device: torch.device) -> str:
        assert device.type == "cuda"
        self.calls.append("stream")
        return "stream"

    def synchronize(self, device: torch.device) -> None:
        self.calls.append("synchronize")

    def Event(self, enable_timing: bool = False) -> FakeEvent:  # noqa: N802 (torch.cuda.Event)
        assert enable_timing
        return FakeEvent(self)


class FakeEvent:
    def __init__(self, cuda: FakeCuda) -> None:
        self.cuda, self.t = cuda, None

    def record(self, stream: str) -> None:
        self.cuda.calls.append("record")
        self.t = self.cuda.now_ms

    def synchronize(self) -> None:
        self.cuda.calls.append("wait end")

    def elapsed_time(self, end: FakeEvent) -> float:
        return end.t - self.t


def test_cuda_clock_logic_with_a_fake_cuda():
    """The GPU path's logic only, through :class:`FakeCuda`: synchronise, then an event before and
    after the block on the device's stream, wait for the end event, read event time in ms."""
    cuda = FakeCuda()
    with Stopwatch("cuda", cuda=cuda) as sw:
        cuda.now_ms += 250.0  # "kernels" that take 250 ms on the device
    assert sw.events and sw.wall == pytest.approx(0.25) and sw.host_wall < 0.25
    assert cuda.calls == ["stream", "synchronize", "record", "stream", "record", "wait end"]
    calls = []

    def fn() -> None:
        calls.append(1)
        cuda.now_ms += 10.0

    times = measure(fn, 3, device="cuda", cuda=cuda)  # 2 warm-up calls by default on a GPU
    assert len(calls) == 5 and times == pytest.approx([0.01] * 3)
    assert len(measure(fn, 2, device=torch.device("cuda", 0), warmup=0, cuda=cuda)) == 2 and len(calls) == 7
    assert clock_name("cuda", 2).startswith("CUDA events")


def test_cpu_clock_is_perf_counter_without_warmup():
    calls = []
    times = measure(lambda: calls.append(1), 3)
    assert len(calls) == 3 and len(times) == 3
    with Stopwatch("cpu") as sw:
        pass
    assert not sw.events and sw.wall == sw.host_wall
    assert clock_name("cpu", 0).startswith("time.perf_counter")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machines without a GPU")
def test_device_auto_is_the_cpu_without_a_gpu(capsys, tmp_path):
    assert bench_device("auto") == torch.device("cpu")
    with pytest.raises(MLBError):
        bench_device("cuda")
    assert main(["bench", "--device", "cuda", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().startswith("error: --device cuda")


def test_peak_memory_sees_an_allocation():
    import mmap

    n = 64 * 2**20
    with PeakMemory() as mem:
        # fresh anonymous pages, resident once written: a torch or numpy buffer may instead reuse
        # a free chunk that earlier tests left resident in the heap, and then RSS does not move
        buf = mmap.mmap(-1, n)
        for i in range(0, n, 4096):
            buf[i] = 1
        buf.close()
    assert mem.extra >= 48 * 2**20


def test_trace_passes(tiny):
    from mlb_core.selection.attention import last_query_attention

    x = torch.randn(3, 20, 32)
    with trace_passes(tiny.language_model) as raw:
        last_query_attention(tiny.language_model, x, 2)
        with torch.inference_mode():
            tiny.language_model(inputs_embeds=x[:1])
    assert to_passes(raw, len(tiny.layers)) == [Pass(3, 20, 0, 2, True), Pass(1, 20)]
    for layer in tiny.layers:
        assert not layer._forward_pre_hooks and not layer._forward_hooks


def test_trace_methods_reuses_its_stand_in_and_traces_the_same():
    """The stand-in is built once per (family, context): a trace on the kept one equals a trace on
    a freshly built one (no method leaves state on it)."""
    from mlb_core.bench import trace

    args = (SHAPES["vicuna-7b"], "vicuna", "cpu", ["fastv", "mlb", "sf-llava"], 2)
    trace._stand_in.cache_clear()
    fresh = trace.trace_methods(*args)
    again = trace.trace_methods(*args)
    assert trace._stand_in.cache_info().misses == 1 and trace._stand_in.cache_info().hits == 1
    assert {k: jsonable(v) for k, v in again.items()} == {k: jsonable(v) for k, v in fresh.items()}


def test_trace_methods_counts():
    traces = trace_methods(SHAPES["vicuna-7b"], "vicuna", "mlb", ["mlb", "sf-llava", "full"], 2)
    mlb, sf, full = traces["mlb"], traces["sf-llava"], traces["full"]
    assert mlb.visual == 3400 and sf.visual == 3680  # method.md budgets
    assert full.visual == 6 * 576  # 6 frames fit the 4K context
    # one question through the stage-one cache: 10 segments' contexts in batches of 4, then one
    # merged question pass over all 10 segments
    assert [p.batch for p in mlb.passes] == [4, 4, 2, 10]
    assert mlb.passes[0].new == mlb.prefix_tokens + 2880
    assert mlb.passes[-1].new == mlb.suffix_tokens and mlb.passes[-1].past == mlb.prefix_tokens + 2880
    assert mlb.first[0].new == mlb.prefix_tokens + 2880 and mlb.later[0].past == mlb.first[0].new
    assert sf.passes == [] and sf.first is None
    assert jsonable(mlb)["passes"][0] == mlb.passes[0].to_dict()  # bench.json's "traces"
    # stage two: the question-independent methods cache prefix + visual, mlb only the text prefix
    assert sf.reuse_visual and full.reuse_visual and not mlb.reuse_visual
    assert sf.cached_tokens == sf.prefix_tokens + 3680 and mlb.cached_tokens == 0
    assert sf.stage_two_later == [Pass(1, sf.suffix_tokens, sf.prefix_tokens + 3680, head=True)]
    assert mlb.stage_two_later == [Pass(1, mlb.prefix_tokens + 3400 + mlb.suffix_tokens, 0, head=True)]
    untraced = dataclasses.replace(sf, stage_two_first=None, stage_two_later=None)
    assert untraced.stage_two() == (sf.stage_two_first, sf.stage_two_later)


# ---- the command --------------------------------------------------------------------------------
def test_bench_smoke_tiny(tmp_path, capsys):
    out = tmp_path / "bench"
    rc = main(["bench", "--parts", "flops,7b", "--shape", "tiny", "--preset", "tiny", "--layers", "3",
                     "--fit-lengths", "256,512,1024", "--questions", "2", "--out", str(out)])
    assert rc == 0
    result = json.loads((out / "bench.json").read_text())
    a, b = result["7b"]["a"], result["7b"]["b"]
    assert a["early_exit"]["extra_bytes"] > 0
    assert a["eager"]["extra_bytes"] > a["eager"]["extra_bytes_1_layer"]
    assert a["full_depth"] == SHAPES["tiny"].layers
    assert b["max_abs_diff_vs_uncached"] <= 1e-5
    assert set(result["goals"]) >= {"targets", "a_met", "b_met", "c_7b_met"}
    rows = list(csv.DictReader(open(out / "prefill.csv")))
    methods = {r["method"] for r in rows}
    assert {"mlb", "segattn-topk", "full"} <= methods
    assert {r["basis"] for r in rows} == {"flops", "cpu-priced"}
    assert {r["n_questions"] for r in rows} == {"1", "2"}  # one question a video, and --questions
    sf = [r for r in rows if r["method"] == "sf-llava"]
    assert all(float(r["total_over_sf_llava"]) == pytest.approx(1.0) for r in sf)
    for r in sf:  # its video is cached: later questions are cheaper, per question falls with questions
        assert float(r["prefill_later"]) < float(r["prefill_first"])
    by_q = {(r["model"], r["n_questions"]): float(r["prefill"]) for r in sf}
    assert by_q[("tiny-shape", "2")] < by_q[("tiny-shape", "1")]
    for r in rows:
        assert float(r["total"]) == pytest.approx(float(r["stage_one"]) + float(r["prefill"]), rel=1e-4)
    assert {r["method"] for r in result["ratios"]} >= {"mlb", "sf-llava"}
    assert all(set(r["total_over_sf_llava"]) == {"1", "2"} for r in result["ratios"])
    io = capsys.readouterr()
    assert "wrote" in io.err and "1 q/video  2 q/video" in io.out


@pytest.mark.parametrize("argv", [["--parts", "nope"], ["--questions", "0"], ["--fit-lengths", "a,b"],
                                  ["--methods", "nope"], ["--layers", "1"]])
def test_bad_arguments_one_line_error(argv, capsys, tmp_path):
    assert main(["bench", *argv] + ["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")


@pytest.mark.slow
def test_bench_embedded_smoke(tmp_path):
    out = tmp_path / "bench"
    rc = main(["bench", "--parts", "embedded", "--preset", "tiny", "--repeats", "1", "--questions", "2",
                     "--methods", "mlb,sf-llava", "--out", str(out)])
    assert rc == 0
    result = json.loads((out / "bench.json").read_text())
    emb = result["embedded"]
    assert emb["b"]["max_abs_diff_vs_uncached"] <= 1e-5
    mlb, sf = emb["c"]["mlb"], emb["c"]["sf-llava"]
    assert mlb["first"] > mlb["later"]
    # stage two through the prefix cache, beside the plain prefill: the same logits
    assert sf["reuse_visual"] and not mlb["reuse_visual"]
    assert sf["max_abs_logit_diff"] <= 1e-4 and mlb["max_abs_logit_diff"] <= 1e-4
    assert sf["prefill_later"] < sf["prefill_first"]
    assert len(sf["samples"]["prefill_cached"]) == 2  # one run of two questions
    assert [(r["method"], r["n_questions"]) for r in result["rows"]] == [
        ("mlb", 1), ("sf-llava", 1), ("mlb", 2), ("sf-llava", 2)]
    assert result["meta"]["clock"].startswith("time.perf_counter" if not torch.cuda.is_available() else "CUDA")
