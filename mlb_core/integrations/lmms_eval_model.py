"""``llava_mlb``: LLaVA-MLB as an lmms-eval model (docs/lmms-eval.md).

    lmms-eval --model llava_mlb \\
        --model_args pretrained=llava-hf/llava-v1.6-vicuna-7b-hf,method=mlb,preset=mlb,n_frames=50 \\
        --tasks videomme --output_path logs/ --log_samples

A thin wrapper over the public API (docs/api.md): :func:`mlb_core.load_model` once,
:func:`mlb_core.encode_video` once per video, :func:`mlb_core.answer` per question. lmms-eval
finds the class through this package's ``lmms_eval.models`` entry point
(:func:`mlb_core.integrations.lmms_eval_models`); importing this module also registers it in
lmms-eval's older decorator registry (``@register_model``).

Model arguments (``--model_args k=v,k=v``):

- ``pretrained``: what :func:`mlb_core.load_model` takes: ``embedded`` (the default), a hub id,
  a checkpoint folder or ``tiny:<family>``.
- ``method``: any of ``sorted(mlb_core.METHODS)`` (default ``mlb``).
- ``preset``: ``mlb`` (default, the paper's 50 frames), ``cpu`` or ``tiny``.
- any :class:`~mlb_core.config.MLBParams` field overrides the preset: ``n_frames``,
  ``segment_frames``, ``score_layer``, ``grid`` (``3x3``), ``pool_mode``, ``tail_mode``,
  ``tail_grid``, ``max_new_tokens``, ``budget``.
- ``device`` (``cpu``, ``cuda``, ``cuda:1``; lmms-eval's ``--device`` too), ``dtype``
  (``bfloat16``, ``float16``, ``float32``; default: bf16 on GPU, fp32 on CPU), ``family``
  (the prompt setting, e.g. ``sf-llava``), ``video_backend`` (``auto``, ``decord``, ``pyav``).
- ``on_error``: ``raise`` (default: the run stops at the first question that cannot be
  answered, e.g. an undecodable video or a prompt longer than the context) or ``empty``
  (log a warning and answer ``""``, which the task then scores as wrong).

What it does with a request (``generate_until``): the task's ``doc_to_visual(doc)`` must give
one video path (``str`` or ``os.PathLike``), or a list of frames (PIL images or arrays), of
which ``n_frames`` are sampled uniformly; the context string, with ``<image>``/``<video>``
placeholders removed, is the question; it is answered as an open-ended question by greedy
decoding (MLB's stage two) for ``max_new_tokens`` tokens (the model argument if given, else
the task's, else the preset's), and the answer is cut at the first of the task's ``until``
strings; its token count is stage two's prompt length (with the visual tokens MLB kept). Requests are
answered video by video, so each video is decoded and encoded once and its questions share one
stage-one cache. ``loglikelihood`` and ``generate_until_multi_round`` are not supported (they
raise ``NotImplementedError``).

Several GPUs: ``accelerate launch -m lmms_eval --model llava_mlb ...``: each process loads the
whole model on ``cuda:<local rank>`` and answers lmms-eval's share of the requests.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lmms_eval.api.instance import GenerationResult, Instance, TokenCounts
from lmms_eval.api.model import lmms
from lmms_eval.api.registry import register_model
from tqdm import tqdm

import mlb_core
from mlb_core.config import get_preset
from mlb_core.errors import MLBError
from mlb_core.integrations import LMMS_EVAL_MODEL
from mlb_core.parsing import FIELDS, parse_overrides
from mlb_core.pipeline import VideoFeatures
from mlb_core.selection.scores import StageOneCache
from mlb_core.video import sample_indices

log = logging.getLogger(__name__)

DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
          "half": torch.float16, "float32": torch.float32, "fp32": torch.float32, "float": torch.float32}
ON_ERROR = ("raise", "empty")
PLACEHOLDERS = re.compile(r"<(?:image|video)>\s*")


def _dtype(value: Any) -> torch.dtype | None:
    if value is None or isinstance(value, torch.dtype):
        return value
    text = str(value).strip().lower().removeprefix("torch.")
    if text in ("", "auto", "none"):
        return None
    if text not in DTYPES:
        raise MLBError(f"llava_mlb: unknown dtype {value!r}; use bfloat16, float16, float32 or auto")
    return DTYPES[text]


def _overrides(kwargs: dict[str, Any]) -> dict[str, Any]:
    """MLBParams fields from ``--model_args`` (lmms-eval has already turned ``50`` into an int)."""
    unknown = sorted(set(kwargs) - FIELDS)
    if unknown:
        accepted = sorted({"pretrained", "method", "preset", "device", "dtype", "family", "video_backend",
                           "on_error", "batch_size", "max_batch_size"} | FIELDS)
        raise MLBError(f"llava_mlb: unknown model argument(s) {', '.join(unknown)}; accepted: {', '.join(accepted)}")
    pairs = [f"{k}={'null' if v is None else v}" for k, v in kwargs.items()]
    return parse_overrides(pairs)


@register_model(LMMS_EVAL_MODEL)
class LlavaMLB(lmms):
    """LLaVA-MLB (arXiv 2503.11205) on a frozen LLaVA checkpoint, for lmms-eval's video tasks."""

    is_simple = True

    def __init__(
        self,
        pretrained: str = "embedded",
        method: str = "mlb",
        preset: str = "mlb",
        device: str | None = None,
        dtype: str | None = None,
        family: str | None = None,
        video_backend: str = "auto",
        on_error: str = "raise",
        batch_size: int | str = 1,
        max_batch_size: int | None = None,
        **params: Any,
    ) -> None:
        super().__init__()
        from accelerate import PartialState

        from mlb_core.methods import METHODS

        if method not in METHODS:
            raise MLBError(f"llava_mlb: unknown method {method!r}; choose one of {', '.join(sorted(METHODS))}")
        if on_error not in ON_ERROR:
            raise MLBError(f"llava_mlb: on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
        if str(batch_size) not in ("1", "auto"):
            log.warning("llava_mlb answers one question at a time; batch_size=%s is ignored", batch_size)
        self.params = get_preset(str(preset), **_overrides(params))
        self._own_max_new_tokens = "max_new_tokens" in params  # then it wins over the task's
        self.method, self.preset, self.on_error, self.video_backend = method, str(preset), on_error, video_backend

        state = PartialState()  # accelerate launch / torchrun: one whole model per process
        if state.num_processes > 1:
            self._rank, self._world_size = state.process_index, state.num_processes
            if device in (None, "cuda"):
                device = f"cuda:{state.local_process_index}"
        self.vlm = mlb_core.load_model(str(pretrained), device=device, dtype=_dtype(dtype), family=family)
        self.pretrained = str(pretrained)
        self.scorer = StageOneCache()
        self._features: tuple[tuple[str | None, int], VideoFeatures] | None = None  # the last video encoded
        self._warned_sampling = False
        log.info("llava_mlb: mlb_core %s, model %s (%s) on %s, method %s, preset %s: %s", mlb_core.__version__,
                 self.pretrained, self.vlm.family, self.vlm.device, method, self.preset, self.params.to_dict())

    @property
    def device(self) -> torch.device:
        return self.vlm.device

    # ---- visuals ---------------------------------------------------------------------------
    @staticmethod
    def _video_key(visuals: Any) -> str | None:
        """The video file a request is about; ``None`` for frames (encoded per request)."""
        items = visuals if isinstance(visuals, (list, tuple)) else [visuals]
        if len(items) == 1 and isinstance(items[0], (str, os.PathLike)):
            return str(items[0])
        return None

    def _encode(self, visuals: Any, n_frames: int) -> VideoFeatures:
        key = (self._video_key(visuals), n_frames)
        if key[0] is not None and self._features is not None and self._features[0] == key:
            return self._features[1]
        items = list(visuals) if isinstance(visuals, (list, tuple)) else [visuals]
        if not items:
            raise MLBError("llava_mlb: the task's doc_to_visual gave no visual")
        if all(isinstance(v, (str, os.PathLike)) for v in items):
            if len(items) > 1:
                raise MLBError(f"llava_mlb: one video per question, got {len(items)} paths ({items[0]}, ...)")
            path = Path(items[0])
            if path.is_dir():
                raise MLBError(f"llava_mlb: {path} is a folder; doc_to_visual must give a video file or frames")
            features = mlb_core.encode_video(self.vlm, str(path), n_frames, backend=self.video_backend)
        else:
            features = self._encode_frames(items, n_frames)
        self._features = (key, features)
        return features

    def _encode_frames(self, items: list[Any], n_frames: int) -> VideoFeatures:
        from PIL import Image

        images = []
        for v in items:
            if isinstance(v, np.ndarray):
                v = Image.fromarray(v)
            if not isinstance(v, Image.Image):
                raise MLBError(f"llava_mlb: doc_to_visual must give a video path or frames (PIL images or "
                               f"arrays), got {type(v).__name__}")
            images.append(v.convert("RGB"))
        size = images[0].size
        idx = sample_indices(len(images), n_frames)
        frames = np.stack([np.asarray(images[i].resize(size) if images[i].size != size else images[i])
                           for i in idx])
        tokens = self.vlm.encode_frames(frames)
        return VideoFeatures(f"<{len(images)} frames>", frames, idx, tokens, {})

    # ---- lmms-eval's interface --------------------------------------------------------------
    def _params_for(self, gen_kwargs: dict[str, Any]):
        params = self.params
        if gen_kwargs.get("max_new_tokens") is not None and not self._own_max_new_tokens:
            params = params.replace(max_new_tokens=int(gen_kwargs["max_new_tokens"]))
        sampling = gen_kwargs.get("do_sample") or float(gen_kwargs.get("temperature") or 0) > 0
        if sampling and not self._warned_sampling:
            log.warning("llava_mlb decodes greedily; the task's sampling arguments (do_sample, temperature) "
                        "are ignored")
            self._warned_sampling = True
        return params

    @staticmethod
    def _cut(text: str, until: Any) -> str:
        stops = [until] if isinstance(until, str) else list(until or [])
        for stop in stops:
            if stop and stop in text:
                text = text[: text.index(stop)]
        return text.strip()

    def _answer_one(self, request: Instance) -> GenerationResult:
        context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
        gen_kwargs = dict(gen_kwargs or {})
        params = self._params_for(gen_kwargs)
        visuals = doc_to_visual(self.task_dict[task][split][doc_id])
        features = self._encode(visuals, params.n_frames)
        question = PLACEHOLDERS.sub("", context).strip()
        result = mlb_core.answer(self.vlm, features, question, self.method, params, scorer=self.scorer)
        # input_tokens: stage two's prompt, with the visual sequence MLB kept (result.n_visual_tokens of it)
        return GenerationResult(self._cut(result.text, gen_kwargs.get("until")),
                                TokenCounts(input_tokens=result.n_prompt_tokens))

    def generate_until(self, requests: list[Instance]) -> list[GenerationResult]:
        def video_of(i: int) -> str:
            _, _, doc_to_visual, doc_id, task, split = requests[i].args
            try:
                return self._video_key(doc_to_visual(self.task_dict[task][split][doc_id])) or ""
            except Exception:  # the request fails again, with its message, when it is answered
                return ""

        # video by video (stable), so each video is decoded and encoded once; answers in request order
        order = sorted(range(len(requests)), key=video_of)
        answers: list[GenerationResult] = [GenerationResult("")] * len(requests)
        for i in tqdm(order, disable=self.rank != 0, desc="llava_mlb"):
            context, gen_kwargs = requests[i].args[:2]
            try:
                answers[i] = self._answer_one(requests[i])
            except (MLBError, torch.cuda.OutOfMemoryError) as exc:
                if self.on_error == "raise":
                    raise
                log.warning("llava_mlb: %s doc %s: %s; answering ''", requests[i].args[4], requests[i].args[3], exc)
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), answers[i].text)
        return answers

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError(
            "llava_mlb answers by generation only (generate_until): MLB builds a compressed visual sequence for "
            "greedy decoding and does not score continuations; loglikelihood tasks (multiple choice scored by "
            "option likelihood, perplexity) are not supported; use the task's generate_until variant")

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError(
            "llava_mlb answers one question per request (generate_until); multi-round tasks are not supported")
