"""A page to draw digits on, answered by a trained run, served on this machine.

    python demo.py results                  # then open http://127.0.0.1:8000 in a browser
    python demo.py RUN_DIR --port 0         # any free port; the address is printed

Draw with the mouse, a pen or a finger; the digit and the ten probabilities update as you
draw. The page loads nothing from the internet. It answers what predict.py would for the
same picture (mnist_jax/serving.py). Exit status: 2 bad input (one line on stderr).
"""

import ipaddress
import logging
import sys

from mnist_jax import cli


def main(argv=None) -> int:
  parser = cli.ArgumentParser(description=__doc__.split("\n")[0])
  cli.add_run_argument(parser)
  parser.add_argument("--host", default="127.0.0.1",
                      help="address to listen on; 0.0.0.0 to let other machines in; "
                           "default: 127.0.0.1 (this machine only)")
  parser.add_argument("--port", type=int, default=8000, help="0: any free port; default: 8000")
  args = parser.parse_args(argv)
  # Only now, so that --help and a bad flag are answered before JAX loads.
  from mnist_jax import checkpointing, inference, serving  # pylint: disable=import-outside-toplevel
  cli.use_compilation_cache(args.compilation_cache)
  logging.getLogger("absl").setLevel(logging.CRITICAL)  # orbax's notes; failures come below
  try:
    model = inference.load_run(args.workdir, args.setting, args.formulation)
    server = serving.make_server(model, args.workdir, args.host, args.port)
  except (checkpointing.CheckpointError, ValueError) as e:
    print(f"demo.py: error: {e}", file=sys.stderr)
    return 2
  except OSError as e:  # the port is taken, or the address is not this machine's
    print(f"demo.py: error: cannot listen on {args.host}:{args.port} ({e.strerror}); "
          "choose another --port", file=sys.stderr)
    return 2
  host, port = server.server_address[:2]
  if not ipaddress.ip_address(host).is_loopback:
    print(f"note: listening on {host}: anyone who can reach this address can use the page "
          "(a demo, not a public server)", file=sys.stderr, flush=True)
  print(f"serving {serving.describe(model, args.workdir)}\n"
        f"open http://{host}:{port}/ (Ctrl-C to stop)", flush=True)
  try:
    server.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    server.server_close()
  return 0


if __name__ == "__main__":
  sys.exit(main())
