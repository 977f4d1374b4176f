"""uint8 per-sample forms of the batched ops TorchOk's recipes end with, for a CPU device.

On a GPU the batched tail of ``augment`` and the ``transform`` (flip, crop, FancyPCA, Normalize)
run on the device. On a CPU device the same "device" is the core the training step needs, and
the batched ops on a 64 x 3 x 256 x 256 float batch stream 50 MB per op through memory: in
``perf/bench_data.py --recipe imagenet`` they cost 8 ms per image, 5x decode and resize together.
So when every op of the tail has a form here, the pipeline runs the tail in the loader threads
instead, one sample at a time (its 200 KB stay in cache), in uint8 until the last op; the
transform's Normalize then makes the float sample there too.

The forms draw from the sample's own stream (``okc.data.rng``), as the rest of the per-sample
stage does, so a run repeats whatever the threads' timing. Each keeps its op's semantics:

- ``RandomFlip`` (okc's per-sample flips) runs as is: its ``torch.where`` works on uint8.
- Kornia's ``RandomCrop`` without padding: a slice at an offset drawn uniformly.
- ``FancyPCA``: its own shift (``FancyPCA.shift``), added in 0-255 units and rounded back to
  uint8, which is what ``OneSample`` gives on a uint8 sample, with the same draws in the same
  order.

Kornia's ops are not run per sample here: their per-call bookkeeping costs more than the pixel
work on one image, so a tail holding any other op stays batched.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import kornia.augmentation as K
import torch
from torch import nn

from okc.data import rng
from okc.data.ops import BatchOp, Boxes, Masks, Normalize, Out, RandomFlip, per_sample_form
from okc.data.photometric import FancyPCA
from okc.errors import OkcError


class SampleOp(BatchOp):
    """An op on one uint8 (C,H,W) sample with int64 (1,H,W) label maps; no boxes."""

    per_sample = True


class SampleFlip(SampleOp):
    """``RandomFlip`` on one sample: its draws, in its order; the pixels move only when the
    sample flips (``RandomFlip`` selects between flipped and not with ``torch.where``)."""

    def __init__(self, op: RandomFlip) -> None:
        super().__init__()
        self.op = op

    def apply(self, image: torch.Tensor, masks: Masks, boxes: Boxes | None) -> Out:
        chosen = bool(rng.rand(1, device="cpu") < self.op.p)
        pick = int(rng.randint(0, len(self.op.choices), (1,), device="cpu"))
        horizontal, vertical = self.op.choices[pick].tolist() if chosen else (False, False)
        dims = [d for d, flip in ((-1, horizontal), (-2, vertical)) if flip]
        if not dims:
            return image, masks, boxes
        return image.flip(dims), [m.flip(dims) for m in masks], boxes


class SampleCrop(SampleOp):
    """Kornia's ``RandomCrop(size)`` (no padding, p=1) on one sample: a uniform offset."""

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = size

    def apply(self, image: torch.Tensor, masks: Masks, boxes: Boxes | None) -> Out:
        (height, width), (crop_h, crop_w) = image.shape[-2:], self.size
        if height < crop_h or width < crop_w:
            raise OkcError(
                f"RandomCrop {crop_h}x{crop_w} of a {height}x{width} image: add a Resize or "
                "PadIfNeeded before it"
            )
        top = int(rng.randint(0, height - crop_h + 1, (1,), device="cpu"))
        left = int(rng.randint(0, width - crop_w + 1, (1,), device="cpu"))
        region = (..., slice(top, top + crop_h), slice(left, left + crop_w))
        return image[region], [m[region] for m in masks], boxes


class SampleFancyPCA(SampleOp):
    """``FancyPCA`` on one uint8 sample, as ``OneSample(FancyPCA)`` computes it, but skipping
    the pixel work when the sample does not draw it (the draws still happen, in order)."""

    def __init__(self, op: FancyPCA) -> None:
        super().__init__()
        self.op = op

    def apply(self, image: torch.Tensor, masks: Masks, boxes: Boxes | None) -> Out:
        applies = bool(rng.rand(1, 1, 1, 1, device="cpu") < self.op.p)  # Photometric's draw
        if not applies:
            rng.randn(1, 1, device="cpu", dtype=torch.float64)  # the alpha ``shift`` draws
            return image, masks, boxes
        pixels = image[None].float()  # 0-255: the covariance scales by 255², the shift by 255
        shift = self.op.shift(pixels) / 255
        # + 0.5 then truncation: rounding, in one pass fewer than round_()
        out = pixels.add_(shift.view(1, -1, 1, 1) + 0.5).clamp_(0, 255).to(torch.uint8)
        return out[0], masks, boxes


