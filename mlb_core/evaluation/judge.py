"""Judges for open-ended answers (docs/method.md, "Evaluation protocol").

The judge prompts of the public protocol (Video-ChatGPT's quantitative evaluation, reused by
IG-VLM and SF-LLaVA, :func:`judge_messages`): a yes/no + 0-5 score per (question, answer,
prediction) for open-ended QA, and the five VCGBench criteria (correctness, detail, context,
temporal, consistency); :func:`parse_judgment` reads a reply; :class:`JudgeCache` keeps
judgments in a JSONL file keyed by (judge model, criterion, question, answer, prediction), so
re-scoring is free and stable.

:class:`mlb_core.evaluation.chat.ChatJudge` asks any OpenAI-compatible ``/chat/completions``
server these prompts.

:class:`KeywordJudge` is the offline judge of the synthetic probe: no server; ``yes``
(score 5) when the first vocabulary word in the prediction is the answer, else ``no`` (0).
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mlb_core.errors import MLBError

DEFAULT_JUDGE_MODEL = "gpt-3.5-turbo-0125"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
CRITERIA = ("qa", "correctness", "detail", "context", "temporal", "consistency")

# ---- judge prompts (Video-ChatGPT quantitative_evaluation/, CC-BY-4.0; IG-VLM evaluation/) -----
_FORMAT = ("Please generate the response in the form of a Python dictionary string with keys 'score', "
           "where its value is {what} in INTEGER, not STRING."
           "DO NOT PROVIDE ANY OTHER OUTPUT TEXT OR EXPLANATION. Only provide the Python dictionary string. "
           "For example, your response should look like this: {{''score': 4.8}}.")
_SYSTEM = {
    "qa": (
        "You are an intelligent chatbot designed for evaluating the correctness of generative outputs for "
        "question-answer pairs. Your task is to compare the predicted answer with the correct answer and "
        "determine if they match meaningfully. Here's how you can accomplish the task:------##INSTRUCTIONS: "
        "- Focus on the meaningful match between the predicted answer and the correct answer.\n"
        "- Consider synonyms or paraphrases as valid matches.\n"
        "- Evaluate the correctness of the prediction compared to the answer."),
    "correctness": (
        "You are an intelligent chatbot designed for evaluating the factual accuracy of generative outputs for "
        "video-based question-answer pairs. Your task is to compare the predicted answer with the correct answer "
        "and determine if they are factually consistent. Here's how you can accomplish the task:------"
        "##INSTRUCTIONS: - Focus on the factual consistency between the predicted answer and the correct answer. "
        "The predicted answer should not contain any misinterpretations or misinformation.\n"
        "- The predicted answer must be factually accurate and align with the video content.\n"
        "- Consider synonyms or paraphrases as valid matches.\n"
        "- Evaluate the factual accuracy of the prediction compared to the answer."),
    "detail": (
        "You are an intelligent chatbot designed for evaluating the detail orientation of generative outputs for "
        "video-based question-answer pairs. Your task is to compare the predicted answer with the correct answer "
        "and determine its level of detail, considering both completeness and specificity. Here's how you can "
        "accomplish the task:------##INSTRUCTIONS: - Check if the predicted answer covers all major points from "
        "the video. The response should not leave out any key aspects.\n"
        "- Evaluate whether the predicted answer includes specific details rather than just generic points. It "
        "should provide comprehensive information that is tied to specific elements of the video.\n"
        "- Consider synonyms or paraphrases as valid matches.\n"
        "- Provide a single evaluation score that reflects the level of detail orientation of the prediction, "
        "considering both completeness and specificity."),
    "context": (
        "You are an intelligent chatbot designed for evaluating the contextual understanding of generative outputs "
        "for video-based question-answer pairs. Your task is to compare the predicted answer with the correct "
        "answer and determine if the generated response aligns with the overall context of the video content. "
        "Here's how you can accomplish the task:------##INSTRUCTIONS: - Evaluate whether the predicted answer "
        "aligns with the overall context of the video content. It should not provide information that is out of "
        "context or misaligned.\n"
        "- The predicted answer must capture the main themes and sentiments of the video.\n"
        "- Consider synonyms or paraphrases as valid matches.\n"
        "- Provide your evaluation of the contextual understanding of the prediction compared to the answer."),
    "temporal": (
        "You are an intelligent chatbot designed for evaluating the temporal understanding of generative outputs "
        "for video-based question-answer pairs. Your task is to compare the predicted answer with the correct "
        "answer and determine if they correctly reflect the temporal sequence of events in the video content. "
        "Here's how you can accomplish the task:------##INSTRUCTIONS: - Focus on the temporal consistency between "
        "the predicted answer and the correct answer. The predicted answer should correctly reflect the sequence "
        "of events or details as they are presented in the video content.\n"
        "- Consider synonyms or paraphrases as valid matches, but only if the temporal order is maintained.\n"
        "- Evaluate the temporal accuracy of the prediction compared to the answer."),
    "consistency": (
        "You are an intelligent chatbot designed for evaluating the consistency of generative outputs for similar "
        "video-based question-answer pairs. You will be given two very similar questions, a common answer common "
        "to both the questions and predicted answers for the two questions .Your task is to compare the predicted "
        "answers for two very similar question, with a common correct answer and determine if they are "
        "consistent. Here's how you can accomplish the task:------##INSTRUCTIONS: - Focus on the consistency "
        "between the two predicted answers and the correct answer. Both predicted answers should correspond to "
        "the correct answer and to each other, and should not contain any contradictions or significant "
        "differences in the conveyed information.\n"
        "- Both predicted answers must be consistent with each other and the correct answer, in terms of the "
        "information they provide about the video content.\n"
        "- Consider synonyms or paraphrases as valid matches, but only if they maintain the consistency in the "
        "conveyed information.\n"
        "- Evaluate the consistency of the two predicted answers compared to the correct answer."),
}
_ASK = {  # criterion -> (how the format line names the value, the score's name)
    "correctness": ("the factual accuracy score", "factual accuracy score"),
    "detail": ("the detail orientation score", "detail orientation score"),
    "context": ("contextual understanding score", "contextual understanding score"),
    "temporal": ("the temporal accuracy score", "temporal accuracy score"),
    "consistency": ("the consistency score", "consistency score"),
}
_LEVEL = {"correctness": "factual consistency", "detail": "detail orientation",
          "context": "contextual understanding", "temporal": "temporal consistency",
          "consistency": "consistency"}


def judge_messages(criterion: str, question: str, answer: str, prediction: str,
                   question2: str = "", prediction2: str = "") -> list[dict[str, str]]:
    """The chat messages of one judgment (``consistency`` takes both questions and predictions)."""
    if criterion not in CRITERIA:
        raise MLBError(f"unknown judge criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
    head = "Please evaluate the following video-based question-answer pair:\n\n"
    if criterion == "qa":
        user = (head + f"Question: {question}\nCorrect Answer: {answer}\nPredicted Answer: {prediction}\n\n"
                "Provide your evaluation only as a yes/no and score where the score is an integer value between "
                "0 and 5, with 5 indicating the highest meaningful match. Please generate the response in the "
                "form of a Python dictionary string with keys 'pred' and 'score', where value of 'pred' is  a "
                "string of 'yes' or 'no' and value of 'score' is in INTEGER, not STRING.DO NOT PROVIDE ANY OTHER "
                "OUTPUT TEXT OR EXPLANATION. Only provide the Python dictionary string. For example, your "
                "response should look like this: {'pred': 'yes', 'score': 4.8}.")
    else:
        what, name = _ASK[criterion]
        if criterion == "consistency":
            body = (f"Question 1: {question}\nQuestion 2: {question2}\nCorrect Answer: {answer}\n"
                    f"Predicted Answer to Question 1: {prediction}\nPredicted Answer to Question 2: {prediction2}\n\n")
        else:
            body = f"Question: {question}\nCorrect Answer: {answer}\nPredicted Answer: {prediction}\n\n"
        user = (head + body + f"Provide your evaluation only as a {name} where the {name} is an integer value "
                f"between 0 and 5, with 5 indicating the highest level of {_LEVEL[criterion]}. "
                + _FORMAT.format(what=what))
    return [{"role": "system", "content": _SYSTEM[criterion]}, {"role": "user", "content": user}]


# ---- parsing -------------------------------------------------------------------------------
@dataclass
class Judgment:
    """One judge verdict. ``pred`` is ``yes``/``no`` (``qa`` only), ``score`` in [0, 5];
    ``error`` is set (and ``raw`` kept) when the reply was unusable."""

    pred: str | None
    score: float | None
    raw: str = ""
    error: str | None = None
    judge: str = ""
    served_model: str | None = None
    system_fingerprint: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_judgment(text: str, need_pred: bool) -> tuple[str | None, float | None]:
    """``{'pred': 'yes', 'score': 4}`` (a Python or JSON dict, possibly fenced or with prose
    around it) -> ``(pred, score)``. Raises ``ValueError`` when no usable verdict is found.

    ``pred`` follows the protocol's reading: ``yes`` if "yes" is in the value, else ``no``
    if "no" is; ``score`` must be a number in [0, 5].
    """
    content = text.strip()
    data: Any = None
    for m in re.finditer(r"\{[^{}]*\}", content):
        chunk = m.group(0).rstrip(".")
        for loader in (ast.literal_eval, json.loads):
            try:
                data = loader(chunk)
                break
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
        if isinstance(data, dict):
            break
        data = None
    if not isinstance(data, dict):  # last resort: "pred: yes, score: 4" as prose
        pm = re.search(r"pred\W+(yes|no)\b", content, re.I)
        sm = re.search(r"score\W+(\d+(?:\.\d+)?)", content, re.I)
        if not sm or (need_pred and not pm):
            raise ValueError("no verdict in the reply")
        data = {"pred": pm.group(1) if pm else None, "score": sm.group(1)}
    keys = {str(k).strip().strip("'\"").lower(): v for k, v in data.items()}
    try:
        score = float(keys["score"])
    except (KeyError, TypeError, ValueError):
        raise ValueError("no numeric score in the reply") from None
    if not 0 <= score <= 5:
        raise ValueError(f"score {score} outside 0..5")
    pred = None
    if need_pred:
        value = str(keys.get("pred", "")).lower()
        pred = "yes" if "yes" in value else "no" if "no" in value else None
        if pred is None:
            raise ValueError("no yes/no verdict in the reply")
    return pred, score


# ---- cache ---------------------------------------------------------------------------------
class JudgeCache:
    """Append-only JSONL of judgments keyed by a hash of (judge, criterion, texts).

    Thread-safe; a partial last line (a killed writer) is ignored on load and cut off.
    """

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self._data: dict[str, dict[str, Any]] = {}
        if self.path and self.path.exists():
            for rec in read_jsonl(self.path, repair=True):
                if "key" in rec and "judgment" in rec:
                    self._data[rec["key"]] = rec["judgment"]

    @staticmethod
    def key(judge: str, criterion: str, *texts: str) -> str:
        blob = json.dumps([judge, criterion, *texts], ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            return self._data.get(key)

    def put(self, key: str, judgment: dict[str, Any], meta: dict[str, Any] | None = None) -> None:
        with self._lock:
            self._data[key] = judgment
            if self.path:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"key": key, **(meta or {}), "judgment": judgment}, ensure_ascii=False)
                            + "\n")
                    f.flush()

    def __len__(self) -> int:
        return len(self._data)


def read_jsonl(path: str | Path, repair: bool = False) -> list[dict[str, Any]]:
    """Complete JSON lines of ``path``. A last line without a newline (a writer killed
    mid-line) is skipped; with ``repair`` it is also cut from the file."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if repair and end < len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
    out = []
    for line in data[:end].splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn line in the middle (cannot happen with append+flush, but never crash)
        if isinstance(rec, dict):
            out.append(rec)
    return out


