"""The four backbone families (issue 6) on tiny config-built models of their stock classes:
prompt rendering, visual token counts, the model's own image path, one greedy answer, and
`mlb answer --model tiny:<family>`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlb_core.backbones.adapter import infer_family
from mlb_core.backbones.prompts import render_prompt
from mlb_core.backbones.tiny import TINY_FAMILIES, build_tiny_model
from mlb_core.cli import main
from mlb_core.config import get_preset
from mlb_core.methods import METHODS
from mlb_core.methods.registry import MethodInput
from mlb_core.selection.attention import last_query_attention, last_query_attention_eager

# The study's backbones -> (tiny family, stock class, prompt family, grid side)
BACKBONES = {
    "llava-hf/llava-v1.6-vicuna-7b-hf": ("llava_next_vicuna", "LlavaNextForConditionalGeneration", "vicuna", 8),
    "llava-hf/llava-v1.6-34b-hf": ("llava_next_34b", "LlavaNextForConditionalGeneration", "chatml", 8),
    "llava-hf/llava-1.5-7b-hf": ("llava", "LlavaForConditionalGeneration", "vicuna", 8),
    "llava-hf/llava-onevision-qwen2-7b-ov-hf": ("llava_onevision", "LlavaOnevisionForConditionalGeneration",
                                                "qwen2", 9),
}
FAMILIES = [v[0] for v in BACKBONES.values()]

# The exact prompts (docs/method.md, "Evaluation protocol"): image between prefix and suffix.
EXPECTED_OPEN = {
    "vicuna": "USER: <image>\nWhat is he doing? ASSISTANT: In the video,",
    "chatml": "<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n<image>\n"
              "What is he doing?<|im_end|><|im_start|>assistant\nIn the video,",
    "qwen2": "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<image>\n"
             "What is he doing?<|im_end|>\n<|im_start|>assistant\nIn the video,",
}


@pytest.fixture(scope="module")
def models():
    return {fam: build_tiny_model(fam) for fam in FAMILIES}


@pytest.fixture(scope="module")
def frames():
    return np.random.default_rng(0).integers(0, 256, (4, 72, 128, 3), dtype=np.uint8)


@pytest.mark.parametrize("hub_id", list(BACKBONES))
def test_family_class_and_prompt(models, hub_id):
    fam, cls, prompt_family, side = BACKBONES[hub_id]
    vlm = models[fam]
    assert type(vlm.model).__name__ == cls
    assert vlm.family == prompt_family == TINY_FAMILIES[fam]
    assert infer_family(hub_id, vlm.model.config) == prompt_family  # the real checkpoint's family
    assert vlm.grid_hw == (side, side)
    p = render_prompt(vlm.family, "What is he doing?")
    assert p.prefix + "<image>" + p.suffix == EXPECTED_OPEN[prompt_family]
    mc = render_prompt(vlm.family, "What is he doing?", "mc", ["run", "swim", "sit"])
    assert mc.suffix.endswith("Best option:(") and "(C) sit" in mc.suffix
    if prompt_family != "vicuna":  # ChatML markers are single special tokens, not text
        ids = vlm.tokenizer(p.prefix, add_special_tokens=False).input_ids
        assert vlm.tokenizer.convert_tokens_to_ids("<|im_start|>") in ids


@pytest.mark.parametrize("fam", FAMILIES)
def test_encode_frames_is_the_models_own_base_image(models, frames, fam):
    """Our base-resolution encoding equals the base image of the model's own image path."""
    vlm = models[fam]
    h, w = vlm.grid_hw
    tokens = vlm.encode_frames(frames)
    assert tokens.shape == (4, h, w, 32)
    inputs = vlm.image_processor(list(frames), return_tensors="pt")
    kwargs = {"image_sizes": inputs["image_sizes"]} if "image_sizes" in inputs else {}
    feats = vlm.model.model.get_image_features(pixel_values=inputs["pixel_values"], **kwargs).pooler_output
    ref = torch.stack([f[: h * w] for f in feats])  # any-res packing starts with the base image
    torch.testing.assert_close(tokens.reshape(4, h * w, 32), ref)


