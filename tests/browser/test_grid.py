"""The Hyperparameter map page in Debian's chromium: the default map is drawn, clicking a cell opens
that configuration on the GRPO page, and Stop keeps the page usable with the finished cells."""
from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest

from .util import ROOT, AppPage, drawn_charts, open_page, wait_idle

pytestmark = pytest.mark.browser

MAP = AppPage("Hyperparameter_map", "Hyperparameter_map", "Hyperparameter map",
              ROOT / "pages" / "15_Hyperparameter_map.py")


def test_default_map_and_a_click_on_a_cell(browser, base_url):
    from playwright.sync_api import expect

    context, page, _ = open_page(browser, base_url, MAP)
    try:
        expect(page.locator('[data-testid="stException"]')).to_have_count(0)
        expect(page.get_by_text("8 × 8 cells × 4 seeds = 256 runs")).to_be_visible()
        cells = page.locator('[data-testid="stVegaLiteChart"] g.mark-rect path')
        expect(cells.first).to_be_visible()
        assert drawn_charts(page) == 1
        cells.nth(10).click()
        page.wait_for_url(re.compile(r"/GRPO\?"))
        query = {k: v[0] for k, v in parse_qs(urlsplit(page.url).query).items()}
        assert query["grpo_seeds"] == "4" and query["grpo_iterations"] == "300"
        assert {"grpo_lr", "grpo_kl_coef"} & set(query)       # the cell's settings (when not default)
        wait_idle(page)
        expect(page.locator("h1").first).to_have_text("GRPO on the learned reward model")
        expect(page.locator('[data-testid="stException"]')).to_have_count(0)
        # the page took the cell's settings without correcting them
        expect(page.get_by_text("is not one of the slider's values")).to_have_count(0)
    finally:
        context.close()


def test_stop_keeps_the_page_usable(browser, base_url):
    from playwright.sync_api import expect

    context, page, _ = open_page(browser, base_url, MAP)
    try:
        iterations = page.locator('[data-testid="stSidebar"]').get_by_label("iterations", exact=True)
        iterations.fill("3000")         # 256 runs x 3000 iterations: long enough to stop
        iterations.press("Enter")
        stop = page.get_by_role("button", name="Stop")
        expect(stop).to_be_visible()
        stop.click()
        expect(page.get_by_text("You stopped this map")).to_be_visible(timeout=60_000)
        expect(page.get_by_role("button", name="Train the rest")).to_be_visible()
        expect(page.locator('[data-testid="stException"]')).to_have_count(0)
    finally:
        context.close()