# ---- judges --------------------------------------------------------------------------------
class Judge:
    """Interface: ``judge(criterion, question, answer, prediction, ...) -> Judgment``."""

    name = "judge"

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}

    def judge(self, criterion: str, question: str, answer: str, prediction: str,
              question2: str = "", prediction2: str = "") -> Judgment:
        raise NotImplementedError

    def judge_many(self, requests: list[dict[str, str]], progress: Callable[[int], None] | None = None
                   ) -> list[Judgment]:
        """Judge a list of ``judge()`` keyword-argument dicts, in order."""
        out = []
        for req in requests:
            out.append(self.judge(**req))
            if progress:
                progress(1)
        return out


class KeywordJudge(Judge):
    """Offline judge (no server), for the synthetic probe.

    With a ``vocabulary`` (the probe's colour names): ``yes`` (score 5) iff the *first*
    vocabulary word the prediction mentions is the answer, else ``no`` (0); taking the first
    mention keeps hedged lists ("red, green or blue") from counting as right. Without one:
    ``yes`` iff the answer appears in the prediction as whole words (a rough offline proxy
    for one-word answers, not the protocol's LLM judge).
    """

    name = "offline-keyword"

    def __init__(self, vocabulary: Iterable[str] | None = None):
        self.vocabulary = (tuple(sorted({v.lower() for v in vocabulary}, key=len, reverse=True))
                           if vocabulary is not None else None)
        self._pattern = None
        if self.vocabulary:
            words = "|".join(re.escape(v) for v in self.vocabulary)
            self._pattern = re.compile(rf"\b({words})\b", re.I)

    def first_mention(self, prediction: str | None) -> str | None:
        """The first vocabulary word ``prediction`` mentions (lower case), or None."""
        if self._pattern is None:
            raise MLBError("first_mention needs a vocabulary")
        m = self._pattern.search(prediction or "")
        return m.group(1).lower() if m else None

    def describe(self) -> dict[str, Any]:
        if self.vocabulary is None:
            return {"name": self.name, "rule": "yes (5) iff the answer's words appear in the prediction, else no (0)"}
        return {"name": self.name, "vocabulary": sorted(self.vocabulary),
                "rule": "yes (5) iff the first vocabulary word in the prediction is the answer, else no (0)"}

    def judge(self, criterion: str, question: str, answer: str, prediction: str,
              question2: str = "", prediction2: str = "") -> Judgment:
        if criterion != "qa":
            raise MLBError(f"the offline keyword judge only scores open-ended QA, not {criterion!r}")
        if self._pattern is not None:
            said = self.first_mention(prediction)
            yes = said is not None and said == answer.strip().lower()
            hit = said or ""
        else:
            target = " ".join(re.findall(r"\w+", answer.lower()))
            yes = bool(target) and re.search(rf"\b{re.escape(target)}\b",
                                             " ".join(re.findall(r"\w+", (prediction or "").lower()))) is not None
            hit = target if yes else ""
        return Judgment("yes" if yes else "no", 5.0 if yes else 0.0, raw=hit, judge=self.name)
