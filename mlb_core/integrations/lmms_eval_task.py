"""The synthetic probes as a local lmms-eval task (docs/lmms-eval.md).

``write_task`` turns the output of ``mlb synth`` (or ``mlb probe``) into a task folder that
lmms-eval reads with ``--include_path``: a JSON-lines dataset (one document per question, the
video as an absolute path) and a task YAML that loads it with the ``json`` builder of
``datasets`` (no hub, works with ``HF_DATASETS_OFFLINE=1``)::

    mlb synth --out data/synthetic --videos 3
    python -m mlb_core.integrations.lmms_eval_task --data data/synthetic --out tasks/mlb
    lmms-eval --model llava_mlb --model_args pretrained=embedded,preset=cpu \\
        --tasks mlb_synthetic --include_path tasks/mlb --output_path logs/ --log_samples

The YAML's functions (``doc_to_visual``, ``doc_to_text``, ``doc_to_target``,
``process_results``) are this module's, by absolute import; it needs no lmms-eval itself.
Scoring is the project's own: an open-ended answer is right when the first colour it names is
the answer (:class:`~mlb_core.evaluation.judge.KeywordJudge` with the probe's palette, as
``mlb eval``), a multiple-choice answer when :func:`~mlb_core.evaluation.scoring.parse_option`
finds the right option. Metrics: ``accuracy`` over all questions, and ``accuracy_open``,
``accuracy_mc``, ``accuracy_early``, ``accuracy_middle``, ``accuracy_late`` over the
questions of each form and evidence position (the probe's point: does the answer depend on
where in the video the evidence sits?).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from mlb_core.backbones.prompts import MC_INSTRUCTION, format_options
from mlb_core.errors import MLBError

TASK = "mlb_synthetic"
GROUPS = ("open", "mc", "early", "middle", "late")
MODULE = __name__ if __name__ != "__main__" else "mlb_core.integrations.lmms_eval_task"


# ---- the task's functions (named in the YAML) ------------------------------------------------
def doc_to_visual(doc: dict[str, Any]) -> list[str]:
    """The question's video: one absolute path."""
    return [doc["video"]]


def doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None) -> str:
    """The question; multiple choice lists its options (``(A) red``) and asks for the letter."""
    kw = lmms_eval_specific_kwargs or {}
    text = doc["question"].strip()
    if doc["task"] == "mc":
        text = f"{text}\n{format_options(list(doc['options']))}\n{kw.get('mc_post_prompt', MC_INSTRUCTION)}"
    else:
        text = f"{text}{kw.get('open_post_prompt', '')}"
    return f"{kw.get('pre_prompt', '')}{text}"


def doc_to_target(doc: dict[str, Any]) -> str:
    return doc["answer"]


def _correct(doc: dict[str, Any], prediction: str) -> bool:
    if doc["task"] == "mc":
        from mlb_core.evaluation.scoring import parse_option

        return parse_option(prediction, list(doc["options"])) == doc["answer_index"]
    from mlb_core.evaluation.judge import KeywordJudge
    from mlb_core.evaluation.synthetic import PALETTE

    return KeywordJudge(PALETTE).judge("qa", doc["question"], doc["answer"], prediction).pred == "yes"


def process_results(doc: dict[str, Any], results: list[Any]) -> dict[str, Any]:
    """``accuracy`` for every question, plus the metric of its form and of its evidence position.

    A question outside a group reports ``None`` there; :func:`mean_of_answered` skips those."""
    prediction = results[0] if results else ""
    if not isinstance(prediction, str):  # a generate_until_multi_round list, a (text, meta) pair
        prediction = str(prediction[0] if isinstance(prediction, (list, tuple)) and prediction else prediction)
    score = 1.0 if _correct(doc, prediction) else 0.0
    out: dict[str, Any] = {"accuracy": score}
    for group in GROUPS:
        out[f"accuracy_{group}"] = score if group in (doc["task"], doc.get("position")) else None
    return out


def mean_of_answered(items: list[float | None]) -> float | None:
    """The mean of the questions in the group (``None`` marks one outside it)."""
    kept = [x for x in items if x is not None]
    return sum(kept) / len(kept) if kept else None


