"""The explorer as a reader meets it: JupyterLab on a loopback port, notebooks/explore.ipynb in headless
Chromium (Playwright driving the system's Chromium), run all cells, ask a question in the widget, and
check that the attention overlay and an answer appear. ``make browser-test`` runs it (CI too); the
screenshot and the measured seconds land in ``test-artifacts/``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("MLB_TEST_ARTIFACTS", ROOT / "test-artifacts"))


def chromium() -> str:
    """The system's Chromium (``MLB_CHROMIUM`` overrides); `make browser-test` installs Debian's."""
    for name in (os.environ.get("MLB_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)  # type: ignore[return-value]
    pytest.fail("no Chromium found: `make browser-test` installs Debian's chromium, or set MLB_CHROMIUM")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 with a random token, serving the repository."""
    port, token = free_port(), secrets.token_hex(16)
    home = tmp_path_factory.mktemp("lab")
    settings = home / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')  # no news prompt
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"), "MPLBACKEND": "Agg"}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={ROOT}", "--ServerApp.open_browser=False",
           "--LabApp.news_url=", *(["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []),
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    log = open(home / "lab.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy
    try:
        for _ in range(120):
            try:
                with opener.open(f"{url}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited: {(home / 'lab.log').read_text()[-2000:]}")
        else:
            pytest.fail("JupyterLab did not answer within 60 s")
        yield url, token
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_explorer_answers_in_a_real_browser(lab):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    url, token = lab
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), headless=True,
                                    args=["--no-proxy-server", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 2200})
        try:
            page.goto(f"{url}/lab/tree/notebooks/explore.ipynb?token={token}", timeout=120_000)
            page.locator(".jp-Notebook").wait_for(timeout=120_000)
            select = page.get_by_role("button", name="Select", exact=True)
            try:  # JupyterLab may ask which kernel to start, the notebook's own being preselected
                select.wait_for(timeout=15_000)
                select.click()
            except PlaywrightTimeout:
                pass
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_text("Run All Cells", exact=True).click()
            question = page.locator(".mlb-question input")
            question.wait_for(timeout=180_000)
            t0 = time.perf_counter()
            question.fill("What colour is the rabbit?")
            question.press("Enter")
            answers = page.locator("table.mlb-answers")
            answers.wait_for(timeout=300_000)
            first = time.perf_counter() - t0
            page.wait_for_function("() => [...document.querySelectorAll('img.mlb-attention-image, img.mlb-kept-image')]"
                                   ".filter(i => i.naturalWidth > 100).length === 2", timeout=60_000)
            rows = answers.locator("tbody tr")
            assert rows.count() == 2, answers.inner_html()
            assert "mlb" in rows.nth(0).inner_text()
            assert "error" not in page.locator(".mlb-status").inner_text().lower()
            height = "() => document.querySelector('img.mlb-kept-image').naturalHeight"
            two_rows = page.evaluate(height)
            # a second question about the same (already encoded) clip, one method
            page.locator(".mlb-methods select").select_option(["mlb"])
            t1 = time.perf_counter()
            question.fill("What happens at the end of the video?")
            question.press("Enter")
            page.wait_for_function("() => document.querySelectorAll('table.mlb-answers tbody tr').length === 1",
                                   timeout=120_000)
            second = time.perf_counter() - t1
            assert page.evaluate(height) < two_rows, "the kept overlay shows the one method now chosen"
            for name in ("attention-image", "kept-image"):  # the overlays themselves, scrolled into view
                page.locator(f"img.mlb-{name}").screenshot(path=str(ARTIFACTS / f"explore_{name}.png"))
        finally:
            page.screenshot(path=str(ARTIFACTS / "explore_browser.png"), full_page=True)
            browser.close()
    (ARTIFACTS / "explore_browser.json").write_text(json.dumps(
        {"first_question_s (model load + encode + 2 methods)": round(first, 1),
         "second_question_s (encoded clip, mlb)": round(second, 1)}, indent=1) + "\n")
