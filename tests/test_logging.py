"""Logging, not silence (mlb_core/logs.py, docs/api.md "Logging and warnings"): the levels of
``mlb -q`` / ``mlb -v``, the three warnings (a real checkpoint on the CPU, no decord, a short
video), and no blanket warning filter left behind by ``mlb_core.cli.main``."""

from __future__ import annotations

import logging
import sys
import warnings

import numpy as np
import pytest
import torch

import mlb_core.video as video_mod
from mlb_core.backbones.loading import load_model, warn_cpu_load
from mlb_core.cli import main
from mlb_core.evaluation.synthetic import write_mp4
from mlb_core.logs import LOGGER_NAME, level_for, setup_logging
from mlb_core.video import load_video

TINY = ["--model", "tiny:llava_next", "--preset", "tiny"]
ANSWER = ["answer", "bigbuckbunny.mp4", "What animal?", *TINY]


@pytest.fixture(autouse=True)
def restore_logging():
    """main() configures process-wide state: put the mlb_core logger and the Hugging Face
    settings back after each test."""
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as hf_logging

    logger = logging.getLogger(LOGGER_NAME)
    handlers, level = list(logger.handlers), logger.level
    hf_level, hub_level = hf_logging.get_verbosity(), hub_utils.logging.get_verbosity()
    hf_bars, hub_bars = hf_logging.is_progress_bar_enabled(), not hub_utils.are_progress_bars_disabled()
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)
    hf_logging.set_verbosity(hf_level)
    hub_utils.logging.set_verbosity(hub_level)
    (hf_logging.enable_progress_bar if hf_bars else hf_logging.disable_progress_bar)()
    if hub_bars:
        hub_utils.enable_progress_bars()


def _blanket_ignores(filters) -> list:
    """Filters that ignore every warning: any message, any module, category ``Warning``."""
    def pattern(p) -> str:
        return getattr(p, "pattern", p) or ""

    return [f for f in filters if f[0] == "ignore" and pattern(f[1]) in ("", ".*") and f[2] is Warning
            and pattern(f[3]) in ("", ".*")]


# ---- levels ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("verbosity, quiet, level", [
    (0, False, logging.INFO), (1, False, logging.DEBUG), (3, False, logging.DEBUG),
    (0, True, logging.WARNING), (2, True, logging.WARNING)])
def test_level_for(verbosity, quiet, level):
    assert level_for(verbosity, quiet) == level


@pytest.mark.parametrize("flags, level, sub_quiet", [
    ([], logging.INFO, False), (["-q"], logging.WARNING, True), (["-v"], logging.DEBUG, False),
    (["-vv"], logging.DEBUG, False), (["--quiet"], logging.WARNING, True)])
def test_top_level_flags_set_the_level(flags, level, sub_quiet, capsys, tmp_path, monkeypatch):
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as hf_logging

    seen = {}

    def fake_eval(args):  # the parsed arguments as the sub-command receives them
        seen["quiet"] = args.quiet
        return 0

    monkeypatch.setattr("mlb_core.cli.cmd_eval", fake_eval)  # main() builds the parser: it binds the fake
    assert main([*flags, "eval", "--benchmark", "synthetic", "--data", str(tmp_path)]) == 0
    logger = logging.getLogger(LOGGER_NAME)
    assert logger.level == level and logger.getEffectiveLevel() == level
    assert seen["quiet"] is sub_quiet  # -q before the sub-command reaches mlb eval's own -q (no bars)
    if "-q" in flags or "--quiet" in flags:
        assert not hf_logging.is_progress_bar_enabled() and hub_utils.are_progress_bars_disabled()
    elif flags == ["-vv"]:
        assert hf_logging.get_verbosity() == logging.INFO and hf_logging.is_progress_bar_enabled()
    else:  # not a terminal (pytest): no weight-loading bar, download bars on
        assert not hf_logging.is_progress_bar_enabled() and not hub_utils.are_progress_bars_disabled()
        assert hf_logging.get_verbosity() == logging.WARNING


def test_sub_command_quiet_is_the_same_as_top_level(tmp_path, monkeypatch):
    monkeypatch.setattr("mlb_core.cli.cmd_eval", lambda args: 0)
    assert main(["eval", "--benchmark", "synthetic", "--data", str(tmp_path), "-q"]) == 0
    assert logging.getLogger(LOGGER_NAME).level == logging.WARNING


