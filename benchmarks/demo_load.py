"""Load on the drawing page's server: N clients drawing at once, a fixed number of
predictions each, as the page sends them (a 280x280 PNG per stroke). Prints p50/p99
latency and predictions per second, then the server's peak resident memory (VmHWM); the
numbers in docs/usage.md come from

    python -m benchmarks.demo_load --clients 1 4 16 --requests 50
"""

import argparse
import io
import pathlib
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
from PIL import Image, ImageDraw

from common import cpu_description

ROOT = pathlib.Path(__file__).resolve().parents[1]


def drawing(seed: int) -> bytes:
  """A random stroke on a white canvas, as the page posts it."""
  rng = np.random.default_rng(seed)
  canvas = Image.new("RGBA", (280, 280), "white")
  ImageDraw.Draw(canvas).line([tuple(p) for p in rng.uniform(40, 240, (4, 2))], fill="black",
                              width=18)
  buffer = io.BytesIO()
  canvas.save(buffer, format="PNG")
  return buffer.getvalue()


def client(url: str, pictures: list, latencies: list):
  for picture in pictures:
    start = time.perf_counter()
    request = urllib.request.Request(url + "predict", data=picture, method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
      response.read()
      assert response.status == 200
    latencies.append(time.perf_counter() - start)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--run", default=str(ROOT / "results"), help="the run demo.py serves")
  parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
  parser.add_argument("--requests", type=int, default=50, help="predictions per client")
  args = parser.parse_args()
  server = subprocess.Popen([sys.executable, str(ROOT / "demo.py"), args.run, "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
  try:
    url = next(line.split()[1] for line in server.stdout if line.startswith("open http://"))
    print(f"{cpu_description()}; demo.py {args.run}")
    print("clients  predictions  p50 ms  p99 ms  predictions/s")
    for clients in args.clients:
      latencies = []
      threads = [threading.Thread(target=client, args=(
          url, [drawing(c * args.requests + i) for i in range(args.requests)], latencies))
                 for c in range(clients)]
      start = time.perf_counter()
      for thread in threads:
        thread.start()
      for thread in threads:
        thread.join()
      seconds = time.perf_counter() - start
      p50, p99 = np.percentile(latencies, [50, 99]) * 1000
      print(f"{clients:7d}  {len(latencies):11d}  {p50:6.1f}  {p99:6.1f}  "
            f"{len(latencies) / seconds:13.1f}")
    with open(f"/proc/{server.pid}/status") as f:
      peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    print(f"server peak resident memory (VmHWM): {peak / 1024:.0f} MB")
  finally:
    server.terminate()
    server.wait(timeout=60)


if __name__ == "__main__":
  main()
