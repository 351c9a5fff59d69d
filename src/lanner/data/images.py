"""Reading images as people have them: EXIF rotation, grayscale, RGBA, palette, CMYK, 16-bit, truncated."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from lanner.errors import DataError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def is_image_file(path: Path) -> bool:
    """Case-insensitive, so ``IMG_001.JPG`` counts; hidden files (``._x.jpg`` from macOS) do not."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        # Composite on white: transparent pixels are usually background, and black would be a lie.
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale (microscopy, thermal): scale to 8 bits instead of clipping at 255.
        arr = __import__("numpy").asarray(img, dtype="float32")
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / max(hi - lo, 1.0) * 255.0
        return Image.fromarray(arr.astype("uint8")).convert("RGB")
    return img.convert("RGB")


@contextlib.contextmanager
def errors_name_the_file(path: Path) -> Iterator[None]:
    """Turn every failure to read ``path`` into a :class:`DataError` naming the file and the reason."""
    try:
        yield
    except FileNotFoundError as e:
        raise DataError(f"{path}: file not found") from e
    except Image.DecompressionBombError as e:
        raise DataError(
            f"{path}: image is larger than Pillow's decompression-bomb limit ({e}); "
            "if you trust this file, raise the limit with --max-image-pixels N"
        ) from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: cannot read image ({type(e).__name__}: {e})") from e


def open_image(path: str | Path, *, exif: bool = True) -> Image.Image:
    """Open an image upright (EXIF orientation applied) as 8-bit RGB.

    Raises :class:`DataError` naming the file and the reason for anything unreadable.
    """
    path = Path(path)
    with errors_name_the_file(path), Image.open(path) as img:
        img.load()
        if exif:
            img = ImageOps.exif_transpose(img)
        return _to_rgb(img)


def upright_rgb(img: Image.Image) -> Image.Image:
    """An image already in memory as :func:`open_image` gives a file: upright, 8-bit RGB."""
    return _to_rgb(ImageOps.exif_transpose(img))


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of the upright image, reading only the header (fast, no decode)."""
    path = Path(path)
    with errors_name_the_file(path), Image.open(path) as img:
        w, h = img.size
        orientation = img.getexif().get(0x0112, 1)
    # Orientations 5-8 rotate by 90 degrees, so width and height swap.
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def set_max_image_pixels(pixels: int | None) -> None:
    """Raise (or lift, with 0) Pillow's decompression-bomb guard for trusted huge images."""
    if pixels is not None:
        Image.MAX_IMAGE_PIXELS = None if pixels <= 0 else int(pixels)
