"""The browser tests' fixtures: one app server and one headless chromium per test module."""
from __future__ import annotations

import os

import pytest

from .util import CHROMIUM, MISSING_CHROMIUM, ROOT, free_port, launch_chromium, start_app, stop_app

OUT = ROOT / "test-output"
SCREENS = OUT / "screens"


def chromium_missing() -> bool:
    return not os.access(CHROMIUM, os.X_OK)


@pytest.fixture(scope="module")
def base_url():
    OUT.mkdir(exist_ok=True)
    port = free_port()
    proc = start_app(port, log_path=OUT / "streamlit-browser-test.log")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_app(proc)


@pytest.fixture(scope="module")
def browser():
    if chromium_missing():
        pytest.fail(MISSING_CHROMIUM)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            yield browser
        finally:
            browser.close()
