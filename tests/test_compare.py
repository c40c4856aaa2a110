"""`upscale compare`: the data, the command's errors, and the page opened in real Chromium.

The page tests drive the system's headless Chromium (Debian: `apt-get install chromium
chromium-driver`, which .ci/run does) with Selenium. The screenshot each run keeps is printed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from clips import make_clip

from upscaler.cli import main
from upscaler.compare_page import render
from upscaler.comparison import Comparison, Frame, ModelResult, compare, parse_time
from upscaler.config import Options
from upscaler.errors import UsageError
from upscaler.models import registry
from upscaler.models.registry import DEFAULT_MODELS, ModelSpec, models_to_compare

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
# An ONNX model that repeats pixels: a model that costs next to nothing to run.
from bench_fast_path import instant_model


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("compare")
    make_clip(root / "clip.mkv", size="160x90", seconds=1.25)
    instant_model(root / "nearest2x.onnx", 2)
    return root


@pytest.fixture(scope="module")
def page(work: Path) -> Path:
    """A page from the command as a user types it: a real model and a near-free one."""
    out = work / "page.html"
    done = subprocess.run(
        [sys.executable, "-m", "upscaler", "compare", str(work / "clip.mkv"), "--models",
         f"realesr-animevideov3,{work / 'nearest2x.onnx'}", "--at", "0.2", "--at", "0:00.9",
         "-o", str(out), "--tile", "0"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert out.is_file() and str(out) in done.stdout
    assert "4/4" in done.stderr and "frame" in done.stderr  # the progress bar, to its end
    return out


def test_api_returns_frames_outputs_and_timings(work: Path) -> None:
    result = compare(work / "clip.mkv", [str(work / "nearest2x.onnx")], at=["0.5"],
                     options=Options(tile=0))
    assert result.kind == "video" and result.total_frames == 30
    (frame,) = result.frames
    assert frame.label == "0:00.459" and frame.pixels.shape == (90, 160, 3)
    (model,) = result.results
    assert model.model == "nearest2x" and model.scale == 2
    np.testing.assert_array_equal(model.outputs[0], frame.pixels.repeat(2, 0).repeat(2, 1))
    assert model.seconds_per_frame > 0
    assert model.whole_seconds == pytest.approx(model.load_seconds
                                                + 30 * model.seconds_per_frame)
    # The whole clip encoded at x264's defaults at 320x180: some KiB, not bytes or megabytes.
    assert model.output_bytes is not None and 10_000 < model.output_bytes < 1_000_000


def test_held_drawings_are_counted_as_a_job_counts_them_and_left_out_of_the_time(
        work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A clip drawn on threes: the frames read after the compared one hold as many reused
    drawings as the job itself reuses (the run covers the whole clip here), and the estimate
    leaves them out. With --no-reuse a job reuses none, and the estimate counts every frame."""
    from anim import scene, write_clip

    clip = write_clip(tmp_path / "threes.mkv", scene("threes", 24, 48, 80))
    model = str(work / "nearest2x.onnx")
    result = compare(clip, [model], at=["0"], options=Options(tile=0))
    held, seen = result.held
    assert seen == 23 and held >= 14  # 16 here: x264 at CRF 18 keeps them held
    (r,) = result.results
    assert r.whole_seconds == pytest.approx(r.load_seconds
                                            + r.seconds_per_frame * 24 * (1 - held / seen))
    assert f"Held drawings: {held} of the 23 frames read after those shown" in render(result)
    capsys.readouterr()
    assert main([str(clip), "-o", str(tmp_path / "job.mkv"), "--model", model, "--tile", "0"]
                ) == 0
    assert f"held drawings reused: {held} frames whole" in capsys.readouterr().err
    plain = compare(clip, [model], at=["0"], options=Options(tile=0, reuse=False))
    assert plain.held == (0, 0) and "Held drawings" not in render(plain)
    (r,) = plain.results
    assert r.whole_seconds == pytest.approx(r.load_seconds + r.seconds_per_frame * 24)


