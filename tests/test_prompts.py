"""Prompt families (docs/prompts.md): each one against the chat template of the checkpoint it
serves, SF-LLaVA's wording, how a family is chosen for a checkpoint, and stage one's last
query token.

The chat templates below are test data, copied from the checkpoints named in each comment
(the hub cannot be reached from the tests); SmolLM2's is read from the tokenizer itself.
Where our prompt differs from a template on purpose, the test states the exact difference
that docs/prompts.md documents, so it fails if either side changes.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from mlb_core.backbones.loading import load_model
from mlb_core.backbones.prompts import FAMILIES, MC_PRIME, OPEN_PRIME, render_prompt, resolve_family
from mlb_core.backbones.tiny import build_tiny_model
from mlb_core.errors import MLBError

ROOT = Path(__file__).resolve().parents[1]
Q = "What is the man doing?"
OPTIONS = ["running", "swimming", "sitting"]
MC_BODY = ("Question: What is the man doing?\nOptions:\n(A) running\n(B) swimming\n(C) sitting\n"
           "Answer with the option's letter from the given choices directly.")

# llava-hf/llava-1.5-7b-hf and llava-hf/llava-v1.6-vicuna-7b-hf, chat_template.json (the same
# string is the LlavaNextProcessor test template in huggingface/transformers,
# tests/models/llava_next/test_processing_llava_next.py).
VICUNA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}"
    "{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
# llava-hf/llava-v1.6-mistral-7b-hf, chat_template.json.
MISTRAL_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ '<<SYS>>\n' + message['content'][0]['text'] + '\n<</SYS>>\n\n' }}{% elif message['role'] == 'user' %}"
    "{{ '[INST] ' }}{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{# Render all text next #}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] }}{% endfor %}{{' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' ' + message['content'][0]['text'] + '</s> '}}{% else %}"
    "{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)
# llava-hf/llava-v1.6-34b-hf (Nous-Hermes-2-Yi-34B): `chat_yi`, the template llava-hf gave its
# Yi-34B LLaVA-NeXT checkpoints (also in huggingface/transformers,
# src/transformers/models/llava_next_video/convert_llava_next_video_weights_to_hf.py).
YI_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{# Render all text next #}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] }}{% endfor %}{{'<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# llava-hf/llava-onevision-qwen2-7b-ov-hf (and -0.5b-ov-hf), chat_template.json.
ONEVISION_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + ' '}}{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>' }}{% endfor %}"
    "{# Render all video then #}{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}"
    "{{ '<video>' }}{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ '\n' + content['text'] }}"
    "{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ '\n' + content['text'] }}{% endgeneration %}{% endfor %}{% endif %}{{'<|im_end|>'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SMOLLM2_SYSTEM_TURN = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                       "<|im_end|>\n")
QWEN_SYSTEM_TURN = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"

# SF-LLaVA's prompts, verbatim from apple/ml-slowfast-llava, prompt.py (get_prompt and
# get_multiple_choice_prompt), by conv_mode; its "v4" options are "(A) first\n(B) second\n...".
SF_KEY = "The input consists of a sequence of key frames from a video."
SF_CONCISE = ("Answer concisely with overall content and context of the video, highlighting any significant "
              "events, characters, or objects that appear throughout the video.")
SF_EXPERT = "You are a helpful expert in video analysis. Select the best option to answer the question."
SF_LLAVA = {
    ("sf-llava-vicuna", "open"):  # image_seq_v3
        f"USER: <image>\n{SF_KEY} {SF_CONCISE} Question: %s \nASSISTANT:\nAnswer: In the video,",
    ("sf-llava-chatml", "open"):  # image_seq_34b_v3
        "<|im_start|>system\n Answer the question. <|im_end|>\n<|im_start|>user\n <image>\n"
        f"{SF_KEY} {SF_CONCISE} Question: %s <|im_end|>\n<|im_start|>assistant\nAnswer: In the video,",
    ("sf-llava-vicuna", "mc"):  # multiple_choice_allvideo_v4
        f"{SF_EXPERT} USER: <image>\n{SF_KEY}\nQuestion: %s\nOptions:\n%sOnly give the best option. \n"
        "ASSISTANT:\nAnswer: Best option:(",
    ("sf-llava-chatml", "mc"):  # multiple_choice_allvideo_34b_v4
        f"<|im_start|>system\n {SF_EXPERT} <|im_end|>\n<|im_start|>user\n <image>\n{SF_KEY} Question: %s\n"
        "Options:\n%sOnly give the best option. <|im_end|>\n<|im_start|>assistant\nAnswer: Best option:(",
}
SF_OPTIONS = "(A) running\n(B) swimming\n(C) sitting\n"


@pytest.fixture(scope="module")
def tok():
    from mlb_core.backbones.embedded import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_model("llava_next")  # the SmolLM2 tokenizer; the family is a render_prompt argument


def chat(tok, template: str, text: str, system: str | None = None) -> str:
    """``template`` applied to one user turn (the image, then ``text``), with a generation prompt."""
    messages = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system is not None else []
    messages.append({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]})
    return tok.apply_chat_template(messages, chat_template=template, tokenize=False, add_generation_prompt=True)


def ours(family: str, task: str) -> str:
    p = render_prompt(family, Q, task, OPTIONS if task == "mc" else None)
    return p.prefix + "<image>" + p.suffix


def user_text(task: str) -> str:
    return Q if task == "open" else MC_BODY


PRIME = {"open": OPEN_PRIME, "mc": MC_PRIME}


# ---- native families against the checkpoints' chat templates ---------------------------------------
@pytest.mark.parametrize("task", ["open", "mc"])
def test_vicuna_and_mistral_are_their_chat_templates(tok, task):
    """vicuna, mistral: the template's text, then a space and the answer priming."""
    assert chat(tok, VICUNA_TEMPLATE, user_text(task)) == f"USER: <image>\n{user_text(task)} ASSISTANT:"
    assert ours("vicuna", task) == chat(tok, VICUNA_TEMPLATE, user_text(task)) + " " + PRIME[task]
    assert ours("mistral", task) == chat(tok, MISTRAL_TEMPLATE, user_text(task)) + " " + PRIME[task]


