"""The output folder is held by one run at a time: a second ``mlb eval`` on the same folder
fails at once (exit 2, one line naming the folder and the holder) and loses nothing; failed
records are retried by the next run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlb_core.evaluation.judge import read_jsonl
from mlb_core.evaluation.runner import (
    LOCK_NAME,
    OutputLocked,
    evaluate,
    make_variants,
    output_lock,
    predictions_path,
)
from mlb_core.evaluation.synthetic import SynthConfig, generate

ROOT = Path(__file__).resolve().parents[1]
MODEL = "tiny:llava_next"


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    out = tmp_path_factory.mktemp("probe")
    generate(out, SynthConfig(n_videos=2, n_frames=12, size=(96, 72)))
    return out


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false"}


def _argv(probe, out, *extra):
    return ["eval", "--benchmark", "synthetic", "--data", str(probe), "--methods", "mlb", "--preset", "tiny",
            "--model", MODEL, "--out", str(out), "-q", *extra]


def _wait_for_holder(out: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    lock = out / LOCK_NAME
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if lock.exists() and lock.read_text().startswith("pid "):
            return
        time.sleep(0.02)
    raise AssertionError(f"the first run never took the lock (rc={proc.poll()})")


def test_second_run_on_a_held_folder_fails_fast_and_loses_nothing(tiny, probe, tmp_path, capsys):
    from mlb_core.cli import main

    out = tmp_path / "out"
    evaluate("synthetic", probe, ["mlb"], ["tiny"], MODEL, out, vlm=tiny, progress=False)
    pred = predictions_path(out, "synthetic", MODEL, make_variants(["mlb"], ["tiny"])[0])
    before, inode = pred.read_bytes(), pred.stat().st_ino
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from mlb_core.evaluation.runner import output_lock\n"
         "with output_lock(sys.argv[1]):\n    time.sleep(60)", str(out)],
        cwd=ROOT, env=_env())
    try:
        _wait_for_holder(out, holder)
        for extra in (["--score-only"], ["--limit", "6"]):
            t0 = time.perf_counter()
            assert main(_argv(probe, out, *extra)) == 2
            err = capsys.readouterr().err
            assert time.perf_counter() - t0 < 5, "must fail at once, before any model is loaded"
            assert err.count("\n") == 1 and err.startswith(f"error: output folder {out} is in use")
            assert f"pid {holder.pid}" in err
            assert pred.read_bytes() == before and pred.stat().st_ino == inode  # nothing replaced or lost
    finally:
        holder.kill()
        holder.wait()
    # a killed holder's lock is freed by the OS: the folder is usable again
    with output_lock(out):
        with output_lock(out):  # re-entrant within one process
            pass


def test_live_eval_then_second_eval_no_answers_lost(probe, tmp_path, capsys):
    """The issue's scenario: a running ``mlb eval`` and a second one on the same folder."""
    from mlb_core.cli import main

    out = tmp_path / "out"
    first = subprocess.Popen([sys.executable, "-m", "mlb_core", *_argv(probe, out)], cwd=ROOT, env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_holder(out, first)
        assert main(_argv(probe, out, "--score-only")) == 2
        assert f"pid {first.pid}" in capsys.readouterr().err
        stdout, stderr = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, stderr[-2000:]
    assert "missing=0" in stdout and "answered=12" in stdout
    recs = read_jsonl(predictions_path(out, "synthetic", MODEL, make_variants(["mlb"], ["tiny"])[0]))
    assert len(recs) == 12 == len({r["qid"] for r in recs})


def test_lock_error_is_an_mlb_error(tmp_path):
    from mlb_core.errors import MLBError

    assert issubclass(OutputLocked, MLBError)


def test_failed_records_are_retried_on_the_next_run(tiny, probe, tmp_path):
    out = tmp_path / "out"
    first = evaluate("synthetic", probe, ["mlb"], ["tiny"], MODEL, out, vlm=tiny, limit=3, progress=False)
    assert first[0]["counts"]["answered"] == 3
    pred = predictions_path(out, "synthetic", MODEL, make_variants(["mlb"], ["tiny"])[0])
    recs = read_jsonl(pred)
    good = recs[1]["prediction"]
    recs[1] = {k: v for k, v in recs[1].items() if k != "prediction"} | {"status": "failed", "error": "boom"}
    pred.write_text("".join(json.dumps(r) + "\n" for r in recs))
    again = evaluate("synthetic", probe, ["mlb"], ["tiny"], MODEL, out, vlm=tiny, limit=3, progress=False)
    assert again[0]["counts"]["answered"] == 3 and again[0]["counts"]["failed"] == 0
    final = read_jsonl(pred)
    assert [r["qid"] for r in final] == [r["qid"] for r in recs]  # one record per question, in order
    assert final[1]["status"] == "answered" and final[1]["prediction"] == good
