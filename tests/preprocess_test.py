"""Pictures of digits made into MNIST digits: real MNIST digits rendered the ways people
have them must come back as (nearly) the digit MNIST holds."""

import numpy as np
import pytest
from PIL import Image

from mnist_jax import preprocess


def _as_is(digit_HW):
  return Image.fromarray(digit_HW)


def _inverted(digit_HW):
  return Image.fromarray(255 - digit_HW)


def _large_rgb(digit_HW):
  return Image.fromarray(255 - digit_HW).resize((280, 280), Image.Resampling.BICUBIC).convert("RGB")


def _off_centre_on_canvas(digit_HW):
  canvas = Image.new("L", (400, 300), 235)
  canvas.paste(Image.fromarray(255 - digit_HW).resize((112, 112)), (23, 170))
  return canvas


def _transparent_rgba(digit_HW):
  """Dark ink on a transparent canvas, as drawing programs save it."""
  rgba = np.zeros((28, 28, 4), np.uint8)
  rgba[..., 3] = digit_HW  # ink where opaque; colour black
  return Image.fromarray(rgba, "RGBA")


RENDERINGS = [_as_is, _inverted, _large_rgb, _off_centre_on_canvas, _transparent_rgba]
EXACT = (_as_is, _inverted, _transparent_rgba)  # the digit's own pixels, no resampling


def _centre_of_mass(digit_HW):
  total = digit_HW.sum()
  return ((digit_HW.sum(1) @ np.arange(28)) / total, (digit_HW.sum(0) @ np.arange(28)) / total)


@pytest.mark.parametrize("render", RENDERINGS, ids=lambda f: f.__name__.strip("_"))
def test_renderings_of_mnist_digits_come_back_as_mnist_digits(mnist, render):
  for digit_HW in mnist["test"].images[:20, ..., 0]:
    got_HW = preprocess.to_mnist(render(digit_HW))[..., 0].astype(np.float64)
    assert got_HW.shape == (28, 28)
    # MNIST's own rule: the centre of mass at pixel (14, 14), to the nearest pixel ...
    assert np.allclose(_centre_of_mass(got_HW), 14, atol=0.5 + 0.05)
    # ... and the ink fits a 20x20 box, one side filling it.
    rows, cols = np.nonzero(got_HW > 25)
    extent = max(rows.max() - rows.min(), cols.max() - cols.min()) + 1
    assert 18 <= extent <= 21
    # The digit itself: exactly, when it was MNIST's already (up to the whole-pixel shift,
    # which may round the other way), else blurred a little by resampling twice.
    want = digit_HW.astype(np.float64)
    correlation = max(np.corrcoef(np.roll(got_HW, (dy, dx), (0, 1)).ravel(), want.ravel())[0, 1]
                      for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    assert correlation > (0.999 if render in EXACT else 0.9), correlation


def test_polarity_does_not_matter(mnist):
  digit_HW = mnist["test"].images[0, ..., 0]
  np.testing.assert_array_equal(preprocess.to_mnist(_as_is(digit_HW)),
                                preprocess.to_mnist(_inverted(digit_HW)))


@pytest.mark.parametrize("colour", [0, 255, 128])
def test_a_blank_picture_is_refused(colour):
  with pytest.raises(preprocess.ImageError, match="blank"):
    preprocess.to_mnist(Image.new("RGB", (64, 48), (colour,) * 3))


def test_files_that_are_not_images_are_named(tmp_path):
  (tmp_path / "notes.png").write_text("not an image")
  with pytest.raises(preprocess.ImageError, match="notes.png: not an image"):
    preprocess.load_image(str(tmp_path / "notes.png"))
  with pytest.raises(preprocess.ImageError, match="missing.png: no such file"):
    preprocess.load_image(str(tmp_path / "missing.png"))


def _saved(image: Image.Image, fmt: str, **save) -> "io.BytesIO":
  import io  # pylint: disable=import-outside-toplevel
  buffer = io.BytesIO()
  image.save(buffer, format=fmt, **save)
  buffer.seek(0)
  return buffer


def test_a_phone_photo_is_turned_upright_by_its_exif(mnist):
  """A camera stores the sensor's pixels and an EXIF orientation; orientation 6 says
  'turn 90 degrees clockwise to view'. Read upright, it is the digit; ignoring the tag
  would read it lying on its side."""
  upright = Image.fromarray(255 - mnist["test"].images[0, ..., 0]).resize((280, 280))
  sensor = upright.transpose(Image.Transpose.ROTATE_90)  # what the camera stored
  exif = Image.Exif()
  exif[0x0112] = 6
  read = preprocess.load_image(_saved(sensor, "JPEG", exif=exif, quality=95))
  want = preprocess.load_image(_saved(upright, "JPEG", quality=95))
  lying = preprocess.load_image(_saved(sensor, "JPEG", quality=95))
  error = lambda a: np.abs(a.astype(int) - want.astype(int)).mean()
  assert error(read) < 0.25 * error(lying), (error(read), error(lying))


def test_large_pictures_are_read_at_bounded_size_and_huge_ones_refused(mnist):
  """Past WORK_SIDE pixels a picture is reduced before it is converted to floats: the same
  digit as from a smaller copy. Past MAX_PIXELS (from the header alone) it is refused."""
  digit = Image.fromarray(255 - mnist["test"].images[1, ..., 0])
  small, large = (preprocess.load_image(_saved(digit.resize((side, side)), "PNG"))
                  for side in (preprocess.WORK_SIDE, 3 * preprocess.WORK_SIDE))
  assert np.abs(small.astype(int) - large.astype(int)).mean() < 2  # of 0-255
  side = int(preprocess.MAX_PIXELS ** 0.5) + 1
  with pytest.raises(preprocess.PictureTooLarge, match=f"{side}x{side} pixels is more than"):
    preprocess.load_image(_saved(Image.new("1", (side, side), 1), "PNG"), name="huge")


def test_sixteen_bit_greys_are_read_as_greys():
  ink_HW = np.full((200, 200), 65535, np.uint16)
  ink_HW[20:180, 95:105] = 50 * 257  # a dark grey stroke: 8 bits would clip it to white
  sixteen = preprocess.load_image(_saved(Image.fromarray(ink_HW), "PNG"))
  eight = preprocess.load_image(_saved(Image.fromarray((ink_HW >> 8).astype(np.uint8)), "PNG"))
  np.testing.assert_array_equal(sixteen, eight)