@pytest.mark.parametrize("task", ["open", "mc"])
def test_chatml_is_llavas_chatml_direct(tok, task):
    """chatml (34B): LLaVA's `chatml_direct` conversation, i.e. the hub template with the system
    turn "Answer the questions." and no newline after each <|im_end|>."""
    plain = chat(tok, YI_TEMPLATE, user_text(task))
    assert not plain.startswith("<|im_start|>system")  # the hub template adds no system turn of its own
    with_system = chat(tok, YI_TEMPLATE, user_text(task), system="Answer the questions.")
    assert ours("chatml", task) == with_system.replace("<|im_end|>\n", "<|im_end|>") + PRIME[task]
    assert ours("chatml", task) != with_system + PRIME[task]


@pytest.mark.parametrize("task", ["open", "mc"])
def test_qwen2_is_llava_next_qwen_conversation(tok, task):
    """qwen2 (OneVision): LLaVA-NeXT's `qwen_1_5` conversation, i.e. the hub template with Qwen's
    system turn, a newline (not a space) after the role and a newline after each <|im_end|>."""
    hub = chat(tok, ONEVISION_TEMPLATE, user_text(task))
    assert hub == f"<|im_start|>user <image>\n{user_text(task)}<|im_end|><|im_start|>assistant\n"
    fixed = hub.replace("<|im_start|>user ", "<|im_start|>user\n").replace("<|im_end|>", "<|im_end|>\n")
    assert ours("qwen2", task) == QWEN_SYSTEM_TURN + fixed + PRIME[task]


