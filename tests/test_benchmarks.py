"""Benchmark loaders on fixture CSVs in exactly the IG-VLM layouts, and video lookup."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mlb_core.errors import MLBError
from mlb_core.evaluation.benchmarks import (
    BENCHMARKS,
    VideoFinder,
    canonical_name,
    find_annotation,
    load_benchmark,
    resolve_videos,
)

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("name,n,videos", [
    ("msvd-qa", 3, 2), ("msrvtt-qa", 3, 2), ("tgif-qa", 2, 2), ("activitynet-qa", 3, 2),
    ("next-qa", 3, 2), ("egoschema", 2, 2), ("intentqa", 3, 3), ("vcgbench", 7, 4),
])
def test_every_benchmark_loads_its_layout(name, n, videos):
    items = load_benchmark(name, FIXTURES)
    assert len(items) == n
    assert len({it.video for it in items}) == videos
    assert len({it.qid for it in items}) == n  # unique ids
    kind = BENCHMARKS[name].kind
    for it in items:
        assert it.question and it.video and it.answer
        if kind == "mc":
            assert it.task == "mc" and 2 <= len(it.options) <= 5
            assert it.options[it.answer_index] == it.answer
        else:
            assert it.task == "open" and not it.options


def test_open_ended_fields_come_from_the_right_columns():
    msvd = load_benchmark("msvd", FIXTURES)  # alias
    first = msvd[0]
    assert (first.qid, first.video, first.answer, first.question_type) == (
        "1201_30933", "bQJQGoJF7_k_162_169", "man", "0")
    assert first.question == "who slices a tomato on a cutting board?"
    msrvtt = load_benchmark("msrvtt-qa", FIXTURES)
    assert msrvtt[0].video == "video6513" and msrvtt[0].question_type == "14"


def test_multiple_choice_answers():
    nextqa = load_benchmark("next-qa", FIXTURES)
    assert [it.answer_index for it in nextqa] == [0, 2, 4]  # answer_number
    assert nextqa[2].answer == "open the box" and nextqa[2].question_type == "TN"
    ego = load_benchmark("egoschema", FIXTURES)  # answer given as option text only
    assert [it.answer_index for it in ego] == [3, 1]
    assert ego[0].answer == "C is cleaning dishes."
    intent = load_benchmark("intentqa", FIXTURES)
    assert [it.answer_index for it in intent] == [4, 1, 3]
    assert intent[0].qid == "13884124143_CH_1" and intent[0].question_type == "CH"


def test_vcgbench_parts_and_pairs():
    items = load_benchmark("vcgbench", FIXTURES)
    parts = [it.part for it in items]
    assert parts.count("generic") == 2 and parts.count("temporal") == 1
    assert parts.count("consistency1") == 2 and parts.count("consistency2") == 2
    c1 = {it.extra["question_id"]: it for it in items if it.part == "consistency1"}
    c2 = {it.extra["question_id"]: it for it in items if it.part == "consistency2"}
    assert set(c1) == set(c2)
    for key in c1:
        assert c1[key].answer == c2[key].answer and c1[key].question != c2[key].question
    # --limit never cuts a consistency pair in half
    limited = load_benchmark("vcgbench", FIXTURES, limit=4)
    qids = {it.extra["question_id"] for it in limited if it.part.startswith("consistency")}
    for q in qids:
        assert sum(it.extra["question_id"] == q for it in limited if it.part.startswith("consistency")) == 2


def test_limit_and_unknown_names():
    assert [it.qid for it in load_benchmark("intentqa", FIXTURES, limit=2)] == [
        "13884124143_CH_1", "7093500213_TN_6"]
    assert canonical_name("NExT_QA") == "next-qa"
    with pytest.raises(MLBError, match="unknown benchmark"):
        load_benchmark("kinetics", FIXTURES)
    with pytest.raises(MLBError, match="--limit"):
        load_benchmark("msvd-qa", FIXTURES, limit=0)


def test_bad_files_give_one_clear_error(tmp_path):
    (tmp_path / "MSVD_QA.csv").write_text(",video_id,answer,question,video_name\n1,1,a,q?,v\n")
    with pytest.raises(MLBError, match="missing column.*question_id"):
        load_benchmark("msvd-qa", tmp_path)
    bad = (FIXTURES / "EgoSchema.csv").read_text().replace("C is cleaning dishes.,C is cooking.",
                                                            "C is sleeping.,C is cooking.", 1)
    (tmp_path / "EgoSchema.csv").write_text(bad)
    with pytest.raises(MLBError, match="none of the options"):
        load_benchmark("egoschema", tmp_path)
    with pytest.raises(MLBError, match="no NExT_QA.csv"):
        load_benchmark("next-qa", tmp_path)
    with pytest.raises(MLBError, match="annotations not found"):
        load_benchmark("next-qa", tmp_path / "nope")
    (tmp_path / "vcg").mkdir()
    shutil.copy(FIXTURES / "Consistency_QA1.csv", tmp_path / "vcg")
    with pytest.raises(MLBError, match="Consistency_QA2"):
        load_benchmark("vcgbench", tmp_path / "vcg")


def test_annotation_found_in_ig_vlm_subfolders_and_as_a_file(tmp_path):
    (tmp_path / "multiple_choice_qa").mkdir()
    shutil.copy(FIXTURES / "NExT_QA.csv", tmp_path / "multiple_choice_qa")
    assert find_annotation(tmp_path, "NExT_QA.csv") == tmp_path / "multiple_choice_qa" / "NExT_QA.csv"
    assert len(load_benchmark("next-qa", tmp_path)) == 3
    assert len(load_benchmark("next-qa", FIXTURES / "NExT_QA.csv")) == 3


def test_duplicate_question_ids_are_made_unique(tmp_path):
    text = (FIXTURES / "MSVD_QA.csv").read_text().replace("1201_30934", "1201_30933")
    (tmp_path / "MSVD_QA.csv").write_text(text)
    assert [it.qid for it in load_benchmark("msvd-qa", tmp_path)] == ["1201_30933", "1201_30933#2", "1375_40001"]


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_video_finder_tries_extensions_subfolders_and_v_prefix(tmp_path):
    a = _touch(tmp_path / "video6513.mp4")
    b = _touch(tmp_path / "tumblr_abc.gif")
    c = _touch(tmp_path / "NExTVideo" / "1025" / "4010069381.mp4")
    d = _touch(tmp_path / "anet" / "1QIUV7WYKXg.mkv")  # ActivityNet stored without "v_"
    e = _touch(tmp_path / "clip.webm")
    _touch(tmp_path / "notes.txt")
    finder = VideoFinder(tmp_path)
    assert finder.find("video6513") == a
    assert finder.find("tumblr_abc") == b
    assert finder.find("4010069381") == c
    assert finder.find("v_1QIUV7WYKXg") == d
    assert finder.find("clip.webm") == e
    assert finder.find("notes") is None and finder.find("video9999") is None


def test_missing_videos_one_error_or_skipped(tmp_path):
    items = load_benchmark("msrvtt-qa", FIXTURES)
    _touch(tmp_path / "video6513.avi")
    with pytest.raises(MLBError) as err:
        resolve_videos(items, tmp_path)
    msg = str(err.value)
    assert "1 of 2 videos (1 questions) not found" in msg and "video7010" in msg and "--skip-missing" in msg
    assert "\n" not in msg
    found, missing = resolve_videos(items, tmp_path, skip_missing=True)
    assert found == {"video6513": tmp_path / "video6513.avi"} and missing == ["video7010"]
    with pytest.raises(MLBError, match="video root not found"):
        resolve_videos(items, tmp_path / "nope")
