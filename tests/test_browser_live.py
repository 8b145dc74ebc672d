"""The explorer as people use it, in Debian's chromium: a shared link restores its settings, live
training advances while playing and stops when paused, presentation mode hides the controls.

Prints the time from clicking Play to the first live chart. Screenshots: test-output/screens/live_*.png.
"""
from __future__ import annotations

import re
import time

import pytest

from browser_util import drawn_charts, full_page_screenshot, wait_idle, VIEWPORT
from test_browser import SCREENS, base_url, browser  # noqa: F401  (shared server and browser fixtures)

pytestmark = pytest.mark.browser


def open_url(browser, url: str):
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_selector('[data-testid="stApp"]', timeout=120_000)
    wait_idle(page)
    return context, page, errors


def no_exception(page, errors) -> None:
    exceptions = page.locator('[data-testid="stException"]')
    assert exceptions.count() == 0, exceptions.first.inner_text()
    assert not errors, errors


def live_iteration(page) -> int:
    text = page.locator('[data-testid="stMarkdownContainer"]', has_text="Live iteration").first.inner_text()
    return int(re.search(r"Live iteration (\d+) of", text).group(1))


def slider_value(container, label: str) -> str:
    slider = container.locator('[data-testid="stSlider"]').filter(
        has=container.page.get_by_text(label, exact=True))
    return slider.locator('[data-testid="stSliderThumbValue"]').first.inner_text().strip()


def test_shared_link_restores_its_settings(browser, base_url, capsys):
    url = f"{base_url}/GRPO?grpo_group_size=4&grpo_iterations=60&grpo_seeds=3&grpo_kl_coef=0.2"
    context, page, errors = open_url(browser, url)
    try:
        no_exception(page, errors)
        sidebar = page.locator('[data-testid="stSidebar"]')
        assert slider_value(sidebar, "group size G") == "4"
        assert slider_value(sidebar, "seeds") == "3"
        labels = page.locator('[data-testid="stMetricLabel"]').all_inner_texts()
        assert any("mean of 3" in label for label in labels)     # the result is of the linked runs
        link = page.locator('[data-testid="stCode"]').first.inner_text()
        assert "grpo_group_size=4" in link and "grpo_seeds=3" in link
        full_page_screenshot(page, SCREENS / "live_shared_link.png")
    finally:
        context.close()


def test_play_advances_and_pause_stops(browser, base_url, capsys):
    context, page, errors = open_url(browser, f"{base_url}/GRPO")     # the default GRPO run
    try:
        page.get_by_text("Watch it train").first.click()
        wait_idle(page)
        assert live_iteration(page) == 0
        charts_before = drawn_charts(page)
        start = time.monotonic()
        page.get_by_role("button", name=re.compile(r"\bPlay$")).click()
        # The live section adds four curves (true reward, RM reward, KL, entropy) once it has trained.
        while live_iteration(page) == 0 or drawn_charts(page) < charts_before + 4:
            assert time.monotonic() - start < 60, "Play did not draw the live charts within 60 s"
            page.wait_for_timeout(50)
        with capsys.disabled():
            print(f"\n[browser] click Play -> first live chart: {time.monotonic() - start:.2f} s")
        first = live_iteration(page)
        page.wait_for_timeout(1500)
        second = live_iteration(page)
        assert second > first, (first, second)
        page.screenshot(path=str(SCREENS / "live_playing.png"))
        page.get_by_role("button", name=re.compile(r"\bPause$")).click()
        page.wait_for_timeout(1200)
        paused = live_iteration(page)
        page.wait_for_timeout(1500)
        assert live_iteration(page) == paused
        assert paused < 500
        no_exception(page, errors)
    finally:
        context.close()


def test_presentation_mode_hides_the_controls(browser, base_url):
    context, page, errors = open_url(browser, f"{base_url}/GRPO?present=1&grpo_iterations=60&grpo_seeds=2")
    try:
        no_exception(page, errors)
        assert not page.locator('[data-testid="stSidebar"]').is_visible()
        assert page.get_by_role("button", name="✕ Exit presentation mode").is_visible()
        assert drawn_charts(page) >= 1
        page.screenshot(path=str(SCREENS / "live_present.png"))
        page.get_by_role("button", name="✕ Exit presentation mode").click()
        wait_idle(page)
        assert page.locator('[data-testid="stSidebar"]').is_visible()
    finally:
        context.close()
