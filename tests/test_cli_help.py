"""Every `mlb` command's --help renders (argparse expands '%' in help strings only when asked,
so a stray '%' breaks a command's help and nothing else)."""

from __future__ import annotations

import argparse

from mlb_core.cli import build_parser


def _parsers(parser: argparse.ArgumentParser, name: str = "mlb"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_every_command_help_renders():
    seen = []
    for name, parser in _parsers(build_parser()):
        text = parser.format_help()
        assert text.startswith("usage:"), name
        seen.append(name)
    assert {"mlb train-vision", "mlb heldout", "mlb probe", "mlb answer"} <= set(seen)
