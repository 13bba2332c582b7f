"""What a user sees in TensorBoard itself: a local `tensorboard --logdir results/sweep-lr`
(the README's sweep, its event files written by scripts/tensorboard_events.py) in headless
Chromium, the suite's browser path. The HParams tab lists the four settings with the final
metrics that sweep.csv holds.

    HPARAMS_SCREENSHOT=docs/hparams.png python -m pytest tests/tensorboard_test.py  # the docs'
"""

import csv
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from conftest import ROOT, assert_events_are_metrics, require
from demo_test import CHROMIUM, CHROMIUM_FLAGS

SWEEP = ROOT / "results" / "sweep-lr"


def test_the_committed_sweep_events_are_its_metrics():
  runs = assert_events_are_metrics(SWEEP)
  assert len(runs) == 1 + 4 * 5  # run-wide, and 4 settings each with its 4 seeds
  again = subprocess.run([sys.executable, "-m", "scripts.tensorboard_events", str(SWEEP)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert again.returncode == 2 and again.stderr.strip().splitlines() == [
      f"tensorboard_events.py: error: {SWEEP}/tensorboard exists; delete it to write the event "
      "files again"], again.stderr  # nothing overwritten


def test_the_hparams_view_lists_the_sweep_with_its_final_metrics(tmp_path):
  require("tensorboard")
  if not os.access(CHROMIUM, os.X_OK):
    (pytest.fail if os.environ.get("CI") else pytest.skip)(
        f"no Chromium at {CHROMIUM}: apt-get install chromium, or set CHROMIUM")
  sync_api = require("playwright.sync_api")
  logdir = tmp_path / "sweep-lr"  # a copy: TensorBoard writes nothing, but it may
  shutil.copytree(SWEEP / "tensorboard", logdir / "tensorboard")
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  board = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir),
                            "--host", "127.0.0.1", "--port", str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  try:
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while True:  # bounded: until it answers, or it ended, or two minutes
      try:
        urllib.request.urlopen(url, timeout=2).close()
        break
      except OSError:
        assert board.poll() is None and time.monotonic() < deadline, board.stderr.read()
        time.sleep(0.2)
    with sync_api.sync_playwright() as playwright:
      browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                           args=CHROMIUM_FLAGS)
      try:
        page = browser.new_page(viewport={"width": 1400, "height": 520})
        page.goto(url + "#hparams", timeout=60_000)
        with open(SWEEP / "sweep.csv") as f:
          last = [row for row in csv.DictReader(f) if row["epoch"] == "5"]
        assert len(last) == 4
        for row in last:  # each setting's final metrics, as TensorBoard shows them: the
          for key in ("test_accuracy", "test_accuracy_precise_bn"):  # float32, 5 digits
            shown = np.format_float_positional(np.float32(row[key]), precision=5, unique=False,
                                               fractional=False, trim="k")  # toPrecision(5)
            page.get_by_text(shown, exact=True).first.wait_for(timeout=60_000)  # (shadow DOM)
        if os.environ.get("HPARAMS_SCREENSHOT"):
          page.screenshot(path=os.environ["HPARAMS_SCREENSHOT"])
      finally:
        browser.close()
  finally:
    board.terminate()
    board.wait(timeout=30)
