"""Images as people have them, made into MNIST digits the way MNIST itself was made.

MNIST's digits were size-normalised to fit a 20x20 box keeping their aspect ratio
(anti-aliased, hence grey levels), then placed in a 28x28 image so that their centre
of mass sits at pixel (14, 14), ink as high values on a 0 background (LeCun et al.,
the MNIST page). `to_mnist` does the same to any picture of one digit: PNG, JPEG, GIF, BMP,
TIFF or WebP, any size, RGB/RGBA or grey, dark ink on a light background or the reverse.
"""

import warnings

import numpy as np
from PIL import Image, ImageOps

BOX = 20  # the digit's longer side, in pixels
SIZE = 28
# Bounded work per picture, whatever a file declares: at most MAX_PIXELS (a 4000x4000
# photo of a digit still reads), decoded at most WORK_SIDE pixels on its longer side
# (JPEG's own reduced decoding where it can, then PIL's `reduce`) before any conversion
# to floats. A 9000x9000 PNG took a server to 3.1 GB in float64 copies; now it is refused,
# and 30 hostile uploads at once keep the server under 1 GB (tests/demo_test.py).
MAX_PIXELS = 16_000_000
WORK_SIDE = 1024


class ImageError(ValueError):
  """A picture that holds no digit to read; the message says why."""


class PictureTooLarge(ImageError):
  """A picture over MAX_PIXELS (or PIL's decompression-bomb limit)."""


def ink(image: Image.Image) -> np.ndarray:
  """Float ink in [0, 1] (1 = darkest stroke), whatever the picture's mode and polarity.

  Transparency counts as background. The background is the picture's border (its
  median grey); ink is how far a pixel lies from it, towards the other end.
  """
  if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
    rgba = image.convert("RGBA")
    alpha = np.asarray(rgba, np.float64)[..., 3] / 255
    grey = np.asarray(rgba.convert("L"), np.float64) / 255
    # Transparent pixels take the opaque border's level, so they read as background.
    border = _border(np.where(alpha > 0.5, grey, np.nan))
    level = 1.0 if np.isnan(border) else border
    grey = alpha * grey + (1 - alpha) * level
  elif image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit and float greys
    grey = np.asarray(image, np.float64)
    grey = grey / (65535 if image.mode.startswith("I;16") or grey.max() > 255 else 255)
  else:
    grey = np.asarray(image.convert("L"), np.float64) / 255
  background = _border(grey)
  away = background - grey if background >= 0.5 else grey - background
  span = background if background >= 0.5 else 1 - background
  return np.clip(away / max(span, 1e-6), 0, 1)


def _border(grey: np.ndarray) -> float:
  edge = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
  edge = edge[~np.isnan(edge)]
  return float(np.median(edge)) if edge.size else float("nan")


def to_mnist(image: Image.Image, threshold: float = 0.1) -> np.ndarray:
  """A (28, 28, 1) uint8 MNIST digit: ink cropped, fitted into 20x20 keeping the aspect
  ratio, placed by its centre of mass. Raises ImageError when there is no ink."""
  ink_HW = ink(image)
  rows, cols = np.nonzero(ink_HW > threshold)  # faint noise and JPEG halos do not count
  if rows.size == 0:
    raise ImageError("no digit found: the image is blank (one colour throughout)")
  ink_HW = ink_HW[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
  height, width = ink_HW.shape
  scale = BOX / max(height, width)
  size = (max(1, round(width * scale)), max(1, round(height * scale)))
  boxed = np.asarray(Image.fromarray(np.rint(255 * ink_HW).astype(np.uint8)).resize(
      size, Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BILINEAR), np.float64)
  # Centre of mass to pixel (14, 14), as in MNIST (its test digits: 13.99 and 14.00 on
  # average), by a whole-pixel shift that keeps the box inside.
  total = boxed.sum()
  com_y = (boxed.sum(axis=1) @ np.arange(boxed.shape[0])) / total
  com_x = (boxed.sum(axis=0) @ np.arange(boxed.shape[1])) / total
  top = int(np.clip(round(SIZE / 2 - com_y), 0, SIZE - boxed.shape[0]))
  left = int(np.clip(round(SIZE / 2 - com_x), 0, SIZE - boxed.shape[1]))
  digit_HW = np.zeros((SIZE, SIZE))
  digit_HW[top:top + boxed.shape[0], left:left + boxed.shape[1]] = boxed
  return np.clip(np.rint(digit_HW), 0, 255).astype(np.uint8)[..., None]


def load_image(source, name: str | None = None) -> np.ndarray:
  """`to_mnist` of an image file (a path, or a binary file object such as an upload);
  ImageError naming it (`name`, default the path) when it cannot be read, PictureTooLarge
  when it declares more than MAX_PIXELS. Phone photos are turned upright (EXIF); of an
  animation, the first frame counts."""
  name = str(source) if name is None else name
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("error", Image.DecompressionBombWarning)
      with Image.open(source) as image:
        width, height = image.size  # from the header: nothing decoded yet
        if width * height > MAX_PIXELS:
          raise PictureTooLarge(f"{width}x{height} pixels is more than the "
                                f"{MAX_PIXELS // 1_000_000} million this reads; send a "
                                "smaller picture")
        image.draft(image.mode, (WORK_SIDE, WORK_SIDE))  # JPEG: decode at 1/2, 1/4, 1/8
        image.load()
        image = ImageOps.exif_transpose(image)
        factor = -(-max(image.size) // WORK_SIDE)  # ceil
        return to_mnist(image.reduce(factor) if factor > 1 else image)
  except FileNotFoundError:
    raise ImageError(f"{name}: no such file") from None
  except IsADirectoryError:
    raise ImageError(f"{name}: is a directory, not an image") from None
  except ImageError as e:  # PictureTooLarge stays itself
    raise type(e)(f"{name}: {e}") from None
  except (Image.DecompressionBombError, Image.DecompressionBombWarning):
    raise PictureTooLarge(f"{name}: declares more pixels than PIL will decode (a "
                          "decompression bomb?); send a smaller picture") from None
  except (OSError, SyntaxError, ValueError, EOFError) as e:  # what PIL raises for what it cannot decode
    raise ImageError(f"{name}: not an image PIL can read ({type(e).__name__}); "
                     "give a PNG, JPEG, GIF, BMP, TIFF or WebP") from None