def test_quiet_and_verbose_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as info:
        main(["-q", "-v", *ANSWER])
    assert info.value.code == 2 and "not allowed with" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [[*ANSWER, "-v"], ["-v", *ANSWER]], ids=["answer -v", "mlb -v answer"])
def test_answer_verbose_prints_token_counts_and_stage_times(argv, capsys):
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert out.strip()  # the answer
    assert "visual_tokens=" in err and "prompt_tokens=" in err
    time_line = next(ln for ln in err.splitlines() if ln.startswith("time: "))
    for stage in ("decode", "encode", "stage_one", "compress", "prefill", "generate", "total"):
        assert f"{stage}=" in time_line
    assert logging.getLogger(LOGGER_NAME).level == logging.DEBUG


def test_quiet_answer_prints_only_the_answer(capsys):
    assert main(["-q", *ANSWER]) == 0
    out, err = capsys.readouterr()
    assert out.strip() and err == ""


# ---- no blanket filter ----------------------------------------------------------------------------
def test_main_installs_no_blanket_warning_filter(capsys):
    before = list(warnings.filters)
    assert main(ANSWER) == 0
    assert _blanket_ignores(warnings.filters) == _blanket_ignores(before) == []
    new = [f for f in warnings.filters if f not in before]
    assert not [f for f in new if f[0] == "ignore" and f[3] is None], new  # nothing ignored everywhere
    with warnings.catch_warnings(record=True) as caught:  # a warning raised after main still shows
        warnings.warn("a warning after mlb main", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["a warning after mlb main"]


def test_blanket_detector_catches_the_old_behaviour():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore")  # what main() did before
        assert len(_blanket_ignores(warnings.filters)) == 1


# ---- the three warnings ---------------------------------------------------------------------------
def _records(caplog, needle: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.WARNING and needle in r.getMessage()]


@pytest.fixture(scope="module")
def short_video(tmp_path_factory):
    """A 3-frame H.264 clip written with the project's writer."""
    path = tmp_path_factory.mktemp("short") / "short.mp4"
    rng = np.random.default_rng(0)
    write_mp4(path, [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(3)], fps=5)
    return path


@pytest.mark.parametrize("backend", ["decord", "pyav", "auto"])
def test_short_video_warns_once(short_video, backend, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER_NAME)
    frames, indices = load_video(short_video, 8, backend)
    assert frames.shape[0] == 8 and len(set(indices.tolist())) == 3  # frames repeat
    records = _records(caplog, "decodable frames")
    assert len(records) == 1 and records[0].name == "mlb_core.video"
    assert "has 3 decodable frames, fewer than the 8 asked for: frames repeat" in records[0].getMessage()


def test_long_enough_video_does_not_warn(short_video, caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER_NAME)
    load_video(short_video, 3)
    load_video("bigbuckbunny.mp4", 4)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_short_video_warning_through_the_command(short_video, capsys):
    assert main(["answer", str(short_video), "What colour?", *TINY, "--frames", "6"]) == 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines == [f"warning: {short_video} has 3 decodable frames, fewer than the 6 asked for: "
                     "frames repeat (README, 'Short videos')"]
    assert main(["-q", "answer", str(short_video), "What colour?", *TINY, "--frames", "6"]) == 0
    assert "warning: " in capsys.readouterr().err  # -q keeps warnings


def test_missing_decord_warns_once_and_falls_back_to_pyav(monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER_NAME)
    monkeypatch.setitem(sys.modules, "decord", None)  # `import decord` raises ImportError
    monkeypatch.setattr(video_mod, "_warned_no_decord", False)
    with pytest.raises(ImportError):
        import decord  # noqa: F401
    first, _ = load_video("bigbuckbunny.mp4", 4)
    again, _ = load_video("bigbuckbunny.mp4", 4)
    assert first.shape == again.shape and first.shape[0] == 4
    records = _records(caplog, "decord is not installed")
    assert len(records) == 1 and "PyAV" in records[0].getMessage()
    assert records[0].name == "mlb_core.video"


def test_decord_present_does_not_warn(monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER_NAME)
    monkeypatch.setattr(video_mod, "_warned_no_decord", False)
    load_video("bigbuckbunny.mp4", 4)
    assert not _records(caplog, "decord")


@pytest.fixture(scope="module")
def checkpoint_folder(tmp_path_factory):
    """A real checkpoint folder (a saved tiny model): what a hub download looks like on disk."""
    folder = tmp_path_factory.mktemp("ckpt") / "llava-next-tiny"
    vlm = load_model("tiny:llava_next_vicuna", device="cpu")
    vlm.model.save_pretrained(folder)
    vlm.tokenizer.save_pretrained(folder)
    vlm.image_processor.save_pretrained(folder)
    return folder


def test_checkpoint_on_cpu_warns(checkpoint_folder, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER_NAME)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a machine without a usable GPU
    monkeypatch.setattr(torch.version, "cuda", "12.8")  # ... with a CUDA build of torch: the old-driver case
    vlm = load_model(str(checkpoint_folder))
    assert vlm.device.type == "cpu" and next(vlm.model.parameters()).dtype == torch.float32
    records = _records(caplog, "on the CPU")
    assert len(records) == 1 and records[0].name == "mlb_core.backbones.loading"
    msg = records[0].getMessage()
    assert msg.startswith(f"loading {checkpoint_folder} on the CPU (CUDA is not usable here")
    assert "driver" in msg and "fp32" in msg and "slow" in msg and "\n" not in msg


def test_embedded_and_tiny_do_not_warn(monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER_NAME)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    load_model("tiny:llava_next")
    assert not _records(caplog, "on the CPU")
    cpu = torch.device("cpu")
    assert not warn_cpu_load("embedded", cpu, torch.float32)  # the embedded default: small, made for CPUs
    assert not warn_cpu_load("tiny:llava", cpu, torch.float32)
    assert not warn_cpu_load("llava-hf/llava-v1.6-vicuna-7b-hf", torch.device("cuda:0"), torch.bfloat16)
    assert not _records(caplog, "on the CPU")


@pytest.mark.parametrize("cuda, build, why", [
    (False, None, "this torch build has no CUDA"), (True, "12.8", "as asked"),
    (False, "12.8", "NVIDIA driver too old")])
def test_cpu_warning_says_why(monkeypatch, caplog, cuda, build, why):
    caplog.set_level(logging.WARNING, logger=LOGGER_NAME)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.version, "cuda", build)
    assert warn_cpu_load("llava-hf/llava-v1.6-vicuna-7b-hf", torch.device("cpu"), torch.float32)
    (record,) = _records(caplog, "on the CPU")
    assert why in record.getMessage() and "runs in fp32" in record.getMessage()


