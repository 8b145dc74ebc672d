"""The sequence lab pages opened cold in Debian's chromium: each deep link is the very first request
of a new server (nothing cached, no page visited before), with and without settings in the URL.
The page must finish, show no exception, show its own title and paint its charts.
"""
from __future__ import annotations


import pytest
from playwright.sync_api import expect

from .util import ROOT, app_pages, free_port, open_page, start_app, stop_app
from .test_pages import check_page

pytestmark = [pytest.mark.browser, pytest.mark.slow]

OUT = ROOT / "test-output"
SEQ_PAGES = [p for p in app_pages() if p.script.name.split("_")[0] in ("10", "11", "12", "13")]


def test_sequence_pages_found():
    assert [p.name for p in SEQ_PAGES] == ["GRPO_on_sequences", "Length_bias", "Token_vs_sequence_ratios", "Entropy_collapse"]


@pytest.mark.parametrize("app_page", SEQ_PAGES, ids=[p.name for p in SEQ_PAGES])
def test_cold_deep_link(app_page, browser, capsys):
    OUT.mkdir(exist_ok=True)
    port = free_port()
    proc = start_app(port, log_path=OUT / f"streamlit-cold-{app_page.name}.log")
    try:
        check_page(browser, f"http://127.0.0.1:{port}", app_page, capsys,
                   OUT / "screens" / f"{app_page.name}_cold.png", "cold server")
        # The share link is this page's own URL (a page whose URL ended in another page's name,
        # e.g. /Sequence_GRPO and /GRPO, got a wrong base path from the router: /Sequence_/...).
        context, page, _ = open_page(browser, f"http://127.0.0.1:{port}", app_page)
        try:
            main = page.locator('[data-testid="stMain"]')
            expect(main.get_by_text(f"http://127.0.0.1:{port}/{app_page.url_path}", exact=True)).to_be_visible(
                timeout=60_000)
        finally:
            context.close()
    finally:
        stop_app(proc)


def test_cold_deep_link_with_settings(browser):
    """A shared link's settings reach the widgets and the run on a cold server."""
    app_page = SEQ_PAGES[0]
    port = free_port()
    proc = start_app(port, log_path=OUT / "streamlit-cold-settings.log")
    context = None
    try:
        url_page = type(app_page)(app_page.name, app_page.url_path + "?seq_iterations=30&seq_seeds=2&seq_loss_type=dr_grpo",
                                  app_page.label, app_page.script)
        context, page, _ = open_page(browser, f"http://127.0.0.1:{port}", url_page)
        main = page.locator('[data-testid="stMain"]')
        expect(main.locator('[data-testid="stException"]')).to_have_count(0)
        expect(main.get_by_text("final P(correct) (mean of 2)")).to_be_visible()
        expect(main.get_by_text("dr_grpo, token ratios (2 seeds)").first).to_be_attached()
    finally:
        if context:
            context.close()
        stop_app(proc)
