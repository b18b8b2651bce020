"""lmms-eval's model ``llava_mlb`` (docs/lmms-eval.md), end to end through lmms-eval's own entry point.

lmms-eval is an optional extra with a lock of its own (requirements/lmms-eval.txt): the tests that
need it skip where it is not importable (the main .venv); `make lmms-test` builds .venv-lmms from that
lock and runs this file there. The others (the task writer, its scoring, how the extra is declared)
run everywhere.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from mlb_core.evaluation.synthetic import SynthConfig, generate
from mlb_core.integrations import LMMS_EVAL_CLASS, LMMS_EVAL_MODEL
from mlb_core.integrations.lmms_eval_task import TASK, doc_to_text, main, process_results, write_task

ROOT = Path(__file__).resolve().parents[1]
HAVE_LMMS_EVAL = importlib.util.find_spec("lmms_eval") is not None
needs_lmms_eval = pytest.mark.skipif(
    not HAVE_LMMS_EVAL,
    reason="lmms-eval is not installed in this interpreter (an optional extra with its own lock, "
           "requirements/lmms-eval.txt): run `make lmms-test`")
# one clip, three shapes, both forms: 6 questions
SMALL = SynthConfig(n_videos=1, n_frames=24, size=(96, 72))
N_QUESTIONS = 6


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    data = tmp_path_factory.mktemp("synthetic")
    generate(data, SMALL)  # = mlb synth --out DATA --videos 1 (smaller frames)
    out = tmp_path_factory.mktemp("task")
    assert main(["--data", str(data), "--out", str(out)]) == 0
    return data, out


class _FunctionLoader(yaml.SafeLoader):
    pass


_FunctionLoader.add_constructor("!function", lambda loader, node: ("function", loader.construct_scalar(node)))


# ---- everywhere ---------------------------------------------------------------------------------
def test_write_task_gives_one_document_per_question(task):
    data, out = task
    config = yaml.load((out / f"{TASK}.yaml").read_text(), Loader=_FunctionLoader)
    assert config["task"] == TASK and config["output_type"] == "generate_until"
    assert config["dataset_path"] == "json"
    data_file = Path(config["dataset_kwargs"]["data_files"]["test"])
    assert data_file.is_absolute() and data_file == (out / f"{TASK}.jsonl").resolve()
    module = "mlb_core.integrations.lmms_eval_task"
    for key in ("doc_to_visual", "doc_to_text", "doc_to_target", "process_results"):
        assert config[key] == ("function", f"{module}.{key}")
    assert [m["metric"] for m in config["metric_list"]][0] == "accuracy"
    docs = [json.loads(line) for line in data_file.read_text().splitlines()]
    assert len(docs) == N_QUESTIONS
    assert {d["task"] for d in docs} == {"open", "mc"}
    assert {d["position"] for d in docs} == {"early", "middle", "late"}
    for d in docs:
        assert Path(d["video"]).is_absolute() and Path(d["video"]).is_file()
        assert Path(d["video"]).parent == (data / "videos").resolve()


def test_process_results_scores_like_mlb_eval():
    open_doc = {"task": "open", "position": "early", "question": "What colour is the circle?", "answer": "red",
                "options": [], "answer_index": -1}
    mc_doc = {"task": "mc", "position": "late", "question": "What colour is the circle?", "answer": "red",
              "options": ["blue", "red", "green"], "answer_index": 1}
    assert process_results(open_doc, ["It is red."])["accuracy"] == 1.0
    assert process_results(open_doc, ["blue or red"])["accuracy"] == 0.0  # the first colour named counts
    scored = process_results(mc_doc, ["(B)"])
    assert scored["accuracy"] == scored["accuracy_mc"] == scored["accuracy_late"] == 1.0
    assert scored["accuracy_open"] is None and scored["accuracy_early"] is None
    assert process_results(mc_doc, ["A"])["accuracy"] == 0.0
    assert "(B) red" in doc_to_text(mc_doc) and doc_to_text(open_doc) == open_doc["question"]


def test_write_task_limit_name_and_other_benchmarks(task, tmp_path):
    data, _ = task
    path = write_task(data, tmp_path, name="mlb_small", limit=2)
    assert path == tmp_path / "mlb_small.yaml"
    assert len((tmp_path / "mlb_small.jsonl").read_text().splitlines()) == 2
    assert main(["--data", str(data), "--out", str(tmp_path), "--benchmark", "msvd-qa"]) == 2  # not a probe


def test_the_extra_is_declared_and_locked_apart():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (req,) = (Requirement(r) for r in project["optional-dependencies"]["lmms-eval"])
    assert canonicalize_name(req.name) == "lmms-eval"
    assert project["entry-points"]["lmms_eval.models"] == {
        LMMS_EVAL_MODEL: "mlb_core.integrations:lmms_eval_models"}

    def pins(path):
        out = {}
        for line in path.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line and not line.startswith("-"):
                r = Requirement(line)
                out[canonicalize_name(r.name)] = next(iter(r.specifier)).version
        return out

    lock, main_lock = pins(ROOT / "requirements/lmms-eval.txt"), pins(ROOT / "requirements/lock.txt")
    assert req.specifier.contains(lock["lmms-eval"])
    for name in ("torch", "transformers", "accelerate", "numpy", "openai"):  # the code runs against these
        assert lock[name] == main_lock[name], name
    for dep in project["dependencies"]:  # the project itself installs with --no-deps from this lock
        assert canonicalize_name(Requirement(dep).name) in lock, dep
    assert not any(n.startswith("nvidia-") or n == "triton" for n in lock), "torch's CUDA stack stays out"
    head = (ROOT / "requirements/lmms-eval.txt").read_text().splitlines()[1]
    assert head.strip("# ").startswith("uv pip compile requirements/lmms-eval.in --universal --python-version 3.11")


# ---- with lmms-eval -----------------------------------------------------------------------------
@needs_lmms_eval
def test_lmms_eval_finds_llava_mlb_through_the_entry_point():
    from lmms_eval.models import get_model, list_available_models

    from mlb_core.integrations.lmms_eval_model import LlavaMLB

    assert LMMS_EVAL_MODEL in list_available_models()
    assert get_model(LMMS_EVAL_MODEL) is LlavaMLB
    assert f"{LlavaMLB.__module__}.{LlavaMLB.__name__}" == LMMS_EVAL_CLASS


@needs_lmms_eval
def test_llava_mlb_answers_video_by_video(task, monkeypatch):
    from lmms_eval.api.instance import Instance
    from PIL import Image

    import mlb_core
    from mlb_core.errors import MLBError
    from mlb_core.integrations.lmms_eval_model import LlavaMLB

    data, _ = task
    video = str(data / "videos" / "synth00.mp4")
    frames = [Image.new("RGB", (64, 48), (200, 30, 30)) for _ in range(3)]
    docs = {0: {"v": [video]}, 1: {"v": frames}, 2: {"v": [video]}}
    model = LlavaMLB(pretrained="tiny:llava_next", method="mlb", preset="tiny", n_frames=6)
    assert model.params.n_frames == 6 and model.params.max_new_tokens == 4
    model.task_dict = {"t": {"test": docs}}
    encoded = []
    real_encode = mlb_core.encode_video
    monkeypatch.setattr(mlb_core, "encode_video", lambda *a, **k: encoded.append(a[1]) or real_encode(*a, **k))
    requests = [Instance("generate_until", (f"<image>\nQuestion {i}?", {"max_new_tokens": 3, "until": ["\n"]},
                                            lambda doc: doc["v"], i, "t", "test"), 0,
                         {"task": "t", "doc_id": i, "repeats": 1}) for i in docs]
    answers = model.generate_until(requests)
    assert len(answers) == 3 and all(isinstance(a.text, str) and "\n" not in a.text for a in answers)
    assert all(a.token_counts.input_tokens > 0 for a in answers)
    assert encoded == [video]  # the two questions about the video share one encoding
    with pytest.raises(NotImplementedError, match="generate_until"):
        model.loglikelihood(requests)
    with pytest.raises(NotImplementedError):
        model.generate_until_multi_round(requests)
    with pytest.raises(MLBError, match="unknown model argument"):
        LlavaMLB(pretrained="tiny:llava_next", preset="tiny", n_frame=4)


@needs_lmms_eval
def test_lmms_eval_cli_runs_llava_mlb_on_the_local_task(task, tmp_path):
    _, task_dir = task
    out = tmp_path / "logs"
    env = {k: v for k, v in os.environ.items() if k != "LMMS_EVAL_PLUGINS"}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", WANDB_MODE="disabled",
               TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "lmms_eval", "--model", LMMS_EVAL_MODEL,
           "--model_args", "pretrained=tiny:llava_next,method=mlb,preset=tiny,n_frames=6",
           "--tasks", TASK, "--include_path", str(task_dir), "--output_path", str(out), "--log_samples"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    log = proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.returncode == 0, log
    assert "Error during evaluation" not in proc.stdout + proc.stderr, log  # lmms-eval logs it and exits 0
    (results_file,) = out.rglob("*_results.json")
    results = json.loads(results_file.read_text())
    assert results["config"]["model"] == LMMS_EVAL_MODEL
    assert results["config"]["model_backend"].startswith(LMMS_EVAL_CLASS)  # our class answered
    assert 0.0 <= results["results"][TASK]["accuracy,none"] <= 1.0
    assert results["n-samples"][TASK]["effective"] == N_QUESTIONS
    (samples_file,) = out.rglob(f"*_samples_{TASK}.jsonl")
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    assert sorted(s["doc_id"] for s in samples) == list(range(N_QUESTIONS))  # one record per question
    for s in samples:
        assert s["accuracy"] in (0.0, 1.0) and isinstance(s["filtered_resps"], str)
