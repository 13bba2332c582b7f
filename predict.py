"""Ask a trained run which digit each image shows.

    python predict.py results digit.png photo.jpg          # digit and top-3 probabilities
    python predict.py results *.png --json                  # one JSON object per line

Images as people have them (PNG, JPEG, GIF, BMP, TIFF or WebP, any size, colour or grey, dark
ink on light or the reverse) are made into MNIST digits first (mnist_jax.preprocess). Exit
status: 0 all predicted, 2 bad input (one line on stderr per problem; the other files are still
predicted).
"""

import json
import logging
import sys

import numpy as np

from mnist_jax import cli


def main(argv=None) -> int:
  parser = cli.ArgumentParser(description=__doc__.split("\n")[0])
  cli.add_run_argument(parser)
  parser.add_argument("images", metavar="IMAGE", nargs="+")
  parser.add_argument("--json", action="store_true", help="one JSON object per image")
  args = parser.parse_args(argv)
  # Only now, so that --help and a bad flag are answered before JAX loads.
  from mnist_jax import checkpointing, inference, preprocess  # pylint: disable=import-outside-toplevel
  cli.use_compilation_cache(args.compilation_cache)
  logging.getLogger("absl").setLevel(logging.CRITICAL)  # orbax's notes; failures come below

  try:
    model = inference.load_run(args.workdir, args.setting, args.formulation)
  except (checkpointing.CheckpointError, ValueError) as e:
    print(f"predict.py: error: {e}", file=sys.stderr)
    return 2
  if model.setting:  # on stderr: stdout holds the answers alone
    print(f"note: {args.workdir}: {model.setting}", file=sys.stderr)
  digits, names, failed = [], [], False
  for path in args.images:
    try:
      digits.append(preprocess.load_image(path))
      names.append(path)
    except preprocess.ImageError as e:
      print(f"predict.py: error: {e}", file=sys.stderr)
      failed = True
  if digits:
    probs_NC = inference.predictor(model)(np.stack(digits))
    for name, probs in zip(names, probs_NC):
      top3 = np.argsort(-probs)[:3]
      if args.json:
        print(json.dumps({"file": name, "digit": int(top3[0]),
                          "probabilities": [round(float(p), 6) for p in probs]}))
      else:
        print(f"{name}: {top3[0]}  (" + ", ".join(f"{d}: {100 * probs[d]:.1f}%" for d in top3)
              + ")")
  return 2 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
