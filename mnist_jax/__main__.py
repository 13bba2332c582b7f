"""`python -m mnist_jax ...`: train.py from any folder (mnist_jax/train_cli.py)."""

import sys

from mnist_jax import train_cli

sys.exit(train_cli.main(prog="python -m mnist_jax"))
