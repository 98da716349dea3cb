"""One person's visit, in headless Chromium: upload two images, click Generate, see the result."""

import os
import shutil

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.server]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing: .ci/run must install the Debian chromium package")
        pytest.skip("Debian chromium is not installed here (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield browser
        browser.close()


def test_upload_generate_and_see_the_result(browser, running_app, content_path, style_path, artifacts):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(running_app)
    page.locator("#content-image input[type=file]").set_input_files(str(content_path))
    page.locator("#style-image input[type=file]").set_input_files(str(style_path))
    page.locator("#content-image img").first.wait_for(timeout=30_000)
    page.locator("#style-image img").first.wait_for(timeout=30_000)
    page.locator("#generate").click()
    page.locator("#result img").first.wait_for(timeout=60_000)
    summary = page.locator("#summary")
    summary.get_by_text("seed").wait_for(timeout=30_000)
    first = summary.inner_text()
    assert "fast" in first and "seed" in first
    assert page.locator("#history img").count() == 1  # the result went into this session's history
    page.screenshot(path=str(artifacts / "app-after-generate.png"), full_page=True)

    # A second picture (a new random seed), then reopen the first one from the history.
    page.locator("#generate").click()
    page.wait_for_function("t => document.querySelector('#summary').innerText !== t", arg=first, timeout=60_000)
    page.locator("#history img").nth(1).wait_for(timeout=30_000)
    page.locator("#history img").nth(1).click()  # newest first: the older result is second
    page.wait_for_function("t => document.querySelector('#summary').innerText === t", arg=first, timeout=30_000)
    page.close()
