"""Every prompt template, one per model family and task kind (docs/prompts.md; docs/method.md,
"Evaluation protocol").

A prompt is split at the image: ``prefix`` comes before the visual tokens, ``suffix`` after
them (question, options, the assistant turn and the answer priming). Open-ended answers
are primed with "In the video,", multiple-choice answers with "Best option:(".

Two kinds of family (docs/prompts.md lists each one's text and how it compares with the
checkpoint's own chat template):

- the *native* families (:data:`TEMPLATES`): one per backbone's conversation format, with
  the bare question (our default);
- the *SF-LLaVA* families (:data:`SF_LLAVA_TEMPLATES`): the prompts of SlowFast-LLaVA's
  evaluation (Xu et al. 2024, apple/ml-slowfast-llava, ``prompt.py``), with which the
  reference numbers of the paper's tables were measured. ``sf-llava-vicuna`` is its 7B
  (Vicuna) wording, ``sf-llava-chatml`` its 34B (ChatML) wording. The prompt setting
  ``sf-llava`` picks the variant that fits the checkpoint (:func:`resolve_family`).
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
    # The embedded default (SmolLM2-135M-Instruct): its own chat template, with the system
    # turn that template inserts when a conversation has none
    "smollm2": ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                "<|im_end|>\n<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n"),
}

# ---- SF-LLaVA's protocol (apple/ml-slowfast-llava, prompt.py) ------------------------------
# The wording of SlowFast-LLaVA's four evaluation prompts, as data. Its cfgs/ pick them per
# model: image_seq_v3 + multiple_choice_allvideo_v4 for the 7B (LLaVA-NeXT Vicuna-7B),
# image_seq_34b_v3 + multiple_choice_allvideo_34b_v4 for the 34B. Each is one string with
# `<image>` and `%s`; here it is cut at `<image>`, and `{question}` / `{options}` mark where the
# question and the options (`(A) ...\n` per option, their "v4" layout) go. Whitespace is theirs.
SF_KEY_FRAMES = "The input consists of a sequence of key frames from a video."
SF_OPEN_INSTRUCTION = ("Answer concisely with overall content and context of the video, highlighting any "
                       "significant events, characters, or objects that appear throughout the video.")
SF_MC_SYSTEM = "You are a helpful expert in video analysis. Select the best option to answer the question."
SF_MC_INSTRUCTION = "Only give the best option."

# family -> task -> (prefix, suffix with {question} and {options})
SF_LLAVA_TEMPLATES: dict[str, dict[str, tuple[str, str]]] = {
    "sf-llava-vicuna": {
        "open": ("USER: ",  # image_seq_v3
                 f"\n{SF_KEY_FRAMES} {SF_OPEN_INSTRUCTION} Question: {{question}} \nASSISTANT:\n"
                 f"Answer: {OPEN_PRIME}"),
        "mc": (f"{SF_MC_SYSTEM} USER: ",  # multiple_choice_allvideo_v4
               f"\n{SF_KEY_FRAMES}\nQuestion: {{question}}\nOptions:\n{{options}}{SF_MC_INSTRUCTION} \n"
               f"ASSISTANT:\nAnswer: {MC_PRIME}"),
    },
    "sf-llava-chatml": {
        "open": ("<|im_start|>system\n Answer the question. <|im_end|>\n<|im_start|>user\n ",  # image_seq_34b_v3
                 f"\n{SF_KEY_FRAMES} {SF_OPEN_INSTRUCTION} Question: {{question}} <|im_end|>\n"
                 f"<|im_start|>assistant\nAnswer: {OPEN_PRIME}"),
        "mc": (f"<|im_start|>system\n {SF_MC_SYSTEM} <|im_end|>\n<|im_start|>user\n ",  # ..._34b_v4
               f"\n{SF_KEY_FRAMES} Question: {{question}}\nOptions:\n{{options}}{SF_MC_INSTRUCTION} <|im_end|>\n"
               f"<|im_start|>assistant\nAnswer: {MC_PRIME}"),
    },
}

FAMILIES: tuple[str, ...] = (*TEMPLATES, *SF_LLAVA_TEMPLATES)
TASKS = ("open", "mc")

# Prompt settings: how the family of a checkpoint is chosen from its native family.
PROMPT_STYLES = ("native", "sf-llava")
# native family -> its SF-LLaVA variant (SF-LLaVA published prompts for these two only)
SF_LLAVA_VARIANTS = {"vicuna": "sf-llava-vicuna", "chatml": "sf-llava-chatml"}


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


def resolve_family(prompt: str, native: str) -> str:
    """The family a checkpoint whose native family is ``native`` uses under the prompt
    setting ``prompt``: ``native`` keeps it; ``sf-llava`` gives SF-LLaVA's variant for it
    (docs/prompts.md, "Choosing a family"); a family name is taken as it is."""
    if prompt == "native":
        return native
    if prompt == "sf-llava":
        if native in SF_LLAVA_TEMPLATES:
            return native
        if native not in SF_LLAVA_VARIANTS:
            raise MLBError(f"SF-LLaVA published prompts for Vicuna (7B) and ChatML (34B) checkpoints only; "
                           f"this checkpoint's prompt family is {native!r}")
        return SF_LLAVA_VARIANTS[native]
    if prompt in FAMILIES:
        return prompt
    raise MLBError(f"unknown prompt setting {prompt!r}; choose one of "
                   f"{', '.join(PROMPT_STYLES + FAMILIES)}")


def render_prompt(
    family: str, question: str, task: str = "open", options: list[str] | None = None
) -> Prompt:
    """The prompt of ``family`` for an open-ended (``open``) or multiple-choice (``mc``) question."""
    if family not in FAMILIES:
        hint = " (resolve it per checkpoint: resolve_family)" if family in PROMPT_STYLES else ""
        raise MLBError(f"unknown prompt family {family!r}{hint}; choose one of {', '.join(FAMILIES)}")
    if task not in TASKS:
        raise MLBError(f"unknown task kind {task!r}; use 'open' or 'mc'")
    if not question.strip():
        raise MLBError("the question is empty")
    if task == "mc" and not options:
        raise MLBError("a multiple-choice question needs options")
    if family in SF_LLAVA_TEMPLATES:
        prefix, suffix = SF_LLAVA_TEMPLATES[family][task]
        opts = format_options(options) + "\n" if task == "mc" and options else ""
        return Prompt(prefix=prefix, suffix=suffix.format(question=question.strip(), options=opts))
    before, after = TEMPLATES[family]
    if task == "mc" and options:
        body = f"Question: {question.strip()}\nOptions:\n{format_options(options)}\n{MC_INSTRUCTION}"
        prime = MC_PRIME
    else:
        body, prime = question.strip(), OPEN_PRIME
    sep = "" if after.endswith("\n") else " "
    return Prompt(prefix=before, suffix=f"\n{body}{after}{sep}{prime}")