def sample_form(op: nn.Module) -> SampleOp | None:
    """``op`` as a uint8 per-sample op, or None when it has no such form."""
    op = per_sample_form(op)
    if isinstance(op, RandomFlip):
        return SampleFlip(op)
    if isinstance(op, FancyPCA):
        return SampleFancyPCA(op)
    if (
        type(op) is K.RandomCrop
        and op.flags["padding"] is None
        and not op.flags["pad_if_needed"]
        and float(op.p) == 1.0
        and float(op.p_batch) == 1.0
    ):
        height, width = op.flags["size"]
        return SampleCrop((int(height), int(width)))
    return None


def sample_forms(ops: Sequence[nn.Module]) -> list[SampleOp] | None:
    """All of ``ops`` as uint8 per-sample ops, or None when any has no such form."""
    forms = [sample_form(op) for op in ops]
    return None if any(f is None for f in forms) else forms  # type: ignore[return-value]


class SampleNormalize(nn.Module):
    """The transform's batched tail (one ``Normalize``; no-ops dropped before) on a batch's
    uint8 samples in a loader thread: the float batch of ``dtype``, as
    ``DataPipeline.to_device`` would make it. It fills the output one sample at a time, so each
    sample's pixels stay in cache through the three passes (normalizing then stacking, or one
    op on the stacked batch, streams the 38 MB float batch through memory two or three times:
    1.5x and 2.1x slower, measured)."""

    def __init__(self, normalize: Normalize, dtype: torch.dtype) -> None:
        super().__init__()
        self.dtype = dtype
        self.scale, self.shift = normalize.scale, normalize.shift
        self.buffers = BatchBuffers()

    def forward(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """The batch of ``images`` (same shape), normalized."""
        out = self.buffers.take((len(images), *images[0].shape))
        for image, sample in zip(images, out, strict=True):
            # okc's float images are uint8 / 255: the division joins Normalize's scale
            scale = self.scale / 255 if image.dtype == torch.uint8 else self.scale
            sample.copy_(image).mul_(scale).add_(self.shift)
        return out.to(self.dtype)


def sample_normalize(ops: Sequence[nn.Module], dtype: torch.dtype) -> SampleNormalize | None:
    """The transform's batched ops as one ``SampleNormalize``, or None unless they are exactly
    one ``Normalize`` (without one the batch stays uint8, as the pipeline's batches are)."""
    if len(ops) != 1 or not isinstance(ops[0], Normalize):
        return None
    return SampleNormalize(ops[0], dtype)


class BatchBuffers:
    """Float batches whose memory is reused once nobody holds them.

    A new 38 MB batch is fresh memory from the OS (glibc maps allocations over 32 MB), and the
    first write to each of its pages faults: 0.45 ms an image of the 2.3 ms a loader thread
    spends on one at 224 px (decode 1.0, resize 0.3), measured. So the batches are views of a
    few kept buffers, and a buffer is handed out again only when its storage has no user but
    the kept tensor: every tensor made from a batch (a view, a slice, the batch itself, held
    in Python or by autograd) holds the storage, so a batch still in use is never written.
    """

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self._kept: list[tuple[torch.Tensor, int]] = []  # (buffer, its storage's idle count)
        self._lock = threading.Lock()  # loader threads finish batches concurrently

    def take(self, shape: tuple[int, ...]) -> torch.Tensor:
        """A float32 batch of ``shape``, uninitialized."""
        with self._lock:
            for buffer, idle in self._kept:
                if buffer.shape == shape and _storage_uses(buffer) == idle:
                    return buffer.view(shape)  # a new tensor on the storage: now in use
            buffer = torch.empty(shape, dtype=torch.float32)
            idle = _storage_uses(buffer)
            if idle < 0:  # this torch cannot count a storage's users: never reuse
                return buffer
            self._kept = [*self._kept[1 - self.keep :], (buffer, idle)]
            return buffer.view(shape)


def _storage_uses(tensor: torch.Tensor) -> int:
    """How many hold ``tensor``'s storage (torch's own count; -1 where it has none)."""
    count = getattr(torch._C, "_storage_Use_Count", None)
    return -1 if count is None else int(count(tensor.untyped_storage()._cdata))
