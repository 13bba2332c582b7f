"""The drawing page of demo.py: a page on Python's own HTTP server that asks a trained run.

The page (`demo.html`, beside this file) is self-contained: no script, style or font
from anywhere else, so it works with no internet. As you draw it posts the canvas as a
PNG to `/predict`, which answers what `predict.py` would answer for that file, made into
an MNIST digit by the same `preprocess.to_mnist`:

    {"digit": 7, "probabilities": [ten floats], "mnist_28x28": [28 rows of 0-255]}

or `{"error": "..."}` with a 4xx status: 400 for a malformed request or a picture with no
digit, 411 for a POST without a length, 413 for an upload over MAX_UPLOAD_BYTES or a
picture over preprocess.MAX_PIXELS, 408 for a client too slow to send its request.

What it is: a demo for a person or a small group, on Python's own threaded server, one
prediction at a time, each connection bounded in time (REQUEST_SECONDS) and each picture
in work (preprocess). For more, put it behind a real server.
"""

import base64
import hashlib
import html
import http.server
import io
import json
import pathlib
import re
import socket
import threading
import time
from typing import Callable

import numpy as np

from mnist_jax import inference, preprocess

PAGE = pathlib.Path(__file__).with_name("demo.html")
MAX_UPLOAD_BYTES = 4 << 20  # a 280x280 canvas as PNG is a few kB
# A connection's whole life, headers and body: a stalled or trickling client is answered
# 408 (or, stalled in its headers, disconnected) and frees its thread.
REQUEST_SECONDS = 10.0
READ_TIMEOUT_SECONDS = 5.0  # one read from the socket


def security_headers(page: bytes) -> dict:
  """The page may run only its own inline script and style (by hash), talk only to this
  server, and be framed by nobody. (Every answer also says `nosniff`.)"""
  hashes = {tag: " ".join(
      f"'sha256-{base64.b64encode(hashlib.sha256(block).digest()).decode()}'"
      for block in re.findall(rb"<%s>(.*?)</%s>" % (tag, tag), page, re.S))
            for tag in (b"script", b"style")}
  return {
      "Content-Security-Policy": (
          f"default-src 'none'; script-src {hashes[b'script']}; style-src {hashes[b'style']}; "
          "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
          "frame-ancestors 'none'"),
      "X-Frame-Options": "DENY",
      "Referrer-Policy": "no-referrer",
  }


def describe(model: inference.Model, workdir: str) -> str:
  """One line on the page: which model answers."""
  seeds = (f"an ensemble of {model.config.num_seeds} seeds" if model.config.num_seeds > 1
           else f"seed {model.config.seed}")
  return (f"{workdir}: {'TinyNet' if model.config.model == 'tiny' else 'Net'} after epoch "
          f"{model.epoch}, {model.setting + ', ' if model.setting else ''}{seeds}, "
          f"{model.batch_norm_statistics} BatchNorm statistics")


def read_picture(data: bytes, predict: Callable[[np.ndarray], np.ndarray]) -> dict:
  """The answer for one uploaded picture; ImageError when it holds no digit."""
  digit_HW1 = preprocess.load_image(io.BytesIO(data), name="the picture")
  probs = predict(digit_HW1[None])[0]
  return {"digit": int(np.argmax(probs)),
          "probabilities": [round(float(p), 6) for p in probs],
          "mnist_28x28": digit_HW1[..., 0].tolist()}


class _Server(http.server.ThreadingHTTPServer):
  daemon_threads = True
  request_queue_size = 64  # socketserver's 5 reset connections when a class drew at once

  def handle_error(self, request, client_address):
    pass  # a client that hung up or was hung up on; the server goes on


