"""demo.py as a user meets it, on the model committed in results/: its /predict answers
directly, and the page in a real browser (Debian's chromium, driven by Playwright) with
digits drawn as mouse strokes.

    DEMO_SCREENSHOT=docs/demo.png python -m pytest tests/demo_test.py   # README's picture
"""

import concurrent.futures
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, require
from tolerance import EPS32

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# As root in a container, and quiet on a machine with no internet: Chromium's own
# background connections would be refused, many at a time.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]


@pytest.fixture(scope="module")
def demo():
  """(the running demo.py process, its address). Its convolutions are this process's, XLA's
  own (tests/conftest.py), so that its answers can be compared with predictions made here."""
  proc = subprocess.Popen([sys.executable, "demo.py", "results", "--port", "0"], cwd=ROOT,
                          env=dict(os.environ, MNIST_JAX_FAST_CONVOLUTIONS="0"),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    for line in proc.stdout:  # ends when the process does, so a failed start cannot hang
      if line.startswith("open http://"):
        yield proc, line.split()[1]
        break
    else:
      pytest.fail(f"demo.py did not start: {proc.stderr.read()}")
  finally:
    proc.terminate()
    proc.wait(timeout=60)


@pytest.fixture(scope="module")
def demo_url(demo):
  return demo[1]


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


def test_predict_answers_what_predict_py_answers(demo_url, mnist, tmp_path):
  """Twelve test digits as the page sends them (dark ink on a white 280x280 canvas): /predict
  gives the digit and probabilities that `predict.py --json` prints for the same files."""
  from mnist_jax import preprocess  # pylint: disable=import-outside-toplevel
  pictures = []
  for i, digit_HW in enumerate(mnist["test"].images[:12, ..., 0]):
    pictures.append(tmp_path / f"{i}.png")
    pictures[-1].write_bytes(png(Image.fromarray(255 - digit_HW).resize((280, 280))
                                 .convert("RGBA")))
  printed = subprocess.run([sys.executable, "predict.py", "results", "--json", *map(str, pictures)],
                           cwd=ROOT, env=dict(os.environ, MNIST_JAX_FAST_CONVOLUTIONS="0"),
                           capture_output=True, text=True, timeout=300)
  assert printed.returncode == 0, printed.stderr
  lines = [json.loads(line) for line in printed.stdout.splitlines()]
  assert [line["file"] for line in lines] == list(map(str, pictures))
  for picture, line in zip(pictures, lines):
    status, answer = post(demo_url, picture.read_bytes())
    assert status == 200, answer
    np.testing.assert_array_equal(np.array(answer["mnist_28x28"]),
                                  preprocess.load_image(picture)[..., 0])
    assert answer["digit"] == line["digit"]
    # Both print 6 decimals (half a unit of the last each); the same program on a batch of
    # 12 and of 1 may round differently in float32's last bits, a few EPS32 on values <= 1.
    np.testing.assert_allclose(answer["probabilities"], line["probabilities"], rtol=0,
                               atol=1e-6 + 8 * EPS32)


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
    (pytest.fail if os.environ.get("CI") else pytest.skip)(  # CI installs it: run or fail
        f"no Chromium at {CHROMIUM}: apt-get install chromium "
        "(.ci/run does, as root), or set CHROMIUM to a Chromium executable")
  sync_api = require("playwright.sync_api")
  with sync_api.sync_playwright() as playwright:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=CHROMIUM_FLAGS)
    try:
      page = browser.new_page(viewport={"width": 820, "height": 440})
      requested, console = [], []
      page.on("request", lambda request: requested.append(request.url))
      page.on("console", lambda message: console.append(message.text))
      page.goto(demo_url)
      pad = page.locator("#pad").bounding_box()
      # Waits through selectors: the page's policy forbids the eval that a JavaScript
      # predicate (wait_for_function) would need.
      idle = page.locator("body[data-busy='false']")
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
          idle.wait_for()
          assert sum(url.endswith("/predict") for url in requested) > asked_before
          page.mouse.up()
        sync_api.expect(page.locator("#digit")).not_to_have_text("–")
        idle.wait_for()
        assert page.text_content("#digit") == str(expected)
        assert page.get_attribute(".row.top", "data-digit") == str(expected)
        shot = page.screenshot(path=str(tmp_path / f"drawn-{expected}.png"))
        assert shot.startswith(b"\x89PNG")
        if expected == DRAWINGS[-1][0] and os.environ.get("DEMO_SCREENSHOT"):
          shutil.copy(tmp_path / f"drawn-{expected}.png", os.environ["DEMO_SCREENSHOT"])
      # Offline by construction: the page asked nothing of any other address.
      assert requested and all(url.startswith(demo_url) for url in requested), requested
      # Its own Content-Security-Policy let all of it run (the bars are drawn, too).
      assert not [m for m in console if "Content Security Policy" in m], console
      assert page.evaluate("getComputedStyle(document.querySelector('.row.top .fill')).width")\
          != "0px"
    finally:
      browser.close()


