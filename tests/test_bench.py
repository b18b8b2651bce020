"""The FLOPs model against hand counts and torch's FLOP counter; the benchmark on a tiny config."""

from __future__ import annotations

import csv
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
    question_passes,
    stage_one_passes,
)
from mlb_core.bench.measure import PeakMemory, estimate
from mlb_core.bench.price import Pricer, fit_layer_time, shaped_model
from mlb_core.bench.results import Curve, PricedCost, curve, jsonable, method_rows
from mlb_core.bench.trace import to_passes, trace_methods, trace_passes
from mlb_core.cli import main

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
    # (10 + (n-1)) / n + 5 <= 8  <=>  n >= 4.5
    assert break_even(10.0, 1.0, 5.0, 8.0) == 5
    assert break_even(10.0, 4.0, 5.0, 8.0) is None


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


def test_estimator_is_explicit():
    import mlb_core.bench.command as command

    assert estimate([3.0, 1.0, 2.0, 10.0]) == 1.0
    assert estimate([3.0, 1.0, 2.0, 10.0], "median") == 2.5
    with pytest.raises(ValueError):
        estimate([1.0], "mean")
    assert not hasattr(command, "ESTIMATOR")


def test_rows_and_curve_as_in_bench_json():
    costs = {"mlb": PricedCost(10, 20, 5.0, 4.0, 1.0, 2.0), "sf-llava": PricedCost(30, 40, 1.0, 1.0, 1.0, 5.0)}
    rows = method_rows("m", "flops", "GFLOP", "p", costs, 2)
    assert [r.method for r in rows] == ["mlb", "sf-llava"]
    assert rows[0].stage_one == 2.5 and rows[0].total == 4.5 and rows[0].total_over_sf_llava == pytest.approx(0.75)
    c = curve(costs)
    assert isinstance(c["mlb"], Curve) and c["mlb"].break_even_questions == 2
    out = jsonable(c)["mlb"]
    assert list(out) == ["total_over_sf_llava_by_questions", "asymptote", "break_even_questions_for_0.95"]
    assert out["total_over_sf_llava_by_questions"]["1"] == pytest.approx(1.0)
    assert jsonable(costs["mlb"]) == {"visual": 10, "prompt": 20, "uncached": 5.0, "first": 4.0, "later": 1.0,
                                      "prefill": 2.0}


# ---- measuring and tracing -------------------------------------------------------------------
def test_peak_memory_sees_an_allocation():
    with PeakMemory() as mem:
        x = torch.ones(64 * 2**20 // 4)  # 64 MiB
        del x
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
    sf = [r for r in rows if r["method"] == "sf-llava"]
    assert all(float(r["total_over_sf_llava"]) == pytest.approx(1.0) for r in sf)
    for r in rows:
        assert float(r["total"]) == pytest.approx(float(r["stage_one"]) + float(r["prefill"]), rel=1e-4)
    assert "wrote" in capsys.readouterr().err


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
    assert emb["c"]["mlb"]["first"] > emb["c"]["mlb"]["later"]
    assert [r["method"] for r in result["rows"]] == ["mlb", "sf-llava"]
