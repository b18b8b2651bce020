"""Caches that never run code and never trust a torn file: the per-video feature cache
(safetensors + JSON metadata, no frames, unique temporary names, unreadable file = a miss
with one warning) and the embedded model's build folder (a truncated model.safetensors is
rebuilt)."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch
from safetensors import safe_open

from mlb_core.evaluation.judge import read_jsonl
from mlb_core.evaluation.runner import FeatureCache, evaluate, make_variants, predictions_path
from mlb_core.evaluation.synthetic import SynthConfig, generate
from mlb_core.video import load_video

MODEL = "tiny:llava_next"


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    out = tmp_path_factory.mktemp("probe")
    generate(out, SynthConfig(n_videos=1, n_frames=12, size=(96, 72)))
    return out


@pytest.fixture()
def clip(probe):
    return next((probe / "videos").glob("*.mp4"))


def _count_encodes(vlm, monkeypatch):
    calls = []
    real = vlm.encode_frames
    monkeypatch.setattr(vlm, "encode_frames", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def test_feature_cache_holds_only_tensors_and_no_frames(tiny, clip, tmp_path, monkeypatch):
    feats, cached = FeatureCache(tiny, tmp_path).get(clip, 4)
    assert not cached
    (disk,) = tmp_path.glob("*.safetensors")
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))
    with safe_open(str(disk), framework="pt") as f:
        assert sorted(f.keys()) == ["indices", "tokens"]  # no frames
        assert set(json.loads(f.metadata()["timings"])) == {"decode", "encode"}
    calls = _count_encodes(tiny, monkeypatch)
    again, cached = FeatureCache(tiny, tmp_path).get(clip, 4)
    assert cached and calls == [] and again.frames is None
    assert torch.equal(again.tokens, feats.tokens) and np.array_equal(again.indices, feats.indices)
    # a method that re-encodes images gets the frames decoded again, identical to the first decode
    full = FeatureCache(tiny, tmp_path).frames(again, 4)
    assert np.array_equal(full.frames, feats.frames)


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "pickle"])
def test_unreadable_cache_file_is_a_miss_with_one_warning(tiny, clip, tmp_path, capfd, monkeypatch, damage):
    first, _ = FeatureCache(tiny, tmp_path).get(clip, 4)
    (disk,) = tmp_path.glob("*.safetensors")
    data = disk.read_bytes()
    disk.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "garbage": b"\x00\xff" * 999,
                      "pickle": b"\x80\x04\x95" + data[3:64]}[damage])
    capfd.readouterr()
    calls = _count_encodes(tiny, monkeypatch)
    feats, cached = FeatureCache(tiny, tmp_path).get(clip, 4)
    err = capfd.readouterr().err
    assert not cached and calls == [1] and torch.equal(feats.tokens, first.tokens)
    assert err.count("\n") == 1 and err.startswith("warning: feature cache file") and str(disk) in err
    again, cached = FeatureCache(tiny, tmp_path).get(clip, 4)  # overwritten with a good file
    assert cached and torch.equal(again.tokens, first.tokens) and capfd.readouterr().err == ""


def test_concurrent_writers_never_collide(tiny, clip, tmp_path):
    cache = FeatureCache(tiny, tmp_path)
    feats, _ = cache.get(clip, 4)
    (disk,) = tmp_path.glob("*.safetensors")
    errors = []

    def write():
        try:
            for _ in range(5):
                cache._write(disk, feats)
        except Exception as exc:  # pragma: no cover - what the test looks for
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and [p.name for p in tmp_path.iterdir()] == [disk.name]
    assert FeatureCache(tiny, tmp_path).get(clip, 4)[1]


def test_frame_methods_answer_the_same_from_a_disk_hit(tiny, probe, tmp_path):
    kw = dict(methods=["ig-vlm"], presets=["tiny"], model=MODEL, vlm=tiny, limit=2, progress=False,
              feature_cache=tmp_path / "features")
    evaluate("synthetic", probe, out=tmp_path / "a", **kw)
    evaluate("synthetic", probe, out=tmp_path / "b", **kw)
    variant = make_variants(["ig-vlm"], ["tiny"])[0]
    a, b = (read_jsonl(predictions_path(tmp_path / d, "synthetic", MODEL, variant)) for d in "ab")
    assert [r["status"] for r in b] == ["answered"] * 2 and all(r["features_cached"] for r in b)
    assert [r["prediction"] for r in a] == [r["prediction"] for r in b]
    assert load_video(next((probe / "videos").glob("*.mp4")), 4)[0].shape[0] == 4


# ---- the embedded model's build folder ------------------------------------------------------------
def test_truncated_embedded_model_is_rebuilt(tmp_path, monkeypatch, capfd):
    from safetensors.torch import save_file

    from mlb_core.backbones import embedded

    monkeypatch.setenv("MLB_CACHE", str(tmp_path))
    builds = []

    def fake_build(out, trained=True, weights=None):
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps({"mlb_build_version": embedded.BUILD_VERSION,
                                                     "mlb_vision": embedded.vision_tag(trained)}))
        save_file({"w": torch.arange(4096, dtype=torch.float32)}, str(out / "model.safetensors"))
        builds.append(out)

    monkeypatch.setattr(embedded, "build_embedded", fake_build)
    out = embedded.ensure_embedded()
    assert len(builds) == 1 and (out / embedded.INTEGRITY_FILE).exists()
    assert embedded.ensure_embedded() == out and len(builds) == 1  # complete: not rebuilt
    weights = out / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[:1000])  # truncated (a full disk, a killed copy)
    assert embedded.integrity_problem(out) == "model.safetensors is missing or truncated"
    embedded.ensure_embedded()
    assert len(builds) == 2 and weights.read_bytes() == good
    assert "model.safetensors is missing or truncated; rebuilding" in capfd.readouterr().err
    # a folder built before the marker existed: adopted when complete, rebuilt when truncated
    (out / embedded.INTEGRITY_FILE).unlink()
    embedded.ensure_embedded()
    assert len(builds) == 2 and embedded.integrity_problem(out) is None
    (out / embedded.INTEGRITY_FILE).unlink()
    weights.write_bytes(good[:-8])
    embedded.ensure_embedded()
    assert len(builds) == 3 and embedded.integrity_problem(out, full=True) is None


_CONCURRENT_BUILD = r"""
import json, os, sys, time
from pathlib import Path
from mlb_core.backbones import embedded

