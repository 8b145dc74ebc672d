"""Regenerate the README images: one full-page screenshot per app page into docs/img/.

    make screenshots                                   # starts the app on a free port, then stops it
    .venv/bin/python scripts/screenshots.py --url http://localhost:8501   # use a running app

Needs Debian's chromium at /usr/bin/chromium (apt-get install chromium).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.browser.util import (CHROMIUM, MISSING_CHROMIUM, ROOT, app_pages, free_port,  # noqa: E402
                          full_page_screenshot, launch_chromium, open_page, start_app, stop_app)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="base URL of a running app (default: start one)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img", help="output folder")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait per page")
    args = parser.parse_args(argv)
    if not os.access(CHROMIUM, os.X_OK):
        print(MISSING_CHROMIUM, file=sys.stderr)
        return 1

    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    proc = None
    base_url = args.url.rstrip("/") if args.url else None
    if base_url is None:
        port = free_port()
        proc = start_app(port)
        base_url = f"http://127.0.0.1:{port}"
    try:
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            for app_page in app_pages():
                context, page, seconds = open_page(browser, base_url, app_page, timeout=args.timeout)
                path = args.out / f"{app_page.name.lower()}.png"
                full_page_screenshot(page, path)
                context.close()
                print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}"
                      f"  (/{app_page.url_path}, idle after {seconds:.1f} s)")
            browser.close()
    finally:
        if proc is not None:
            stop_app(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
