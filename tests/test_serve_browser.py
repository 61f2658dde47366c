"""The web app end to end: the real server (`python -m stages.app.serve`) driven by headless
Chromium through Selenium. Slow (a browser and a TensorFlow process start)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.browser import CHROMEDRIVER, CHROMIUM, chromium
from tests.conftest import REPO
from tests.tiny_models import (
    jpeg_bytes,
    lesion_photo,
    write_served,
    write_summary,
    write_tiny_model,
)

pytestmark = pytest.mark.slow

if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(f"{CHROMIUM} and {CHROMEDRIVER} needed (apt-get install chromium "
                "chromium-driver)", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402, N812
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

SIZE = 64


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(root: Path, ood_threshold: float):
    """`python -m stages.app.serve` in a folder laid out like the repo after `dvc repro`."""
    for backbone in ("small_cnn", "small_functional_cnn"):
        write_tiny_model(root, backbone, image_size=SIZE)
    write_summary(root, {"small_cnn": 0.83, "small_functional_cnn": 0.79})
    write_served(root, ["small_cnn"], image_size=SIZE, ood_threshold=ood_threshold)
    port = free_port()
    (root / "params.yaml").write_text(
        f"serve: {{port: {port}, max_upload_mb: 0.2, backbone: served, tta: false, "
        "threads: 4}\n")
    log = (root / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "stages.app.serve"], cwd=root, stdout=log,
                            stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("server did not start:\n" + (root / "server.log").read_text())
            time.sleep(0.3)
    yield url, root
    proc.terminate()
    proc.wait(timeout=20)
    log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from _serve(tmp_path_factory.mktemp("served"), ood_threshold=1e9)


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory):
    """The served model's guard flags every photo (threshold ~0)."""
    yield from _serve(tmp_path_factory.mktemp("strict"), ood_threshold=1e-6)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield driver
    driver.quit()


def _upload(browser, path: Path) -> None:
    browser.find_element(By.ID, "file").send_keys(str(path))


def _heatmap_pixels(browser, screenshot: Path) -> np.ndarray:
    """The heatmap's region of a full-page screenshot, as an array."""
    browser.save_screenshot(str(screenshot))
    rect = browser.find_element(By.ID, "heatmap").rect
    ratio = browser.execute_script("return window.devicePixelRatio")
    box = [round(v * ratio) for v in (rect["x"], rect["y"], rect["x"] + rect["width"],
                                      rect["y"] + rect["height"])]
    return np.asarray(Image.open(screenshot).convert("RGB").crop(box), dtype=np.float32)


