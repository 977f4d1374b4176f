"""Reading image and mask files into uint8 (C,H,W) / int64 (H,W) tensors.

torchvision's decoder reads JPEG/PNG/WebP/GIF straight into a CHW tensor (no numpy detour), and
reading the bytes with ``open`` is faster than ``torchvision.io.read_file`` for small files; PIL is
the fallback for other formats (BMP, TIFF, ...). Masks go through PIL so palette PNGs keep their
class indices.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from okc.errors import OkcError

try:
    from torchvision.io import ImageReadMode, decode_image
except ImportError:  # torchvision 0.29 deprecates its decoders for TorchCodec; PIL takes over
    decode_image = None  # type: ignore[assignment]

# torchvision 0.29 warns on every decode that its image codecs are deprecated (TorchCodec replaces
# them). They still are the fastest CHW decoder here; this is the one place that would change.
warnings.filterwarnings(
    "ignore",
    message="The image decoding and encoding capabilities of TorchVision",
    category=DeprecationWarning,
)

ImageFormat = Literal["rgb", "bgr", "rgba", "gray"]

# ITU-R 601-2 luma, as PIL's "L" conversion.
_LUMA = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
_warned_16bit = False


class ImageReadError(OkcError):
    """A missing, unreadable or corrupt image/mask file."""


class CorruptSampleError(OkcError):
    """A sample whose file cannot be read; names the file and the annotation row.

    Datasets raise it; the pipeline skips the sample instead when the dataset has ``skip_corrupt``.
    """

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


def read_image(
    path: str | Path, *, image_format: ImageFormat = "rgb", layout_color: int | Sequence[int] = 0
) -> torch.Tensor:
    """The image at ``path`` as a uint8 (C,H,W) tensor in ``image_format``."""
    return convert_format(_decode(path), image_format, layout_color)


def read_mask(path: str | Path) -> torch.Tensor:
    """A single-channel label mask as int64 (H,W); palette PNGs give their indices."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "I", "I;16", "1"):
                im = im.convert("L")  # a colour mask: its luminance, as cv2 read it
            array = np.array(im)
    except FileNotFoundError:
        raise ImageReadError(f"mask file not found: {path}") from None
    except Exception as err:
        raise ImageReadError(f"cannot read mask {path}: {err}") from err
    return torch.from_numpy(array.astype(np.int64, copy=False))


def _decode(path: str | Path) -> torch.Tensor:
    try:
        with open(path, "rb") as f:
            # straight into a bytearray: torch.frombuffer needs a writable buffer, and copying
            # the bytes into one cost 4 % of a 224-px sample's time (perf/README.md)
            data = bytearray(os.fstat(f.fileno()).st_size)
            del data[f.readinto(data) :]  # a file that shrank meanwhile; no copy otherwise
    except FileNotFoundError:
        raise ImageReadError(f"image file not found: {path}") from None
    except OSError as err:
        raise ImageReadError(f"cannot read {path}: {err}") from err
    if not data:
        raise ImageReadError(f"image file is empty: {path}")
    if decode_image is None:
        image = _decode_pil(path, data)
    else:
        try:
            raw = torch.frombuffer(data, dtype=torch.uint8)
            image = decode_image(raw, ImageReadMode.UNCHANGED)
        except (RuntimeError, ValueError):  # a format torchvision cannot read, or a corrupt file
            image = _decode_pil(path, data)
    if image.dtype != torch.uint8:
        image = _to_uint8(image, path)
    return image


def _decode_pil(path: str | Path, data: bytes | bytearray) -> torch.Tensor:
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode not in ("L", "LA", "RGB", "RGBA"):
                im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
            array = np.array(im)
    except Exception as err:
        raise ImageReadError(f"cannot decode image {path}: {err}") from err
    tensor = torch.from_numpy(array)
    return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1).contiguous()


def _to_uint8(image: torch.Tensor, path: str | Path) -> torch.Tensor:
    global _warned_16bit
    if not _warned_16bit:
        _warned_16bit = True
        warnings.warn(
            f"{path} is a 16-bit image; okc reads it as 8-bit (divided by 256), as TorchOk did",
            stacklevel=3,
        )
    return (image.to(torch.int32) >> 8).to(torch.uint8)


def convert_format(
    image: torch.Tensor, image_format: ImageFormat, layout_color: int | Sequence[int] = 0
) -> torch.Tensor:
    """Convert a uint8 (C,H,W) image with 1-4 channels (gray, gray+alpha, RGB, RGBA).

    Alpha is composited over ``layout_color`` unless the format keeps it (TorchOk's
    ``rgba_layout_color``).
    """
    channels = image.shape[0]
    if image_format == "rgba":
        if channels == 4:
            return image
        rgb = _drop_alpha(image, layout_color) if channels == 2 else image
        rgb = rgb.expand(3, -1, -1) if rgb.shape[0] == 1 else rgb
        alpha = torch.full_like(rgb[:1], 255)
        return torch.cat([rgb, alpha])
    if channels in (2, 4):
        image = _drop_alpha(image, layout_color)
        channels -= 1
    if image_format == "gray":
        if channels == 1:
            return image
        return (image.float() * _LUMA).sum(0, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)
    if channels == 1:
        image = image.expand(3, -1, -1).contiguous()
    return image.flip(0) if image_format == "bgr" else image


def _drop_alpha(image: torch.Tensor, layout_color: int | Sequence[int]) -> torch.Tensor:
    color, alpha = image[:-1].float(), image[-1:].float() / 255
    layout = torch.as_tensor(layout_color, dtype=torch.float32).reshape(-1, 1, 1)
    if layout.shape[0] not in (1, color.shape[0]):
        layout = layout.mean(0, keepdim=True)  # an RGB layout colour under a gray image
    return (color * alpha + layout * (1 - alpha)).round_().clamp_(0, 255).to(torch.uint8)
