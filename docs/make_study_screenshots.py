"""Screenshots of the web study for the README, taken in headless Chromium.

    python docs/make_study_screenshots.py [OUT_DIR]     # default docs/images

Builds a two-image dataset from photographs bundled with scikit-image (levels: JPEG at falling
quality, only for the picture), serves it in-process and saves ``study-register.png``,
``study-trial.png`` and ``study-operator.png``. Needs chromium, chromium-driver and selenium,
like the browser test.
"""

from __future__ import annotations

import io
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from werkzeug.serving import make_server

from jndplug.study.web import StudySettings, create_app

WINDOW = (1000, 800)


def _dataset(root: Path) -> Path:
    photos = {"coffee": skimage.data.coffee()[60:300, 120:440], "chelsea": skimage.data.chelsea()[40:280, 60:380]}
    for name, arr in photos.items():
        (root / "distorted" / name).mkdir(parents=True)
        (root / "originals").mkdir(exist_ok=True)
        img = Image.fromarray(np.ascontiguousarray(arr))
        img.save(root / "originals" / f"{name}.png")
        for level, quality in enumerate((90, 80, 70, 60, 50, 40, 30, 20, 10), start=1):
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=quality)
            Image.open(buf).save(root / "distorted" / name / f"{level}.png")
    return root


def _save(driver, path: Path) -> None:
    # a palette keeps the files small; the screenshots only illustrate the page
    img = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    img.quantize(colors=192, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"{path} ({path.stat().st_size // 1024} KiB)")


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(_dataset(Path(tmp) / "ds"), settings=StudySettings(training=0, catch_every=10),
                         operator_token="screenshot")
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.port}"
        opts = webdriver.ChromeOptions()
        opts.binary_location = "/usr/bin/chromium"
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--hide-scrollbars",
                    f"--window-size={WINDOW[0]},{WINDOW[1]}", "--force-device-scale-factor=1"):
            opts.add_argument(arg)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
        wait = WebDriverWait(driver, 30)
        try:
            driver.get(base + "/")
            wait.until(lambda d: d.execute_script("return document.body.dataset.screen") == "register")
            driver.find_element(By.ID, "participant").send_keys("P07")
            driver.find_element(By.ID, "vision-corrected").click()
            driver.execute_script("document.activeElement.blur()")
            _save(driver, out / "study-register.png")
            driver.find_element(By.ID, "register-submit").click()
            wait.until(lambda d: d.execute_script("return document.body.dataset.screen") == "instructions")
            driver.find_element(By.ID, "instructions-go").click()
            driver.set_window_size(WINDOW[0], 560)
            wait.until(lambda d: d.execute_script("return document.getElementById('trial').dataset.answerable") == "1")
            _save(driver, out / "study-trial.png")
            for _ in range(5):  # a little history for the operator page
                wait.until(lambda d: d.execute_script(
                    "return document.getElementById('trial').dataset.answerable") == "1")
                driver.find_element(By.ID, "answer-diff").click()
            driver.get(f"{base}/operator?token=screenshot")
            driver.set_window_size(1300, 520)
            _save(driver, out / "study-operator.png")
        finally:
            driver.quit()
            server.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "images")
