"""``mlb train-vision`` and ``mlb heldout``: train the embedded default's vision side, export the
trained tensors into the committed folder, and measure what the model sees (docs/architecture.md,
"Backbones")."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from mlb_core.backbones import vision_weights
from mlb_core.errors import MLBError


def train_and_export(out: str | Path = vision_weights.WEIGHTS_DIR, seed: int = 0, minutes: float | None = None,
                     threads: int = 2, recipe: Any = None, device: str = "cpu") -> dict[str, Any]:
    """Train from the seeded random vision side (the frozen LM is the real SmolLM2) and write
    the trained tower + projector, the model card and the training log to ``out``
    (``recipe``: a :class:`~mlb_core.train.vision.Recipe`, default the committed one;
    ``minutes``: default the committed plan, ``vision.COMMITTED_MINUTES``;
    ``device``: where the LM stages run, :func:`~mlb_core.train.vision.train_vision`)."""
    from mlb_core.train.vision import COMMITTED_MINUTES, default_source, load_checkpoint, train_vision

    minutes = COMMITTED_MINUTES if minutes is None else minutes

    source = default_source()
    work = Path(tempfile.mkdtemp(prefix="mlb-train-"))
    try:
        summary = train_vision(work / "checkpoint", seed=seed, minutes_budget=minutes, threads=threads, source=source,
                               recipe=recipe, device=device)
        model, _, _ = load_checkpoint(work / "checkpoint")
        card = work / "checkpoint" / "MODEL_CARD.md"
        extra: dict[str, str | bytes] = {"training_log.json": json.dumps(summary, indent=1, default=str) + "\n"}
        codebook = work / "checkpoint" / "codebook.safetensors"  # the ideal tokens (mlb heldout --ideal)
        if codebook.exists():
            extra["codebook.safetensors"] = codebook.read_bytes()
        if card.exists():
            extra["MODEL_CARD.md"] = card.read_text()
        vision_weights.export_vision(model, out, extra)
        record_exported_file(out, summary)
        from mlb_core.train.card import METRICS, REPRO

        for stale in (REPRO, METRICS):  # they describe the weights just replaced
            (Path(out) / stale).unlink(missing_ok=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return summary


def record_exported_file(out: str | Path, summary: dict[str, Any]) -> None:
    """Give ``out/training_log.json`` the SHA-256 and size of the exported ``vision.safetensors``
    (the committed file, which ``--verify`` compares) as ``vision_sha256`` and
    ``vision_safetensors_bytes``; the training folder's own file, which holds the same tensors
    under the checkpoint's names, keeps them as ``checkpoint_vision_sha256`` and
    ``checkpoint_vision_safetensors_bytes``. ``summary`` is updated in place."""
    from mlb_core.train.vision import sha256_file

    out = Path(out)
    for key in ("vision_sha256", "vision_safetensors_bytes"):
        summary.setdefault(f"checkpoint_{key}", summary.get(key))
    summary["vision_sha256"] = sha256_file(out / vision_weights.TENSORS)
    summary["vision_safetensors_bytes"] = (out / vision_weights.TENSORS).stat().st_size
    tmp = out / ".training_log.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1, default=str) + "\n")
    tmp.replace(out / "training_log.json")


def compare_weights(committed: str | Path, rerun: str | Path) -> dict[str, Any]:
    """Two ``vision.safetensors`` files: same bytes (SHA-256), and the largest absolute
    difference over the tensors both hold (None when their names or shapes differ)."""
    from safetensors.torch import load_file

    from mlb_core.train.vision import sha256_file

    a, b = Path(committed), Path(rerun)
    sha = [sha256_file(p) for p in (a, b)]
    sa, sb = load_file(str(a)), load_file(str(b))
    diff: float | None = None  # other tensor names or shapes
    if set(sa) == set(sb) and all(sa[k].shape == sb[k].shape for k in sa):
        diff = max((float((sa[k].double() - sb[k].double()).abs().max()) for k in sa if sa[k].numel()), default=0.0)
    return {"sha256_committed": sha[0], "sha256_rerun": sha[1], "identical": sha[0] == sha[1],
            "max_abs_diff": diff}


def verify_training(folder: str | Path = vision_weights.WEIGHTS_DIR, rerun: str | Path | None = None
                    ) -> dict[str, Any]:
    """Repeat the committed training (its log's seed, budget and threads) and compare the
    tensors with the committed ones; the result goes to ``folder/reproducibility.json`` and the
    model card. ``rerun``: compare with that already-trained weights folder instead of training."""
    import datetime
    import time

    import torch

    from mlb_core.train.card import REPRO, read_training_log, refresh_card

    folder = Path(folder)
    log = read_training_log(folder, hint="; nothing to verify")
    t0 = time.perf_counter()
    work = None
    if rerun is None:
        work = Path(tempfile.mkdtemp(prefix="mlb-verify-"))
        from mlb_core.train.vision import recipe_from_log

        summary = train_and_export(work, seed=log["seed"], minutes=log["minutes_budget"], threads=log["threads"],
                                   recipe=recipe_from_log(log["recipe"]))
        rerun, wall = work, summary["wall_s"]["total"]  # rerun: a Path from here on
    else:
        rerun = Path(rerun)
        try:
            wall = json.loads((rerun / "training_log.json").read_text())["wall_s"]["total"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise MLBError(f"--verify-against {rerun}: not a trained weights folder (its training_log.json: "
                           f"{exc!r})") from None
    try:
        result = compare_weights(folder / vision_weights.TENSORS, rerun / vision_weights.TENSORS)
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    result |= {"date": datetime.date.today().isoformat(), "torch": torch.__version__, "seed": log["seed"],
               "minutes_budget": log["minutes_budget"], "threads": log["threads"], "wall_s": round(wall, 1),
               "seconds": round(time.perf_counter() - t0, 1)}
    (folder / REPRO).write_text(json.dumps(result, indent=1) + "\n")
    refresh_card(folder)
    return result


def cmd_train_vision(args: argparse.Namespace) -> int:
    import torch

    from mlb_core.parsing import parse_device

    if (args.minutes is not None and args.minutes <= 0) or args.threads < 1:
        raise MLBError("--minutes must be > 0 and --threads >= 1")
    if args.verify:
        result = verify_training(args.out, args.verify_against)
        diff = result["max_abs_diff"]
        same = ("bit-identical" if result["identical"] else
                "differ in their tensor names or shapes" if diff is None else f"differ (max |diff| {diff:.3g})")
        print(f"rerun of the committed training: weights {same}; wrote {Path(args.out) / 'reproducibility.json'}")
        return 0
    from mlb_core.train.vision import RECIPES

    if args.recipe not in RECIPES:
        raise MLBError(f"--recipe: unknown {args.recipe!r}; choose from {', '.join(sorted(RECIPES))}")
    device = parse_device(args.device)  # a one-line error for an unknown or absent device, before the model loads
    torch.set_num_threads(args.threads)
    summary = train_and_export(args.out, seed=args.seed, minutes=args.minutes, threads=args.threads,
                               recipe=RECIPES[args.recipe], device=device)
    print(f"trained in {summary['wall_s']['total']:.0f} s; wrote {args.out}")
    return 0


def cmd_heldout(args: argparse.Namespace) -> int:
    from mlb_core.train.sight import (
        REDRAWN_KEY,
        binding_conditions,
        default_conditions,
        format_judges,
        format_sight,
        grey_band_conditions,
        grey_conditions,
        length_conditions,
        measure_sight,
        plot_length_curve,
        read_sight,
        redrawn_conditions,
        sparse_conditions,
        write_sight,
    )

    if args.scale <= 0:
        raise MLBError("--scale must be > 0")
    checks = ("slots", "ideal", "curve", "redrawn", "binding", "sparse", "grey", "grey_band")
    chosen = [flag.replace("_", "-") for flag in checks if getattr(args, flag)]
    if args.rescore:
        if chosen:
            raise MLBError(f"--rescore judges saved results again and runs no model: drop --{chosen[0]}")
        for path in args.rescore:
            print(f"{path}\n{format_judges(read_sight(path))}")
        return 0
    if len(chosen) > 1:
        raise MLBError(f"--{' and --'.join(chosen)} are different checks: choose one")
    if args.slots:
        from mlb_core.train.ceiling import format_slots, slot_accuracy

        if args.min_cover is not None and not 0 < args.min_cover <= 1:
            raise MLBError(f"--min-cover must be in (0, 1], not {args.min_cover}")
        result = slot_accuracy(max(2, round(40 * args.scale)), args.seed, min_cover=args.min_cover)
        print(format_slots(result))
        if args.out:
            write_sight(result, args.out)
        return 0
    if args.ideal:
        from mlb_core.train.ceiling import format_ideal, ideal_accuracy

        if args.ideal_scale <= 0 or args.ideal_background < 0 or (args.ideal_shape_scale or 0) < 0:
            raise MLBError("--ideal-scale must be > 0, --ideal-shape-scale and --ideal-background >= 0")
        layout_names = (tuple(n.strip() for n in args.ideal_layouts.split(",") if n.strip())
                        if args.ideal_layouts else None)  # ideal_accuracy parses them before any model loads
        book = args.ideal_codebook
        if book == "learned":
            book = vision_weights.WEIGHTS_DIR / "codebook.safetensors"
            if not book.exists():
                raise MLBError(f"--ideal-codebook learned: no {book} (the training writes it)")
        target = args.ideal_shape_target
        if target is None:  # where the codebook's training put the shape: its recipe's shape target
            from mlb_core.train.ceiling import recipe_shape_target

            target = (recipe_shape_target(vision_weights.WEIGHTS_DIR) if args.ideal_tower  # the model's own recipe
                      else "coverage" if str(book) == "words" else recipe_shape_target(Path(book).parent))
        result = ideal_accuracy(max(2, round(12 * args.scale)), args.ideal_scale, args.ideal_background, args.seed,
                                shape_scale=args.ideal_shape_scale, codebook=book, n_objects=args.ideal_objects,
                                shape_target=target, tokens="tower" if args.ideal_tower else "ideal",
                                swap=args.ideal_swap, layout_names=layout_names)
        print(format_ideal(result))
        if args.out:
            from mlb_core.train.sight import write_sight

            write_sight(result, args.out)
        return 0
    if args.redrawn_key is not None and (chosen != ["redrawn"] or args.redrawn_key < 0):
        raise MLBError(f"--redrawn-key picks the scenes of --redrawn: add --redrawn, with a key >= 0 "
                       f"(got {args.redrawn_key})")
    key = REDRAWN_KEY if args.redrawn_key is None else args.redrawn_key
    sets = {"curve": length_conditions, "redrawn": lambda scale: redrawn_conditions(scale, key),
            "binding": binding_conditions, "sparse": sparse_conditions, "grey": grey_conditions,
            "grey-band": grey_band_conditions}
    conditions = sets.get(chosen[0] if chosen else "", default_conditions)(args.scale)  # the one check chosen
    # a condition's clips come from its place in the whole list, whichever of them --conditions keeps
    conditions = [c if c.clip_key is not None else dataclasses.replace(c, clip_key=i) for i, c in enumerate(conditions)]
    if args.conditions:
        wanted = [c.strip() for c in args.conditions.split(",") if c.strip()]
        unknown = sorted(set(wanted) - {c.name for c in conditions})
        if unknown:
            raise MLBError(f"--conditions: unknown {', '.join(unknown)}; choose from "
                           f"{', '.join(c.name for c in conditions)}")
        conditions = [c for c in conditions if c.name in wanted]
    result = measure_sight(args.model, conditions, seed=args.seed, progress=not args.quiet, questions=args.questions,
                           out=args.out)  # written after each condition
    print(format_sight(result))
    if args.out:
        print(f"wrote {args.out}", file=sys.stderr)
        if args.curve:
            print(f"wrote {plot_length_curve(result, Path(args.out).with_suffix('.png'))}", file=sys.stderr)
            return 0
        folder = Path(args.out).parent
        if (folder / "training_log.json").exists():  # a weights folder: its model card shows the result
            from mlb_core.train.card import refresh_card

            print(f"wrote {refresh_card(folder)}", file=sys.stderr)
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """``mlb train-vision`` and ``mlb heldout`` (registered by :func:`mlb_core.cli.build_parser`)."""
    t = sub.add_parser("train-vision", help="train the embedded default's vision tower and projector (frozen LM)",
                       description="LLaVA-style training of the embedded default's vision side over the frozen "
                                   "SmolLM2-135M on scenes the project draws; writes the committed weights folder.")
    t.add_argument("--out", default=str(vision_weights.WEIGHTS_DIR), help="weights folder (default: the committed one)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--minutes", type=float, default=None,
                   help="planned time of the training (its cost model; default: the committed plan, "
                        "vision.COMMITTED_MINUTES, 30, which took 26 min of wall time on 2 cores)")
    t.add_argument("--threads", type=int, default=2, help="CPU threads")
    t.add_argument("--device", default="cpu",
                   help="cpu (default: what reproduces the committed weights) or cuda, cuda:1: the same plan "
                        "(its cost model is in CPU seconds at --threads), run faster; numbers differ in the "
                        "last bits from a CPU run's")
    t.add_argument("--recipe", default="committed",  # a name of vision.RECIPES, checked when the command runs
                   help="a name of vision.RECIPES; quoted names are sections of docs/training-record.md. "
                        "committed: the recipe of the committed weights, the same as pooled (below); outline: "
                        "the weights committed 2026-12-03 to 12-04: an edge-energy first layer, a closed-form slot "
                        "read-out and the shape on the outline, the tower frozen after the fit ('Shape from the "
                        "outline'); coverage: the weights committed until 2026-12-03 (a random tower trained "
                        "by slot regression); first: the ones before (codebook fixed in stage 3); structured: the "
                        "first with a structured tower init, feature layer -1 and an image-level shape loss "
                        "('The frames teach shape'); colour-units: outline with colour units in the tower, "
                        "not adopted; long: outline with 30%% of stage 3's steps on 2,000-4,000-token layouts, "
                        "stage 1 cut; long-30: the same with stage 1 kept, on a 30-minute plan (neither adopted: "
                        "'A recipe with long layouts'); long-branch: long-30 asking four questions a "
                        "stage-3 clip in branches over one pass of its visual tokens, committed 2026-12-04 to 12-05 "
                        "('Branched questions'); saturated, saturated-all: outline with the colour (all) "
                        "slot units made clamps after stage 3, not adopted ('Saturated slots'); long-sparse: "
                        "long-branch with objects on screen in part of a clip half the time, the span's length "
                        "log-uniform; long-grey: long-branch with a fourth, achromatic background kind (both "
                        "'An object in one frame'); learnt: long-branch with the slot read-out learnt by Adam, "
                        "not fitted in closed form, committed on 2026-12-05 ('A learnt read-out'); "
                        "learnt-lead: learnt with the answer's word before the key weighted like the key, not "
                        "adopted ('Leading to the word'); lead-cosine: learnt-lead with the codebook's "
                        "learning rate warmed up and decayed along a cosine in both LM stages, committed on "
                        "2026-12-05 ('A settled codebook'); lead-range: lead-cosine with half the clips "
                        "anti-aliased and coloured from each colour name's range ('Colour names, not colour "
                        "values'); range-readout: the same drawings in the slot read-out's fit alone ('The "
                        "range in the read-out alone'); pooled: lead-cosine with a three-layer tower that pools "
                        "each object's shape over its patches and makes it one-hot, committed since 2026-12-06 "
                        "('A tower that pools shape')")
    t.add_argument("--verify", action="store_true",
                   help="instead: repeat the training of the --out folder (its log's seed, budget, threads and "
                        "recipe) and compare the weights; writes reproducibility.json and the model card")
    t.add_argument("--verify-against", metavar="FOLDER",
                   help="--verify: compare with this already-trained weights folder instead of training")
    t.set_defaults(func=cmd_train_vision)
    h = sub.add_parser("heldout", help="held-out colour and shape accuracy of a model, through the pipeline",
                       description="Held-out scenes (new seeds, unseen backgrounds) written as videos and answered "
                                   "by full and mlb at 1, 20 and 50 frames.")
    h.add_argument("--model", default="embedded")
    h.add_argument("--out", help="write the metrics as JSON here")
    h.add_argument("--scale", type=float, default=1.0, help="multiply the number of clips per condition")
    h.add_argument("--seed", type=int, default=0)
    h.add_argument("--ideal", action="store_true",
                   help="instead: what the frozen LM reads from ideal visual tokens (the training's targets, "
                        "made of its own word embeddings), teacher-forced, no vision tower (mlb_core/train/ceiling.py)")
    h.add_argument("--slots", action="store_true",
                   help="instead: read the trained tower's colour and shape slots per held-out object (one frame, "
                        "no LM): is it the tower or the LM that fails? (mlb_core/train/ceiling.py)")
    h.add_argument("--min-cover", type=float,
                   help="--slots: average the patches an object covers by at least this share (default: 0.05 "
                        "for weights trained with outline shape targets, whose shape lives on partly covered "
                        "patches, else 0.5)")
    h.add_argument("--ideal-scale", type=float, default=1.0, help="--ideal: multiply the object vectors")
    h.add_argument("--ideal-background", type=float, default=1.0, help="--ideal: multiply the background vector")
    h.add_argument("--ideal-shape-scale", type=float, help="--ideal: multiply the shape vectors alone (default: "
                                                              "--ideal-scale; 0: the colour word alone)")
    h.add_argument("--ideal-codebook", default="words",
                   help="--ideal: 'words' (the LM's word embeddings), 'learned' (the committed weights' "
                        "codebook.safetensors, the training's actual targets) or a codebook file")
    h.add_argument("--ideal-objects", type=int, default=1, choices=[1, 2],
                   help="--ideal: objects a clip; 2: each asked its colour and shape, and how often the other "
                        "object's is named (does the LM bind them, from ideal tokens?)")
    h.add_argument("--ideal-tower", action="store_true",
                   help="--ideal: on the same clips and questions, the model's own tokens (each clip drawn, "
                        "through its tower and projector), teacher-forced: the tower's share of a miss")
    h.add_argument("--ideal-swap", choices=["colour", "shape", "background", "all", "shape-pooled"],
                   help="--ideal --ideal-tower: set this group of the tower's slots to the training's targets "
                        "(which slots cause a miss); shape-pooled: point each patch's shape slots at the average "
                        "over its object's patches, found by the tower's own colour slots (is shape lost in "
                        "the LM's reading of scattered patches?)")
    h.add_argument("--ideal-layouts",
                   help="--ideal: comma-separated layouts to read, e.g. raw1x8,bodytail3x50 (default: raw1x1 and "
                        "mlb's bodytail3x20); FAMILY CELLxFRAMES, FAMILY one of raw, pool, bodytail")
    h.add_argument("--ideal-shape-target", choices=["coverage", "outline"],
                   help="--ideal: where the shape vector sits (default: the recipe of the codebook's training "
                        "log, beside it; coverage for 'words')")
    h.add_argument("--curve", action="store_true",
                   help="the length curve instead: the same clips through full at 1-14 frames and mlb at 5-50 "
                        "(sight.length_conditions); with --out, also its figure (the same name, .png)")
    h.add_argument("--redrawn", action="store_true",
                   help="the probe's words drawn another way instead: PIL, anti-aliased, 640 x 480, four colour "
                        "conventions, libx264 CRF 23, through full on one frame and mlb at 20 "
                        "(sight.redrawn_conditions, mlb_core/train/redrawn.py)")
    h.add_argument("--redrawn-key", type=int, metavar="N",
                   help="--redrawn: the scenes' seed key (default 200, the stage heldout_redrawn's); another key "
                        "draws other scenes, never seen by the stage")
    h.add_argument("--binding", action="store_true",
                   help="two objects a clip instead, each asked its colour and shape: is the other object's "
                        "colour (shape) named? full on one frame and mlb at 20 (sight.binding_conditions)")
    h.add_argument("--sparse", action="store_true",
                   help="an object in one frame of ten instead: clip k shows it in frame k mod 10 only, through "
                        "full and mlb on the same clips (sight.sparse_conditions)")
    h.add_argument("--grey", action="store_true",
                   help="achromatic backgrounds instead (a plain grey or a grey gradient): full on one frame and "
                        "mlb with the object in one frame of ten (sight.grey_conditions)")
    h.add_argument("--grey-band", action="store_true",
                   help="an object in one frame of ten on a grey gradient crossing the image processor's mean "
                        "instead, through full and mlb on the same clips (sight.grey_band_conditions)")
    h.add_argument("--conditions", help="comma list of conditions to run (default: all): single_full, clip20_mlb, "
                                        "clip20_full, clip50_mlb, clip50_full; with --curve, curve_full_F and "
                                        "curve_mlb_F; with --redrawn, redrawn_CONVENTION_full1 and _mlb20; with "
                                        "--binding, binding_full1 and binding_mlb20; with --sparse, sparse10_full "
                                        "and sparse10_mlb; with --grey, grey1_full and grey10_mlb; with --grey-band, "
                                        "greyband10_full and greyband10_mlb")
    h.add_argument("--questions", default="train", choices=["train", "paraphrase"],
                   help="train: the training's wording; paraphrase: eight wordings it never saw (sight.PARAPHRASES)")
    h.add_argument("--rescore", nargs="+", metavar="RESULT",
                   help="instead: judge the answers saved in these results (--out files) again, by the first "
                        "colour/shape word and by the strict judge (that word and no other of its kind); "
                        "no model runs")
    h.add_argument("-q", "--quiet", action="store_true")
    h.set_defaults(func=cmd_heldout)