@pytest.mark.parametrize("task", ["open", "mc"])
def test_smollm2_is_smollm2s_own_template(tok, task):
    """smollm2: SmolLM2's own template (from the tokenizer), with the default system turn it
    inserts when there is none. The embedded default's vision side is trained on this prompt."""
    assert tok.chat_template is not None
    rendered = tok.apply_chat_template([{"role": "user", "content": "<image>\n" + user_text(task)}],
                                       tokenize=False, add_generation_prompt=True)
    assert rendered.startswith(SMOLLM2_SYSTEM_TURN)
    assert ours("smollm2", task) == rendered + PRIME[task]
    assert render_prompt("smollm2", Q).prefix == SMOLLM2_SYSTEM_TURN + "<|im_start|>user\n"


# ---- SF-LLaVA's protocol ----------------------------------------------------------------------------
@pytest.mark.parametrize("key", list(SF_LLAVA))
def test_sf_llava_wording_is_sf_llavas(key):
    family, task = key
    expected = SF_LLAVA[key] % ((Q,) if task == "open" else (Q, SF_OPTIONS))
    assert ours(family, task) == expected
    p = render_prompt(family, Q, task, OPTIONS if task == "mc" else None)
    assert "<image>" not in p.prefix + p.suffix and p.suffix.endswith(PRIME[task])


@pytest.mark.parametrize("task", ["open", "mc"])
def test_sf_llava_vicuna_against_the_vicuna_template(tok, task):
    """SF-LLaVA 7B = the Vicuna template (its multiple-choice sentence as the system turn), with a
    newline before ASSISTANT: and the answer primed by a new line "Answer: "."""
    text = (f"{SF_KEY} {SF_CONCISE} Question: {Q}" if task == "open"
            else f"{SF_KEY}\nQuestion: {Q}\nOptions:\n{SF_OPTIONS}Only give the best option.")
    rendered = chat(tok, VICUNA_TEMPLATE, text, system=SF_EXPERT if task == "mc" else None)
    expected = rendered.replace(" ASSISTANT:", " \nASSISTANT:") + "\nAnswer: " + PRIME[task]
    assert ours("sf-llava-vicuna", task) == expected


@pytest.mark.parametrize("task", ["open", "mc"])
def test_sf_llava_chatml_against_the_yi_template(tok, task):
    """SF-LLaVA 34B = the Yi-34B template with its space-padded system sentence and question, one
    more space before <image>, and the answer primed by "Answer: "."""
    system = " Answer the question. " if task == "open" else f" {SF_EXPERT} "
    text = (f"{SF_KEY} {SF_CONCISE} Question: {Q} " if task == "open"
            else f"{SF_KEY} Question: {Q}\nOptions:\n{SF_OPTIONS}Only give the best option. ")
    rendered = chat(tok, YI_TEMPLATE, text, system=system)
    expected = rendered.replace("user\n<image>", "user\n <image>") + "Answer: " + PRIME[task]
    assert ours("sf-llava-chatml", task) == expected


def test_sf_llava_options_and_question():
    p = render_prompt("sf-llava-vicuna", "  Why?  ", "mc", ["a", "b"])
    assert "Question: Why?\nOptions:\n(A) a\n(B) b\nOnly give" in p.suffix  # question stripped, as in every family
    with pytest.raises(MLBError, match="needs options"):
        render_prompt("sf-llava-chatml", Q, "mc")
    with pytest.raises(MLBError, match="2 to 5 options"):
        render_prompt("sf-llava-chatml", Q, "mc", ["a"])


# ---- choosing a family for a checkpoint ------------------------------------------------------------
def test_resolve_family():
    assert resolve_family("native", "vicuna") == "vicuna"
    assert resolve_family("sf-llava", "vicuna") == "sf-llava-vicuna"
    assert resolve_family("sf-llava", "chatml") == "sf-llava-chatml"
    assert resolve_family("sf-llava", "sf-llava-chatml") == "sf-llava-chatml"
    assert resolve_family("qwen2", "vicuna") == "qwen2"  # a family name is taken as it is
    for native in ("mistral", "qwen2", "smollm2"):
        with pytest.raises(MLBError, match="Vicuna .7B. and ChatML .34B. checkpoints only"):
            resolve_family("sf-llava", native)
    with pytest.raises(MLBError, match="unknown prompt setting"):
        resolve_family("sf_llava", "vicuna")
    with pytest.raises(MLBError, match="resolve it per checkpoint"):
        render_prompt("sf-llava", Q)