def test_folder_and_image_inputs(work: Path, tmp_path: Path) -> None:
    folder = tmp_path / "cels"
    folder.mkdir()
    for n in range(5):
        PIL.Image.new("RGB", (20 + n, 10), (n * 40, 0, 0)).save(folder / f"{n}.png")
    # Hidden files and folders, which the job skips, are not compared or counted either.
    (folder / ".thumbs").mkdir()
    for hidden in (folder / ".thumbs" / "0.png", folder / ".1.png"):
        PIL.Image.new("RGB", (8, 8)).save(hidden)
    result = compare(folder, [str(work / "nearest2x.onnx")], options=Options(tile=0))
    assert result.kind == "folder" and result.total_frames == 5
    assert [f.label for f in result.frames] == ["0.png", "2.png", "4.png"]
    assert result.results[0].outputs[2].shape == (20, 48, 3)
    one = compare(folder / "1.png", [str(work / "nearest2x.onnx")], options=Options(tile=0))
    assert one.kind == "image" and one.total_frames == 1 and len(one.frames) == 1
    pages = [PIL.Image.new("RGB", (20, 10), (n * 60, 0, 0)) for n in range(3)]
    pages[0].save(tmp_path / "chapter.tiff", save_all=True, append_images=pages[1:])
    chapter = compare(tmp_path / "chapter.tiff", [str(work / "nearest2x.onnx")],
                      options=Options(tile=0))
    assert chapter.total_frames == 3 and len(chapter.frames) == 1  # each page is a picture
    # A large picture in tiles moves the progress before it is done (minutes for a scan).
    PIL.Image.new("RGB", (96, 64), (90, 20, 0)).save(tmp_path / "scan.png")
    parts: list[float] = []
    compare(tmp_path / "scan.png", [str(work / "nearest2x.onnx")], options=Options(tile=40),
            progress=lambda state: parts.append(state.part))
    assert any(0 < part < 1 for part in parts), parts
    with pytest.raises(UsageError, match="--at picks times in a video"):
        compare(folder, [str(work / "nearest2x.onnx")], at=["1"])


def test_default_models_are_the_defaults_then_other_families(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The Real-CUGAN and waifu2x packages are dependencies: one model of each family follows.
    families = ["realcugan-x2-conservative", "waifu2x-cunet-x2"]
    assert models_to_compare("video") == [DEFAULT_MODELS["video"], DEFAULT_MODELS["image"],
                                          *families]
    assert models_to_compare("image") == [DEFAULT_MODELS["image"], DEFAULT_MODELS["video"],
                                          *families]
    # Two more families: the first installed model of each comes after the defaults; one
    # whose weights are missing is left out.
    extra = {spec.name: spec for spec in (
        ModelSpec("other-a-missing", 2, "NO_SUCH_FILE", "", family="Other"),
        ModelSpec("other-b", 2, "REALESRGAN_ANIMAVIDEOV3_UP2X", "", family="Other"),
        ModelSpec("other-c", 2, "REALESRGAN_ANIMAVIDEOV3_UP2X", "", family="Other"),
        ModelSpec("third", 3, "REALESRGAN_ANIMAVIDEOV3_UP3X", "", family="Third"))}
    monkeypatch.setattr(registry, "MODELS", {**registry.MODELS, **extra})
    assert models_to_compare("video") == [DEFAULT_MODELS["video"], DEFAULT_MODELS["image"],
                                          *families, "other-b", "third"]


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("1.5", 1.5), ("500ms", 0.5),
                                               ("1:30", 90), ("01:02:03.5", 3723.5)])
def test_times_in_seconds_or_ffmpeg_syntax(text: str, seconds: float) -> None:
    assert parse_time(text) == pytest.approx(seconds)


