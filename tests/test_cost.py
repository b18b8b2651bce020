"""Accuracy against cost (mlb_core/study/cost.py) and the `extra.NAME` overrides it runs with."""

from __future__ import annotations

import json

import pytest

from mlb_core.config import get_preset
from mlb_core.errors import MLBError
from mlb_core.evaluation.store import make_variants
from mlb_core.parsing import parse_overrides
from mlb_core.study import cost as C


def test_extra_overrides_reach_the_params_and_the_folder_name():
    changes = parse_overrides(["n_frames=10", "extra.fastv_r=0.9", "extra.fastv_k=3"])
    assert changes == {"n_frames": 10, "extra": {"fastv_r": 0.9, "fastv_k": 3}}
    (v,) = make_variants(["fastv"], ["cpu"], changes)
    assert v.params.extra == {"fastv_r": 0.9, "fastv_k": 3}
    assert v.label == "cpu+fastv_k=3+fastv_r=0.9+n_frames=10"
    (w,) = make_variants(["fastv"], ["cpu"], {"n_frames": 10, "extra": {"fastv_r": 0.5}})
    assert v.fingerprint("m") != w.fingerprint("m"), "settings in extra change the record fingerprint"
    for bad in ("extra=1", "extra.=1", "extra.2x=1", "nope.fastv_r=1"):
        with pytest.raises(MLBError, match="KEY=VALUE"):
            parse_overrides([bad])


def test_setting_of_each_curve():
    p = get_preset("cpu", n_frames=10)
    assert C.setting_of("mlb", p.replace(grid=(4, 4))) == "4x4"
    assert C.setting_of("sf-llava", p) == "slow 2"  # SF-LLaVA's default: one slow frame in five
    assert C.setting_of("sf-llava", p.replace(extra={"sf_slow_frames": 1})) == "slow 1"
    assert C.setting_of("fastv", p) == "R=0.5"
    assert C.setting_of("fastv", p.replace(extra={"fastv_r": 0.9})) == "R=0.9"
    assert C.setting_of("full", p) is None


def test_check_cost_section():
    C.check_cost_section({"grids": "4x4,6x6", "sf_slow_frames": "1,5", "fastv_r": "0.5,0.9"})
    C.check_cost_section({"grids": "2x2", "sf_slow_frames": 1, "fastv_r": 0.9})  # YAML scalars
    good = {"grids": "4x4", "sf_slow_frames": "1", "fastv_r": "0.9"}
    for bad, match in (({"grids": "big"}, "3x3"), ({"sf_slow_frames": "0"}, "positive"),
                       ({"fastv_r": "1.0"}, r"\[0, 1\)"), ({"fastv_r": "half"}, r"\[0, 1\)"),
                       ({"grids": ""}, "separated list")):
        with pytest.raises(MLBError, match=match):
            C.check_cost_section({**good, **bad})


def _metrics(folder, method, params, correct, n, seconds):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{method}.metrics.json").write_text(json.dumps({
        "method": method, "model": "embedded", "params": params, "counts": {"judged": n},
        "by_task": {"open": {"correct": correct}},
        "time": {"answer_mean_s": {"stage_one": seconds / 2, "prefill": seconds / 2, "generate": 99.0}}}))


def test_read_runs_and_cost_table(tmp_path):
    base = get_preset("cpu", n_frames=10, max_new_tokens=8).to_dict()
    _metrics(tmp_path / "a" / "probe" / "m" / "x", "mlb", base, 3, 20, 4.0)
    _metrics(tmp_path / "a" / "probe" / "m" / "x", "full", base, 9, 20, 9.0)  # no curve: ignored
    _metrics(tmp_path / "b" / "probe" / "m" / "y", "mlb", {**base, "grid": [6, 6]}, 1, 20, 1.0)
    _metrics(tmp_path / "b" / "probe" / "m" / "z", "mlb", base, 0, 20, 5.0)  # the same variant again: first wins
    _metrics(tmp_path / "b" / "probe" / "m" / "w", "fastv", {**base, "extra": {"fastv_r": 0.9}}, 2, 20, 2.0)
    runs = C.read_runs([tmp_path / "a", tmp_path / "b"])
    assert sorted(zip(runs["method"], runs["setting"], runs["correct"], strict=True)) == [
        ("fastv", "R=0.9", 2), ("mlb", "3x3", 3), ("mlb", "6x6", 1)]
    assert runs.set_index("setting").loc["3x3", "seconds"] == pytest.approx(4.0)  # decoding excluded
    table = C.cost_table(runs)
    mlb = table[table["method"] == "mlb"].set_index("setting")
    assert mlb.loc["3x3", "visual_tokens"] == 10 * 64 + 10 * 4  # 24x24 grid: 8x8 cells + 2x2 tail a frame
    assert mlb.loc["6x6", "visual_tokens"] == 10 * 16 + 10 * 4
    assert mlb.loc["6x6", "gflop_7b"] < mlb.loc["3x3", "gflop_7b"]
    fastv = table[table["method"] == "fastv"].iloc[0]
    assert fastv["visual_tokens"] == round(0.1 * 10 * 576)
    assert 0 <= mlb.loc["3x3", "ci_low"] < 3 / 20 < mlb.loc["3x3", "ci_high"] <= 1
    assert list(table["method"]) == ["mlb", "mlb", "fastv"]  # legend order, cheapest first
    fig = C.plot_cost(table, "caption")
    assert len(fig.axes) == 2
    with pytest.raises(MLBError, match="no run"):
        C.read_runs([tmp_path / "empty"])


def test_runs_of_different_probes_are_refused(tmp_path):
    """The cost sweep is frozen with committed answers: a probe that changed since is an error."""
    base = get_preset("cpu", n_frames=10, max_new_tokens=8).to_dict()
    rec = lambda qid, truth: json.dumps({"qid": qid, "question": "What colour?", "answer": truth}) + "\n"  # noqa: E731
    for name, truth in (("a", "red"), ("b", "red")):
        d = tmp_path / name / "probe" / "m" / "x"
        _metrics(d, "mlb" if name == "a" else "mlb-gapool", base, 1, 2, 1.0)
        (d / ("mlb" if name == "a" else "mlb-gapool")).with_suffix(".predictions.jsonl").write_text(
            rec("q0", truth) + rec("q1", "blue"))
    assert len(C.read_runs([tmp_path / "a", tmp_path / "b"])) == 2  # the same probe
    changed = tmp_path / "b" / "probe" / "m" / "x" / "mlb-gapool.predictions.jsonl"
    changed.write_text(rec("q0", "green") + rec("q1", "blue"))
    with pytest.raises(MLBError, match="different probes.*mlb study rerun eval_cost"):
        C.read_runs([tmp_path / "a", tmp_path / "b"])
