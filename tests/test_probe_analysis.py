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
