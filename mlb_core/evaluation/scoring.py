"""Scoring: multiple-choice option parsing, judged open-ended QA, VCGBench's five scores
(docs/method.md, "Evaluation protocol").

- Multiple choice: :func:`parse_option` reads the option a prediction picks; accuracy is
  correct / answered, overall and per question type (and per evidence position for the
  synthetic probe).
- Open-ended (Video-ChatGPT protocol, as IG-VLM and SF-LLaVA): the judge gives yes/no and
  a 0-5 score; accuracy = yes / (yes + no), score = mean of ``int(score)`` over judged items.
- VCGBench: correctness, detail orientation and contextual understanding on the generic
  questions, temporal understanding on the temporal questions, consistency on the QA1/QA2
  pairs; each is the mean ``int(score)`` over judged items (the protocol truncates the
  judge's score with ``int``); ``mean`` is their average.

Skipped (missing video) and failed (e.g. undecodable video) questions are counted, never
scored; judgments that failed or were unparsable are counted as ``judge_failed``.
"""

from __future__ import annotations

import re
import string
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from mlb_core.evaluation.judge import Judge

LETTERS = string.ascii_uppercase[:5]
VCG_CRITERIA = {"generic": ("correctness", "detail", "context"), "temporal": ("temporal",)}
VCG_SCORES = ("correctness", "detail", "context", "temporal", "consistency")


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", text.lower())).strip()


def parse_option(prediction: str, options: Sequence[str]) -> int | None:
    """The 0-based option a prediction picks, or ``None``.

    In order: the whole prediction is one option's text; a letter A-E first (``A``,
    ``(A)``, ``A)``, ``A:``, ``A.``, ``A text``; a letter glued to a word, as in "Eat", is
    not one); ``(X)``, ``X)`` or ``X:`` anywhere (after "answer is" if present, as IG-VLM);
    exactly one option's text inside the prediction (the longest wins over its substrings).
    Only letters of existing options count.
    """
    n = len(options)
    valid = LETTERS[:n]
    text = (prediction or "").strip()
    if not text:
        return None
    norm_opts = [_norm(o) for o in options]
    whole = _norm(text)
    if whole and whole in norm_opts:
        return norm_opts.index(whole)
    body = re.sub(r"^(?:best\s+)?(?:option|answer)\s*(?:is)?\s*[:\-]?\s*", "", text, flags=re.I)
    m = re.match(r"^[(\[]?\s*([A-E])\s*(?=$|[\s).:,;\]])", body)
    if m and m.group(1) in valid:
        return valid.index(m.group(1))
    tail = text[text.index("answer is"):] if "answer is" in text else text
    m = re.search(r"\(([A-E])\)|\b([A-E])[):]", tail)
    if m:
        letter = m.group(1) or m.group(2)
        if letter in valid:
            return valid.index(letter)
    hits = [i for i, o in enumerate(norm_opts) if o and re.search(rf"\b{re.escape(o)}\b", whole)]
    hits = [i for i in hits if not any(j != i and norm_opts[i] in norm_opts[j] for j in hits)]
    return hits[0] if len(hits) == 1 else None


# ---- judging ---------------------------------------------------------------------------------
def _answered(rec: dict[str, Any]) -> bool:
    return rec.get("status") == "answered"


