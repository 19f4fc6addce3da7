"""How a 2D network is run over a volume: :class:`InferenceSettings`, every inference default
in one place. Free of torch, so that the command line builds its options from it at once."""

from __future__ import annotations

from dataclasses import dataclass, replace

from mrsr.options import OPTIONS, check_options

__all__ = ["THROUGH_PLANE_STEPS", "UPSCALE_THROUGH_PLANE_STEPS", "InferenceSettings"]

# Steps of through-plane training (:func:`mrsr.throughplane.super_resolve_through_plane`), 16
# patches of 48 x 48 each, whatever the volume's size: a fixed, seeded amount of training, the
# same output under any machine load. Training runs on one CPU thread (about 0.2 s a step), so
# ``mrsr throughplane``'s takes about 200 s on a CPU (the old default was 180 s), ``mrsr
# upscale``'s (and :class:`mrsr.Pipeline`'s) about 130 s (was 120 s); much less on a GPU. How
# they were sized: docs/benchmarks.md.
THROUGH_PLANE_STEPS = 1000
UPSCALE_THROUGH_PLANE_STEPS = 650


@dataclass(frozen=True)
class InferenceSettings:
    """How a network is run over a volume; every inference default is defined here.

    ``batch_size``: slices per batch (lowered to what fits in memory, saying so). ``device``
    and ``precision``: ``"auto"`` picks CUDA, else MPS, else CPU, and bf16 where that device
    computes it natively, else fp32 (:mod:`mrsr.machine`; :meth:`resolved` gives the choice).
    ``axis``: the slice axis (``None``: from the header). ``tta``: average over flips (and
    quarter turns for square pixels). ``data_consistency``: weight 0 to 1 of the measured
    k-space block put back. ``nonnegative``: clamp at 0 (``None``: where the input has no
    negative voxel). ``progress``: a bar on stderr.
    """

    batch_size: int = 8
    device: str = "auto"
    axis: int | None = None
    tta: bool = False
    precision: str = "auto"
    data_consistency: float = 0.0
    nonnegative: bool | None = None
    progress: bool = False

    def resolved(self) -> InferenceSettings:
        """These settings, checked, with ``"auto"`` device and precision chosen."""
        from mrsr.machine import resolve_device, resolve_precision

        check_options(
            {
                "batch_size": self.batch_size,
                "data_consistency": float(self.data_consistency),
                "precision": self.precision,
            },
            OPTIONS,
            "",
        )
        device = resolve_device(str(self.device))
        precision = resolve_precision(self.precision, device)
        return replace(
            self,
            device=device,
            precision=precision,
            data_consistency=float(self.data_consistency),
        )
