"""The original's defaults: TinyNet, batch 512, 20 epochs, Adam lr 0.001, StepLR(15, 0.1).

    python train.py --data-dir ../shared/data/mnist

Should reach about 98.9% test accuracy after 20 epochs (results/README table;
the original script: 98.73%).
"""

from mnist_jax.config import Config


def get_config() -> Config:
  return Config()
