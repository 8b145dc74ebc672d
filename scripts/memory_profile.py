"""The app's memory after every page has been visited, and whether any request leaves the machine.

Starts the app on a free loopback port, opens every page by its URL (one after another, each in a
fresh browser context, waiting until Streamlit is idle), then reports the server's resident
memory (its whole process tree) and every request the browser made to a host other than the
app's. This is the figure the README's "Deploy to Streamlit Community Cloud" section quotes.

    .venv/bin/python scripts/memory_profile.py
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
from tests.browser.util import (VIEWPORT, app_pages, free_port, launch_chromium, start_app,  # noqa: E402
                          stop_app, wait_idle)


def _leaves(url: str) -> bool:
    """A request to a host other than this machine (data: and blob: URLs stay in the browser)."""
    parsed = urlparse(url)
    return parsed.scheme in ("http", "https", "ws", "wss") and parsed.hostname not in ("127.0.0.1", "localhost")


def tree_rss_mb(pid: int) -> float:
    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


def main() -> int:
    from playwright.sync_api import sync_playwright

    port = free_port()
    server = start_app(port)
    base = f"http://127.0.0.1:{port}"
    outside: list[str] = []
    try:
        print(f"server started: {tree_rss_mb(server.pid):.0f} MiB")
        with sync_playwright() as pw:
            browser = launch_chromium(pw)
            for app_page in app_pages():
                context = browser.new_context(viewport=VIEWPORT)
                context.on("request", lambda req: outside.append(req.url) if _leaves(req.url) else None)
                page = context.new_page()
                start = time.monotonic()
                page.goto(f"{base}/{app_page.url_path}", wait_until="domcontentloaded")
                page.wait_for_selector('[data-testid="stApp"]', timeout=120_000)
                seconds = wait_idle(page, timeout=180, since=start)
                print(f"/{app_page.url_path:<20s} idle after {seconds:5.1f} s   "
                      f"server {tree_rss_mb(server.pid):6.0f} MiB")
                context.close()
            browser.close()
        print(f"after every page: {tree_rss_mb(server.pid):.0f} MiB resident (server process tree)")
        print(f"requests to other hosts: {len(outside)}" + "".join(f"\n  {u}" for u in outside[:20]))
    finally:
        stop_app(server)
    return 1 if outside else 0


if __name__ == "__main__":
    sys.exit(main())
