"""demo.py as a user meets it, on the model committed in results/: its /predict answers
directly, and the page in a real browser (Debian's chromium, driven by Playwright) with
digits drawn as mouse strokes.

    DEMO_SCREENSHOT=docs/demo.png python -m pytest tests/demo_test.py   # README's picture
"""

import io
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, require

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# As root in a container, and quiet on a machine with no internet: Chromium's own
# background connections would be refused, many at a time.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]


@pytest.fixture(scope="module")
def demo_url():
  proc = subprocess.Popen([sys.executable, "demo.py", "results", "--port", "0"], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    for line in proc.stdout:  # ends when the process does, so a failed start cannot hang
      if line.startswith("open http://"):
        yield line.split()[1]
        break
    else:
      pytest.fail(f"demo.py did not start: {proc.stderr.read()}")
  finally:
    proc.terminate()
    proc.wait(timeout=60)


def post(url: str, body: bytes) -> tuple[int, dict]:
  request = urllib.request.Request(url + "predict", data=body, method="POST")
  try:
    with urllib.request.urlopen(request, timeout=60) as response:
      return response.status, json.load(response)
  except urllib.error.HTTPError as e:
    return e.code, json.load(e)


def png(image: Image.Image) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, format="PNG")
  return buffer.getvalue()


def test_predict_answers_what_predict_py_answers(demo_url, mnist):
  from mnist_jax import inference, preprocess
  predict = inference.predictor(inference.load_run(str(ROOT / "results")))
  for digit_HW in mnist["test"].images[:12, ..., 0]:
    # As the page sends it: dark ink on a white 280x280 canvas.
    picture = png(Image.fromarray(255 - digit_HW).resize((280, 280)).convert("RGBA"))
    status, answer = post(demo_url, picture)
    assert status == 200, answer
    seen_HW1 = preprocess.load_image(io.BytesIO(picture))
    np.testing.assert_array_equal(np.array(answer["mnist_28x28"]), seen_HW1[..., 0])
    want = predict(seen_HW1[None])[0]
    assert answer["digit"] == int(np.argmax(want))
    # The same jitted function of the same input: apart only by the JSON's 6 decimals.
    np.testing.assert_allclose(answer["probabilities"], want, rtol=0, atol=5e-7 + 1e-7)


def test_bad_uploads_get_a_reason_and_the_server_keeps_serving(demo_url):
  status, answer = post(demo_url, png(Image.new("RGB", (280, 280), "white")))
  assert status == 400 and "blank" in answer["error"]
  status, answer = post(demo_url, b"not a picture")
  assert status == 400 and "not an image" in answer["error"]
  status, answer = post(demo_url, b"")
  assert status == 400 and "PNG" in answer["error"]
  with pytest.raises(urllib.error.HTTPError) as missing:
    urllib.request.urlopen(demo_url + "nothing-here", timeout=60)
  assert missing.value.code == 404
  with urllib.request.urlopen(demo_url, timeout=60) as page:
    assert b"Draw a digit" in page.read()


# Strokes in the drawing area's own units (0-1 across and down), as a person draws them.
ONE = [[(0.54, 0.12), (0.50, 0.50), (0.46, 0.88)]]
SEVEN = [[(0.25, 0.18), (0.75, 0.18), (0.55, 0.50), (0.40, 0.88)]]
ZERO = [[(0.5 + 0.22 * np.sin(t), 0.5 - 0.34 * np.cos(t))
         for t in np.linspace(0, 2 * np.pi, 41)]]
DRAWINGS = [(1, ONE), (0, ZERO), (7, SEVEN)]


def test_digits_drawn_with_the_mouse_are_read(demo_url, tmp_path):
  if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium "
                "(.ci/run does, as root), or set CHROMIUM to a Chromium executable")
  sync_api = require("playwright.sync_api")
  with sync_api.sync_playwright() as playwright:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=CHROMIUM_FLAGS)
    try:
      page = browser.new_page(viewport={"width": 820, "height": 440})
      requested = []
      page.on("request", lambda request: requested.append(request.url))
      page.goto(demo_url)
      pad = page.locator("#pad").bounding_box()
      for expected, strokes in DRAWINGS:
        page.click("#clear")
        assert page.text_content("#digit") == "–"
        asked_before = sum(url.endswith("/predict") for url in requested)
        for points in strokes:
          page.mouse.move(pad["x"] + points[0][0] * pad["width"],
                          pad["y"] + points[0][1] * pad["height"])
          page.mouse.down()
          for x, y in points[1:]:
            page.mouse.move(pad["x"] + x * pad["width"], pad["y"] + y * pad["height"], steps=6)
          # The answer follows the pen: asked while the button is still down.
          page.wait_for_function("document.body.dataset.busy === 'false'")
          assert sum(url.endswith("/predict") for url in requested) > asked_before
          page.mouse.up()
        page.wait_for_function("document.body.dataset.busy === 'false'"
                               " && document.getElementById('digit').textContent !== '–'")
        assert page.text_content("#digit") == str(expected)
        assert page.get_attribute(".row.top", "data-digit") == str(expected)
        shot = page.screenshot(path=str(tmp_path / f"drawn-{expected}.png"))
        assert shot.startswith(b"\x89PNG")
        if expected == DRAWINGS[-1][0] and os.environ.get("DEMO_SCREENSHOT"):
          shutil.copy(tmp_path / f"drawn-{expected}.png", os.environ["DEMO_SCREENSHOT"])
      # Offline by construction: the page asked nothing of any other address.
      assert requested and all(url.startswith(demo_url) for url in requested), requested
    finally:
      browser.close()


def test_a_folder_without_a_run_is_one_line_and_exit_2(tmp_path):
  result = subprocess.run([sys.executable, "demo.py", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 2 and result.stderr.count("\n") == 1
  assert "not a run folder" in result.stderr