# ---- writing the task --------------------------------------------------------------------------
class Function(str):
    """A function of this module, written as ``!function mlb_core.integrations.lmms_eval_task.<name>``
    (lmms-eval's YAML loader imports it: a file beside the YAML first, else an absolute import)."""


class _TaskDumper(yaml.SafeDumper):
    pass


_TaskDumper.add_representer(Function, lambda d, f: d.represent_scalar("!function", f"{MODULE}.{f}"))


def task_config(name: str, data_file: Path) -> dict[str, Any]:
    """The task YAML's content; :class:`Function` values become ``!function`` entries."""
    metrics = [{"metric": "accuracy", "aggregation": "mean", "higher_is_better": True}]
    metrics += [{"metric": f"accuracy_{g}", "aggregation": Function("mean_of_answered"), "higher_is_better": True}
                for g in GROUPS]
    return {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_file)}},
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_visual": Function("doc_to_visual"),
        "doc_to_text": Function("doc_to_text"),
        "doc_to_target": Function("doc_to_target"),
        "process_results": Function("process_results"),
        "generation_kwargs": {"max_new_tokens": 16, "do_sample": False, "until": ["\n\n"]},
        "metric_list": metrics,
        "metadata": {"version": 1, "source": "mlb_core (mlb synth / mlb probe)"},
    }


def write_task(data: str | Path, out: str | Path, name: str = TASK, benchmark: str = "synthetic",
               limit: int | None = None) -> Path:
    """Write ``out/<name>.yaml`` and ``out/<name>.jsonl`` from a probe folder; return the YAML's path.

    Args:
        data: what ``mlb synth --out`` (``benchmark="synthetic"``) or ``mlb probe --out``
            (``benchmark="probe"``) wrote: the CSV and ``videos/``.
        out: the task folder, for lmms-eval's ``--include_path`` (created).
        name: the task's name (``--tasks``).
        limit: keep the first ``limit`` questions.
    """
    from mlb_core.evaluation.benchmarks import (
        BENCHMARKS,
        canonical_name,
        default_video_root,
        load_benchmark,
        resolve_videos,
    )

    if BENCHMARKS[canonical_name(benchmark)].kind != "synthetic":
        raise MLBError(f"write_task makes tasks of the synthetic probes (synthetic, probe), not {benchmark!r}")
    items = load_benchmark(benchmark, data, limit=limit)
    videos, _ = resolve_videos(items, default_video_root(benchmark, data))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data_file = (out / f"{name}.jsonl").resolve()
    with data_file.open("w") as f:
        for it in items:
            doc = {"qid": it.qid, "video": str(videos[it.video].resolve()), "question": it.question,
                   "answer": it.answer, "task": it.task, "options": list(it.options),
                   "answer_index": -1 if it.answer_index is None else it.answer_index,
                   "position": it.position, "question_type": it.question_type}
            f.write(json.dumps(doc) + "\n")
    text = yaml.dump(task_config(name, data_file), Dumper=_TaskDumper, sort_keys=False)
    path = out / f"{name}.yaml"
    path.write_text(f"# Written by mlb_core.integrations.lmms_eval_task.write_task from {Path(data).resolve()}\n"
                    f"# ({len(items)} questions); lmms-eval --include_path {out} --tasks {name}\n" + text)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlb_core.integrations.lmms_eval_task",
        description="Write an lmms-eval task (YAML + JSON lines) from the output of mlb synth or mlb probe.")
    parser.add_argument("--data", required=True, help="the folder mlb synth/probe wrote")
    parser.add_argument("--out", required=True, help="the task folder (lmms-eval --include_path)")
    parser.add_argument("--name", default=TASK, help=f"the task's name (default {TASK})")
    parser.add_argument("--benchmark", default="synthetic", help="synthetic (mlb synth) or probe (mlb probe)")
    parser.add_argument("--limit", type=int, default=None, help="keep the first N questions")
    args = parser.parse_args(argv)
    try:
        path = write_task(args.data, args.out, args.name, args.benchmark, args.limit)
    except MLBError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
