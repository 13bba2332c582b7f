"""Write a trained run's model as one file that runs with jax alone (no flax, no mnist_jax).

    python export.py results --out tinynet.jaxexport
    # anywhere with jax and numpy:
    #   exported = jax.export.deserialize(open("tinynet.jaxexport", "rb").read())
    #   logits = exported.call(images_uint8_N28281)        # any batch size N

The file is `jax.export`'s serialized StableHLO of the eval-mode forward pass, the
normalisation and the weights inside (a --precise-bn run's precise BatchNorm statistics).
Exit status: 0 written, 2 bad input (one line on stderr; no file written; an existing --out is
overwritten only with --force).
"""

import logging
import os
import sys

from mnist_jax import cli


def main(argv=None) -> int:
  parser = cli.ArgumentParser(description=__doc__.split("\n")[0])
  cli.add_run_argument(parser)
  parser.add_argument("--out", required=True, help="the file to write")
  parser.add_argument("--force", action="store_true", help="overwrite --out if it exists")
  parser.add_argument("--seed-index", type=int, default=0,
                      help="which seed of a --seeds run (0 = its first); default: 0")
  args = parser.parse_args(argv)
  if os.path.exists(args.out) and not args.force:
    print(f"export.py: error: {args.out} exists; pass --force to overwrite it, or choose "
          "another --out", file=sys.stderr)
    return 2
  # Only now, so that --help and a bad flag and an existing file are answered before JAX loads.
  from mnist_jax import checkpointing, inference  # pylint: disable=import-outside-toplevel
  cli.use_compilation_cache(args.compilation_cache)
  logging.getLogger("absl").setLevel(logging.CRITICAL)  # orbax's notes; failures come below
  try:
    model = inference.load_run(args.workdir, args.setting, args.formulation)
    data = inference.export_logits(inference.one_seed(model, args.seed_index))
  except (checkpointing.CheckpointError, ValueError) as e:
    print(f"export.py: error: {e}", file=sys.stderr)
    return 2
  tmp = f"{args.out}.tmp{os.getpid()}"
  try:
    with open(tmp, "wb") as f:
      f.write(data)
    os.replace(tmp, args.out)
  except OSError as e:
    print(f"export.py: error: {args.out}: cannot write ({e.strerror})", file=sys.stderr)
    return 2
  print(f"wrote {args.out} ({len(data):,} bytes): {model.config.model} of {args.workdir}, epoch "
        f"{model.epoch}, {model.setting + ', ' if model.setting else ''}seed index "
        f"{args.seed_index}, {model.batch_norm_statistics} BatchNorm statistics")
  return 0


if __name__ == "__main__":
  sys.exit(main())
