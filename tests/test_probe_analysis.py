"""Probe v2 tables: Wilson intervals against a brute-force reference, grouping and hypotheses."""

from __future__ import annotations

import math

import pytest

from mlb_core.errors import MLBError
from mlb_core.study.probe_analysis import accuracy_by, hypotheses, probe_tables, wilson


def test_wilson_matches_the_inverted_score_test():
    """The interval is the set of p whose score test at 95% does not reject k of n (scan)."""
    for k, n in ((0, 10), (3, 10), (10, 10), (17, 40)):
        lo, hi = wilson(k, n)
        inside = [i / 10000 for i in range(10001)
                  if abs(k / n - i / 10000) <= 1.959964 * math.sqrt(max(i / 10000 * (1 - i / 10000), 1e-12) / n)]
        assert lo == pytest.approx(min(inside), abs=2e-4) and hi == pytest.approx(max(inside), abs=2e-4)
    assert all(math.isnan(b) for b in wilson(0, 0))


def _records():
    recs = []
    for method, right_slots in (("segattn-topk", {4, 5}), ("mlb-gapool", {1, 2, 3, 4, 5}), ("mlb", {1, 2, 3, 4, 5})):
        for slot in range(1, 6):
            for pos in ("first", "last"):
                for rep in range(12):
                    recs.append({"status": "answered", "method": method, "slot": slot, "position": pos,
                                 "size": "large", "order": "forward", "correct": slot in right_slots or rep == 0})
    recs.append({"status": "failed", "method": "mlb", "slot": 1, "position": "first", "order": "forward"})
    return recs


def test_tables_and_verdicts():
    tables = probe_tables(_records(), ["segattn-topk", "mlb-gapool", "mlb"])
    slot = tables["slot"]
    assert list(slot["method"].unique()) == ["segattn-topk", "mlb-gapool", "mlb"]
    row = slot[(slot["method"] == "segattn-topk") & (slot["slot"] == 1)].iloc[0]
    assert row["n"] == 24 and row["k"] == 2 and row["accuracy"] == pytest.approx(8.3, abs=0.05)
    assert tables["overall"].set_index("method").loc["mlb", "n"] == 120  # the failed record does not count
    verdicts = {h["hypothesis"]: h["verdict"] for h in hypotheses(tables, 5)}
    assert verdicts["topk-early-slots"] == "holds"
    assert verdicts["gapool-flat"].startswith("holds")
    assert verdicts["tail-helps-early"] == "undecided"  # equal accuracies: no separation


def test_no_records_is_an_error():
    with pytest.raises(MLBError):
        accuracy_by([], ["method"])


def test_flatness_needs_narrow_intervals():
    """A small probe, or a model at the floor, is flat by default: that is undecided, not a pass."""
    recs = [{"status": "answered", "method": "mlb-gapool", "slot": slot, "position": "first", "size": "large",
             "order": "forward", "correct": slot == 4 and rep == 0} for slot in range(1, 6) for rep in range(4)]
    verdicts = {h["hypothesis"]: h["verdict"] for h in hypotheses(probe_tables(recs, ["mlb-gapool"]), 5)}
    assert verdicts["gapool-flat"].startswith("undecided")


def test_verdicts_quote_the_counts_rounded_once():
    """The tables round to a tenth for display; the verdicts' figures come from the counts, so
    66 of 67 (98.507%) reads 99, not 98 (98.507 -> 98.5 -> 98 under half-even rounding)."""
    recs = [{"status": "answered", "method": "segattn-topk", "slot": slot, "position": "first", "size": "large",
             "order": "forward", "correct": slot == 5 and rep > 0 or slot == 1 and rep == 0}
            for slot in (1, 5) for rep in range(67)]
    tables = probe_tables(recs, ["segattn-topk"])
    row = tables["slot"].set_index("slot").loc[5]
    assert (row["k"], row["n"], row["accuracy"]) == (66, 67, 98.5)  # the display table, rounded once
    topk = next(h for h in hypotheses(tables, 5) if h["hypothesis"] == "topk-early-slots")
    assert topk["verdict"] == "holds" and topk["b"].startswith("99 [")
    lo, hi = wilson(66, 67)
    assert topk["b"] == f"99 [{100 * lo:.0f}, {100 * hi:.0f}]"


