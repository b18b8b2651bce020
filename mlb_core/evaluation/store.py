"""The evaluation runner's output folder (:mod:`mlb_core.evaluation.runner`): variants and their
paths, sharding over ranks, the folder's OS lock, the append-only prediction files and their
merge, and atomic writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlb_core.config import MLBParams, get_preset
from mlb_core.errors import MLBError
from mlb_core.evaluation.benchmarks import Item
from mlb_core.evaluation.judge import read_jsonl
from mlb_core.methods import METHODS


# ---- variants and paths ------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    """One (method, parameters) to evaluate; ``label`` names its output folder."""

    method: str
    params: MLBParams
    label: str

    @property
    def preset(self) -> str:
        return self.label.split("+", 1)[0]

    def fingerprint(self, model: str) -> str:
        """A short hash of (model, method, all parameters): stamped on every record, so a
        resumed run never mixes in answers made with other settings."""
        blob = json.dumps([model, self.method, self.params.to_dict()], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _fmt(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return "x".join(str(v) for v in value)
    return str(value)


def make_variants(
    methods: Sequence[str],
    presets: Sequence[str] = ("cpu",),
    overrides: dict[str, Any] | None = None,
    grids: Sequence[tuple[int, int]] | None = None,
) -> list[Variant]:
    """methods x presets (x GAPool grids), each with ``overrides`` applied."""
    if not methods:
        raise MLBError("no method given")
    for m in methods:
        if m not in METHODS:
            raise MLBError(f"unknown method {m!r}; choose one of {', '.join(sorted(METHODS))}")
    out = []
    for preset in presets:
        for grid in (grids or [None]):
            changes = dict(overrides or {})
            if grid is not None:
                changes["grid"] = tuple(grid)
            params = get_preset(preset, **changes)
            flat = {k: v for k, v in changes.items() if k != "extra"} | dict(changes.get("extra", {}))
            label = preset + "".join(f"+{k}={_fmt(v)}" for k, v in sorted(flat.items()))
            out.extend(Variant(m, params, label) for m in methods)
    return out


def model_slug(name: str) -> str:
    """A folder name for a model: ``llava-hf/llava-v1.6-vicuna-7b-hf`` -> ``llava-hf--llava-v1.6-vicuna-7b-hf``;
    a local folder -> its base name."""
    path = Path(name)
    if path.is_dir():
        name = path.resolve().name
    return re.sub(r"[^\w.+=-]", "-", name.replace("/", "--").replace(":", "-"))


def variant_dir(out: str | Path, benchmark: str, model: str, label: str) -> Path:
    return Path(out) / benchmark / model_slug(model) / label


def predictions_path(out: str | Path, benchmark: str, model: str, variant: Variant) -> Path:
    return variant_dir(out, benchmark, model, variant.label) / f"{variant.method}.predictions.jsonl"


def _shard_files(main: Path) -> list[Path]:
    return sorted(main.parent.glob(main.name.replace(".jsonl", ".rank*of*.jsonl")))


# ---- distributed ---------------------------------------------------------------------------------
def shard_info() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the launcher's environment (``accelerate
    launch`` and ``torchrun`` set ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); ``(0, 1, 0)`` alone."""
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_RANK", rank))
    if not 0 <= rank < world:
        raise MLBError(f"RANK={rank} is not in [0, WORLD_SIZE={world})")
    return rank, world, local


BALANCE_SLACK = 1.25  # whole videos per rank unless a rank would get more than this x its fair share


def shard_items(items: list[Item], rank: int, world: int) -> list[Item]:
    """The items of rank ``rank``: whole videos, round-robin in first-appearance order, so
    each video is encoded by one rank only; but when that would leave some rank more than
    :data:`BALANCE_SLACK` times its fair share of questions (few videos: one clip of six
    questions, three clips on two ranks), the questions themselves, round-robin in
    benchmark order (a video asked on two ranks is encoded on both, cheap next to idle ranks)."""
    videos = list(dict.fromkeys(it.video for it in items))
    by_video = [set(videos[r::world]) for r in range(world)]
    load = [sum(it.video in vs for it in items) for vs in by_video]
    if world > 1 and items and max(load) > BALANCE_SLACK * len(items) / world:
        return items[rank::world]
    return [it for it in items if it.video in by_video[rank]]


