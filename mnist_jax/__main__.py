"""`python -m mnist_jax ...`: train.py from any folder (mnist_jax/train_cli.py)."""

from mnist_jax import train_cli

train_cli.run(prog="python -m mnist_jax")
