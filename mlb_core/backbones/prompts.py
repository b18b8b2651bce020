"""Every prompt template, one per model family and task kind (docs/method.md, "Evaluation protocol").

A prompt is split at the image: ``prefix`` comes before the visual tokens, ``suffix`` after
them (question, options, the assistant turn and the answer priming). Open-ended answers
are primed with "In the video,", multiple-choice answers with "Best option:(".
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from mlb_core.errors import MLBError

OPEN_PRIME = "In the video,"
MC_PRIME = "Best option:("
MC_INSTRUCTION = "Answer with the option's letter from the given choices directly."

# family -> (text before <image>, text between the user content and the answer)
TEMPLATES: dict[str, tuple[str, str]] = {
    # LLaVA-1.5 and LLaVA-NeXT Vicuna-7B/13B: `USER: <image>\n... ASSISTANT:`
    "vicuna": ("USER: ", " ASSISTANT:"),
    # LLaVA-NeXT Mistral-7B
    "mistral": ("[INST] ", " [/INST]"),
    # LLaVA-NeXT 34B (Nous-Hermes-2-Yi-34B): ChatML
    "chatml": ("<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n",
               "<|im_end|><|im_start|>assistant\n"),
    # LLaVA-OneVision (Qwen2): ChatML with Qwen's system prompt
    "qwen2": ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n",
              "<|im_end|>\n<|im_start|>assistant\n"),
    # The embedded default (SmolLM2-135M-Instruct): ChatML, no system turn
    "smollm2": ("<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n"),
}

TASKS = ("open", "mc")


@dataclass(frozen=True)
class Prompt:
    """A prompt cut at the image: ``prefix + <visual tokens> + suffix``."""

    prefix: str
    suffix: str


def format_options(options: list[str]) -> str:
    """``(A) first\\n(B) second ...``"""
    letters = string.ascii_uppercase
    if not 2 <= len(options) <= 5:
        raise MLBError(f"multiple choice needs 2 to 5 options, got {len(options)}")
    return "\n".join(f"({letters[i]}) {opt}" for i, opt in enumerate(options))


def render_prompt(
    family: str, question: str, task: str = "open", options: list[str] | None = None
) -> Prompt:
    """The prompt of ``family`` for an open-ended (``open``) or multiple-choice (``mc``) question."""
    if family not in TEMPLATES:
        raise MLBError(f"unknown prompt family {family!r}; choose one of {', '.join(TEMPLATES)}")
    if task not in TASKS:
        raise MLBError(f"unknown task kind {task!r}; use 'open' or 'mc'")
    if not question.strip():
        raise MLBError("the question is empty")
    before, after = TEMPLATES[family]
    if task == "mc":
        if not options:
            raise MLBError("a multiple-choice question needs options")
        body = f"Question: {question.strip()}\nOptions:\n{format_options(options)}\n{MC_INSTRUCTION}"
        prime = MC_PRIME
    else:
        body, prime = question.strip(), OPEN_PRIME
    sep = "" if after.endswith("\n") else " "
    return Prompt(prefix=before, suffix=f"\n{body}{after}{sep}{prime}")
