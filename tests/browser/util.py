"""Helpers for the real-browser tests and scripts/screenshots.py: start the app, find its pages,
drive Debian's chromium through Playwright and wait until Streamlit is idle.

Plain functions (no pytest import), so the screenshot script can use them too.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags chromium keeps dialling out, which this machine refuses.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
MISSING_CHROMIUM = (f"Debian's chromium is missing at {CHROMIUM}; the browser tests need it. "
                    "Install it with `apt-get install chromium` (make test does this when run as root).")
VIEWPORT = {"width": 1400, "height": 900}


@dataclass(frozen=True)
class AppPage:
    """One page of the app: `name` for files and logs, `url_path` after the server root."""

    name: str
    url_path: str     # "" for the landing page
    label: str        # what the page is called in the navigation, e.g. "Group size sweep"
    script: Path


def app_pages(root: Path = ROOT) -> list[AppPage]:
    """The landing page, then every page under pages/ in navigation order.

    Uses Streamlit's own rules for the classic pages/ folder, so a new file there is a new page here.
    """
    from streamlit.source_util import page_icon_and_name, page_sort_key

    pages = [AppPage("landing", "", "", root / "app.py")]
    scripts = sorted((p for p in (root / "pages").glob("*.py")
                      if not p.name.startswith(".") and p.name != "__init__.py"), key=page_sort_key)
    for script in scripts:
        _, url_name = page_icon_and_name(script)
        pages.append(AppPage(url_name, url_name, url_name.replace("_", " "), script))
    return pages


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(port: int, root: Path = ROOT, log_path: Path | None = None,
              timeout: float = 90.0) -> subprocess.Popen:
    """Start `streamlit run app.py` in its own process group; return once /_stcore/health answers."""
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
           "--server.headless", "true", "--server.address", "127.0.0.1",
           "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)   # any test may run first, or alone
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, cwd=root, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/_stcore/health"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {proc.returncode} before it was healthy"
                               + (f"; see {log_path}" if log_path else ""))
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return proc
        except OSError:
            pass
        time.sleep(0.3)
    stop_app(proc)
    raise RuntimeError(f"streamlit did not answer {url} within {timeout:.0f} s")


def stop_app(proc: subprocess.Popen) -> None:
    """End the server and anything it started (its whole process group)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


# The app root carries Streamlit's script state; the status widget shows "Running..." during a run.
_IDLE_JS = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  return !!app
    && app.getAttribute('data-test-connection-state') === 'CONNECTED'
    && app.getAttribute('data-test-script-state') === 'notRunning'
    && !document.querySelector('[data-testid="stStatusWidget"]')
    && !!document.querySelector('[data-testid="stMainBlockContainer"] [data-testid="stElementContainer"]');
}"""


def wait_idle(page, timeout: float = 120.0, stable: float = 1.5, since: float | None = None) -> float:
    """Wait until the script has finished and stayed finished for `stable` seconds.

    Returns the seconds from `since` (default: now) until it went idle, without the stable period.
    Raises TimeoutError naming the last state seen.
    """
    start = time.monotonic() if since is None else since
    idle_since = None
    while True:
        now = time.monotonic()
        if page.evaluate(_IDLE_JS):
            idle_since = idle_since or now
            if now - idle_since >= stable:
                return idle_since - start
        else:
            idle_since = None
        if now - start > timeout:
            state = page.evaluate("""() => {
              const app = document.querySelector('[data-testid="stApp"]');
              return app ? app.getAttribute('data-test-connection-state') + '/'
                           + app.getAttribute('data-test-script-state') : 'no stApp'; }""")
            raise TimeoutError(f"Streamlit not idle after {timeout:.0f} s (state {state})")
        page.wait_for_timeout(200)


# Count vega charts whose canvas (or svg) has something drawn on it, not just an empty frame.
_DRAWN_CHARTS_JS = """() => {
  let drawn = 0;
  for (const chart of document.querySelectorAll('[data-testid="stVegaLiteChart"]')) {
    const canvas = chart.querySelector('canvas');
    const svg = chart.querySelector('svg.marks, .vega-embed svg');
    if (canvas && canvas.width > 0 && canvas.height > 0) {
      const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
      let painted = 0;
      for (let i = 3; i < data.length; i += 4) if (data[i] > 0) painted++;
      if (painted > 100) drawn++;
    } else if (svg && svg.querySelectorAll('path, rect, line, circle, text').length > 0) {
      drawn++;
    }
  }
  return drawn;
}"""


def drawn_charts(page) -> int:
    return page.evaluate(_DRAWN_CHARTS_JS)


def wait_for_drawn_charts(page, n: int, timeout: float = 60.0) -> None:
    """Wait (polling in the browser, no fixed sleep) until at least n charts are painted."""
    try:
        page.wait_for_function(f"() => ({_DRAWN_CHARTS_JS})() >= {n}", timeout=timeout * 1000)
    except Exception as exc:
        total = page.locator('[data-testid="stVegaLiteChart"]').count()
        raise AssertionError(f"{drawn_charts(page)} of {total} charts painted after {timeout:.0f} s; "
                             f"waited for {n}") from exc


def open_page(browser, base_url: str, app_page: AppPage, errors: list | None = None,
              timeout: float = 120.0):
    """Open a new context and go straight to the page's URL; return (context, page, seconds to idle).

    Uncaught JavaScript errors of the page are appended to `errors` when given.
    """
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    if errors is not None:
        page.on("pageerror", lambda exc: errors.append(str(exc)))
    start = time.monotonic()
    page.goto(f"{base_url}/{app_page.url_path}", wait_until="domcontentloaded")
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout * 1000)
    return context, page, wait_idle(page, timeout=timeout, since=start)


def full_page_screenshot(page, path) -> None:
    """Streamlit scrolls inside its own container, so grow the viewport to the content first."""
    height = page.evaluate("""() => Math.max(...[document.body,
        document.querySelector('[data-testid="stMain"]'),
        document.querySelector('[data-testid="stAppViewContainer"]'),
        document.querySelector('[data-testid="stMainBlockContainer"]')]
        .filter(Boolean).map(e => e.scrollHeight))""")
    width = page.viewport_size["width"]
    page.set_viewport_size({"width": width, "height": min(max(int(height) + 80, 900), 12000)})
    page.wait_for_timeout(800)  # charts re-layout to the new size
    page.screenshot(path=str(path), full_page=True)
