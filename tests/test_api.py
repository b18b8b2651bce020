"""The Python API (docs/api.md): what ``mlb_core`` exports, that ``import mlb_core`` stays cheap
(the heavy parts load on first use), and the documented snippet, run on ``tiny:llava_next``
with preset ``tiny``."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import mlb_core

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "api.md"

# the exports a notebook user needs, and where each is defined
EXPORTS = {
    "load_model": "mlb_core.backbones.loading",
    "encode_video": "mlb_core.pipeline",
    "answer": "mlb_core.pipeline",
    "evaluate": "mlb_core.evaluation.runner",
    "run_eval": "mlb_core.evaluation.runner",
    "summarize": "mlb_core.evaluation.runner",
    "METHODS": "mlb_core.methods",
    "MLBParams": "mlb_core.config",
    "PRESETS": "mlb_core.config",
    "get_preset": "mlb_core.config",
    "MLBError": "mlb_core.errors",
    "segattn": "mlb_core.selection.segattn",
    "stage_one": "mlb_core.selection.segattn",
    "gapool": "mlb_core.selection.gapool",
    "vstail": "mlb_core.selection.gapool",
    "last_query_attention": "mlb_core.selection.attention",
    "setup_logging": "mlb_core.logs",
}
# not imported by `import mlb_core` (mlb_core.backbones.loading is: the paper-term functions need the
# adapter, and it imports transformers only inside load_model)
HEAVY = ("mlb_core.pipeline", "mlb_core.methods", "mlb_core.evaluation.runner", "transformers")


@pytest.mark.parametrize("name, module", EXPORTS.items())
def test_exports(name, module):
    assert name in mlb_core.__all__
    assert getattr(mlb_core, name) is getattr(importlib.import_module(module), name)
    assert name in dir(mlb_core)


def test_every_listed_name_resolves_and_unknown_names_fail():
    for name in mlb_core.__all__:
        assert getattr(mlb_core, name) is not None, name
    assert set(mlb_core._LAZY) <= set(mlb_core.__all__)
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        mlb_core.not_a_name  # noqa: B018
    from mlb_core import answer, evaluate, load_model  # from-imports go through __getattr__ too

    assert callable(answer) and callable(evaluate) and callable(load_model)
    assert {"mlb", "mlb-gapool", "segattn-topk", "full"} <= set(mlb_core.METHODS)


def test_import_is_lazy():
    """``import mlb_core`` does not import the pipeline, methods or evaluation code, nor
    transformers; the first access does."""
    code = (f"import json, sys, mlb_core; before = [m for m in {HEAVY!r} if m in sys.modules]; "
            f"mlb_core.answer; after = [m for m in {HEAVY!r} if m in sys.modules]; "
            "print(json.dumps([before, after]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    before, after = json.loads(proc.stdout.strip().splitlines()[-1])
    assert before == []
    assert "mlb_core.pipeline" in after and "mlb_core.evaluation.runner" not in after


def documented_snippet() -> str:
    """The first ``python`` block of docs/api.md, switched to the tiny test model and preset."""
    block = re.search(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert block, "docs/api.md has no python block"
    code = block.group(1)
    for line, tiny in (('MODEL = "embedded"', 'MODEL = "tiny:llava_next"'), ('PRESET = "cpu"', 'PRESET = "tiny"')):
        assert re.search(rf"^{re.escape(line)}", code, re.M), f"the snippet no longer sets {line}"
        code = re.sub(rf"^{re.escape(line)}", tiny, code, flags=re.M)
    return code


def test_documented_snippet_runs_on_tiny(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the snippet writes scratch/ relative to the working folder
    ns: dict = {}
    exec(compile(documented_snippet(), str(DOC), "exec"), ns)

    vlm, params, video = ns["vlm"], ns["params"], ns["video"]
    assert vlm.name == "tiny-llava-next-seed0" and params == mlb_core.get_preset("tiny")
    assert video.tokens.shape[0] == params.n_frames == 4 and set(video.timings) == {"decode", "encode"}
    answers = ns["answers"]
    assert {m for _, m in answers} == {"mlb", "segattn-topk", "full"} and len(answers) == 6
    for (_question, method), ans in answers.items():
        assert isinstance(ans, mlb_core.Answer) and ans.method == method and isinstance(ans.text, str)
        assert 0 < ans.n_visual_tokens < ans.n_prompt_tokens
        assert {"prefill", "generate"} <= set(ans.timings)
    # stage one was built once for the video and shared: the second question reuses the context
    assert ns["cache"].n_builds == 1 and ns["cache"].n_questions == 3
    assert isinstance(ns["choice"].text, str)

    results = ns["results"]
    assert [r["method"] for r in results] == ["mlb", "full"]
    for r in results:
        c = r["counts"]
        assert c["total"] == 18 and c["answered"] == 18 and c["failed"] == c["missing"] == 0
        assert r["judge"]["name"] == "offline-keyword"
        files = list((tmp_path / "scratch" / "eval" / "synthetic" / "tiny-llava_next" / "tiny").glob(
            f"{r['method']}.*"))
        assert {f.name.split(".", 1)[1] for f in files} == {"predictions.jsonl", "scored.jsonl", "metrics.json"}
    rows = ns["rows"]
    assert {(row["method"], row["group"]) for row in rows} >= {("mlb", "all"), ("full", "all")}
    printed = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in printed] == ["mlb", "full"]


def test_documented_snippet_resumes(tmp_path, monkeypatch):
    """Run twice into the same folder (docs/api.md, "interrupted and restarted"): the second
    run answers nothing new and reports the same counts."""
    monkeypatch.chdir(tmp_path)
    code = documented_snippet()
    first: dict = {}
    exec(compile(code, str(DOC), "exec"), first)
    pred = tmp_path / "scratch" / "eval" / "synthetic" / "tiny-llava_next" / "tiny" / "mlb.predictions.jsonl"
    lines = pred.read_text(encoding="utf-8")
    second: dict = {}
    exec(compile(code, str(DOC), "exec"), second)
    assert pred.read_text(encoding="utf-8") == lines  # nothing answered again, nothing duplicated
    assert [r["counts"] for r in second["results"]] == [r["counts"] for r in first["results"]]
