"""Train TinyNet or Net on MNIST with the original PyTorch script's recipe and flags.

    python train.py --data-dir ../shared/data/mnist                 # the original's defaults
    python train.py --config tiny_headline --data-dir ../shared/data/mnist
    python train.py --sweep lr=0.001,0.01 --sweep bn_momentum=0.1,0.3 --seeds 4   # 16 runs at once

The command line lives in the package (mnist_jax/train_cli.py), so that `pip install .` users
run the same from any folder as `python -m mnist_jax`. Exit status: 0 done, 2 bad input (one
line on stderr), 3 the loss diverged, 4 a process of a multi-host run was lost.
"""

from mnist_jax import train_cli

if __name__ == "__main__":
  train_cli.run()