def make_server(model: inference.Model, workdir: str, host: str = "127.0.0.1",
                port: int = 8000) -> http.server.ThreadingHTTPServer:
  """A server (not yet serving: call `serve_forever`) for the page and its predictions.
  Port 0 picks a free port: `server.server_address` says which."""
  predict = inference.predictor(model)
  lock = threading.Lock()  # one prediction at a time: the page asks far less often than that
  page = PAGE.read_text().replace("{{model}}", html.escape(describe(model, workdir))).encode()

  headers = security_headers(page)

  class Handler(http.server.BaseHTTPRequestHandler):
    timeout = READ_TIMEOUT_SECONDS  # each read; REQUEST_SECONDS bounds them all
    default_request_version = "HTTP/1.0"  # a status line for a malformed request line too

    def setup(self):
      super().setup()
      self.deadline = time.monotonic() + REQUEST_SECONDS
      # Unblocks a read that trickles past the deadline: the connection ends, the thread too.
      self.watchdog = threading.Timer(REQUEST_SECONDS + READ_TIMEOUT_SECONDS, self._hang_up)
      self.watchdog.daemon = True
      self.watchdog.start()

    def finish(self):
      self.watchdog.cancel()
      try:
        super().finish()
      except OSError:
        pass  # the client left first

    def _hang_up(self):
      try:
        self.connection.shutdown(socket.SHUT_RDWR)
      except OSError:
        pass

    def do_GET(self):  # pylint: disable=invalid-name
      if self.path in ("/", "/index.html"):
        self._send(200, "text/html; charset=utf-8", page, headers)
      else:
        self._send_json(404, {"error": f"{self.path[:200]}: no such page; the page is /"})

    def do_POST(self):  # pylint: disable=invalid-name
      try:
        self._predict()
      except Exception as e:  # pylint: disable=broad-except  # an answer, whatever happened
        self._send_json(500, {"error": f"the server failed on this request ({type(e).__name__})"})

    def _predict(self):
      if self.path != "/predict":
        self._send_json(404, {"error": f"{self.path[:200]}: post pictures to /predict"})
        return
      declared = self.headers.get("Content-Length")
      if declared is None:
        self._send_json(411, {"error": "a POST to /predict needs a Content-Length"})
        return
      if not declared.strip().isdecimal():  # isdigit would pass '²', which int() refuses
        self._send_json(400, {"error": f"Content-Length {declared[:40]!r} is not a number "
                                       "of bytes"})
        return
      length = int(declared)
      if not 0 < length <= MAX_UPLOAD_BYTES:
        self._send_json(413 if length else 400,
                        {"error": f"send one picture (PNG, JPEG, GIF, BMP, TIFF or WebP) of at "
                                  f"most {MAX_UPLOAD_BYTES} bytes"})
        return
      data = self._read_body(length)
      self.watchdog.cancel()  # the client's part is done; waiting for the model is ours
      if data is None:
        self._send_json(408, {"error": "the picture did not arrive in time; send it again"})
        return
      try:
        with lock:
          answer = read_picture(data, predict)
      except preprocess.PictureTooLarge as e:
        self._send_json(413, {"error": str(e)})
        return
      except preprocess.ImageError as e:
        self._send_json(400, {"error": str(e)})
        return
      self._send_json(200, answer)

    def _read_body(self, length: int) -> bytes | None:
      """The body, or None when the client sends less than it said in time."""
      chunks, left = [], length
      try:
        while left and time.monotonic() < self.deadline:
          chunk = self.rfile.read1(min(left, 1 << 16))
          if not chunk:
            return None
          chunks.append(chunk)
          left -= len(chunk)
      except OSError:  # a read timed out, or the watchdog hung up
        return None
      return None if left else b"".join(chunks)

    def _send_json(self, status: int, body: dict):
      self._send(status, "application/json", json.dumps(body).encode())

    def send_error(self, code, message=None, explain=None):
      """The server's own refusals (a malformed request line, an unknown method, headers
      too long) as JSON like the others."""
      self._send_json(code, {"error": message or self.responses.get(code, ("",))[0]})

    def _send(self, status: int, content_type: str, body: bytes, extra: dict | None = None):
      try:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in (extra or {}).items():
          self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)
      except OSError:
        pass  # the client left before its answer

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
      pass  # one line per stroke would bury the address the user needs

  server = _Server((host, port), Handler)  # a taken port fails here
  predict(np.zeros((1, 28, 28, 1), np.uint8))  # compile now, not on the first stroke
  return server
