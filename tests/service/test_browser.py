"""The web viewer in real headless Debian chromium (chromium-driver + selenium) against a live server.

One walk through the page: search, thumbnails, open a case, scroll slices, label filter, "more like this",
share-URL round trip. Each step's screenshot is written once to benchmarks/results/ui/ (for the README).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from .live import REPO, start_server, stop

CHROMIUM, DRIVER = (
    shutil.which("chromium") or "/usr/bin/chromium",
    shutil.which("chromedriver") or "/usr/bin/chromedriver",
)
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1366,768",
)
SHOTS = REPO / "benchmarks" / "results" / "ui"
WAIT = 180  # generous: the suite runs on 2 shared cores


@pytest.fixture(scope="module")
def server(service_index):
    import httpx

    proc, url = start_server(service_index)
    httpx.post(f"{url}/search/text", json={"text": "warm-up", "k": 1}, timeout=WAIT)  # first text encode
    yield url
    stop(proc)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert Path(CHROMIUM).exists() and Path(DRIVER).exists(), "install chromium and chromium-driver (make install)"
    profile = tempfile.mkdtemp(prefix="hsenet-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(WAIT)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def shot(driver, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    target = SHOTS / f"{name}.png"
    if not target.exists():
        driver.save_screenshot(str(target))


def wait_for(driver, condition, message: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT).until(condition, message)


def cards(driver):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, "#results .card")


def thumbnails_loaded(driver) -> bool:
    return driver.execute_script(
        "const imgs=[...document.querySelectorAll('#results .card img')];"
        "return imgs.length>0 && imgs.every(i=>i.complete && i.naturalWidth>0);"
    )


@pytest.mark.slow
def test_viewer_walkthrough(server, browser, loaded):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    d = browser
    meta = loaded["small"].engine.metadata
    d.get(server + "/")
    box = wait_for(d, lambda d: d.find_element(By.ID, "q"), "no search box")
    wait_for(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#chips .chip"), "no label chips")

    # 1. search by text, with the keyboard
    box.send_keys("Bilateral pleural effusion.", Keys.ENTER)
    wait_for(d, lambda d: len(cards(d)) > 0, "no results")
    wait_for(d, thumbnails_loaded, "thumbnails did not load")
    n_all = len(cards(d))
    assert n_all == meta["scan_id"].nunique()
    assert parse_qs(urlparse(d.current_url).query)["q"] == ["Bilateral pleural effusion."]
    scores = [float(c.find_element(By.CSS_SELECTOR, ".score").text) for c in cards(d)]
    assert scores == sorted(scores, reverse=True)
    shot(d, "1-search")

    # 2. open a case from its card
    first = cards(d)[0]
    scan = first.get_attribute("data-scan")
    first.click()
    wait_for(d, lambda d: d.find_element(By.ID, "case-view").is_displayed(), "case view did not open")
    img = d.find_element(By.ID, "slice-img")
    wait_for(
        d,
        lambda d: d.execute_script("const i=arguments[0];return i.complete&&i.naturalWidth>0", img),
        "slice did not load",
    )
    assert d.find_element(By.ID, "case-title").text == scan
    row = meta[meta["scan_id"] == scan].iloc[0]
    assert d.find_element(By.ID, "case-impression").text.strip() == row["impression"].strip()
    assert parse_qs(urlparse(d.current_url).query)["case"] == [scan]
    shot(d, "2-case")

    # 3. scroll slices with keys and the wheel; change plane and window
    start = int(img.get_attribute("data-slice"))
    frame = d.find_element(By.ID, "slice-frame")
    frame.send_keys(Keys.ARROW_DOWN, Keys.ARROW_DOWN, Keys.ARROW_DOWN)
    wait_for(d, lambda d: int(img.get_attribute("data-slice")) == start + 3, "keys did not scroll")
    d.execute_script(
        "arguments[0].dispatchEvent(new WheelEvent('wheel',{deltaY:-100,bubbles:true,cancelable:true}))",
        frame,
    )
    wait_for(d, lambda d: int(img.get_attribute("data-slice")) == start + 2, "wheel did not scroll")
    src_axial = img.get_attribute("src")
    d.find_element(By.CSS_SELECTOR, "[data-axis=coronal]").click()
    wait_for(d, lambda d: "axis=coronal" in img.get_attribute("src"), "coronal view did not load")
    d.find_element(By.CSS_SELECTOR, "[data-window=bone]").click()
    wait_for(d, lambda d: "window=bone" in img.get_attribute("src"), "bone window did not apply")
    assert img.get_attribute("src") != src_axial
    wait_for(
        d,
        lambda d: d.execute_script("const i=arguments[0];return i.complete&&i.naturalWidth>0", img),
        "coronal slice did not load",
    )
    shot(d, "3-slices")

    # 4. label filter: only cases with the label remain
    d.find_element(By.ID, "back-btn").click()
    wait_for(d, lambda d: d.find_element(By.ID, "results").is_displayed(), "results did not come back")
    label = "Pleural effusion"
    chip = d.find_element(By.CSS_SELECTOR, f'.chip[data-label="{label}"]')
    chip.click()
    expected = int(meta.loc[meta[label] == 1, "scan_id"].nunique())
    wait_for(d, lambda d: len(cards(d)) == expected, "label filter did not apply")
    assert d.find_element(By.CSS_SELECTOR, f'.chip[data-label="{label}"]').get_attribute("aria-pressed") == "true"
    for c in cards(d):
        assert label in c.find_element(By.CSS_SELECTOR, ".labels").text
    wait_for(d, thumbnails_loaded, "filtered thumbnails did not load")
    shot(d, "4-label-filter")

    # 5. more like this
    d.find_element(By.CSS_SELECTOR, f'.chip[data-label="{label}"]').click()
    wait_for(d, lambda d: len(cards(d)) == n_all, "filter did not clear")
    cards(d)[1].click()
    wait_for(d, lambda d: d.find_element(By.ID, "case-view").is_displayed(), "case view did not open")
    like = d.find_element(By.ID, "case-title").text
    d.find_element(By.ID, "more-like-this").click()
    wait_for(d, lambda d: "like=" in d.current_url and len(cards(d)) > 0, "more like this gave no results")
    assert like not in [c.get_attribute("data-scan") for c in cards(d)]
    assert len(cards(d)) == n_all - 1
    wait_for(d, thumbnails_loaded, "similar-case thumbnails did not load")
    shot(d, "5-more-like-this")

    # 6. share URL round trip: a fresh load of the URL shows the same state
    shared = d.current_url
    titles = [c.get_attribute("data-scan") for c in cards(d)]
    d.get("about:blank")
    d.get(shared)
    wait_for(d, lambda d: len(cards(d)) == len(titles), "shared URL did not restore the results")
    assert [c.get_attribute("data-scan") for c in cards(d)] == titles
    d.get(f"{server}/?q=Cardiomegaly.&labels=Cardiomegaly&case={like}")
    wait_for(d, lambda d: d.find_element(By.ID, "case-view").is_displayed(), "shared case URL did not open")
    assert d.find_element(By.ID, "case-title").text == like
    assert d.find_element(By.CSS_SELECTOR, '.chip[data-label="Cardiomegaly"]').get_attribute("aria-pressed") == "true"
    d.find_element(By.ID, "draft-btn").click()
    wait_for(d, lambda d: d.find_element(By.ID, "draft-out").is_displayed(), "draft did not appear")
    cites = d.find_elements(By.CSS_SELECTOR, "#draft-out .cites a")
    assert cites and like not in [a.text for a in cites]
    shot(d, "6-shared-case-draft")
    errors = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