def test_load_model_chooses_the_sf_llava_variant(tmp_path):
    assert load_model("tiny:llava_next_vicuna", device="cpu").family == "vicuna"
    assert load_model("tiny:llava_next_vicuna", device="cpu", family="sf-llava").family == "sf-llava-vicuna"
    assert load_model("tiny:llava_next_34b", device="cpu", family="sf-llava").family == "sf-llava-chatml"
    with pytest.raises(MLBError, match="ChatML .34B. checkpoints only"):
        load_model("tiny:llava_onevision", device="cpu", family="sf-llava")
    # a checkpoint folder: the family comes from its config (a Llama text model -> vicuna)
    vlm = build_tiny_model("llava_next_vicuna")
    folder = tmp_path / "ckpt"
    vlm.model.save_pretrained(folder)
    vlm.tokenizer.save_pretrained(folder)
    vlm.image_processor.save_pretrained(folder)
    assert load_model(str(folder), device="cpu").family == "vicuna"
    assert load_model(str(folder), device="cpu", family="sf-llava").family == "sf-llava-vicuna"


# ---- stage one's last query token ------------------------------------------------------------------
def documented_last_tokens() -> dict[str, dict[str, str]]:
    """The table of docs/prompts.md, "Stage one's last query token": family -> task -> token."""
    text = (ROOT / "docs" / "prompts.md").read_text()
    section = text.split("## Stage one's last query token", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z0-9-]+)` \| `([^`]+)` \| `([^`]+)` \|", section, flags=re.M)
    return {fam: {"open": o, "mc": m} for fam, o, m in rows}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("task", ["open", "mc"])
def test_last_query_token_is_the_documented_one(tok, tiny, family, task):
    """Stage one scores with the attention row of the last position of prefix + segment + suffix
    (`last_query_probs` takes `hidden[:, -1:]`; with the stage-one cache, the last suffix token):
    the token docs/prompts.md names, under the SmolLM2 tokenizer of the tiny and embedded models."""
    doc = documented_last_tokens()
    assert set(doc) == set(FAMILIES)
    prompt = render_prompt(family, Q, task, OPTIONS if task == "mc" else None)
    ids = tok(prompt.suffix, add_special_tokens=False).input_ids
    assert tok.decode(ids[-1:]) == doc[family][task]
    table = tiny.model.get_input_embeddings().weight
    embeds, vis = tiny.build_inputs(prompt, torch.zeros(6, table.shape[1]))
    assert vis.stop < embeds.shape[1]  # the query comes after the visual tokens
    assert torch.equal(embeds[0, -1], table[ids[-1]])
    assert torch.equal(tiny.embed_text(prompt.suffix, first=False)[-1], table[ids[-1]])  # the cached path


def test_prompt_setting_in_the_model_name():
    from mlb_core.backbones.loading import split_prompt

    assert split_prompt("llava-hf/llava-v1.6-vicuna-7b-hf@sf-llava") == ("llava-hf/llava-v1.6-vicuna-7b-hf", "sf-llava")
    assert split_prompt("/data/my@folder") == ("/data/my@folder", None)  # not a setting: the name stays whole
    with pytest.raises(MLBError, match="also asked"):
        split_prompt("x@sf-llava", "native")
    vlm = load_model("tiny:llava_next_vicuna@sf-llava")
    assert vlm.family == "sf-llava-vicuna" and vlm.name.endswith("@sf-llava")
    assert load_model("tiny:llava_next_vicuna").family == "vicuna"
