"""The study's figure and table computations (mlb_core.study.analysis) against naive references,
and the plotting helpers (every figure saves PNG, PDF and its data as CSV, deterministically)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mlb_core.errors import MLBError
from mlb_core.selection.gapool import gapool
from mlb_core.study import analysis

ROOT = Path(__file__).resolve().parents[1]
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


def test_maps_file_round_trip_is_byte_stable(tmp_path):
    """save_maps / load_maps: the maps file fig2_maps writes and fig2 reads (np.load-able npz, the
    metadata as JSON beside it), the same bytes for the same maps."""
    from mlb_core.study.bias import load_maps, save_maps

    rng = np.random.default_rng(2)
    maps = {c: rng.random((3, 5, 4, 4)).astype(np.float32) for c in ("reversed", "in_order")}
    orders = {c: analysis.frame_order(c, 5) for c in maps}
    labels = ["a.mp4#1|What?", "a.mp4#2|What?", "b.mp4#1|Who is there?"]
    meta = {"model": "embedded", "source": "samples", "n_inputs": 3, "grid": [4, 4]}
    paths = save_maps(tmp_path / "a" / "maps.npz", maps, orders, labels, meta)
    assert [p.name for p in paths] == ["maps.npz", "maps.json"]
    back = load_maps(paths[0])
    assert list(back.maps) == ["in_order", "reversed"]  # the order of CONDITIONS
    for c in maps:
        np.testing.assert_array_equal(back.maps[c], maps[c])
        assert back.maps[c].dtype == np.float32 and back.orders[c].tolist() == orders[c].tolist()
    assert back.labels == labels and back.meta == meta
    with np.load(paths[0]) as z:  # the convention: maps_<condition>, order_<condition>, labels
        assert sorted(z.files) == ["labels", "maps_in_order", "maps_reversed", "order_in_order", "order_reversed"]
    again = save_maps(tmp_path / "b" / "maps.npz", dict(reversed(maps.items())), orders, labels, meta)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in paths]
    for bad in ({"shuffled": maps["in_order"]}, {}):
        with pytest.raises(MLBError):
            save_maps(tmp_path / "c.npz", bad, orders, labels)
    with pytest.raises(MLBError):
        save_maps(tmp_path / "c.npz", maps, orders, labels[:2])
    with pytest.raises(MLBError):
        save_maps(tmp_path / "c.npz", maps, {"in_order": orders["in_order"]}, labels)
    with pytest.raises(MLBError):
        load_maps(tmp_path / "missing.npz")


def test_shares_record_and_significant_digits():
    assert analysis.round_sig(0.123456789) == 0.123457 and analysis.round_sig(123456789.0) == 123457000.0
    assert analysis.round_sig(1 / 3, 2) == 0.33 and math.isnan(analysis.round_sig(math.nan))
    df = analysis.round_frame(pd.DataFrame({"a": [1 / 3, 2e-7 / 3], "n": [1, 2], "s": ["x", "y"]}))
    assert df["a"].tolist() == [0.333333, 6.66667e-08] and df["n"].tolist() == [1, 2]
    maps = {c: np.random.default_rng(3).random((4, 5, 2, 2)) for c in analysis.CONDITIONS}
    orders = {c: analysis.frame_order(c, 5) for c in analysis.CONDITIONS}
    summary = analysis.share_summary(analysis.fig2_shares_table(maps, orders, list("abcd")))
    rec = analysis.shares_record(summary, {"model": "embedded", "source": "samples", "score_layer": 2})
    assert list(rec) == ["model", "source", "score_layer", "shares", "n_inputs"] and rec["n_inputs"] == 4
    assert list(rec["shares"]) == list(analysis.CONDITIONS) and len(rec["shares"]["in_order"]) == 5
    for c, row in rec["shares"].items():
        assert all(len(f"{x:.15g}".lstrip("0.").replace(".", "").rstrip("0")) <= 6 for x in row)
        np.testing.assert_allclose(row, summary.loc[c, [f"pos{p}" for p in range(1, 6)]].to_numpy(float), rtol=1e-5)
    assert json.loads(json.dumps(rec)) == rec


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


def _write_run(folder, method, grid, tokens, statuses=None, acc=0.5):
    """A run in the layout mlb_core.evaluation.runner writes: metrics + predictions (one line each)."""
    folder.mkdir(parents=True, exist_ok=True)
    statuses = statuses or ["answered"] * len(tokens)
    preds = [{"qid": str(i), "status": st, **({"n_visual_tokens": t} if st == "answered" else {})}
             for i, (t, st) in enumerate(zip(tokens, statuses, strict=True))]
    (folder / f"{method}.predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
    m = _metrics(method, grid, acc, n=len(tokens)) | {"predictions": f"{method}.predictions.jsonl"}
    (folder / f"{method}.metrics.json").write_text(json.dumps(m))


def test_load_runs_and_fig4_inputs(tmp_path):
    from mlb_core.study.runs import fig4_inputs, load_runs

    root = tmp_path / "synthetic" / "embedded"
    _write_run(root / "cpu+grid=2x2", "mlb-gapool", (2, 2), [720, 720, 0], ["answered", "answered", "failed"])
    _write_run(root / "cpu+grid=1x2", "mlb-gapool", (1, 2), [1440, 1441], acc=0.25)
    _write_run(root / "cpu+grid=6x6", "mlb-gapool", (6, 6), [80, 80])
    _write_run(root / "cpu", "full", (3, 3), [2880, 2880], acc=0.75)
    _write_run(root / "cpu", "mlb", (3, 3), [1000, 1000])
    runs = load_runs(root)
    assert [r.path.parent.name for r in runs] == ["cpu", "cpu", "cpu+grid=1x2", "cpu+grid=2x2", "cpu+grid=6x6"]
    assert [r.mean_visual_tokens for r in runs] == [2880.0, 1000.0, 1440.5, 720.0, 80.0]  # answered ones only
    assert [r.method for r in load_runs(root, ["full"])] == ["full"]
    inputs = fig4_inputs(root, "1x2,2x2", "mlb-gapool", "full")
    assert [p["grid"] for p in inputs.points] == [None, "1x2", "2x2"]
    assert [r.method for r in inputs.runs] == ["full", "mlb-gapool", "mlb-gapool"]
    table = analysis.fig4_table(inputs.points)
    assert table["label"].tolist() == ["1x2 (1440)", "2x2 (720)", "no compression (2880)"]
    assert table["accuracy"].tolist() == [25.0, 50.0, 75.0]
    assert len(fig4_inputs(root).points) == 4  # every grid
    assert fig4_inputs(root, task="mc").points[0]["accuracy"] == 37.5
    with pytest.raises(MLBError):
        load_runs(tmp_path / "nowhere")
    _write_run(tmp_path / "bad", "mlb-gapool", (2, 2), [0], ["failed"])
    with pytest.raises(MLBError):
        fig4_inputs(tmp_path / "bad")
    (tmp_path / "bad" / "mlb-gapool.predictions.jsonl").unlink()
    with pytest.raises(MLBError):
        load_runs(tmp_path / "bad")


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
    from mlb_core.backbones.vision_weights import caveat

    assert caveat() in md and analysis.caption("x", "llava-hf/llava-v1.6-vicuna-7b-hf") == "x"
    assert md.count("\n|") == 2 + len(df)
    with pytest.raises(MLBError):
        analysis.prefill_table([{"model": "x"}])


def test_table_specs_write_csv_and_markdown(tmp_path):
    """mlb_core.study.tables: every table kind of params.yaml has a spec; write_table builds it
    from a stage's results and writes <table>.csv (6 significant digits) and <table>.md."""
    import yaml

    from mlb_core.study.tables import TABLES, get_table, write_table

    specs = yaml.safe_load(open(ROOT / "params.yaml"))["tables"]["specs"]
    assert set(specs) == set(TABLES) and all(get_table(k).name == k for k in specs)
    assert [k for k, t in TABLES.items() if t.timed] == ["prefill"]
    run = tmp_path / "qa" / "synthetic" / "embedded" / "cpu+n_frames=10"
    _write_metrics(run, "mlb", 2 / 3, 1 / 3, {"early": 0.5, "middle": 0.5, "late": 1.0})
    _write_metrics(run, "segattn-topk", 1 / 3, 0.0, {"early": 0.0, "middle": 0.0, "late": 1.0})
    out = tmp_path / "tables"
    openqa = write_table("openqa", tmp_path / "qa", "segattn-topk,ig-vlm,mlb", out)
    assert openqa.frame["method"].tolist() == ["segattn-topk", "mlb"]
    assert openqa.frame["accuracy"].tolist() == [33.3333, 66.6667]  # rounded to 6 significant digits
    csv = (out / "openqa.csv").read_text()
    assert "33.3333" in csv and "33.33333" not in csv and "1.66667" in csv
    md = (out / "openqa.md").read_text()
    assert md == openqa.markdown and md.startswith("**" + TABLES["openqa"].title + "**")
    assert "| segattn-topk | 33.3 / 1.67 |" in md and "- questions: `synthetic: 3`" in md
    assert "Cells: accuracy (%) / score (0-5). Open-ended" in md and "Embedded default:" in md
    mc = write_table("mc", tmp_path / "qa", ["segattn-topk", "mlb"], out)
    assert "| mlb | 33.3 |" in mc.markdown and "option parser" in mc.markdown
    abl = write_table("ablation", tmp_path / "qa", "segattn-topk,mlb", out, digits=1)
    assert "offline-keyword (open-ended); option parser (multiple choice)" in abl.markdown
    assert abl.frame["late_acc"].tolist() == [100.0, 100.0]
    again = write_table("ablation", tmp_path / "qa", "segattn-topk,mlb", tmp_path / "again", digits=1)
    assert [p.read_bytes() for p in again.paths] == [p.read_bytes() for p in abl.paths]

    rows = [{c: 0 for c in analysis.PREFILL_COLUMNS} | {"model": "embedded", "basis": "measured", "unit": "s",
                                                         "preset": "cpu", "method": m, "total": t / 3}
            for m, t in (("mlb", 1.0), ("sf-llava", 2.0))]
    pd.DataFrame(rows).to_csv(tmp_path / "prefill.csv", index=False)
    pre = write_table("prefill", tmp_path / "prefill.csv", "sf-llava,mlb", out)
    assert pre.frame["total"].tolist() == [0.666667, 0.333333]
    assert "- basis: `measured (s)`" in pre.markdown and "- judge: `none (timings)`" in pre.markdown
    for bad in (("nope", tmp_path / "qa"), ("prefill", tmp_path / "missing.csv"), ("mc", tmp_path / "missing")):
        with pytest.raises(MLBError):
            write_table(bad[0], bad[1], "mlb", out)

    # write_tables: the whole spec in one call (the `tables` stage), the same files as one call each
    from mlb_core.study.tables import write_tables

    specs = {"ablation": {"source": str(tmp_path / "qa"), "methods": "segattn-topk,mlb"},
             "prefill": {"source": str(tmp_path / "prefill.csv"), "methods": "sf-llava,mlb"}}
    both = write_tables(specs, tmp_path / "all", digits=1)
    assert list(both) == ["ablation", "prefill"]
    assert both["ablation"].paths[0].read_bytes() == abl.paths[0].read_bytes()
    assert both["ablation"].markdown == abl.markdown
    assert list(write_tables(specs, tmp_path / "one", 1, only="prefill")) == ["prefill"]
    assert not (tmp_path / "one" / "ablation.csv").exists()
    with pytest.raises(MLBError, match="no spec for table"):
        write_tables(specs, tmp_path / "x", only="mc")


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
