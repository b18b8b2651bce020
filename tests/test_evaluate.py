"""The evaluation runner: layout, encode-once, equality with direct answers, missing and
broken videos, kill/resume (SIGKILL at random points), data-parallel sharding + merge with
two CPU processes under ``accelerate launch``; and multiple-choice scoring."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlb_core.config import get_preset
from mlb_core.errors import MLBError
from mlb_core.evaluation.benchmarks import load_benchmark
from mlb_core.evaluation.judge import read_jsonl
from mlb_core.evaluation.runner import (
    evaluate,
    make_variants,
    merge_predictions,
    model_slug,
    predictions_path,
    score_saved,
    shard_items,
    summarize,
)
from mlb_core.evaluation.scoring import metrics, parse_option, score_records
from mlb_core.evaluation.synthetic import SynthConfig, generate
from mlb_core.pipeline import answer, encode_video

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
METHODS = ("mlb", "segattn-topk")
MODEL = "tiny:llava_next"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matmuls: one thread is ~10x faster than two on a loaded 2-core machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_vlm(tiny):
    return tiny  # build_tiny_model(seed=0): what load_model("tiny:llava_next") builds


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    out = tmp_path_factory.mktemp("probe")
    generate(out, SynthConfig(n_videos=4, n_frames=24, size=(96, 72)))
    return out


@pytest.fixture(scope="module")
def reference(tiny_vlm, probe, tmp_path_factory):
    """An uninterrupted single-process run: {method: {qid: prediction}}."""
    out = tmp_path_factory.mktemp("ref")
    evaluate("synthetic", probe, METHODS, ["tiny"], MODEL, out, overrides={"max_new_tokens": 12},
             vlm=tiny_vlm, progress=False)
    variants = make_variants(METHODS, ["tiny"], {"max_new_tokens": 12})
    return out, {v.method: _texts(predictions_path(out, "synthetic", MODEL, v)) for v in variants}


def _texts(path):
    recs = read_jsonl(path)
    assert len(recs) == len({r["qid"] for r in recs}), "duplicate qids"
    return {r["qid"]: r.get("prediction") for r in recs}


# ---- scoring of multiple choice -------------------------------------------------------------------
OPTS = ["roll the handle", "tap their feet", "strum the string", "hit with sticks", "pat with hand"]


@pytest.mark.parametrize("text,expected", [
    ("A", 0), ("(B)", 1), ("C)", 2), ("D: hit with sticks", 3), ("E. pat with hand", 4), ("B strum", 1),
    ("  (C) strum the string", 2), ("Best option: (D)", 3), ("The answer is (E)", 4),
    ("I think the answer is B) tap", 1), ("strum the string", 2), ("They strum the string.", 2),
    ("Strum The String!", 2), ("Eat", None), ("", None), ("no idea", None), ("F", None),
    ("roll the handle or tap their feet", None),
])
def test_parse_option(text, expected):
    assert parse_option(text, OPTS) == expected


def test_parse_option_only_counts_existing_letters_and_prefers_longest_text():
    assert parse_option("D", ["yes", "no", "maybe"]) is None
    assert parse_option("walk away quickly", ["walk", "walk away quickly", "run"]) == 1


def test_mc_accuracy_overall_and_per_type():
    items = load_benchmark("next-qa", FIXTURES)
    preds = ["A", "(B) approach lady", "open the box"]  # right, wrong, right (by text)
    recs = [{**it.to_dict(), "status": "answered", "prediction": p} for it, p in zip(items, preds, strict=True)]
    recs.append({**items[0].to_dict(), "qid": "x", "status": "skipped"})
    m = metrics(score_records(recs, None), "mc")
    assert m["accuracy"] == 2 / 3 and m["counts"]["skipped"] == 1 and m["counts"]["answered"] == 3
    assert m["by_type"]["CH"]["accuracy"] == 1.0 and m["by_type"]["CW"]["accuracy"] == 0.0
    assert m["by_type"]["TN"]["accuracy"] == 1.0
    assert m["chance_accuracy_mc"] == pytest.approx(0.2)


# ---- the runner --------------------------------------------------------------------------------------
def test_synthetic_end_to_end(tiny_vlm, probe, reference, tmp_path, capsys):
    out, ref = reference
    folder = out / "synthetic" / model_slug(MODEL) / "tiny+max_new_tokens=12"
    names = sorted(p.name for p in folder.iterdir())
    assert names == [f"{m}.{k}" for m in sorted(METHODS) for k in ("metrics.json", "predictions.jsonl",
                                                                   "scored.jsonl")]
    m = json.loads((folder / "mlb.metrics.json").read_text())
    assert m["judge"]["name"] == "offline-keyword" and m["counts"]["answered"] == 24
    assert m["counts"]["skipped"] == m["counts"]["failed"] == 0
    assert set(m["by_position"]) == {"early", "middle", "late"} and m["time"]["per_question_s"] > 0
    rows = summarize(out)
    assert {(r["method"], r["group"]) for r in rows} >= {(x, g) for x in METHODS
                                                          for g in ("all", "task", "position")}
    # the predictions equal direct calls of the pipeline (no sharing changes an answer)
    params = get_preset("tiny", max_new_tokens=12)
    items = {it.qid: it for it in load_benchmark("synthetic", probe)}
    feats = encode_video(tiny_vlm, probe / "videos" / "synth01.mp4", params.n_frames)
    for qid in ("synth01-early-open", "synth01-late-mc"):
        it = items[qid]
        for method in METHODS:
            direct = answer(tiny_vlm, feats, it.question, method, params, it.task,
                            list(it.options) if it.task == "mc" else None)
            assert ref[method][qid] == direct.text
    # re-running is a no-op that still writes the same metrics; progress shows done/total and rate
    again = evaluate("synthetic", probe, METHODS, ["tiny"], MODEL, out, overrides={"max_new_tokens": 12},
                     vlm=tiny_vlm)
    assert [r["accuracy"] for r in again] == [json.loads((folder / f"{x}.metrics.json").read_text())["accuracy"]
                                              for x in METHODS]
    assert "48/48" in capsys.readouterr().err


def test_each_video_is_encoded_once_for_all_methods_and_grids(tiny_vlm, probe, tmp_path):
    calls = []
    original = tiny_vlm.encode_frames

    def counting(frames, *a, **k):
        calls.append(len(frames))
        return original(frames, *a, **k)

    tiny_vlm.encode_frames = counting  # this instance only, restored below
    try:
        res = evaluate("synthetic", probe, METHODS, ["tiny"], MODEL, tmp_path, grids=[(1, 1), (2, 2)],
                       limit=6, vlm=tiny_vlm, progress=False)
    finally:
        del tiny_vlm.encode_frames
    assert len(calls) == 1  # 6 questions of one video x 2 methods x 2 grids
    assert len(res) == 4 and {r["preset"] for r in res} == {"tiny+grid=1x1", "tiny+grid=2x2"}
    recs = read_jsonl(tmp_path / "synthetic" / model_slug(MODEL) / "tiny+grid=2x2" / "segattn-topk.predictions.jsonl")
    assert all(r["stage_one_shared"] for r in recs)  # mlb ran stage one first, top-k reused it
    assert all(r["timings"]["stage_one"] > 0 for r in recs)  # ... and records its measured cost


def test_missing_and_broken_videos(tiny_vlm, probe, tmp_path):
    videos = tmp_path / "videos"
    shutil.copytree(probe / "videos", videos)
    (videos / "synth03.mp4").unlink()
    (videos / "synth02.mp4").write_bytes(b"not a video at all")
    with pytest.raises(MLBError, match="1 of 4 videos .* synth03"):
        evaluate("synthetic", probe, ["mlb"], ["tiny"], MODEL, tmp_path / "o", videos=videos, vlm=tiny_vlm,
                 progress=False)
    (res,) = evaluate("synthetic", probe, ["mlb"], ["tiny"], MODEL, tmp_path / "o", videos=videos,
                      skip_missing=True, vlm=tiny_vlm, progress=False)
    assert res["counts"]["total"] == 24 and res["counts"]["answered"] == 12
    assert res["counts"]["skipped"] == 6 and res["counts"]["failed"] == 6
    recs = {r["qid"]: r for r in read_jsonl(predictions_path(tmp_path / "o", "synthetic", MODEL,
                                                              make_variants(["mlb"], ["tiny"])[0]))}
    assert len(recs) == 24
    assert recs["synth03-late-mc"]["status"] == "skipped"
    assert recs["synth02-early-open"]["status"] == "failed" and "decod" in recs["synth02-early-open"]["error"]


def test_merge_keeps_benchmark_order_and_drops_duplicates(probe, tmp_path):
    items = load_benchmark("synthetic", probe)
    main = tmp_path / "mlb.predictions.jsonl"
    shard0 = tmp_path / "mlb.predictions.rank0of2.jsonl"
    shard1 = tmp_path / "mlb.predictions.rank1of2.jsonl"
    rec = lambda it, r: json.dumps({"qid": it.qid, "prediction": f"p{r}"}) + "\n"  # noqa: E731
    shard0.write_text("".join(rec(it, 0) for it in items[::-1] if it.video in ("synth00", "synth02")))
    shard1.write_text("".join(rec(it, 1) for it in items if it.video in ("synth01", "synth03"))
                      + rec(items[0], 1) + '{"qid": "torn')
    merged = merge_predictions(main, items)
    assert [r["qid"] for r in merged] == [it.qid for it in items]
    assert merged[0]["prediction"] == "p0"  # the first record of a qid wins
    assert not shard0.exists() and not shard1.exists()
    assert [shard_items(items, r, 2)[0].video for r in (0, 1)] == ["synth00", "synth01"]


def test_shard_items_whole_videos_unless_unbalanced(probe):
    items = load_benchmark("synthetic", probe)  # 4 videos x 6 questions
    two = [shard_items(items, r, 2) for r in (0, 1)]
    assert [{it.video for it in s} for s in two] == [{"synth00", "synth02"}, {"synth01", "synth03"}]
    three = [shard_items(items, r, 3) for r in range(3)]  # whole videos: 12 / 6 / 6 questions
    assert [len(s) for s in three] == [8, 8, 8]  # so questions, round-robin
    assert three[1] == items[1::3]
    one_video = [it for it in items if it.video == "synth00"]
    assert [len(shard_items(one_video, r, 2)) for r in (0, 1)] == [3, 3]
    for world in (1, 2, 3, 5, 30):  # every question on exactly one rank
        got = sorted(it.qid for r in range(world) for it in shard_items(items, r, world))
        assert got == sorted(it.qid for it in items)


def _cli(probe, out, *extra):
    return [sys.executable, "-m", "mlb_core", "eval", "--benchmark", "synthetic", "--data", str(probe),
            "--methods", ",".join(METHODS), "--preset", "tiny", "--set", "max_new_tokens=12", "--model", MODEL,
            "--out", str(out), "-q", *extra]


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false"}


def _n_lines(paths):
    return sum(p.read_bytes().count(b"\n") for p in paths if p.exists())


def test_sigkill_at_random_points_then_resume_equals_uninterrupted(probe, reference, tmp_path):
    _, ref = reference
    out = tmp_path / "out"
    files = [predictions_path(out, "synthetic", MODEL, v)
             for v in make_variants(METHODS, ["tiny"], {"max_new_tokens": 12})]
    rng = random.Random(4)
    kept: dict[str, bytes] = {}
    for threshold in sorted(rng.sample(range(2, 40), 2)):
        proc = subprocess.Popen(_cli(probe, out), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while _n_lines(files) < threshold and proc.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for path in files:  # every complete line written so far must survive unchanged
            for line in path.read_bytes().splitlines(keepends=True) if path.exists() else []:
                if line.endswith(b"\n"):
                    kept[json.loads(line)["qid"] + path.name] = line
    with open(files[0], "ab") as f:  # and a torn line, as if killed inside write()
        f.write(b'{"qid": "synth03-late-mc", "prediction": "half')
    done = subprocess.run(_cli(probe, out), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    assert 0 < len(kept) < 48, "the kills should land mid-run"
    for path, method in zip(files, (v.method for v in make_variants(METHODS, ["tiny"])), strict=True):
        assert _texts(path) == ref[method]
        final = {json.loads(line)["qid"] + path.name: line for line in path.read_bytes().splitlines(keepends=True)}
        for key, line in kept.items():
            if key.endswith(path.name):
                assert final[key] == line, "a finished answer was redone"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("launcher", ["accelerate", "torchrun"])
def test_launchers_two_cpu_processes_shard_and_merge(probe, reference, tmp_path, launcher):
    """``accelerate launch`` (paper mode) and ``torchrun --standalone`` (params.yaml's CPU
    default) both start two ranks that shard whole videos; rank 0 merges into the answers a
    single process gives."""
    ref_out, ref = reference
    out = tmp_path / "out"
    if launcher == "accelerate":
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), "-m", *_cli(probe, out)[2:]]
    else:  # what `launcher: torchrun --standalone --nproc-per-node 2 -m mlb_core` runs
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", *_cli(probe, out)[2:]]
    done = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    for v in make_variants(METHODS, ["tiny"], {"max_new_tokens": 12}):
        main = predictions_path(out, "synthetic", MODEL, v)
        recs = read_jsonl(main)
        assert _texts(main) == ref[v.method]
        assert [r["qid"] for r in recs] == [it.qid for it in load_benchmark("synthetic", probe)]
        assert {r["rank"] for r in recs} == {0, 1}  # both ranks answered, whole videos each
        assert all(r["rank"] == int(r["video"][-2:]) % 2 for r in recs)  # 4 videos: balanced
        assert not list(main.parent.glob("*.rank*")), "shards are merged and removed"
        metrics_file = main.with_name(f"{v.method}.metrics.json")
        assert json.loads(metrics_file.read_text())["counts"]["answered"] == 24
    # re-scoring the saved predictions loads no model and gives the same metrics
    again = score_saved("synthetic", probe, METHODS, ["tiny"], MODEL, out, {"max_new_tokens": 12}, progress=False)
    ref_metrics = [json.loads(predictions_path(ref_out, "synthetic", MODEL, v)
                              .with_name(f"{v.method}.metrics.json").read_text())
                   for v in make_variants(METHODS, ["tiny"], {"max_new_tokens": 12})]
    assert [r["by_position"] for r in again] == [m["by_position"] for m in ref_metrics]


def test_cli_errors_are_one_line(tmp_path, monkeypatch, capsys):
    from mlb_core.cli import main

    argv = ["eval", "--benchmark", "msvd-qa", "--data", str(FIXTURES), "--videos", str(tmp_path),
            "--model", MODEL, "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 2 of 2 videos (3 questions) not found") and err.count("\n") == 1
    for name in ("bQJQGoJF7_k_162_169", "ZbtpcGi2DWY_161_170"):
        (tmp_path / f"{name}.mp4").write_bytes(b"x")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert main(argv) == 2  # the official judge needs a key: said before any model is loaded
    assert "needs an API key in $OPENAI_API_KEY" in capsys.readouterr().err
    assert main([*argv, "--methods", "nope"]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err


def test_resume_refuses_answers_made_with_other_settings(tiny_vlm, probe, tmp_path):
    variant = make_variants(["mlb"], ["tiny"])[0]
    path = predictions_path(tmp_path, "synthetic", MODEL, variant)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"qid": "synth00-early-open", "fingerprint": "0123456789ab", "prediction": "x"})
                    + "\n")
    with pytest.raises(MLBError, match="other settings"):
        evaluate("synthetic", probe, ["mlb"], ["tiny"], MODEL, tmp_path, vlm=tiny_vlm, limit=2, progress=False)
    assert variant.fingerprint(MODEL) != make_variants(["mlb"], ["tiny"], {"max_new_tokens": 5})[0].fingerprint(MODEL)


def test_feature_cache_on_disk_skips_encoding_in_a_later_run(tiny_vlm, probe, tmp_path):
    cache = tmp_path / "features"
    first = evaluate("synthetic", probe, ["mlb"], ["tiny"], MODEL, tmp_path / "a", limit=6, vlm=tiny_vlm,
                     feature_cache=cache, progress=False)
    assert len(list(cache.glob("*.safetensors"))) == 1
    calls = []
    tiny_vlm.encode_frames = lambda *a, **k: calls.append(1)  # must not be called
    try:
        second = evaluate("synthetic", probe, ["mlb"], ["tiny"], MODEL, tmp_path / "b", limit=6, vlm=tiny_vlm,
                          feature_cache=cache, progress=False)
    finally:
        del tiny_vlm.encode_frames
    assert calls == []
    path = predictions_path(tmp_path / "b", "synthetic", MODEL, make_variants(["mlb"], ["tiny"])[0])
    assert all(r["features_cached"] for r in read_jsonl(path))
    assert _texts(path) == _texts(predictions_path(tmp_path / "a", "synthetic", MODEL,
                                                    make_variants(["mlb"], ["tiny"])[0]))
    assert first[0]["by_position"] == second[0]["by_position"]
