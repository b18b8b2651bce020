"""Tower or LM? The committed weights' shape slots on the held-out seed-2 one-frame clips, by the
object's size, beside the LM's answers on the same clips (the record's "Small objects").

An exploratory reading, not part of the package. Each clip of `pooled-seed0.json` (the committed
weights' answers) is drawn again from its seed; the projector's shape slots (what the LM reads,
:func:`mlb_core.train.vision.slots`), averaged over the patches the object covers by at least the
weights' default share (:func:`mlb_core.train.ceiling.default_min_cover`), name a shape by their
argmax; that is set beside whether the LM's free answer named it, below and from 45 px radius.
Run from the repository root: `python results/heldout/seed2/slots_by_size.py` (about a minute).
"""
from pathlib import Path

import torch
from by_size import SPLIT, shape_answers  # this folder's reading of the same answers

from mlb_core.backbones import vision_weights
from mlb_core.backbones.embedded import ensure_embedded
from mlb_core.train import scenes
from mlb_core.train.ceiling import default_min_cover
from mlb_core.train.vision import load_checkpoint, pixel_values, slots

HERE = Path(__file__).parent


def main() -> None:
    torch.set_num_threads(2)
    model, _, processor = load_checkpoint(Path(ensure_embedded(trained=True)))
    min_cover = default_min_cover(vision_weights.WEIGHTS_DIR)
    bank = scenes.VideoBank()
    n_col, shapes = len(scenes.COLOURS), scenes.SHAPES
    table = {(size, slot, lm): 0 for size in ("small", "large") for slot in (True, False) for lm in (True, False)}
    misread = []  # the LM's wrong answers where the slots named the shape
    with torch.no_grad():
        for spec, a in shape_answers(HERE / "pooled-seed0.json"):
            obj = spec.objects[0]
            frames, cover = scenes.render_clip(spec, bank)  # (1, S, S, 3), (1, 1, 24, 24)
            act = slots(model, pixel_values(frames, processor))[0]  # (24, 24, N_SLOTS)
            mask = torch.from_numpy(cover[0, 0]) >= min_cover  # (24, 24)
            read = shapes[int(act[mask].mean(0)[n_col:n_col + len(shapes)].argmax())]
            size = "small" if obj.radius < SPLIT else "large"
            table[(size, read == obj.shape, bool(a["right"]))] += 1
            if read == obj.shape and not a["right"]:
                misread.append(f"{obj.shape}: {a['answer']!r}")
    for size in ("small", "large"):
        n = sum(v for k, v in table.items() if k[0] == size)
        slot_right = sum(v for k, v in table.items() if k[0] == size and k[1])
        print(f"{size} ({'<' if size == 'small' else '>='} {SPLIT:.0f} px), {n} objects: slots name the shape of "
              f"{slot_right}; LM right where the slots are right {table[(size, True, True)]}, where they are wrong "
              f"{table[(size, False, True)]}; LM wrong where the slots are right {table[(size, True, False)]}, "
              f"where they are wrong {table[(size, False, False)]}")
    print("the LM's wrong answers where the slots named the shape: " + "; ".join(misread))


if __name__ == "__main__":
    main()
