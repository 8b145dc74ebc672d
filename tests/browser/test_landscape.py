"""The Landscape page in Debian's chromium: its defaults, a shared link's settings opened as the
first visit of a new browser (the result not trained before on this server), and a hand-edited
link with bad values, which gets a notice naming each one instead of a traceback.

Every wait is Playwright's auto-waiting expect(...) or a polled condition, never a fixed sleep.
Screenshots: test-output/screens/landscape_*.png.
"""
from __future__ import annotations

import dataclasses

import pytest
from playwright.sync_api import expect

from .util import app_pages, full_page_screenshot, open_page, wait_for_drawn_charts
from .conftest import SCREENS

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PAGE = next(p for p in app_pages() if p.name == "Landscape")
# Methods by their plain names, as someone writes a link by hand; the page shows their labels.
DEEP_LINK = ("?land_methods=ppo&land_methods=rlvr&land_methods=ppo_rlvr&land_methods=dpo"
             "&land_responses=1000&land_seeds=2")
SHOWN = ["PPO (RLHF)", "GRPO + RLVR", "PPO + RLVR", "DPO"]


def open_landscape(browser, base_url, query: str, capsys, note: str):
    errors: list[str] = []
    context, page, seconds = open_page(browser, base_url, dataclasses.replace(PAGE, url_path=PAGE.url_path + query),
                                       errors)
    with capsys.disabled():
        print(f"\n[browser] /{PAGE.url_path}{query} ({note}): {seconds:.1f} s from navigation to idle")
    return context, page, errors


def no_exception(page, errors) -> None:
    main = page.locator('[data-testid="stMain"]')
    expect(main.locator('[data-testid="stException"]')).to_have_count(0)
    expect(main).not_to_contain_text("Traceback")
    assert not errors, f"uncaught errors in the browser: {errors}"


def expect_chosen(page, labels: list[str]) -> None:
    """The sidebar's methods box shows exactly these methods, in this order."""
    tags = page.locator('[data-testid="stSidebar"] [data-testid="stMultiSelect"] '
                        '[data-testid="stMultiSelectTagsContainer"] [data-tag]')
    expect(tags).to_have_count(len(labels))
    for i, label in enumerate(labels):
        expect(tags.nth(i)).to_have_attribute("aria-label", label)


def expect_page_drawn(page, n_charts: int) -> None:
    """The measured table, the when-to-use table, the KL placements and every chart painted."""
    main = page.locator('[data-testid="stMain"]')
    expect(main.locator("h1").first).to_have_text("The landscape of methods")
    expect(main.locator('[data-testid="stDataFrame"]')).to_have_count(2)   # what methods reach, and need
    expect(main.locator('[data-testid="stTable"]')).to_have_count(2)       # when to use what, KL placements
    expect(main.locator('[data-testid="stVegaLiteChart"]')).to_have_count(n_charts)
    wait_for_drawn_charts(page, n_charts)
    # every column of both tables in view, none behind a horizontal scroll (the grid's scroller)
    page.wait_for_function("""() => {
        const grids = [...document.querySelectorAll('[data-testid="stMain"] [data-testid="stDataFrame"] .dvn-scroller')];
        return grids.length === 2 && grids.every(g => g.clientWidth > 0 && g.scrollWidth <= g.clientWidth + 1);
    }""", timeout=30_000)


def test_defaults_draw_every_when_to_use_row(browser, base_url, capsys):
    context, page, errors = open_landscape(browser, base_url, "", capsys, "defaults")
    try:
        no_exception(page, errors)
        expect_chosen(page, ["PPO (RLHF)", "GRPO", "GRPO + RLVR", "PPO + RLVR", "DPO"])
        expect_page_drawn(page, 5)               # 2 curves, 2 DPO curves, the (KL, true reward) plane
        when = page.locator('[data-testid="stTable"]').first
        for measured in ("On the same pairs", "On the same verifier, GRPO + RLVR ends at",
                         "reaches 90% of its final gain first", "PPO ends at"):
            expect(when).to_contain_text(measured)
        expect(when).not_to_contain_text("to measure this")    # the defaults measure every row
        full_page_screenshot(page, SCREENS / "landscape_defaults.png")
    finally:
        context.close()


def test_shared_link_on_a_new_browser_trains_and_draws_its_settings(browser, base_url, capsys):
    context, page, errors = open_landscape(browser, base_url, DEEP_LINK, capsys, "new browser, new result")
    try:
        no_exception(page, errors)
        main = page.locator('[data-testid="stMain"]')
        expect(main.locator('[data-testid="stAlert"]').filter(has_text="URL setting")).to_have_count(0)
        expect_chosen(page, SHOWN)
        expect(main.get_by_text("2 seeds per method.", exact=False)).to_be_visible()
        expect_page_drawn(page, 5)
        expect(page.locator('[data-testid="stTable"]').first).to_contain_text("On the same verifier, GRPO + RLVR ends at")
        full_page_screenshot(page, SCREENS / "landscape_deep_link.png")
    finally:
        context.close()


def test_bad_values_in_a_hand_edited_link_get_a_notice(browser, base_url, capsys):
    query = "?land_methods=grpo&land_methods=bogus&land_seeds=abc&land_responses=1234"
    context, page, errors = open_landscape(browser, base_url, query, capsys, "bad values")
    try:
        no_exception(page, errors)
        notice = page.locator('[data-testid="stMain"] [data-testid="stAlert"]').filter(has_text="URL setting")
        expect(notice).to_contain_text("URL setting land_methods=grpo,bogus has values that are not among")
        expect(notice).to_contain_text("URL setting land_seeds=abc is not a number: using the default 8.")
        expect(notice).to_contain_text("land_responses=1234 is not one of the slider's values: using the "
                                       "nearest, 1,000.")
        expect_chosen(page, ["GRPO"])                           # the valid method kept
        expect_page_drawn(page, 3)                              # GRPO's 2 curves and the plane
        expect(page.locator('[data-testid="stMain"]').get_by_text("8 seeds per method.", exact=False)).to_be_visible()
        full_page_screenshot(page, SCREENS / "landscape_bad_link.png")
    finally:
        context.close()
