"""The explorer as people use it, in Debian's chromium: a shared link restores its settings, live
training advances while playing and stops when paused, presentation mode hides the controls.

Every wait is Playwright's auto-waiting expect(...) or a polled condition, never a fixed sleep.
Screenshots: test-output/screens/live_*.png.
"""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from .util import VIEWPORT, drawn_charts, full_page_screenshot, wait_for_drawn_charts, wait_idle
from .conftest import SCREENS

pytestmark = [pytest.mark.browser, pytest.mark.slow]


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


def test_shared_link_restores_its_settings(browser, base_url):
    url = f"{base_url}/GRPO?grpo_group_size=4&grpo_iterations=60&grpo_seeds=3&grpo_kl_coef=0.2"
    context, page, errors = open_url(browser, url)
    try:
        no_exception(page, errors)
        sidebar = page.locator('[data-testid="stSidebar"]')
        assert slider_value(sidebar, "group size G") == "4"
        assert slider_value(sidebar, "seeds") == "3"
        labels = page.locator('[data-testid="stMetricLabel"]').all_inner_texts()
        assert any("mean of 3" in label for label in labels)     # the result is of the linked runs
        link = page.locator('[data-testid="stCode"]', has_text="http").first.inner_text()
        assert "grpo_group_size=4" in link and "grpo_seeds=3" in link
        full_page_screenshot(page, SCREENS / "live_shared_link.png")
    finally:
        context.close()


def live_status(page):
    return page.locator('[data-testid="stMarkdownContainer"]', has_text="Live iteration").first


def test_play_advances_and_pause_stops(browser, base_url):
    context, page, errors = open_url(browser, f"{base_url}/GRPO")     # the default GRPO run
    try:
        page.get_by_text("Watch it train").first.click()
        status = live_status(page)
        expect(status).to_contain_text("Live iteration 0 of", timeout=60_000)
        wait_idle(page)
        charts_before = drawn_charts(page)
        page.get_by_role("button", name=re.compile(r"\bPlay$")).click()
        expect(status).to_contain_text("playing", timeout=60_000)
        # The live section adds four curves (true reward, RM reward, KL, entropy) once it has trained.
        wait_for_drawn_charts(page, charts_before + 4)
        first = live_iteration(page)
        expect(status).not_to_contain_text(f"Live iteration {first} of", timeout=60_000)   # still going
        assert live_iteration(page) > first
        page.screenshot(path=str(SCREENS / "live_playing.png"))
        page.get_by_role("button", name=re.compile(r"\bPause$")).click()
        expect(status).to_contain_text("paused", timeout=60_000)
        wait_idle(page)                                   # no timer runs the panel again ...
        paused = live_iteration(page)
        assert paused < 500
        expect(status).to_contain_text(f"Live iteration {paused} of")
        page.get_by_role("button", name="Step", exact=True).click()  # ... and Step trains exactly one step
        expect(status).to_contain_text(f"Live iteration {paused + 10} of", timeout=60_000)
        expect(status).to_contain_text("paused")
        no_exception(page, errors)
    finally:
        context.close()


def test_presentation_mode_keeps_navigation_and_settings(browser, base_url):
    """Presentation mode starts with the sidebar closed, but a bar at the top moves between pages
    (staying in presentation mode) and the sidebar's arrow opens the settings; chart text is enlarged."""
    context, page, errors = open_url(browser, f"{base_url}/GRPO?present=1&grpo_iterations=60&grpo_seeds=2")
    try:
        no_exception(page, errors)
        sidebar = page.locator('[data-testid="stSidebar"]')
        leave = page.get_by_role("button", name="✕ Exit presentation mode")
        expect(leave).to_be_visible(timeout=60_000)
        expect(sidebar.get_by_text("GRPO settings")).not_to_be_in_viewport()      # closed at the start
        wait_for_drawn_charts(page, 1)
        spec_fonts = page.evaluate("""() => [...document.querySelectorAll('[data-testid="stVegaLiteChart"] text')]
            .map(t => parseFloat(getComputedStyle(t).fontSize) || parseFloat(t.getAttribute('font-size')) || 0)""")
        assert max(spec_fonts) >= 20, spec_fonts                                  # titles enlarged
        page.screenshot(path=str(SCREENS / "live_present.png"))
        page.locator('[data-testid="stExpandSidebarButton"]').first.click()       # the settings
        expect(sidebar.get_by_text("GRPO settings")).to_be_in_viewport(timeout=30_000)
        page.locator('[data-testid="stExpandSidebarButton"], [data-testid="stSidebarCollapseButton"] button').last.click()
        bar = page.locator('[data-testid="stMain"] [data-testid="stPageLink-NavLink"]', has_text="RLVR")
        bar.first.click()                                                         # another page, still presenting
        expect(page.locator('[data-testid="stMain"] h1').first).to_contain_text("RLVR", timeout=120_000)
        expect(page).to_have_url(re.compile(r"present=1"))
        expect(leave).to_be_visible(timeout=60_000)
        leave.click()
        expect(leave).to_have_count(0, timeout=120_000)      # the page has run again without it
    finally:
        context.close()


