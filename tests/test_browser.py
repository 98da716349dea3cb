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

    # Switch to ArtFusion (tiny test weights): its options appear, the steps slider comes alive, it runs.
    page.locator("#method input").click()
    page.get_by_role("option", name="ArtFusion (diffusion, any style)").click()
    page.get_by_text("Advanced", exact=True).click()
    page.get_by_label("Content guidance scale").wait_for(timeout=10_000)
    page.get_by_label("Style guidance scale").fill("3.5")
    steps = page.locator("#steps input[type=number]")
    steps.fill("2")
    steps.press("Enter")
    page.locator("#generate").click()
    page.wait_for_function("() => document.querySelector('#summary').innerText.includes('artfusion')", timeout=180_000)
    assert "2 steps" in page.locator("#summary").inner_text()
    page.get_by_text("Parameters", exact=True).click()
    page.get_by_text('"style_scale": 3.5').first.wait_for(timeout=10_000)  # typed by hand
    assert page.get_by_text('"content_scale": 0.4').count() >= 1  # left empty: derived from strength 0.7
    page.screenshot(path=str(artifacts / "app-artfusion.png"), full_page=True)
    page.close()


def test_learn_a_style_in_the_browser_then_apply_it(browser, running_app, content_path, style_path, artifacts):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(running_app)
    page.get_by_role("tab", name="Learn a style").click()
    page.locator("#learn-image input[type=file]").set_input_files(str(style_path))
    page.locator("#learn-image img").first.wait_for(timeout=30_000)
    page.locator("#learn-name textarea, #learn-name input").first.fill("Browser Waves")
    page.get_by_label("Steps (empty: the preset's)").fill("5")
    resolution = page.locator("#learn-resolution input")
    resolution.fill("32")
    resolution.press("Enter")
    page.locator("#learn-start").click()
    page.get_by_text("Learned Browser Waves").wait_for(timeout=120_000)
    page.locator("#library img").first.wait_for(timeout=30_000)
    page.screenshot(path=str(artifacts / "app-learn-style.png"), full_page=True)

    # The new style is selectable in the Stylize tab, with no style image needed.
    page.get_by_role("tab", name="Stylize").click()
    page.locator("#content-image input[type=file]").set_input_files(str(content_path))
    page.locator("#content-image img").first.wait_for(timeout=30_000)
    page.locator("#method input").click()
    page.get_by_role("option", name="InST (learned styles)").click()
    page.get_by_text("Style (not used: this method applies a learned style", exact=False).wait_for(timeout=10_000)
    page.get_by_text("Advanced", exact=True).click()
    page.locator("#style_name-previews img").first.click()  # the learned style's thumbnail
    page.wait_for_function(
        "() => [...document.querySelectorAll('input')].some(i => i.value === 'browser-waves')", timeout=10_000
    )
    steps = page.locator("#steps input[type=number]")
    steps.fill("5")
    steps.press("Enter")
    page.locator("#generate").click()
    page.wait_for_function("() => document.querySelector('#summary').innerText.includes('inst')", timeout=180_000)
    page.close()