def test_a_folder_without_a_run_is_one_line_and_exit_2(tmp_path):
  result = subprocess.run([sys.executable, "demo.py", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 2 and result.stderr.count("\n") == 1
  assert "not a run folder" in result.stderr


# ---- hostile and unusual requests ----

def _drawn_digit() -> bytes:
  """A 7 as the page sends it: dark strokes on a white 280x280 canvas."""
  from PIL import ImageDraw  # pylint: disable=import-outside-toplevel
  canvas = Image.new("RGBA", (280, 280), "white")
  ImageDraw.Draw(canvas).line([(70, 50), (210, 50), (154, 140), (112, 246)], fill="black",
                              width=18)
  return png(canvas)


def _picture(size, fmt="PNG", mode="L", **save) -> bytes:
  from PIL import ImageDraw  # pylint: disable=import-outside-toplevel
  image = Image.new(mode, size, "white")
  width, height = size
  ImageDraw.Draw(image).line([(width // 2, height // 10), (width // 2, 9 * height // 10)],
                             fill="black", width=max(1, width // 30))
  buffer = io.BytesIO()
  image.save(buffer, format=fmt, **save)
  return buffer.getvalue()


def _exchange(url, chunks, pause_s=0.0, timeout_s=40.0):
  """Sends `chunks` (bytes, with `pause_s` between them) on a raw connection; returns
  (status or None when the server closed without answering, the body's error text or
  "digit N" for an answer, seconds until the answer or the close)."""
  address = urllib.parse.urlsplit(url)
  start = time.monotonic()
  with socket.create_connection((address.hostname, address.port), timeout=timeout_s) as sock:
    try:
      for chunk in chunks:
        sock.sendall(chunk)
        time.sleep(pause_s)
    except OSError:
      pass  # the server hung up on a trickle: its answer (if any) is read below
    received = b""
    try:
      while chunk := sock.recv(1 << 16):
        received += chunk
    except ConnectionResetError:
      pass
  elapsed = time.monotonic() - start
  if not received:
    return None, "", elapsed
  if not received.startswith(b"HTTP/"):
    return "no status line", received[:80], elapsed
  head, _, body = received.partition(b"\r\n\r\n")
  answer = json.loads(body) if body.startswith(b"{") else {"error": body.decode()[:80]}
  error = answer["error"] if "error" in answer else f"digit {answer['digit']}"
  return int(head.split()[1]), error, elapsed


def _post(length_header: str, body: bytes = b"", path="/predict") -> list:
  return [f"POST {path} HTTP/1.1\r\nHost: x\r\n{length_header}\r\n".encode("latin-1") + body]


def _cmyk_jpeg() -> bytes:
  buffer = io.BytesIO()
  Image.open(io.BytesIO(_picture((200, 200), "PNG", "RGB"))).convert("CMYK").save(
      buffer, format="JPEG")
  return buffer.getvalue()


def _rotated_jpeg() -> bytes:
  """A '1' lying on its side, with EXIF saying 'turn me upright' (orientation 6 = the
  camera was rotated 90 degrees clockwise)."""
  # Turned a quarter counter-clockwise: lying on its side, as the sensor saw it.
  image = Image.open(io.BytesIO(_picture((200, 300), "PNG"))).rotate(90, expand=True)
  exif = Image.Exif()
  exif[0x0112] = 6
  buffer = io.BytesIO()
  image.save(buffer, format="JPEG", exif=exif)
  return buffer.getvalue()


def _sixteen_bit_png() -> bytes:
  ink = np.full((200, 200), 65535, np.uint16)
  ink[20:180, 95:105] = 0
  buffer = io.BytesIO()
  Image.fromarray(ink).save(buffer, format="PNG")
  return buffer.getvalue()


def _palette_png_with_transparency() -> bytes:
  image = Image.new("P", (200, 200), 0)
  image.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)
  image.paste(1, (95, 20, 105, 180))  # a black stroke on a transparent background
  buffer = io.BytesIO()
  image.save(buffer, format="PNG", transparency=0)
  return buffer.getvalue()


def _upload(picture: bytes) -> list:
  return _post(f"Content-Length: {len(picture)}\r\n", picture)


def _bomb() -> bytes:
  """109 kB of PNG declaring 30000x30000 pixels."""
  buffer = io.BytesIO()
  Image.new("1", (30000, 30000), 1).save(buffer, format="PNG")
  return buffer.getvalue()


def _stall_bound_s() -> float:
  """Stalled clients are answered 408 or hung up on within the server's whole-request bound
  and one more read, plus the trickling client's own 1 s pauses and a margin for a busy CI."""
  from mnist_jax import serving  # pylint: disable=import-outside-toplevel
  return serving.REQUEST_SECONDS + serving.READ_TIMEOUT_SECONDS + 1 + 5

# case -> (what the client sends, expected status (None: hung up on), words in the reason)
HOSTILE = {
    "length not a number": (lambda: _post("Content-Length: abc\r\n"), 400, "not a number"),
    "no length": (lambda: _post(""), 411, "Content-Length"),
    "negative length": (lambda: _post("Content-Length: -5\r\n"), 400, "not a number"),
    "huge length": (lambda: _post(f"Content-Length: {10 ** 15}\r\n"), 413, "at most"),
    "zero length": (lambda: _post("Content-Length: 0\r\n"), 400,
                    "PNG, JPEG, GIF, BMP, TIFF or WebP"),
    "says 1000, sends 10": (lambda: _post("Content-Length: 1000\r\n", b"0123456789"), 408,
                            "did not arrive"),
    "length in superscript digits": (lambda: _post("Content-Length: \xb2\r\n"), 400,
                                     "not a number"),
    "connects, sends nothing": (lambda: [b""], None, ""),
    "trickles its headers": (lambda: [bytes([c]) for c in b"POST /predict HTTP/1.1\r\nHost: "
                                      b"x\r\nX-Slow: " + b"a" * 400], None, ""),
    "decompression bomb": (lambda: _upload(_bomb()), 413, "decompression bomb"),
    "9000x9000 PNG": (lambda: _upload(_picture((9000, 9000))), 413, "16 million"),
    "3 MB of noise": (lambda: _upload(np.random.default_rng(0).bytes(3 << 20)), 400,
                      "not an image"),
    "truncated PNG": (lambda: _upload(_drawn_digit()[:300]), 400, "not an image"),
    "path traversal": (lambda: [b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n"], 404,
                       "no such page"),
    "unknown method": (lambda: [b"BREW /predict HTTP/1.1\r\nHost: x\r\n\r\n"], 501, ""),
    "garbage request line": (lambda: [b"GARBAGE\r\n\r\n"], 400, ""),
    "a header line of 70 kB": (lambda: [b"GET / HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n"],
                               431, ""),
    "200 headers": (lambda: [b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n"], 431, ""),
    "post elsewhere": (lambda: _post("Content-Length: 3\r\n", b"abc", path="/admin"), 404,
                       "/predict"),
    "blank canvas": (lambda: _upload(png(Image.new("RGB", (280, 280), "white"))), 400, "blank"),
    "1x1 picture": (lambda: _upload(_picture((1, 1))), 400, "blank"),
    # Formats people send, each a '1' (one upright stroke): each read as that digit.
    "4000x4000 JPEG photo": (lambda: _upload(_picture((4000, 4000), "JPEG")), 200, "digit 1"),
    "1x5000 strip": (lambda: _upload(_picture((1, 5000))), 200, "digit 1"),
    "16-bit PNG": (lambda: _upload(_sixteen_bit_png()), 200, "digit 1"),
    "palette PNG, transparent": (lambda: _upload(_palette_png_with_transparency()), 200, "digit 1"),
    "CMYK JPEG": (lambda: _upload(_cmyk_jpeg()), 200, "digit 1"),
    "JPEG turned by EXIF": (lambda: _upload(_rotated_jpeg()), 200, "digit 1"),
    "GIF": (lambda: _upload(_picture((200, 200), "GIF")), 200, "digit 1"),
    "BMP": (lambda: _upload(_picture((200, 200), "BMP")), 200, "digit 1"),
    "TIFF": (lambda: _upload(_picture((200, 200), "TIFF")), 200, "digit 1"),
    "WebP": (lambda: _upload(_picture((200, 200), "WEBP")), 200, "digit 1"),
}


def _peak_memory_bytes(pid: int) -> int:
  with open(f"/proc/{pid}/status") as f:
    return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def test_hostile_and_unusual_requests_get_their_answer_in_bounded_time(demo):
  proc, url = demo
  cases = {name: make() for name, (make, _, _) in HOSTILE.items()}
  with concurrent.futures.ThreadPoolExecutor(len(cases)) as pool:
    futures = {name: pool.submit(_exchange, url, chunks, 1.0 if name.startswith("trickles")
                                 else 0.0) for name, chunks in cases.items()}
    answers = {name: future.result(timeout=120) for name, future in futures.items()}
  bound_s = _stall_bound_s()
  for name, (status, error, elapsed) in answers.items():
    _, want_status, words = HOSTILE[name]
    assert (status, elapsed <= bound_s) == (want_status, True), (name, status, error, elapsed)
    assert words in error, (name, error)
  assert proc.poll() is None  # alive, and still reading drawings
  status, error, _ = _exchange(url, _upload(_drawn_digit()))
  assert status == 200, error
  assert _peak_memory_bytes(proc.pid) < 1 << 30


def test_the_page_says_who_may_run_what(demo_url):
  with urllib.request.urlopen(demo_url, timeout=60) as page:
    headers = page.headers
  policy = dict(part.strip().split(" ", 1) for part in headers["Content-Security-Policy"].split(";"))
  assert policy["default-src"] == "'none'" and policy["frame-ancestors"] == "'none'"
  assert policy["connect-src"] == "'self'" and "unsafe" not in policy["script-src"]
  assert headers["X-Content-Type-Options"] == "nosniff"
  assert headers["X-Frame-Options"] == "DENY" and headers["Referrer-Policy"] == "no-referrer"


def _damaged(rng, good: list) -> bytes:
  """A truncated, bit-flipped or spliced copy of one of the good files."""
  data = bytearray(good[rng.integers(len(good))])
  how = rng.integers(3)
  if how == 0:
    return bytes(data[:rng.integers(1, len(data))])
  if how == 1:
    for position in rng.integers(0, len(data), rng.integers(1, 20)):
      data[position] ^= 1 << int(rng.integers(8))
    return bytes(data)
  other = good[rng.integers(len(good))]
  return bytes(data[:rng.integers(len(data))]) + other[rng.integers(len(other)):]


def test_damaged_files_are_a_digit_or_a_reason(demo_url):
  """300 truncated, bit-flipped and spliced PNG and JPEG files (a fixed seed): through
  preprocess.load_image each is a digit or an ImageError; through /predict, 200 or 400."""
  from mnist_jax import preprocess  # pylint: disable=import-outside-toplevel
  good = [_drawn_digit(), _picture((280, 280), "JPEG"), _picture((120, 90), "PNG", "RGB")]
  rng = np.random.default_rng(21)
  outcomes = {}
  for i in range(300):
    data = _damaged(rng, good)
    try:
      digit = preprocess.load_image(io.BytesIO(data), name=f"damaged {i}")
      assert digit.shape == (28, 28, 1) and digit.dtype == np.uint8
      read = 200
    except preprocess.ImageError:
      read = 400
    if i % 3 == 0:  # a third of them through the server too: the same outcome
      status, error, _ = _exchange(demo_url, _upload(data))
      assert status == read, (i, status, error)
    outcomes[read] = outcomes.get(read, 0) + 1
  assert outcomes.get(200) and outcomes.get(400), outcomes  # both kinds occurred


def test_a_host_beyond_loopback_is_announced(tmp_path):
  """`--host` on an address other machines can reach: one note on stderr, and the page
  served there. The address lives in a network namespace this test makes (root), so
  nothing outside it can reach the server."""
  if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("nsenter"):
    pytest.skip("needs root, unshare and nsenter to make a network namespace")
  address = "10.99.0.1"
  setup = (f"ip link add v0 type veth peer name v1 && ip addr add {address}/24 dev v0 && "
           "ip link set v0 up && ip link set v1 up && ip link set lo up")
  proc = subprocess.Popen(
      ["unshare", "--net", "sh", "-c",
       f"{setup} && exec {sys.executable} demo.py results --host {address} --port 0"],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    url = next((line.split()[1] for line in proc.stdout if line.startswith("open http://")), None)
    if url is None and "Operation not permitted" in proc.stderr.read():
      pytest.skip("this machine does not allow network namespaces")
    assert url is not None and url.startswith(f"http://{address}:"), url
    # From inside the namespace, as another machine on that network would ask.
    fetch = subprocess.run(
        ["nsenter", f"--net=/proc/{proc.pid}/ns/net", sys.executable, "-c",
         f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=30).status)"],
        capture_output=True, text=True, timeout=60)
    assert fetch.stdout.strip() == "200", fetch.stderr
  finally:
    proc.terminate()
    _, err = proc.communicate(timeout=60)
  notes = err.strip().splitlines()
  assert len(notes) == 1 and f"listening on {address}: anyone who can reach" in notes[0], err
