"""Every page of the running app, opened by its own URL in Debian's chromium.

For each page (found from pages/, so a new page is covered without editing this file): the deep link
is the first navigation of a new browser context; the page must finish its script run, show no
exception, show its own title (not fall back to the landing page) and, if it draws charts, have at
least one chart actually painted. A full-page screenshot goes to test-output/screens/<page>.png.
"""
from __future__ import annotations

import re

import pytest

from playwright.sync_api import expect

from .conftest import OUT, SCREENS, chromium_missing
from .util import (MISSING_CHROMIUM, ROOT, app_pages, free_port, full_page_screenshot, open_page, start_app,
                   stop_app, wait_for_drawn_charts)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PAGES = app_pages()
# A page whose script calls something named *chart* (st.line_chart, ui.band_chart, ...) must draw one.
CHART_CALL = re.compile(r"\b\w*chart\w*\s*\(")


def test_chromium_is_installed():
    assert not chromium_missing(), MISSING_CHROMIUM


def test_pages_found():
    names = [p.name for p in PAGES]
    assert names[0] == "landing" and (ROOT / "app.py").is_file() and len(names) > 1
    assert len(names) == len(set(names)), f"two pages share a URL: {names}"


def heading(page) -> str:
    """Text of the page's first top-level heading (st.title)."""
    h1 = page.locator('[data-testid="stMain"] h1').first
    return h1.inner_text().strip() if h1.count() else ""


def active_nav_href(page) -> str:
    link = page.locator('[data-testid="stSidebarNavLink"][aria-current="page"]')
    return (link.first.get_attribute("href") or "") if link.count() else ""


@pytest.mark.parametrize("app_page", PAGES, ids=[p.name for p in PAGES])
def test_page_by_deep_link(app_page, browser, base_url, capsys):
    check_page(browser, base_url, app_page, capsys, SCREENS / f"{app_page.name}.png")


def test_deep_link_on_cold_server(browser, capsys):
    """The last page opened as the very first request of a new server: nothing cached, no page
    visited before (the other tests share one server, whose caches they warm)."""
    app_page = PAGES[-1]
    port = free_port()
    proc = start_app(port, log_path=OUT / "streamlit-cold-server.log")
    try:
        check_page(browser, f"http://127.0.0.1:{port}", app_page, capsys, None, "cold server")
    finally:
        stop_app(proc)


def check_page(browser, base_url, app_page, capsys, screenshot, note="") -> None:
    errors: list[str] = []
    context = None
    try:
        context, page, seconds = open_page(browser, base_url, app_page, errors)
        with capsys.disabled():
            print(f"\n[browser] /{app_page.url_path}{f' ({note})' if note else ''}: "
                  f"{seconds:.1f} s from navigation to idle")
        if screenshot:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            full_page_screenshot(page, screenshot)

        exceptions = page.locator('[data-testid="stException"]')
        assert exceptions.count() == 0, exceptions.first.inner_text()
        body = page.locator('[data-testid="stMain"]').inner_text()
        assert "Traceback" not in body
        assert "Page not found" not in page.content()
        assert not errors, f"uncaught errors in the browser: {errors}"

        title = heading(page)
        assert title, f"/{app_page.url_path} shows no title (h1)"
        if app_page.url_path:
            # The router picked this page, and what it shows is this page, not the landing page.
            if page.locator('[data-testid="stSidebarNavLink"]').count():
                assert active_nav_href(page).rstrip("/").endswith("/" + app_page.url_path)
            wanted = app_page.label.lower().replace("-", " ")
            assert wanted in title.lower().replace("-", " "), (title, app_page.label)
            assert title != landing_heading(browser, base_url)

        if CHART_CALL.search(app_page.script.read_text()):
            wait_for_drawn_charts(page, 1)       # fails with a timeout if the page draws no chart
    finally:
        if context:
            context.close()


def test_sidebar_lists_home_first_and_links_every_page(browser, base_url):
    """The navigation is drawn by the app from one list: the landing page is "Home", not "app"."""
    context, page, _ = open_page(browser, base_url, PAGES[1])
    try:
        sidebar = page.locator('[data-testid="stSidebar"]')
        links = sidebar.locator('[data-testid="stPageLink-NavLink"]')
        expect(links).to_have_count(len(PAGES))
        expect(links.first).to_contain_text("Home")
        expect(sidebar.get_by_text("app", exact=True)).to_have_count(0)
        expect(page.locator('[data-testid="stSidebarNav"]')).to_have_count(0)   # Streamlit's own list is off
        links.first.click()
        expect(page.locator('[data-testid="stMain"] h1').first).to_have_text("The GRPO explorer")
        expect(page).to_have_url(re.compile(r":\d+/?$"))
    finally:
        context.close()


_landing: dict[str, str] = {}


def landing_heading(browser, base_url) -> str:
    """The landing page's title, read once per test run (in its own context, after the page under test)."""
    if "title" not in _landing:
        context, page, _ = open_page(browser, base_url, PAGES[0])
        try:
            _landing["title"] = heading(page)
        finally:
            context.close()
    return _landing["title"]