def test_errors_are_one_line_and_nothing_is_written(
        work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = str(work / "clip.mkv")
    out = tmp_path / "p.html"
    cases = [
        (["--models", "no-such-model"], 3, "no-such-model: unknown model"),
        (["--at", "5", "--models", "realesr-animevideov3"], 2, "--at 5: past the end"),
        (["--at", "soon"], 2, "--at soon: not a time"),
        (["--models", "realesr-animevideov3", "-o", str(work / "clip.mkv" / "p.html")], 2,
         "cannot write the page"),
        (["--models", "realesr-animevideov3", "-o", str(tmp_path / "p.txt")], 2,
         "give a name ending in .html"),
        # Before any model runs, not when the page is written.
        (["--models", "realesr-animevideov3", "-o", str(tmp_path / ("p" * 251 + ".html"))], 2,
         "the output's name would be 256 bytes, more than a file system takes (255); give a "
         "shorter one with -o"),
    ]
    for extra, code, message in cases:
        argv = ["compare", clip, "-o", str(out), *extra]
        assert main(argv) == code, extra
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
        assert not out.exists()
    out.write_text("mine")
    model = str(work / "nearest2x.onnx")
    assert main(["compare", clip, "-o", str(out), "--models", model]) == 6
    assert "exists; give --overwrite" in capsys.readouterr().err
    assert out.read_text() == "mine"
    assert main(["compare", clip, "-o", str(out), "--models", model, "--overwrite", "-q"]) == 0
    assert out.read_text().startswith("<!doctype html>")
    assert [p.name for p in tmp_path.iterdir()] == ["p.html"]  # no temporary file left
    # A folder typed with a trailing slash takes the page under its default name.
    assert main(["compare", clip, "-o", f"{tmp_path / 'pages'}/", "--models", model, "-q"]) == 0
    assert (tmp_path / "pages" / "clip.mkv_compare.html").is_file()


def test_large_frames_keep_a_detailed_crop_not_the_whole(work: Path) -> None:
    # A 640x360 frame, flat but for a patch of detail near its bottom-right corner, "upscaled"
    # 4x: the page keeps a downscaled view and the 1024x576 window around the detail.
    rng = np.random.default_rng(1)
    src = np.full((360, 640, 3), 90, np.uint8)
    src[250:330, 500:600] = rng.integers(0, 255, (80, 100, 3), dtype=np.uint8)
    out = src.repeat(4, 0).repeat(4, 1)
    comparison = Comparison(work / "big.mkv", "video", 100, (Frame("0:01.000", src, 1.0),),
                            (ModelResult("nearest4x", "onnxruntime", 4, (out,), (0.5, 0.5),
                                         0.1, 50.1, 1_000_000),), Options())
    text = render(comparison)
    sizes = re.findall(r'<img class="(\w+)" alt="([^"]+)" width="(\d+)" height="(\d+)"', text)
    assert sorted(sizes) == sorted([("view", "source", "960", "540"),
                                    ("view", "nearest4x", "960", "540"),
                                    ("crop", "source", "1024", "576"),
                                    ("crop", "nearest4x", "1024", "576")])
    x, y, w, h = json.loads(re.search(r"data-frame='([^']+)'", text).group(1))["zoom"]
    assert (w, h) == (256, 144) and x <= 500 and x + w >= 600 and y <= 250 and y + h >= 330
    assert len(text) < 3_000_000


# --- the page in a real browser ------------------------------------------------------------


def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture(scope="module")
def browser(page: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    found = _chromium()
    if found is None:
        message = "no chromium and chromedriver (apt-get install chromium chromium-driver)"
        if os.environ.get("UPSCALER_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.wait import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1800", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(found[1]))
    try:
        driver.get(page.as_uri())
        # Every image loaded, polled: waiting on each image's decode() failed under a full
        # suite's load, Chromium rejecting loaded images with "EncodingError: The source image
        # cannot be decoded" (and the rejection then left the wait to time out).
        state = ("const images = [...document.images];"
                 "return [images.every(i => i.complete),"
                 " images.filter(i => i.complete && !i.naturalWidth).map(i => i.alt)];")
        WebDriverWait(driver, 120, poll_frequency=0.1).until(
            lambda d: d.execute_script(state)[0])
        broken = driver.execute_script(state)[1]
        assert broken == [], f"images that did not load: {broken}"
        yield driver
        shot = tmp_path_factory.mktemp("screenshot") / "compare_page.png"
        driver.save_screenshot(str(shot))
        print(f"\ncompare page screenshot: {shot}")
    finally:
        driver.quit()


def test_every_image_loads_at_its_natural_size(browser: object) -> None:
    images = browser.execute_script(  # type: ignore[attr-defined]
        "return [...document.images].map(i => [i.className, i.complete, i.naturalWidth,"
        " i.naturalHeight, i.width, i.height, i.getAttribute('width'),"
        " i.getAttribute('height'), getComputedStyle(i).display]);")
    # Per frame: 3 views (source and 2 models) and 3 crops; 2 frames.
    assert len(images) == 12
    for kind, complete, nat_w, nat_h, w, h, attr_w, attr_h, display in images:
        assert complete and nat_w > 0, kind
        assert (nat_w, nat_h) == (int(attr_w), int(attr_h)), kind
        if display != "none":
            assert (w, h) == (nat_w, nat_h), kind  # drawn 1:1, never stretched
    views = [i for i in images if i[0].startswith("view")]
    assert {(i[2], i[3]) for i in views} == {(640, 360)}  # 160x90 at the largest scale, 4x


def test_divider_moves_on_a_drag(browser: object) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    section = browser.find_elements(By.CSS_SELECTOR, "section.frame")[0]  # type: ignore[attr-defined]
    divider = section.find_element(By.CSS_SELECTOR, ".divider")
    after = section.find_element(By.CSS_SELECTOR, "img.view.after")
    start = divider.value_of_css_property("left")
    assert start == "320px"
    ActionChains(browser).click_and_hold(divider).move_by_offset(-80, 0).release().perform()
    assert divider.value_of_css_property("left") == "240px"
    assert "240px" in after.value_of_css_property("clip-path")
    from selenium.webdriver.common.keys import Keys

    divider.send_keys(Keys.ARROW_RIGHT)  # and from the keyboard, 10 px a press
    assert divider.value_of_css_property("left") == "250px"


def test_zoom_shows_the_clicked_spot_at_one_to_one(browser: object) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    section = browser.find_elements(By.CSS_SELECTOR, "section.frame")[1]  # type: ignore[attr-defined]
    viewer = section.find_element(By.CSS_SELECTOR, ".viewer")
    crops = section.find_elements(By.CSS_SELECTOR, ".lens img")
    lenses = section.find_elements(By.CSS_SELECTOR, ".lens")
    # The lens is 256 output pixels at 4x: 64x64 source pixels, at each model's own scale.
    assert [(lens.size["width"], lens.size["height"]) for lens in lenses] == [
        (256, 256), (256, 256), (128, 128)]
    assert crops[1].value_of_css_property("left") == "-192px"  # the centre first: x 48..112
    # A click near the bottom-right corner (offsets are from the viewer's centre, 320x180):
    # the window stops at the frame's edge, source x 96..160 and y 26..90.
    ActionChains(browser).move_to_element_with_offset(viewer, 250, 150).click().perform()
    shown = [(c.value_of_css_property("left"), c.value_of_css_property("top")) for c in crops]
    assert shown == [("-384px", "-104px"), ("-384px", "-104px"), ("-192px", "-52px")]
    spot = section.find_element(By.CSS_SELECTOR, ".spot")
    assert (spot.value_of_css_property("left"), spot.value_of_css_property("width")) == (
        "384px", "256px")


def test_table_has_a_row_per_model_with_numbers(browser: object) -> None:
    from selenium.webdriver.common.by import By

    rows = browser.find_elements(By.CSS_SELECTOR, "#models tbody tr")  # type: ignore[attr-defined]
    assert [r.get_attribute("data-model") for r in rows] == ["realesr-animevideov3",
                                                             "nearest2x"]
    for row in rows:
        values = [float(td.get_attribute("data-value"))
                  for td in row.find_elements(By.CSS_SELECTOR, "td[data-value]")]
        assert len(values) == 3 and all(v > 0 for v in values), values
        assert row.text.split()[-1] in ("KiB", "MiB")


def test_console_has_no_errors(browser: object) -> None:
    logs = browser.get_log("browser")  # type: ignore[attr-defined]
    assert [e for e in logs if e["level"] in ("SEVERE", "ERROR")] == []


def test_page_is_self_contained(page: Path) -> None:
    text = page.read_text()
    assert "http://" not in text and "https://" not in text
    assert text.count("data:image/png;base64,") >= 6
    assert os.path.getsize(page) < 2_000_000
    # What the page shows of the input, unmistakable beside a table of models.
    assert "clip.mkv: 2 of its 30 frames, tile=0." in text