# ---- the output folder's lock --------------------------------------------------------------------
LOCK_NAME = ".mlb-eval.lock"


class OutputLocked(MLBError):
    """Another process holds the output folder."""


_held: dict[str, list[Any]] = {}  # resolved folder -> [open lock file, depth] (re-entrant per process)
_held_guard = threading.Lock()


def _try_lock(fd: int) -> bool:
    if os.name == "nt":  # pragma: no cover - Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except (BlockingIOError, PermissionError):
        return False


@contextlib.contextmanager
def output_lock(folder: str | Path) -> Iterator[None]:
    """Hold an exclusive OS file lock on ``folder/.mlb-eval.lock`` for the block (re-entrant in
    one process). A second run on the same folder fails at once with :class:`OutputLocked`
    naming the folder and the holder; a killed holder's lock is freed by the OS."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = str(folder.resolve())
    with _held_guard:
        if key in _held:
            _held[key][1] += 1
        else:
            path = folder / LOCK_NAME
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            if not _try_lock(fd):
                try:
                    holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
                finally:
                    os.close(fd)
                raise OutputLocked(f"output folder {folder} is in use by another mlb run ({holder}); "
                                   "wait for it to finish or use another --out")
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                          f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
            _held[key] = [fd, 1]
    try:
        yield
    finally:
        with _held_guard:
            _held[key][1] -= 1
            if _held[key][1] == 0:
                fd = _held.pop(key)[0]
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
                os.close(fd)  # closing the descriptor releases the lock


# ---- the prediction files ------------------------------------------------------------------------
def _is_done(rec: dict[str, Any]) -> bool:
    """A record that needs no new answer: anything but ``status: failed`` (retried on the next run)."""
    return "qid" in rec and rec.get("status") != "failed"


class PredictionFile:
    """An append-only JSONL of prediction records, one per question (``qid``); a question
    whose record is ``failed`` is not done, and a later record replaces it when merged."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.done = {r["qid"] for r in read_jsonl(path, repair=True) if _is_done(r)}
        self._f = None

    def append(self, record: dict[str, Any]) -> None:
        if record["qid"] in self.done:
            return
        if self._f is None:
            self._f = open(self.path, "a", encoding="utf-8")
        self._f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())
        self.done.add(record["qid"])

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def _done_qids(main: Path, fingerprint: str | None = None, include_failed: bool = False) -> set[str]:
    """qids with a record in ``main`` or its shards (``failed`` ones only with
    ``include_failed``); with ``fingerprint``, a record made with other settings is an error
    (use another ``out`` or delete the old files)."""
    done: set[str] = set()
    for p in [main, *_shard_files(main)]:
        for r in read_jsonl(p):
            if fingerprint and r.get("fingerprint", fingerprint) != fingerprint:
                raise MLBError(f"{p} holds answers made with other settings (model, method or parameters); "
                               "use another --out or delete that file")
            if "qid" in r and (include_failed or _is_done(r)):
                done.add(r["qid"])
    return done


def merge_predictions(main: Path, items: list[Item]) -> list[dict[str, Any]]:
    """Merge ``main`` and its rank shards into ``main`` in benchmark order (the first record of
    a qid wins, except that a ``failed`` record gives way to a later one: a retry; records of
    questions no longer in ``items`` are kept at the end), written atomically; the shards are
    then removed. Returns the records of ``items``' questions. The caller holds the output
    folder's lock (:func:`output_lock`), so no other process appends meanwhile."""
    shards = _shard_files(main)
    by_qid: dict[str, dict[str, Any]] = {}
    for p in [main, *shards]:
        for rec in read_jsonl(p):
            q = rec.get("qid", "")
            if q not in by_qid or not _is_done(by_qid[q]):
                by_qid[q] = rec
    order = [it.qid for it in items]
    known = set(order)
    records = [by_qid[q] for q in order if q in by_qid]
    extras = [r for q, r in by_qid.items() if q not in known and q]
    tmp = main.with_name(f".{main.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for rec in records + extras:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, main)
    for p in shards:
        p.unlink(missing_ok=True)
    return records


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` through a unique temporary sibling and ``os.replace``: readers see the old
    or the new file, never a torn one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
