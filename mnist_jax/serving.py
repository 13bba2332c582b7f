"""The drawing page of demo.py: a page on Python's own HTTP server that asks a trained run.

The page (`demo.html`, beside this file) is self-contained: no script, style or font
from anywhere else, so it works with no internet. As you draw it posts the canvas as a
PNG to `/predict`, which answers what `predict.py` would answer for that file, made into
an MNIST digit by the same `preprocess.to_mnist`:

    {"digit": 7, "probabilities": [ten floats], "mnist_28x28": [28 rows of 0-255]}

or, for a canvas with nothing on it, `{"error": "..."}` with status 400.
"""

import html
import http.server
import io
import json
import pathlib
import threading
from typing import Callable

import numpy as np

from mnist_jax import inference, preprocess

PAGE = pathlib.Path(__file__).with_name("demo.html")
MAX_UPLOAD_BYTES = 4 << 20  # a 280x280 canvas as PNG is a few kB


def describe(model: inference.Model, workdir: str) -> str:
  """One line on the page: which model answers."""
  seeds = (f"an ensemble of {model.config.num_seeds} seeds" if model.config.num_seeds > 1
           else f"seed {model.config.seed}")
  return (f"{workdir}: {'TinyNet' if model.config.model == 'tiny' else 'Net'} after epoch "
          f"{model.epoch}, {seeds}, {model.batch_norm_statistics} BatchNorm statistics")


def read_picture(data: bytes, predict: Callable[[np.ndarray], np.ndarray]) -> dict:
  """The answer for one uploaded picture; ImageError when it holds no digit."""
  digit_HW1 = preprocess.load_image(io.BytesIO(data), name="the picture")
  probs = predict(digit_HW1[None])[0]
  return {"digit": int(np.argmax(probs)),
          "probabilities": [round(float(p), 6) for p in probs],
          "mnist_28x28": digit_HW1[..., 0].tolist()}


def make_server(model: inference.Model, workdir: str, host: str = "127.0.0.1",
                port: int = 8000) -> http.server.ThreadingHTTPServer:
  """A server (not yet serving: call `serve_forever`) for the page and its predictions.
  Port 0 picks a free port: `server.server_address` says which."""
  predict = inference.predictor(model)
  lock = threading.Lock()  # one prediction at a time: the page asks far less often than that
  page = PAGE.read_text().replace("{{model}}", html.escape(describe(model, workdir))).encode()

  class Handler(http.server.BaseHTTPRequestHandler):

    def do_GET(self):  # pylint: disable=invalid-name
      if self.path in ("/", "/index.html"):
        self._send(200, "text/html; charset=utf-8", page)
      else:
        self._send_json(404, {"error": f"{self.path}: no such page; the page is /"})

    def do_POST(self):  # pylint: disable=invalid-name
      if self.path != "/predict":
        self._send_json(404, {"error": f"{self.path}: post pictures to /predict"})
        return
      length = int(self.headers.get("Content-Length") or 0)
      if not 0 < length <= MAX_UPLOAD_BYTES:
        self._send_json(413 if length else 400,
                        {"error": f"send one PNG or JPEG of at most {MAX_UPLOAD_BYTES} bytes"})
        return
      data = self.rfile.read(length)
      try:
        with lock:
          answer = read_picture(data, predict)
      except preprocess.ImageError as e:
        self._send_json(400, {"error": str(e)})
        return
      self._send_json(200, answer)

    def _send_json(self, status: int, body: dict):
      self._send(status, "application/json", json.dumps(body).encode())

    def _send(self, status: int, content_type: str, body: bytes):
      self.send_response(status)
      self.send_header("Content-Type", content_type)
      self.send_header("Content-Length", str(len(body)))
      self.send_header("Cache-Control", "no-store")
      self.end_headers()
      self.wfile.write(body)

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
      pass  # one line per stroke would bury the address the user needs

  server = http.server.ThreadingHTTPServer((host, port), Handler)  # a taken port fails here
  predict(np.zeros((1, 28, 28, 1), np.uint8))  # compile now, not on the first stroke
  return server
