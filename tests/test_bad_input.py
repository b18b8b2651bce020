"""Bad input ends in one line ``error: ...`` and exit status 2, never a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from mlb_core.config import get_preset
from mlb_core.errors import MLBError

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--model", "tiny:llava_next", "--preset", "tiny"]


def _one_line_error(capsys, code, *needles):
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for n in needles:
        assert n in err, err
    return err


@pytest.fixture()
def no_encoding(monkeypatch):
    """Fail the test if any frame is decoded or encoded."""
    import mlb_core.pipeline

    def boom(*a, **k):
        raise AssertionError("encode_video must not run")

    monkeypatch.setattr(mlb_core.pipeline, "encode_video", boom)


def test_question_with_non_utf8_bytes(capsys, no_encoding):
    from mlb_core.cli import main

    question = b"what \xff\xfe happens?".decode("utf-8", "surrogateescape")  # what argv gives for such bytes
    _one_line_error(capsys, main(["answer", "bigbuckbunny.mp4", question, *TINY]), "not valid UTF-8")


@pytest.mark.parametrize("device,needle", [("nonsense", "unknown device 'nonsense'"), ("cuda:banana", "unknown device"),
                                           ("cuda", "no CUDA GPU")])
def test_bad_device(capsys, no_encoding, device, needle, tmp_path):
    from mlb_core.cli import main

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    _one_line_error(capsys, main(["answer", "bigbuckbunny.mp4", "q", *TINY, "--device", device]), needle)
    argv = ["eval", "--benchmark", "synthetic", "--data", str(tmp_path), *TINY, "--device", device,
            "--out", str(tmp_path / "o")]
    _one_line_error(capsys, main(argv), needle)


@pytest.mark.parametrize("value", ["abc", "4.0", "true", "[1, 2]"])
def test_set_n_frames_must_be_an_integer(capsys, value, tmp_path):
    from mlb_core.cli import main

    argv = ["eval", "--benchmark", "synthetic", "--data", str(tmp_path), *TINY, "--set", f"n_frames={value}",
            "--out", str(tmp_path / "o")]
    _one_line_error(capsys, main(argv), "n_frames must be an integer")
    with pytest.raises(MLBError, match="must be an integer"):
        get_preset("tiny", max_new_tokens=2.5)
    assert get_preset("tiny", n_frames=__import__("numpy").int64(6)).n_frames == 6


def test_options_must_be_non_empty(capsys, no_encoding):
    from mlb_core.cli import main

    for opts in (";;", "a;", "only one"):
        _one_line_error(capsys, main(["answer", "bigbuckbunny.mp4", "q", *TINY, "--options", opts]),
                        "--options needs two or more non-empty options")


def test_too_many_frames_fail_before_encoding(capsys, no_encoding):
    from mlb_core.cli import main

    code = main(["answer", "bigbuckbunny.mp4", "q", *TINY, "--frames", "2000"])
    _one_line_error(capsys, code, "2000 frames needs at least", "context of 2048")


def test_synthetic_csv_with_a_non_numeric_evidence_start(capsys, tmp_path):
    from mlb_core.cli import main
    from mlb_core.evaluation.synthetic import SynthConfig, generate

    generate(tmp_path, SynthConfig(n_videos=1, n_frames=12, size=(64, 48)))
    csv = tmp_path / "synthetic.csv"
    lines = csv.read_text().splitlines()
    col = lines[0].split(",").index("evidence_start")
    row = lines[1].split(",")
    row[col] = "early"
    csv.write_text("\n".join([lines[0], ",".join(row), *lines[2:]]) + "\n")
    code = main(["eval", "--benchmark", "synthetic", "--data", str(tmp_path), *TINY, "--out", str(tmp_path / "o")])
    _one_line_error(capsys, code, "synthetic.csv line 2: evidence_start must be an integer, got 'early'")


def test_negative_limit(capsys, tmp_path):
    from mlb_core.cli import main

    code = main(["eval", "--benchmark", "synthetic", "--data", str(tmp_path), *TINY, "--limit", "-3",
                 "--out", str(tmp_path / "o")])
    _one_line_error(capsys, code, "--limit must be >= 0")


def test_summary_on_a_torn_metrics_file(tmp_path):
    from mlb_core.evaluation.runner import _write_atomic, summarize

    path = tmp_path / "synthetic" / "m" / "tiny" / "mlb.metrics.json"
    path.parent.mkdir(parents=True)
    _write_atomic(path, json.dumps({"benchmark": "synthetic"}) + "\n")
    assert [p.name for p in path.parent.iterdir()] == ["mlb.metrics.json"]  # no temporary left behind
    path.write_text('{"benchmark": "synthetic", "counts": {"tot')
    with pytest.raises(MLBError, match="mlb.metrics.json: not a readable metrics file"):
        summarize(tmp_path)


# ---- mlb study check validates all of params.yaml ---------------------------------------------------
@pytest.fixture()
def study_root(tmp_path):
    for name in ("params.yaml", "params-paper.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def _edit(root, section, key, value, remove=None):
    data = yaml.safe_load((root / "params.yaml").read_text())
    if remove:
        data[section].pop(remove)
    data[section][key] = value
    (root / "params.yaml").write_text(yaml.safe_dump(data))


@pytest.mark.parametrize("section,key,value,remove,needle", [
    ("fig1", "grid", 3, None, "got the number 3"),  # what YAML makes of `grid: 0x3`
    ("eval", "methods", "mlb,nope", None, "eval.methods: unknown method 'nope'"),
    ("bench", "methods", "full,mlbb", None, "bench.methods: unknown method 'mlbb'"),
    ("fig4", "grids", "2x2,0x3", None, "fig4.grids"),
    ("fig4", "grids", 3, None, "fig4.grids must be a comma-separated string"),
    ("eval", "limit", -1, None, "eval.limit must be >= 0"),
    ("fig2", "windows", -2, None, "fig2.windows must be >= 1"),
    ("eval", "metods", "mlb", "methods", "eval: unknown key 'metods' (did you mean 'methods'?)"),
    ("fig4", "task", "opne", None, "fig4.task must be one of"),
    ("eval", "benchmarks", "synthetic,msvd-qaa", None, "unknown benchmark 'msvd-qaa'"),
])
def test_study_check_rejects(study_root, capsys, section, key, value, remove, needle):
    from mlb_core.cli import main

    _edit(study_root, section, key, value, remove)
    _one_line_error(capsys, main(["study", "check", "--root", str(study_root)]), needle)


def test_study_check_rejects_bad_table_specs_and_threads(study_root, capsys):
    from mlb_core.cli import main

    data = yaml.safe_load((study_root / "params.yaml").read_text())
    data["tables"]["specs"]["mc"]["methods"] = "sf-llava,mlb-gapol"
    (study_root / "params.yaml").write_text(yaml.safe_dump(data))
    _one_line_error(capsys, main(["study", "check", "--root", str(study_root)]),
                    "tables.specs.mc.methods: unknown method 'mlb-gapol'")
    data["tables"]["specs"]["mc"]["methods"] = "mlb"
    data["threads"] = -1
    (study_root / "params.yaml").write_text(yaml.safe_dump(data))
    _one_line_error(capsys, main(["study", "check", "--root", str(study_root)]), "threads must be >= 0")


def test_study_check_accepts_the_shipped_files(capsys):
    from mlb_core.cli import main

    assert main(["study", "check", "--root", str(ROOT)]) == 0
