"""Print the rule's numbers (README.md here) from the result files: run from the repository root."""
import json
from collections import Counter
from pathlib import Path

SEED2 = Path("results/heldout/seed2")


def one_frame(name: str) -> tuple[int, int, int, dict[str, str]]:
    c = json.loads((SEED2 / f"{name}.json").read_text())["conditions"]["single_full"]
    tot, right = Counter(), Counter()
    for a in c["answers"]:
        if a["kind"] == "shape":
            tot[a["truth"]] += 1
            right[a["truth"]] += a["right"]
    return (round(c["colour_accuracy"] * c["colour_n"]), round(c["shape_accuracy"] * c["shape_n"]), c["shape_n"],
            {k: f"{right[k]}/{tot[k]}" for k in sorted(tot)})


def standard(folder: str) -> str:
    d = json.loads((Path(folder) / "heldout_metrics.json").read_text())["conditions"]
    total = sum(round(c["accuracy"] * c["n"]) for c in d.values())
    return f"{total} of {sum(c['n'] for c in d.values())} (" + ", ".join(
        f"{k} {round(c['accuracy'] * c['n'])}/{c['n']}" for k, c in d.items()) + ")"


rows = [("committed (lead-cosine seed 0)", "committed", "mlb_core/weights/embedded-vision")]
rows += [(f"pooled seed {s}", f"pooled-seed{s}", f"results/train/pooled/seed{s}") for s in range(3)]
for label, name, folder in rows:
    if not (SEED2 / f"{name}.json").exists():
        continue
    colour, shape, n, by = one_frame(name)
    std = standard(folder) if (Path(folder) / "heldout_metrics.json").exists() else "-"
    shapes = " | ".join(str(by.get(k)) for k in ("square", "circle", "triangle"))
    print(f"| {label} | {colour}/{n} | {shape}/{n} | {shapes} | {std} |")