def score_records(
    records: list[dict[str, Any]],
    judge: Judge | None,
    progress: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Add verdicts to prediction records (new dicts, same order).

    ``mc``: ``parsed_index`` and ``correct``. ``open``: ``judge`` (a :class:`Judgment` dict)
    and ``correct`` (``None`` when the judgment failed or no judge was given). VCGBench
    parts: ``judges`` {criterion: judgment}; a consistency pair is judged once, on its
    ``consistency1`` record.
    """
    out = [dict(r) for r in records]
    requests: list[tuple[int, str, dict[str, str]]] = []  # (record index, criterion, kwargs)
    by_pair: dict[str, dict[str, int]] = defaultdict(dict)
    for i, rec in enumerate(out):
        if rec.get("part", "").startswith("consistency"):
            by_pair[rec.get("question_id", rec["qid"].split("/", 1)[-1])][rec["part"]] = i
    for i, rec in enumerate(out):
        if not _answered(rec):
            continue
        pred = rec.get("prediction", "")
        if rec.get("task") == "mc":
            idx = parse_option(pred, rec["options"])
            rec["parsed_index"] = idx
            rec["correct"] = idx is not None and idx == rec["answer_index"]
            continue
        part = rec.get("part", "")
        if judge is None:
            rec["correct"] = None
            continue
        if part in VCG_CRITERIA:
            for crit in VCG_CRITERIA[part]:
                requests.append((i, crit, {"criterion": crit, "question": rec["question"],
                                           "answer": rec["answer"], "prediction": pred}))
        elif part == "consistency1":
            pair = by_pair[rec.get("question_id", rec["qid"].split("/", 1)[-1])]
            j = pair.get("consistency2")
            if j is None or not _answered(out[j]):
                rec["judges"] = {"consistency": {"pred": None, "score": None, "raw": "",
                                                 "error": "the pair's second answer is missing", "judge": ""}}
                continue
            requests.append((i, "consistency", {"criterion": "consistency", "question": rec["question"],
                                                "answer": rec["answer"], "prediction": pred,
                                                "question2": out[j]["question"],
                                                "prediction2": out[j].get("prediction", "")}))
        elif part == "consistency2":
            continue
        else:
            requests.append((i, "qa", {"criterion": "qa", "question": rec["question"], "answer": rec["answer"],
                                       "prediction": pred}))
    if judge is not None and requests:
        verdicts = judge.judge_many([kw for _, _, kw in requests], progress)
        for (i, crit, _), verdict in zip(requests, verdicts, strict=True):
            rec = out[i]
            if crit == "qa":
                rec["judge"] = verdict.to_dict()
                rec["correct"] = (verdict.pred == "yes") if verdict.ok else None
            else:
                rec.setdefault("judges", {})[crit] = verdict.to_dict()
    return out


# ---- aggregation -----------------------------------------------------------------------------
def _int_score(j: dict[str, Any] | None) -> int | None:
    if not j or j.get("error") or j.get("score") is None:
        return None
    return int(j["score"])


def group_stats(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Counts and accuracy (and the open-ended judge score) of a group of scored records."""
    recs = list(records)
    answered = [r for r in recs if _answered(r)]
    verdicts = [r["correct"] for r in answered if r.get("correct") is not None]
    scores = [s for s in (_int_score(r.get("judge")) for r in answered if r.get("task") == "open")
              if s is not None]
    out: dict[str, Any] = {
        "n": len(recs), "answered": len(answered),
        "skipped": sum(r.get("status") == "skipped" for r in recs),
        "failed": sum(r.get("status") == "failed" for r in recs),
        "judged": len(verdicts),
        "correct": sum(bool(v) for v in verdicts),
        "accuracy": (sum(bool(v) for v in verdicts) / len(verdicts)) if verdicts else None,
    }
    if any(r.get("task") == "open" for r in answered):
        out["score"] = sum(scores) / len(scores) if scores else None
    return out


# evidence positions in time order (first probe: thirds; probe v2: segments), then the rest sorted
ORDER = {"early": 0, "first": 0, "middle": 1, "late": 2, "last": 2}


def _grouped(records: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        value = r.get(key)
        if value not in (None, ""):
            groups[str(value)].append(r)
    keys = sorted(groups, key=lambda k: (ORDER.get(k, len(ORDER)), k))
    return {k: group_stats(groups[k]) for k in keys}


def vcgbench_scores(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The five VCGBench scores (mean ``int(score)`` per criterion) and their mean."""
    per: dict[str, list[int]] = {c: [] for c in VCG_SCORES}
    failed = dict.fromkeys(VCG_SCORES, 0)
    for r in records:
        for crit, j in (r.get("judges") or {}).items():
            s = _int_score(j)
            if s is None:
                failed[crit] += 1
            else:
                per[crit].append(s)
    scores = {c: (sum(v) / len(v) if v else None) for c, v in per.items()}
    present = [s for s in scores.values() if s is not None]
    return {"scores": scores, "mean": sum(present) / len(present) if len(present) == len(VCG_SCORES) else None,
            "judged": {c: len(v) for c, v in per.items()}, "judge_failed": failed}


def metrics(records: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """Aggregate scored records of one (benchmark, method, model, preset).

    Returns ``counts`` (total, answered, skipped, failed, judge_failed, unparsed options),
    ``accuracy`` and ``score`` (open-ended), and groups ``by_type``, ``by_task``,
    ``by_position``; VCGBench adds ``vcgbench`` (its five scores).
    """
    overall = group_stats(records)
    answered = [r for r in records if _answered(r)]
    judge_failed = sum(1 for r in answered if r.get("task") == "open" and r.get("judge", {}).get("error"))
    judge_failed += sum(1 for r in answered for j in (r.get("judges") or {}).values() if j.get("error"))
    out: dict[str, Any] = {
        "counts": {"total": overall["n"], "answered": overall["answered"], "skipped": overall["skipped"],
                   "failed": overall["failed"], "judged": overall["judged"], "judge_failed": judge_failed,
                   "unparsed_options": sum(1 for r in answered if r.get("task") == "mc"
                                           and r.get("parsed_index") is None)},
        "accuracy": overall["accuracy"],
    }
    mc = [r for r in answered if r.get("task") == "mc" and r.get("options")]
    if mc:  # what random guessing would score on the multiple-choice questions
        out["chance_accuracy_mc"] = sum(1 / len(r["options"]) for r in mc) / len(mc)
    if kind == "vcgbench":
        out["accuracy"] = None
        out["vcgbench"] = vcgbench_scores(records)
        out["score"] = out["vcgbench"]["mean"]
    elif "score" in overall:
        out["score"] = overall["score"]
    out["by_task"] = _grouped(records, "task")
    out["by_type"] = _grouped(records, "question_type")
    if any(r.get("position") for r in records):
        out["by_position"] = _grouped(records, "position")
        out["by_task_position"] = {t: _grouped([r for r in records if r.get("task") == t], "position")
                                   for t in sorted({r.get("task", "") for r in records})}
    return out