def test_share_link_after_quick_changes(browser, base_url):
    """Eight quick arrow presses on the group-size slider: once the page settles, the slider, the
    work caption and the share link all name the same G (the link was once a rerun behind)."""
    context, page, errors = open_url(browser, f"{base_url}/GRPO?grpo_iterations=40&grpo_seeds=2")
    try:
        sidebar = page.locator('[data-testid="stSidebar"]')
        before = int(slider_value(sidebar, "group size G"))
        thumb = sidebar.locator('[data-testid="stSlider"]').filter(
            has=page.get_by_text("group size G", exact=True)).get_by_role("slider")
        thumb.focus()
        for _ in range(8):
            thumb.press("ArrowRight")
        wanted = before + 8
        expect(page).to_have_url(re.compile(rf"grpo_group_size={wanted}\b"), timeout=60_000)
        wait_idle(page)
        assert slider_value(sidebar, "group size G") == str(wanted)
        link = page.locator('[data-testid="stCode"]', has_text="http").first
        expect(link).to_contain_text(f"grpo_group_size={wanted}", timeout=60_000)
        assert f"grpo_group_size={wanted - 1}" not in link.inner_text()
        no_exception(page, errors)
    finally:
        context.close()


def test_sequence_page_plays_to_the_end(browser, base_url):
    """The sequence page's live view, opened from a shared link with it on, in presentation mode:
    nothing is trained before Play; Play trains every seed to the end with the seven exact curves
    redrawn as it goes; then the finished runs appear below (from the store the live run went
    into) and the share link names the settings."""
    settings = "seq_iterations=60&seq_seeds=3&seq_loss_type=dr_grpo&seq_chunk=5&seq_watch=true"
    context, page, errors = open_url(browser, f"{base_url}/GRPO_on_sequences?present=1&{settings}")
    try:
        main = page.locator('[data-testid="stMain"]')
        status = live_status(page)
        expect(status).to_contain_text("Live iteration 0 of 60 · ready", timeout=60_000)
        expect(main.get_by_text("Every diagnostic of these runs appears here")).to_be_visible()
        assert page.locator('[data-testid="stVegaLiteChart"]').count() == 0     # the page waits for the live run
        page.get_by_role("button", name=re.compile(r"\bPlay$")).click()
        expect(status).to_contain_text("playing", timeout=60_000)
        wait_for_drawn_charts(page, 7)      # reward, length, | correct, | wrong, truncation, entropy, KL
        first = live_iteration(page)
        page.screenshot(path=str(SCREENS / "seq_live_playing.png"))
        expect(status).to_contain_text("Live iteration 60 of 60 · finished", timeout=180_000)
        assert first < 60
        expect(main.get_by_text("final P(correct) (mean of 3)")).to_be_visible(timeout=120_000)
        wait_idle(page)
        wait_for_drawn_charts(page, 7 + 7)    # the live curves, then the finished runs' curves
        # The batch diagnostics sit in a closed expander: open it as a reader would, then they paint too.
        page.get_by_text("Batch diagnostics: clipping, gradient direction").click()
        wait_for_drawn_charts(page, 7 + 13)
        expect(page.get_by_role("button", name=re.compile(r"\bPlay$"))).to_be_disabled()
        link = page.locator('[data-testid="stCode"]', has_text="http").first
        expect(link).to_contain_text("seq_loss_type=dr_grpo")
        expect(link).to_contain_text("present=1")
        full_page_screenshot(page, SCREENS / "seq_live_finished.png")
        no_exception(page, errors)
    finally:
        context.close()