def test_cpu_warning_through_the_command(checkpoint_folder, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = ["answer", "bigbuckbunny.mp4", "What animal?", "--model", str(checkpoint_folder), "--preset", "tiny"]
    assert main(argv) == 0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"warning: loading {checkpoint_folder} on the CPU (")
    assert lines[0].endswith("it runs in fp32 there and will be slow")


def test_library_warnings_reach_stderr_without_any_setup(tmp_path):
    """A notebook that configured nothing still sees a warning: the package adds no handler
    that would swallow it (Python's last-resort handler prints it)."""
    import subprocess

    short = tmp_path / "s.mp4"
    write_mp4(short, [np.zeros((48, 64, 3), np.uint8)] * 2, fps=5)
    code = f"from mlb_core.video import load_video; load_video({str(short)!r}, 5)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.strip() == f"{short} has 2 decodable frames, fewer than the 5 asked for: frames repeat " \
                                  "(README, 'Short videos')"


def test_setup_logging_replaces_its_handler(capsys):
    logger = setup_logging(1)
    setup_logging(0)
    ours = [h for h in logger.handlers if type(h).__name__ == "_StderrHandler"]
    assert len(ours) == 1
    logger.info("an info line")
    logger.debug("not shown at INFO")
    logging.getLogger("mlb_core.video").warning("a warning line")
    assert capsys.readouterr().err.splitlines() == ["an info line", "warning: a warning line"]
