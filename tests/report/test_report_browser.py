"""report.html in a real headless Chromium, driven with selenium: the explorer's controls
(sorting, filters, the slider, paging) against scores.parquet, and hostile captions that stay
text (no script of theirs runs). Skipped, with the reason, where Chromium, chromedriver or
selenium is missing; CI needs `apt-get install -y chromium chromium-driver` and
`pip install selenium`."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip(
            "no Chromium and chromedriver on PATH (apt-get install -y chromium chromium-driver)"
        )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install selenium)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)  # --no-sandbox: CI runs as root
    session = webdriver.Chrome(service=Service(driver), options=options)
    try:
        yield session
    finally:
        session.quit()


def _observe(browser):
    """What the explorer shows: the same fields as explorer_stub.js's observe()."""
    from selenium.webdriver.common.by import By

    def cell(td):
        images = td.find_elements(By.TAG_NAME, "img")
        if not images:
            return td.get_property("textContent")
        img = images[0]
        return f"[img {img.get_dom_attribute('loading')} {img.get_property('src')[:22]}]"

    def text(element_id):
        return browser.find_element(By.ID, element_id).get_property("textContent")

    threshold = browser.find_element(By.ID, "as-threshold")
    return {
        "header": [
            th.get_property("textContent")
            for th in browser.find_elements(By.CSS_SELECTOR, "#as-table thead th")
        ],
        "rows": [
            [cell(td) for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in browser.find_elements(By.CSS_SELECTOR, "#as-rows tr")
        ],
        "counts": text("as-counts"),
        "threshold": threshold.get_dom_attribute("data-threshold"),
        "range": text("as-range"),
    }


def _drive(browser, actions):
    """ACTIONS through the page's own controls: typing in the search box, choosing options,
    clicking buttons; the slider is moved by setting its value and firing `input`, as a drag
    does (selenium cannot drag a range input to an exact step)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    seen = []
    for action in actions:
        if action.get("observe"):
            seen.append(_observe(browser))
        elif action.get("click"):
            browser.find_element(By.ID, action["click"]).click()
        elif action.get("sort_header"):
            key = action["sort_header"]
            browser.find_element(By.CSS_SELECTOR, f'#as-table th button[data-key="{key}"]').click()
        else:
            element = browser.find_element(By.ID, action["set"])
            if element.tag_name == "select":
                Select(element).select_by_value(action["value"])
            elif element.get_dom_attribute("type") == "range":
                browser.execute_script(
                    "arguments[0].value = arguments[1];"
                    "arguments[0].dispatchEvent(new Event('input', {bubbles: true}));",
                    element,
                    action["value"],
                )
            else:
                element.clear()
                element.send_keys(action["value"])
                if not action["value"]:  # clear() fires no input event
                    browser.execute_script(
                        "arguments[0].dispatchEvent(new Event('input', {bubbles: true}));",
                        element,
                    )
    return seen


def test_the_explorer_in_chromium(browser, screened, explorer_steps):
    from selenium.webdriver.common.by import By

    browser.get((screened["out"] / "report.html").resolve().as_uri())
    # no hostile caption ran: none of their window.pwned = 1..5 assignments happened
    assert browser.execute_script("return typeof window.pwned") == "undefined"
    # the page's own script ran: the explorer replaced the static top-50 table
    assert not browser.find_element(By.ID, "alignscope-static").is_displayed()
    actions, check = explorer_steps
    check(_drive(browser, actions))
    assert browser.execute_script("return typeof window.pwned") == "undefined"


def test_hostile_captions_show_verbatim_and_run_nothing(browser, screened):
    from selenium.webdriver.common.by import By

    browser.get((screened["out"] / "report.html").resolve().as_uri())
    search = browser.find_element(By.ID, "as-search")
    for caption in screened["hostile"]:
        row = screened["captions"].index(caption)
        search.clear()
        search.send_keys(screened["ids"][row])  # the box matches ids too
        shown = [
            [td.get_property("textContent") for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in browser.find_elements(By.CSS_SELECTOR, "#as-rows tr")
        ]
        assert [r[1:5] for r in shown] == [[str(row), "", screened["ids"][row], caption]]
    # the captions became neither elements nor links anywhere on the page
    assert browser.find_elements(By.CSS_SELECTOR, "a, b, img[onerror]") == []
    assert len(browser.find_elements(By.TAG_NAME, "script")) == 2
    assert browser.execute_script("return typeof window.pwned") == "undefined"