def test_answer_names_sorts_each_answer_by_what_it_names(tmp_path):
    """Each answer is read against its own clip: the target's colour, a distractor's, another
    colour or none; a hedged list counts its first colour; a multiple-choice answer counts the
    option it picked; a record of another design is an error, not a silent miss."""
    from mlb_core.evaluation.probe import PALETTE, ProbeConfig, clips_of, generate_probe
    from mlb_core.study.probe_analysis import answer_names, named_colour, plot_answer_names

    generate_probe(tmp_path, ProbeConfig(n_frames=10, side=96, sizes=("large",), orders=("forward",)))
    clips = clips_of(tmp_path)
    names = sorted(clips)
    vocab = tuple(PALETTE)
    recs, want = [], {"target": 0, "distractor": 0, "other": 0, "none": 0}
    for i, name in enumerate(names):
        clip = clips[name]
        other = next(c for c in vocab if c != clip.colour and c not in clip.distractor_colours)
        said, kind = [(f"the square is {clip.colour}.", "target"),
                      (f"{clip.distractor_colours[1].upper()}, or maybe {clip.colour}", "distractor"),
                      (f"it is {other}", "other"), ("the user's a user.", "none")][i % 4]
        want[kind] += 1
        recs.append({"qid": f"{name}-open", "video": name, "method": "mlb", "task": "open",
                     "status": "answered", "prediction": said})
        assert named_colour(recs[-1], clip, vocab) == kind
    opts = [clips[names[0]].distractor_colours[0], clips[names[0]].colour]
    assert named_colour({"task": "mc", "options": opts, "parsed_index": 0}, clips[names[0]], vocab) == "distractor"
    assert named_colour({"task": "mc", "options": opts, "parsed_index": None}, clips[names[0]], vocab) == "none"
    recs.append({"qid": "x", "video": names[0], "method": "mlb", "status": "failed"})  # not answered: not counted
    table = answer_names(recs, clips, ["segattn-topk", "mlb"], vocab)
    assert list(table["method"]) == ["mlb"]
    row = table.iloc[0]
    assert {k: int(row[k]) for k in want} == want and row["n"] == len(names)
    assert row["distractor_pct"] == pytest.approx(100 * want["distractor"] / len(names), abs=0.05)
    lo, hi = wilson(want["distractor"], len(names))
    assert (row["lo"], row["hi"]) == (pytest.approx(100 * lo, abs=0.05), pytest.approx(100 * hi, abs=0.05))
    paths = plot_answer_names(table, tmp_path / "fig" / "answers", "caption", len(vocab))
    assert all(p.exists() for p in paths)
    with pytest.raises(MLBError, match="n_colours must be >= 3"):
        plot_answer_names(table, tmp_path / "fig" / "bad", "caption", 2)
    with pytest.raises(MLBError, match="not in the probe's design"):
        answer_names([{**recs[0], "video": "probe999f"}], clips, ["mlb"], vocab)


def test_mcnemar_exact_is_the_binomial_test_of_the_discordant_pairs():
    from mlb_core.study.probe_analysis import mcnemar_exact

    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(5, 0) == mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    # 2 of 12 discordant pairs one way: 2 * P(X <= 2), X ~ Bin(12, 1/2) = 2 * 79 / 4096
    assert mcnemar_exact(10, 2) == pytest.approx(2 * (1 + 12 + 66) / 4096)


def _sweep_records(method, right):
    """Sweep records: 4 clips, target in every slot of 2 segments; ``right(clip, slot)``."""
    return [{"status": "answered", "method": method, "qid": f"probe{c:03d}f-s{seg}-{slot}-open",
             "video": f"probe{c:03d}f-s{seg}-{slot}", "slot": slot, "segment": seg,
             "position": ("first", "last")[seg - 1], "order": "forward", "evidence_start": (seg - 1) * 5 + slot - 1,
             "correct": right(c, slot)} for c in range(4) for seg in (1, 2) for slot in range(1, 6)]


def test_paired_slots_and_methods_pair_the_same_clips():
    from mlb_core.study.probe_analysis import paired_methods, paired_slots

    recs = _sweep_records("segattn-topk", lambda c, s: s == 5) + _sweep_records("mlb", lambda c, s: c < 2)
    recs += _sweep_records("mlb-gapool", lambda c, s: c < 1)
    t = paired_slots(recs, ["segattn-topk", "mlb", "mlb-gapool"], 1, 5).set_index("method")
    assert t.loc["segattn-topk", "pairs"] == 8 and t.loc["segattn-topk", "only slot 5"] == 8
    assert t.loc["segattn-topk", "p (exact McNemar)"] == pytest.approx(2 / 256, abs=1e-4)
    assert t.loc["mlb", "slot 1 right"] == t.loc["mlb", "slot 5 right"] == 4 and t.loc["mlb", "p (exact McNemar)"] == 1
    m = paired_methods(recs, "mlb", "mlb-gapool", position="first")
    assert m["pairs"] == 20 and m["only mlb"] == 5 and m["only mlb-gapool"] == 0
    with pytest.raises(MLBError, match="not a sweep clip"):
        paired_slots([{**recs[0], "video": "probe000f"}], ["segattn-topk"], 1, 5)


def test_difficulty_table_sets_each_method_beside_the_target_alone(tmp_path):
    from mlb_core.study.probe_analysis import commonest_truth_share, difficulty_table, plot_by_frame

    recs = _sweep_records("mlb", lambda c, s: s == 1 and c < 3)
    alone = [{"status": "answered", "method": "full", "qid": r["qid"], "correct": not r["video"].startswith("probe003")}
             for r in recs]
    t = difficulty_table(recs, alone, ["mlb"]).set_index("slot")
    assert t.loc[1, "n"] == 8 and t.loc[1, "k"] == 6 and t.loc[1, "alone_k"] == 6
    assert t.loc[1, "given_alone_n"] == 6 and t.loc[1, "given_alone"] == 100  # clip 3's target alone is missed
    assert t.loc[2, "given_alone"] == 0
    by_frame = difficulty_table(recs, alone, ["mlb"], by="frame")
    assert sorted(by_frame["frame"]) == list(range(1, 11))
    assert commonest_truth_share([{"answer": a} for a in ("red", "red", "blue", "green")]) == 50
    paths = plot_by_frame(by_frame, tmp_path / "f", "caption", 5, floor=50)
    assert all(p.exists() for p in paths)
    with pytest.raises(MLBError, match="no answer in the one-frame control"):
        difficulty_table(recs, alone[:3], ["mlb"])
