"""Does predict.py read digits as people have them? 500 real MNIST test images written to
image files four ways, each predicted through predict.py's path (file -> mnist_jax.preprocess
-> the run's model), against the model's own answer on the images themselves.

    python -m scripts.predict_agreement results --data-dir ../shared/data/mnist

Sets: as they are (PNG); inverted (dark ink on white, PNG); scaled up to 280x280 and RGB
(JPEG); pasted off-centre, scaled to 112x112, on a 400x300 light-grey canvas (PNG).
"""

import argparse
import logging
import os
import tempfile


import jax
import numpy as np
from PIL import Image

from mnist_jax import DataError, checkpointing, inference, load_mnist, preprocess


def _canvas(digit_HW):
  canvas = Image.new("L", (400, 300), 235)
  canvas.paste(Image.fromarray(255 - digit_HW).resize((112, 112)), (23, 170))
  return canvas


SETS = {
    "as they are": (lambda d: Image.fromarray(d), "png"),
    "inverted": (lambda d: Image.fromarray(255 - d), "png"),
    "280x280 RGB": (lambda d: Image.fromarray(255 - d).resize((280, 280)).convert("RGB"), "jpg"),
    "off-centre on a 400x300 canvas": (_canvas, "png"),
}


def main():
  parser = argparse.ArgumentParser(  # the docstring's first paragraph, as one line
      description=" ".join(__doc__.split("\n\n")[0].split()))
  parser.add_argument("workdir")
  parser.add_argument("--data-dir", required=True)
  parser.add_argument("--count", type=int, default=500)
  args = parser.parse_args()
  logging.getLogger("absl").setLevel(logging.ERROR)  # orbax's notes on items not restored
  try:
    model = inference.load_run(args.workdir)
    test = load_mnist(args.data_dir)["test"]
  except (checkpointing.CheckpointError, DataError, ValueError) as e:
    parser.exit(2, f"predict_agreement.py: error: {e}\n")
  images, labels = test.images[:args.count], test.labels[:args.count]
  predict = jax.jit(inference.probabilities, static_argnums=2)
  own = np.argmax(predict(model.state, images, model.config.num_seeds), axis=-1)
  print(f"{args.workdir} (epoch {model.epoch}, {model.config.num_seeds} seed(s), "
        f"{model.batch_norm_statistics} BatchNorm statistics): the model's own answers on the "
        f"{args.count} images are {100 * np.mean(own == labels):.1f}% right")
  print("| set | agrees with the model's own answer | right |")
  print("|---|---|---|")
  with tempfile.TemporaryDirectory() as folder:
    for name, (render, extension) in SETS.items():
      digits = []
      for i, digit_HW in enumerate(images[..., 0]):
        path = os.path.join(folder, f"{i}.{extension}")
        render(digit_HW).save(path)
        digits.append(preprocess.load_image(path))
      answers = np.argmax(predict(model.state, np.stack(digits), model.config.num_seeds), -1)
      print(f"| {name} | {100 * np.mean(answers == own):.1f}% | "
            f"{100 * np.mean(answers == labels):.1f}% |")


if __name__ == "__main__":
  main()