def fake_build(out, trained=True, weights=None):
    def save(folder):
        with open(os.environ["BUILD_LOG"], "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(2.0)  # a slow build: the other process arrives while it runs
        Path(folder, "config.json").write_text(json.dumps({"mlb_build_version": embedded.BUILD_VERSION,
                                                           "mlb_vision": embedded.vision_tag(trained)}))
        Path(folder, "weights.bin").write_bytes(os.urandom(4096))
    embedded._atomic_save(out, save)

embedded.build_embedded = fake_build
Path(os.environ["READY"], str(os.getpid())).touch()
while len(os.listdir(os.environ["READY"])) < 2:  # start together
    time.sleep(0.01)
out = embedded.ensure_embedded()
print(json.dumps({"out": str(out), "problem": embedded.integrity_problem(out, full=True),
                  "weights": (out / "weights.bin").read_bytes().hex()}))
"""


def test_two_processes_build_the_embedded_model_once(tmp_path):
    """Two processes that find no build at once: one builds, the other waits for it and loads
    the same folder (no second build removes the first one's folder under it)."""
    import subprocess
    import sys

    (tmp_path / "ready").mkdir()
    env = {**__import__("os").environ, "MLB_CACHE": str(tmp_path / "cache"),
           "BUILD_LOG": str(tmp_path / "builds.log"), "READY": str(tmp_path / "ready")}
    procs = [subprocess.Popen([sys.executable, "-c", _CONCURRENT_BUILD], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in results]
    seen = [json.loads(out.strip().splitlines()[-1]) for out, _ in results]
    assert len((tmp_path / "builds.log").read_text().split()) == 1  # built once
    assert seen[0] == seen[1] and seen[0]["problem"] is None  # the same, complete folder
