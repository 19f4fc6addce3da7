"""The memory a network needs, found without allocating it.

The network runs on PyTorch's ``meta`` device, whose tensors have shapes but no storage: a
CSSFN of 20 GB of weights run on a batch of 1024 x 1024 slices at x16 costs under a second and
no memory. A dispatch mode sees every tensor the run creates and counts its bytes while it
is alive (a view adds nothing to the tensor it views); the largest total is the peak.

Against the real thing (float32 on a CPU, channels-last as inference and training run them):
the traced peak is 0.99-1.02 times the peak of PyTorch's allocator (its profiler) for CSSFN,
CSN and MSRN, forward and training step alike, and the growth of the process's resident
memory (``getrusage`` peak, 2 threads, 128 x 128 to 256 x 256 slices) is 1.0-1.21 times it,
the rest being oneDNN's work buffers. :data:`MARGIN` covers that: the estimate is 1.24-1.5
times the measured growth. With contiguous (not channels-last) tensors oneDNN copies each
convolution's input and the traced peak is 0.7-0.92 of the allocator's. Under bf16 autocast
the real peak is lower.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import chain
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = ["MARGIN", "Footprint", "footprint", "traced_peak"]

MARGIN = 1.5  # estimate / traced peak: room for convolution workspaces and allocator slack


class _LiveBytes(TorchDispatchMode):
    """Bytes of the storages that the ops run under it created and that are still alive."""

    def __init__(self) -> None:
        super().__init__()
        self.now = self.peak = 0

    def _freed(self, n: int) -> None:
        self.now -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        seen = {t.untyped_storage()._cdata for t in tensors}
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor) or t.untyped_storage()._cdata in seen:
                continue  # not a tensor, or a view of one already counted
            storage = t.untyped_storage()
            seen.add(storage._cdata)
            self.now += storage.nbytes()
            self.peak = max(self.peak, self.now)
            weakref.finalize(storage, self._freed, storage.nbytes())
        return out


def traced_peak(fn: Callable[[], Any]) -> int:
    """Peak bytes of the tensors that ``fn()`` (run on ``meta`` tensors) holds at once, beyond
    those that existed before it ran.

    >>> x = torch.empty(1000, device="meta")
    >>> traced_peak(lambda: (x + 1) * 2)  # x + 1 is alive while its double is made
    8000
    """
    with _LiveBytes() as live:
        fn()
    return live.peak


def _on_meta(network: nn.Module) -> tuple[Callable[..., Any], int]:
    """``network`` as a function of its input with ``meta`` copies of its weights (the
    network itself is not touched), and the bytes of its parameters."""
    state = {
        name: torch.empty_like(t, device="meta").requires_grad_(t.requires_grad)
        for name, t in chain(network.named_parameters(), network.named_buffers())
    }
    weights = sum(p.numel() * p.element_size() for p in network.parameters())
    return partial(torch.func.functional_call, network, state), weights


@dataclass(frozen=True)
class Footprint:
    """What running a network on one batch needs: ``parameters`` bytes of weights, and at most
    ``peak`` bytes beyond them (:data:`MARGIN` included) while making ``pixels`` output pixels."""

    parameters: int
    peak: int
    pixels: int

    @property
    def per_pixel(self) -> float:
        """Peak bytes per output pixel; the peak grows in proportion to the pixels."""
        return self.peak / max(self.pixels, 1)


def footprint(
    network: nn.Module,
    batch: Sequence[int],
    *,
    train: bool = False,
    forward: Callable[[Callable[..., Any], torch.Tensor], torch.Tensor] | None = None,
) -> Footprint:
    """Memory ``network`` needs on a float32 batch of shape ``batch`` ``(B, C, H, W)``, traced
    on the ``meta`` device (:func:`traced_peak`): build the network under
    ``torch.device("meta")`` to size one that is not built, or pass a built one.

    ``train``: a training step, forward, L1 loss and backward; the peak then holds the
    activations kept for the backward pass and the gradients (not the optimizer's state).
    ``forward(net, x)`` replaces ``net(x)``, e.g. to include a self-ensemble. Raises
    ``NotImplementedError`` or ``RuntimeError`` for a network that cannot run on ``meta``
    tensors (an op without a meta kernel, or one that reads values).
    """
    net, weights = _on_meta(network)
    x = torch.empty(tuple(batch), device="meta")
    run = forward or (lambda f, t: f(t))
    pixels = []

    def step() -> None:
        y = run(net, x)
        pixels.append(y.shape[0] * y.shape[-2] * y.shape[-1])
        if train and y.requires_grad:
            F.l1_loss(y, torch.empty_like(y)).backward()

    with torch.set_grad_enabled(train):
        peak = traced_peak(step)
    return Footprint(weights, int(MARGIN * peak), pixels[0])