def test_upload_shows_probabilities_and_heatmap_then_errors(server, browser, tmp_path):
    url, _ = server
    photo = tmp_path / "ISIC_0000001.jpg"
    photo.write_bytes(jpeg_bytes(lesion_photo(300)))
    wait = WebDriverWait(browser, 60)

    browser.get(url)
    notice = browser.find_element(By.ID, "notice")
    assert notice.is_displayed() and "not a medical device" in notice.text
    picker = Select(browser.find_element(By.ID, "backbone"))
    assert [o.text for o in picker.options] == [
        "small_cnn (holdout) (served) — ROC AUC 0.830, the 10 test images of fold holdout",
        "small_cnn, fold holdout model — test AUC 0.830",
        "small_functional_cnn, fold holdout model — test AUC 0.790"]
    assert browser.find_element(By.ID, "model-card").get_attribute("href").endswith(
        "/model-card")
    # On a narrow window the picker, with its long model names, still fits the page.
    size = browser.get_window_size()
    browser.set_window_size(420, size["height"])
    assert browser.execute_script(
        "const page = document.documentElement.clientWidth;"
        "return document.getElementById('backbone').getBoundingClientRect().right <= page"
        " && document.documentElement.scrollWidth <= page")
    browser.set_window_size(size["width"], size["height"])

    _upload(browser, photo)
    wait.until(EC.visibility_of_element_located((By.ID, "result")))
    wait.until(lambda d: d.execute_script(
        "const h = document.getElementById('heatmap'); return h.complete && h.naturalWidth > 0"))
    bars = browser.find_elements(By.CSS_SELECTOR, "#bars li")
    assert sorted(b.get_attribute("data-class") for b in bars) == ["benign", "malignant"]
    assert "the referral threshold (score" in browser.find_element(By.ID, "refer").text
    assert "85% of the malignant lesions" in browser.find_element(By.ID, "decision").text
    assert not browser.find_element(By.ID, "ood").is_displayed()
    probs = [float(b.get_attribute("data-probability")) for b in bars]
    assert sum(probs) == pytest.approx(1.0, abs=1e-4) and probs == sorted(probs, reverse=True)
    assert browser.find_element(By.ID, "predicted").text == bars[0].get_attribute("data-class")
    assert browser.find_element(By.ID, "model-name").text == "small_cnn (holdout)"  # served
    assert not browser.find_element(By.ID, "error").is_displayed()

    # The opacity slider: End = 100 % (the heatmap alone), Home = 0 % (the photo alone).
    slider = browser.find_element(By.ID, "opacity")
    slider.send_keys(Keys.END)
    assert browser.find_element(By.ID, "heatmap").value_of_css_property("opacity") == "1"
    heat = _heatmap_pixels(browser, tmp_path / "page-heatmap.png")
    assert heat.std() > 10, f"heatmap region looks blank (std {heat.std():.1f})"
    slider.send_keys(Keys.HOME)
    assert browser.find_element(By.ID, "heatmap").value_of_css_property("opacity") == "0"
    photo_only = _heatmap_pixels(browser, tmp_path / "page-photo.png")
    assert np.abs(photo_only - heat).mean() > 10  # the overlay really changed what is seen
    slider.send_keys(Keys.PAGE_UP * 5)  # 5 x 10 %: a blend, for the screenshot
    assert browser.find_element(By.ID, "opacity-value").text == "50%"
    browser.save_screenshot(str(tmp_path / "page.png"))

    # Another model from the picker re-runs the same photo.
    picker.select_by_value("small_functional_cnn")
    wait.until(EC.text_to_be_present_in_element((By.ID, "model-name"), "small_functional_cnn"))

    # Drag-and-drop: a photo drawn on a canvas, dropped on the drop zone as a real drop event.
    browser.execute_script("document.getElementById('predicted').textContent = ''")
    browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const canvas = document.createElement("canvas");
        canvas.width = canvas.height = 160;
        const g = canvas.getContext("2d");
        g.fillStyle = "#dca88c"; g.fillRect(0, 0, 160, 160);
        g.fillStyle = "#5a3228"; g.beginPath(); g.arc(70, 90, 35, 0, 7); g.fill();
        canvas.toBlob((blob) => {
          const files = new DataTransfer();
          files.items.add(new File([blob], "dropped.png", {type: "image/png"}));
          const drop = document.getElementById("drop");
          drop.dispatchEvent(new DragEvent("drop", {dataTransfer: files, bubbles: true}));
          done();
        }, "image/png");
    """)
    wait.until(lambda d: d.find_element(By.ID, "predicted").text in ("benign", "malignant"))

    # A file that is not an image: a clear message, no stale result.
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is not a photo")
    _upload(browser, bad)
    error = wait.until(EC.visibility_of_element_located((By.ID, "error")))
    assert "cannot read the upload as an image" in error.text
    assert not browser.find_element(By.ID, "result").is_displayed()

    # Over the size limit (0.2 MB here): refused with the limit in the message.
    noise = np.random.default_rng(0).integers(0, 256, (600, 600, 3), dtype=np.uint8)
    big = tmp_path / "big.jpg"
    big.write_bytes(jpeg_bytes(noise))
    _upload(browser, big)
    wait.until(EC.text_to_be_present_in_element((By.ID, "error"), "0.2 MB limit"))
    browser.save_screenshot(str(tmp_path / "page-error.png"))
    print(f"screenshots in {tmp_path}")


def test_a_photo_unlike_the_training_images_gets_a_warning_not_a_class(strict_server, browser,
                                                                       tmp_path):
    from skimage import data

    url, _ = strict_server
    cat = tmp_path / "chelsea.jpg"
    cat.write_bytes(jpeg_bytes(data.chelsea()))
    wait = WebDriverWait(browser, 60)
    browser.get(url)
    _upload(browser, cat)
    warning = wait.until(EC.visibility_of_element_located((By.ID, "ood")))
    assert "does not look like the dermoscopy images" in warning.text
    assert not browser.find_element(By.ID, "bars").is_displayed()
    assert not browser.find_element(By.CSS_SELECTOR, ".predicted").is_displayed()
    assert not browser.find_element(By.ID, "refer").is_displayed()
    assert not browser.find_element(By.ID, "heatmap").is_displayed()
    browser.save_screenshot(str(tmp_path / "ood.png"))
