"""Write samples/compare.png for README.md: a screenshot of the page `upscale compare` makes of
samples/clip.mkv with its default models, at two times, opened in headless Chromium.

Run from the repository root (needs Debian's chromium and chromium-driver, and selenium):
    python samples/make_compare_screenshot.py
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By

from upscaler.cli import main

HERE = Path(__file__).resolve().parent
WIDTH = 1100


def run() -> Path:
    out = HERE / "compare.png"
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "clip_compare.html"
        code = main(["compare", str(HERE / "clip.mkv"), "--at", "1", "--at", "2.5", "-o",
                     str(page), "--quiet"])
        if code:
            sys.exit(code)
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium") or "chromium"
        for arg in ("--headless=new", "--no-sandbox", f"--window-size={WIDTH},1600",
                    "--force-device-scale-factor=1", "--hide-scrollbars"):
            options.add_argument(arg)
        driver = webdriver.Chrome(options=options,
                                  service=Service(shutil.which("chromedriver")))
        try:
            driver.get(page.as_uri())
            section = driver.find_elements(By.CSS_SELECTOR, "section.frame")[0]
            divider = section.find_element(By.CSS_SELECTOR, ".divider")
            viewer = section.find_element(By.CSS_SELECTOR, ".viewer")
            ActionChains(driver).click_and_hold(divider).move_by_offset(-120, 0).release() \
                .move_to_element_with_offset(viewer, 60, -40).click().perform()
            bottom = section.find_element(By.CSS_SELECTOR, ".zoom").rect
            driver.save_screenshot(str(out))
        finally:
            driver.quit()
    # The first frame whole: the table, the viewer and its zoom.
    with Image.open(out) as shot:
        shot.crop((0, 0, WIDTH, int(bottom["y"] + bottom["height"] + 24))).save(out)
    return out


if __name__ == "__main__":
    print(run())
