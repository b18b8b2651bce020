"""`mlb answer`: end to end on the embedded default, and one-line errors for bad input."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mlb_core.cli import main
from mlb_core.video import sample_clip

pytestmark = pytest.mark.slow


def run(capfd, *argv):
    code = main(["answer", *argv])
    out, err = capfd.readouterr()
    return code, out, err


def test_answer_end_to_end_verbose(capfd, embedded):
    code, out, err = run(capfd, "bigbuckbunny.mp4", "What animal appears in the video?", "--frames", "10",
                         "--segment-frames", "5", "--max-new-tokens", "8", "-v")
    assert code == 0, err
    assert out.strip()
    assert "visual_tokens=680" in err  # 10 frames x (64 GAPool + 4 VSTail)
    for stage in ("decode", "encode", "stage_one", "prefill", "generate"):
        assert f"{stage}=" in err


def test_answer_frames_alone_picks_segments_that_tile_the_clip(capfd, embedded):
    """``--frames N`` without ``--segment-frames``: the preset's 5-frame segments where they tile
    the clip (no note), else the largest length that does, said on stderr; one frame through
    ``full`` answers (the held-out one-frame condition's setting)."""
    code, out, err = run(capfd, "bigbuckbunny.mp4", "What colour is the square in the video?", "--method", "full",
                         "--frames", "1", "--max-new-tokens", "4", "-v")
    assert code == 0, err
    assert out.strip() and "visual_tokens=576" in err
    assert "note: --frames 1: segments of 1 frame (5 does not divide 1" in err
    code, out, err = run(capfd, "bigbuckbunny.mp4", "Q?", "--frames", "10", "--max-new-tokens", "2")
    assert code == 0, err
    assert "note:" not in err


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    (root / "empty.mp4").write_bytes(b"")
    (root / "text.mp4").write_text("hello\n" * 100)
    data = sample_clip().read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 3])
    return root


@pytest.mark.parametrize("argv,message", [
    (["{root}/missing.mp4", "Q?"], "video not found"),
    (["{root}/empty.mp4", "Q?"], "video file is empty"),
    (["{root}/text.mp4", "Q?"], "cannot decode video"),
    (["{root}/truncated.mp4", "Q?"], "cannot decode video"),
    (["bigbuckbunny.mp4", "Q?", "--frames", "5", "--segment-frames", "5", "--grid", "30x30"],
     "grid 30x30 is larger than the model's 24x24 token grid"),
    (["bigbuckbunny.mp4", "Q?", "--frames", "10", "--segment-frames", "3"], "does not divide"),
    (["bigbuckbunny.mp4", "Q?", "--frames", "15", "--segment-frames", "5", "--grid", "1x1", "--tail", "none"],
     "exceeds the model's context of 8192"),
    (["bigbuckbunny.mp4", "Q?", "--model", "nobody/no-such-llava"], "cannot load model 'nobody/no-such-llava'"),
    (["bigbuckbunny.mp4", "Q?", "--model", "./no/such/folder"], "model folder not found"),
    (["bigbuckbunny.mp4", "Q?", "--method", "magic"], "unknown method"),
    (["bigbuckbunny.mp4", "Q?", "--preset", "huge"], "unknown preset"),
    (["bigbuckbunny.mp4", "Q?", "--frames", "0"], "n_frames must be >= 1"),
    (["bigbuckbunny.mp4", "   "], "the question is empty"),
])
def test_bad_input_one_line(capfd, bad, embedded, argv, message):
    argv = [a.format(root=bad) for a in argv]
    code, out, err = run(capfd, *argv)
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    assert "Traceback" not in err


def test_empty_question_is_said_before_the_model_loads(capfd, monkeypatch):
    import mlb_core.backbones.loading as loading

    def no_load(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(loading, "load_model", no_load)
    code, _, err = run(capfd, "bigbuckbunny.mp4", "  ")
    assert code == 2 and err.strip() == "error: the question is empty"


def test_console_script_no_traceback(bad):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "mlb_core", "answer", str(bad / "text.mp4"), "Q?"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: cannot decode video")
