"""Grid-token caches of the evaluation runner (:mod:`mlb_core.evaluation.runner`): in memory per
run, and optionally on disk as safetensors files shared across runs."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from mlb_core.backbones.adapter import VideoLLM
from mlb_core.errors import MLBError
from mlb_core.pipeline import VideoFeatures, encode_video
from mlb_core.video import DECODE_RULES, load_video

# ---- feature caches --------------------------------------------------------------------------------
FRAME_METHODS = ("ig-vlm", "ts-llava")  # methods that re-encode the decoded frames as an image
CACHE_FORMAT = 1


class FeatureCache:
    """Grid tokens per (model, video file, n_frames, backend): in memory for the run, and
    on disk under ``folder`` when given.

    On disk: one ``<key>.safetensors`` per entry holding only tensors (``tokens``, ``indices``)
    and JSON metadata (timings, shape), so loading runs no code. Decoded frames are *not*
    stored: a method that needs them (:data:`FRAME_METHODS`) gets them decoded again
    (:meth:`frames`). Written through a unique temporary name and ``os.replace``, so runs
    sharing a folder never collide; an unreadable file (truncated, empty, garbage) is a miss
    with one warning line naming it, and is overwritten."""

    def __init__(self, vlm: VideoLLM, folder: str | Path | None = None, backend: str = "auto"):
        self.vlm, self.backend = vlm, backend
        self.folder = Path(folder) if folder else None
        self._mem: dict[tuple[str, int], VideoFeatures] = {}
        self.hits = 0

    def _key(self, path: Path, n_frames: int) -> str:
        st = path.stat()
        w = next(self.vlm.model.model.multi_modal_projector.parameters())  # a fingerprint of the weights
        blob = json.dumps([self.vlm.name, str(self.vlm.dtype), str(path.resolve()), st.st_size, st.st_mtime_ns,
                           n_frames, self.backend, DECODE_RULES, float(w.flatten()[:64].float().sum())])
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def _read(self, disk: Path, path: Path, n_frames: int) -> VideoFeatures | None:
        from safetensors import safe_open

        try:
            with safe_open(str(disk), framework="pt") as f:
                meta = f.metadata() or {}
                tokens, indices = f.get_tensor("tokens"), f.get_tensor("indices")
            timings = json.loads(meta.get("timings", "{}"))
            if (int(meta.get("format", -1)) != CACHE_FORMAT or tokens.dim() != 4 or tokens.shape[0] != n_frames
                    or tuple(indices.shape) != (n_frames,) or not isinstance(timings, dict)):
                raise ValueError("unexpected contents")
        except Exception as exc:  # safetensors raises its own errors on a torn or foreign file
            print(f"warning: feature cache file {disk} is unreadable ({_short(exc)}); encoding again",
                  file=sys.stderr)
            return None
        return VideoFeatures(str(path), None, indices.numpy(), tokens.to(self.vlm.device),  # type: ignore[arg-type]
                             {k: float(v) for k, v in timings.items()})

    def _write(self, disk: Path, feats: VideoFeatures) -> None:
        from safetensors.torch import save_file

        disk.parent.mkdir(parents=True, exist_ok=True)
        tmp = disk.with_name(f".{disk.name}.{os.getpid()}.{threading.get_ident()}.{time.time_ns()}.tmp")
        try:
            save_file({"tokens": feats.tokens.detach().cpu().contiguous(),
                       "indices": torch.as_tensor(np.asarray(feats.indices, dtype=np.int64))},
                      str(tmp), metadata={"format": str(CACHE_FORMAT), "timings": json.dumps(feats.timings),
                                          "model": self.vlm.name, "video": feats.path})
            os.replace(tmp, disk)
        finally:
            tmp.unlink(missing_ok=True)

    def get(self, path: Path, n_frames: int) -> tuple[VideoFeatures, bool]:
        """``(features, cached)``; ``cached`` is True when no encoding was needed. Features
        read from disk have ``frames=None`` (see :meth:`frames`)."""
        mem_key = (str(path), n_frames)
        if mem_key in self._mem:
            return self._mem[mem_key], True
        disk = self.folder / f"{self._key(path, n_frames)}.safetensors" if self.folder else None
        feats = self._read(disk, path, n_frames) if disk is not None and disk.exists() else None
        cached = feats is not None
        if feats is not None:
            self.hits += 1
        else:
            feats = encode_video(self.vlm, path, n_frames, self.backend)
            if disk is not None:
                self._write(disk, feats)
        self._mem = {mem_key: feats} | {k: v for k, v in self._mem.items() if k[0] == str(path)}
        return feats, cached

    def frames(self, feats: VideoFeatures, n_frames: int) -> VideoFeatures:
        """``feats`` with its decoded frames (decoded again when they came from disk)."""
        if feats.frames is None:
            frames, indices = load_video(feats.path, n_frames, self.backend)
            if not np.array_equal(indices, feats.indices):
                raise MLBError(f"{feats.path} decodes to other frames than its cached features; "
                               "delete the feature cache")
            feats.frames = frames
        return feats


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0][:120] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
