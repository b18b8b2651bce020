"""The study's figure and table computations (mlb_core.study.analysis) against naive references,
and the plotting helpers (every figure saves PNG, PDF and its data as CSV, deterministically)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from mlb_core.errors import MLBError
from mlb_core.selection.gapool import gapool
from mlb_core.study import analysis

FIG4 = {"1x2": 1440, "1x3": 960, "2x2": 720, "2x3": 480, "3x3": 320, "4x4": 180, "6x6": 80}


def _scores(t=5, h=24, w=24, seed=0):
    return np.random.default_rng(seed).random((t, h, w)).astype(np.float32)


# ---- parsing -----------------------------------------------------------------------------------
def test_parse_grids_and_lists():
    assert analysis.parse_grid("3x3") == (3, 3)
    assert analysis.parse_grid([1, 2]) == (1, 2)
    assert analysis.parse_grids("1x2, 6X6") == [(1, 2), (6, 6)]
    assert analysis.split_list("a;b ; ;c", sep=";") == ["a", "b", "c"]
    assert analysis.grid_name((2, 3)) == "2x3"
    for bad in ("3", "ax3", "0x2", "1x2x3"):
        with pytest.raises(MLBError):
            analysis.parse_grid(bad)
    with pytest.raises(MLBError):
        analysis.split_list(" , ")


# ---- Fig. 1 --------------------------------------------------------------------------------------
def test_topk_mask_matches_sorting():
    s = _scores()
    k = analysis.topk_count(s.size, 0.25)
    assert k == 720
    mask = analysis.topk_mask(s, k)
    assert mask.sum() == k
    threshold = np.sort(s.reshape(-1))[::-1][k - 1]
    assert np.all(s[mask] >= threshold) and np.all(s[~mask] <= threshold)
    # ties go to the lower flat index
    tied = np.zeros((2, 2, 2))
    assert analysis.topk_mask(tied, 3).reshape(-1).tolist() == [True, True, True] + [False] * 5
    with pytest.raises(MLBError):
        analysis.topk_count(10, 0.0)


def _pick_reference(s, grid):
    """A plain loop over frames and cells: the first maximum of every cell."""
    t, h, w = s.shape
    mask = np.zeros_like(s, dtype=bool)
    for f in range(t):
        for r0 in range(0, h, grid[0]):
            for c0 in range(0, w, grid[1]):
                best, pos = -np.inf, None
                for r in range(r0, min(r0 + grid[0], h)):
                    for c in range(c0, min(c0 + grid[1], w)):
                        if s[f, r, c] > best:
                            best, pos = s[f, r, c], (r, c)
                mask[f, pos[0], pos[1]] = True
    return mask


@pytest.mark.parametrize("shape,grid", [((5, 24, 24), (2, 2)), ((2, 27, 27), (2, 2)), ((3, 9, 7), (2, 3)),
                                        ((1, 6, 6), (6, 6))])
def test_gapool_pick_mask_is_gapool_max_mode(shape, grid):
    s = _scores(*shape)
    mask = analysis.gapool_pick_mask(s, grid)
    np.testing.assert_array_equal(mask, _pick_reference(s, grid))
    # the tokens GAPool (max mode) emits are exactly the marked ones: feed token ids as features
    t, h, w = shape
    ids = torch.arange(t * h * w, dtype=torch.float64).reshape(t, h, w, 1)
    picked = gapool(ids, torch.as_tensor(s), grid, "max")[:, 0].long()
    assert sorted(picked.tolist()) == np.flatnonzero(mask.reshape(-1)).tolist()


def test_fig1_table_and_counts():
    s = _scores()
    s[-1] += 1.0  # the last frame dominates, as with the real bias
    table = analysis.fig1_table(s, 0.25, "2x2")
    assert len(table) == 2880 and table["topk"].sum() == 720 and table["gapool"].sum() == 720
    counts = analysis.fig1_counts(table)
    top = counts[counts["selection"] == "global top-k"].set_index("frame")["tokens"]
    gap = counts[counts["selection"] == "GAPool"].set_index("frame")["tokens"]
    assert top.iloc[-1] == 576 and top.sum() == 720 and gap.tolist() == [144] * 5
    assert counts.groupby("selection")["share"].sum().round(6).tolist() == [1.0, 1.0]


# ---- Fig. 2 --------------------------------------------------------------------------------------
def test_frame_orders():
    assert analysis.frame_order("in_order", 5).tolist() == [0, 1, 2, 3, 4]
    assert analysis.frame_order("reversed", 5).tolist() == [4, 3, 2, 1, 0]
    assert analysis.frame_order("repeated", 5).tolist() == [2] * 5
    assert analysis.frame_order("repeated", 5, 0).tolist() == [0] * 5
    with pytest.raises(MLBError):
        analysis.frame_order("shuffled", 5)
    with pytest.raises(MLBError):
        analysis.frame_order("repeated", 5, 5)


def test_shares_and_average_maps_agree():
    rng = np.random.default_rng(1)
    maps = {c: rng.random((6, 5, 4, 4)) * rng.random((6, 1, 1, 1)) for c in analysis.CONDITIONS}
    orders = {c: analysis.frame_order(c, 5) for c in analysis.CONDITIONS}
    norm = analysis.normalise_maps(maps["in_order"])
    np.testing.assert_allclose(norm.reshape(6, -1).sum(1), 1.0)
    shares = analysis.frame_shares(maps["in_order"])
    assert shares.shape == (6, 5)
    np.testing.assert_allclose(shares.sum(1), 1.0)
    # naive per-frame share of one input
    m0 = maps["in_order"][0]
    np.testing.assert_allclose(shares[0], [m0[f].sum() / m0.sum() for f in range(5)])
    table = analysis.fig2_shares_table(maps, orders, [f"in{i}" for i in range(6)])
    summary = analysis.share_summary(table)
    assert list(summary.index) == list(analysis.CONDITIONS) and (summary["n_inputs"] == 6).all()
    for c in analysis.CONDITIONS:  # the mean of the shares is the share of the averaged map
        np.testing.assert_allclose(summary.loc[c, [f"pos{p}" for p in range(1, 6)]].to_numpy(float),
                                   analysis.frame_shares(analysis.average_map(maps[c])))
    long = analysis.fig2_maps_table(maps, orders)
    assert len(long) == 3 * 5 * 16
    rev = long[(long["condition"] == "reversed") & (long["position"] == 1)]
    assert set(rev["frame"]) == {5}
    with pytest.raises(MLBError):
        analysis.normalise_maps(np.zeros((1, 5, 2, 2)))


# ---- Fig. 4 --------------------------------------------------------------------------------------
def test_grid_token_counts_are_the_papers():
    grids = analysis.parse_grids(",".join(FIG4))
    assert analysis.grid_token_counts(5, 24, 24, grids) == list(FIG4.values())


def _metrics(method, grid, acc, n=6, score=None):
    return {"method": method, "preset": "cpu", "params": {"grid": list(grid)}, "accuracy": acc,
            "score": score, "counts": {"total": n},
            "by_task": {"mc": {"n": n // 2, "accuracy": acc / 2}, "open": {"n": n // 2, "accuracy": acc, "score": 1.0}}}


def test_fig4_points_and_table():
    runs = [_metrics("mlb-gapool", (2, 2), 0.5), _metrics("full", (3, 3), 0.75), _metrics("mlb-gapool", (1, 2), 0.25)]
    points = analysis.fig4_points(runs, [720.0, 2880.0, 1440.4])
    assert [p["grid"] for p in points] == ["2x2", None, "1x2"]
    assert [p["tokens"] for p in points] == [720, 2880, 1440]
    table = analysis.fig4_table(points)
    assert table["label"].tolist() == ["1x2 (1440)", "2x2 (720)", "no compression (2880)"]
    assert table["accuracy"].tolist() == [25.0, 50.0, 75.0]
    mc = analysis.fig4_points(runs, [1, 2, 3], task="mc")
    assert mc[0]["accuracy"] == 25.0 and mc[0]["n"] == 3
    with pytest.raises(MLBError):
        analysis.fig4_points(runs, [1, 2])
    with pytest.raises(MLBError):
        analysis.fig4_table([{"grid": "2x2"}])


# ---- tables --------------------------------------------------------------------------------------
def _write_metrics(folder, method, acc_open, acc_mc, positions):
    """A metrics file in the layout mlb_core.evaluation.runner writes (the fields summarize reads)."""
    folder.mkdir(parents=True, exist_ok=True)
    stats = lambda acc, n=3, score=True: {"n": n, "answered": n, "skipped": 0, "failed": 0, "accuracy": acc,  # noqa: E731
                                          **({"score": 5 * acc} if score else {})}
    m = {"benchmark": "synthetic", "model": "embedded", "preset": "cpu+n_frames=10", "method": method,
         "judge": {"name": "offline-keyword"},
         "counts": {"total": 6, "answered": 6, "skipped": 0, "failed": 0},
         "accuracy": (acc_open + acc_mc) / 2, "score": 5 * acc_open,
         "by_task": {"open": stats(acc_open), "mc": stats(acc_mc, score=False)},
         "by_position": {p: stats(a, 2) for p, a in positions.items()}, "time": {"per_question_s": 1.0}}
    (folder / f"{method}.metrics.json").write_text(json.dumps(m))


def test_qa_and_ablation_tables_from_evaluate_summaries(tmp_path):
    from mlb_core.evaluation.runner import summarize

    run = tmp_path / "synthetic" / "embedded" / "cpu+n_frames=10"
    _write_metrics(run, "mlb", 2 / 3, 1 / 3, {"early": 0.5, "middle": 0.5, "late": 1.0})
    _write_metrics(run, "segattn-topk", 1 / 3, 0.0, {"early": 0.0, "middle": 0.0, "late": 1.0})
    rows = summarize(tmp_path)
    open_t = analysis.qa_table(rows, "open", ["segattn-topk", "mlb"])
    assert open_t["method"].tolist() == ["segattn-topk", "mlb"]
    assert open_t["accuracy"].round(2).tolist() == [33.33, 66.67]
    assert open_t["score"].round(2).tolist() == [1.67, 3.33]
    assert set(open_t.columns) >= {"model", "preset", "benchmark", "judge"}
    assert set(open_t["judge"]) == {"offline-keyword"}
    wide = analysis.qa_wide(open_t)
    assert wide.columns.tolist() == ["model", "method", "synthetic"]
    assert wide["synthetic"].tolist() == ["33.3 / 1.67", "66.7 / 3.33"]
    mc = analysis.qa_table(rows, "mc")
    mc_wide = analysis.qa_wide(analysis.qa_table(rows, "mc", ["segattn-topk", "mlb"]))
    assert mc_wide["synthetic"].tolist() == ["0.0", "33.3"]
    assert "score" not in mc.columns and set(mc["judge"]) == {"option parser"}
    abl = analysis.ablation_table(rows, ["segattn-topk", "mlb"])
    assert abl.loc[0, "early_acc"] == 0.0 and abl.loc[1, "late_acc"] == 100.0
    assert abl["mc_acc"].round(2).tolist() == [0.0, 33.33]
    with pytest.raises(MLBError):
        analysis.qa_table(rows, "vcg")
    with pytest.raises(MLBError):
        analysis.qa_table([], "open")


def test_prefill_table_and_markdown():
    rows = [{c: 0 for c in analysis.PREFILL_COLUMNS} | {"model": "embedded", "basis": "measured", "unit": "s",
                                                         "method": m, "total": t, "total_over_sf_llava": t / 2}
            for m, t in (("mlb", 1.0), ("sf-llava", 2.0), ("other", 3.0))]
    df = analysis.prefill_table(rows, ["sf-llava", "mlb"])
    assert df["method"].tolist() == ["sf-llava", "mlb"]
    md = analysis.markdown_table(df, "Prefill", {"model": "embedded", "judge": "none"},
                                 analysis.caption("Seconds.", "embedded"), digits=2)
    assert md.startswith("**Prefill**") and "- model: `embedded`" in md
    # the single-valued model column is named in the metadata, not repeated in the body
    assert "| basis | unit | preset | method | visual tokens |" in md
    assert "| other |" not in md and "| measured | s | 0 | sf-llava | 0 | 0 | 0 | 0 | 2.00 | 1.00 |" in md
    assert "untrained" in md and analysis.caption("x", "llava-hf/llava-v1.6-vicuna-7b-hf") == "x"
    assert md.count("\n|") == 2 + len(df)
    with pytest.raises(MLBError):
        analysis.prefill_table([{"model": "x"}])


# ---- plots ---------------------------------------------------------------------------------------
def test_figures_save_png_pdf_csv_deterministically(tmp_path):
    from mlb_core.study import plots

    s = _scores(5, 6, 6)
    frames = np.random.default_rng(0).integers(0, 255, (5, 20, 30, 3), dtype=np.uint8)
    table = analysis.fig1_table(s, 0.25, "2x2")
    fig = plots.plot_fig1(frames, table, analysis.fig1_counts(table), 45, "2x2", "t", "c")
    a = plots.save_figure(fig, tmp_path / "a" / "fig1", {"": table, "counts": analysis.fig1_counts(table)})
    b = plots.save_figure(fig, tmp_path / "b" / "fig1", table)
    assert [p.name for p in a] == ["fig1.png", "fig1.pdf", "fig1.csv", "fig1_counts.csv"]
    assert a[1].read_bytes() == b[1].read_bytes() and a[0].read_bytes() == b[0].read_bytes()
    assert pd.read_csv(a[2]).shape == table.shape

    maps = {c: np.random.default_rng(1).random((3, 5, 6, 6)) for c in analysis.CONDITIONS}
    orders = {c: analysis.frame_order(c, 5) for c in analysis.CONDITIONS}
    fig = plots.plot_fig2(analysis.fig2_maps_table(maps, orders), analysis.fig2_shares_table(maps, orders), "t", "c")
    assert len(fig.axes) == 3 * 5 + 2
    pts = analysis.fig4_table([{"grid": g, "tokens": n, "accuracy": 10.0 * i, "n": 3}
                               for i, (g, n) in enumerate(FIG4.items())] +
                              [{"grid": None, "tokens": 2880, "accuracy": 50.0, "n": 3}])
    fig = plots.plot_fig4(pts, "accuracy", "t", "c", "accuracy (%)")
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("# input tokens") and ax.get_ylabel() == "accuracy (%)"
    dashed = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert len(dashed) == 1 and dashed[0].get_color() == "red" and math.isclose(dashed[0].get_ydata()[0], 50.0)
    import matplotlib.pyplot as plt

    plt.close("all")