@pytest.mark.parametrize("fam", FAMILIES)
def test_encode_image_anyres_equals_model_forward(models, frames, fam):
    """`encode_image_anyres` spliced by `build_inputs` gives the logits of the stock forward
    with `<image>` placeholders and pixel values (any-res tiles, unpadding, newlines)."""
    vlm = models[fam]
    image = np.concatenate([frames[0], frames[1]], axis=0)  # (144, 128, 3): not square
    feats = vlm.encode_image_anyres(image)
    prompt = render_prompt(vlm.family, "What is shown?")
    embeds, _ = vlm.build_inputs(prompt, feats)
    pre = vlm.tokenizer(prompt.prefix, add_special_tokens=True).input_ids
    suf = vlm.tokenizer(prompt.suffix, add_special_tokens=False).input_ids
    ids = torch.tensor([pre + [vlm.model.config.image_token_id] * len(feats) + suf])
    inputs = vlm.image_processor([image], return_tensors="pt")
    kwargs = {"image_sizes": inputs["image_sizes"]} if "image_sizes" in inputs else {}
    with torch.inference_mode():
        ours = vlm.model(inputs_embeds=embeds).logits[0, -1]
        ref = vlm.model(input_ids=ids, pixel_values=inputs["pixel_values"], **kwargs).logits[0, -1]
    torch.testing.assert_close(ours, ref)
    if fam == "llava":
        assert len(feats) == 64  # LLaVA-1.5: one base image, no any-res
    else:
        assert len(feats) > vlm.grid_hw[0] * vlm.grid_hw[1]


@pytest.mark.parametrize("fam", FAMILIES)
def test_visual_token_counts_and_greedy_answer(models, frames, fam):
    vlm = models[fam]
    h, w = vlm.grid_hw
    tokens = vlm.encode_frames(frames)
    params = get_preset("tiny")  # GAPool 2x2, tail 1x1
    prompt = render_prompt(vlm.family, "What is he doing?")
    visual = METHODS["mlb"](MethodInput(vlm, tokens, frames, prompt, params))
    cells = -(-h // 2) * -(-w // 2)  # 16 for 8x8; 25 for 9x9 (cells do not divide the grid)
    assert visual.shape == (4 * (cells + 1), 32)
    embeds, _ = vlm.build_inputs(prompt, visual)
    ours = vlm.generate(embeds, 6)
    with torch.inference_mode():
        ids = vlm.model.generate(inputs_embeds=embeds, max_new_tokens=6, min_new_tokens=6, do_sample=False,
                                 attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long))
    assert ours and ours == vlm.tokenizer.decode(ids[0][-6:], skip_special_tokens=True).strip()


@pytest.mark.parametrize("fam", ["llava_next_34b", "llava_onevision"])
def test_scoring_matches_eager_on_gqa_and_qwen2(frames, fam):
    """Stage one's early-exit attention on a 4:1 GQA Llama and a Qwen2 (q/k biases)."""
    vlm = build_tiny_model(fam, attn_implementation="eager")
    prompt = render_prompt(vlm.family, "What is he doing?")
    embeds, _ = vlm.build_inputs(prompt, vlm.encode_frames(frames[:2]).reshape(-1, 32))
    for layer in (0, 2):
        torch.testing.assert_close(last_query_attention(vlm.language_model, embeds, layer),
                                   last_query_attention_eager(vlm.language_model, embeds, layer))


@pytest.mark.parametrize("fam,grid_tokens", [(f, 4 * BACKBONES[h][3] ** 2) for h, (f, *_) in BACKBONES.items()])
def test_cli_answer_on_tiny_model(capfd, fam, grid_tokens):
    code = main(["answer", "bigbuckbunny.mp4", "What animal appears?", "--model", f"tiny:{fam}",
                 "--preset", "tiny", "--method", "sf-llava", "--device", "cpu", "-v"])
    out, err = capfd.readouterr()
    assert code == 0, err
    assert out.strip()
    assert f"model=tiny-{fam.replace('_', '-')}-seed0" in err and f"grid_tokens={grid_tokens}" in err
    side = int(round((grid_tokens / 4) ** 0.5))
    assert f"visual_tokens={1 * (side * side // 2) + 4 * 16}" in err  # 1 slow frame of 4, 4 fast x 16


def test_cli_unknown_tiny_family(capfd):
    code = main(["answer", "bigbuckbunny.mp4", "Q?", "--model", "tiny:gpt", "--preset", "tiny"])
    err = capfd.readouterr().err
    assert code == 2 and err.startswith("error: no tiny model for family 'gpt'") and err.count("\n") == 1
