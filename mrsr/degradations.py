"""The in-plane degradations mrsr simulates, trains for and compares against, by name.

One :class:`Degradation` per acquisition model in :data:`DEGRADATIONS`: the transform of
:mod:`mrsr.transforms` that simulates it, its sampling grid (:mod:`mrsr.geometry`), the
interpolation baselines that undo it, whether k-space data consistency applies, and a line for
help texts. ``--method``, the options table, checkpoints, training pairs, evaluation baselines
and inference all read this table: adding a degradation is one entry here (and its transform,
a :class:`~mrsr.transforms.array.Downsample`, if new). Slice profiles, the through-plane
acquisition models, have their own table in :mod:`mrsr.slice_profiles`.

>>> DEGRADATIONS["bicubic"].grid, DEGRADATIONS["bicubic"].baselines
('area', ('bicubic',))
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

from monai.config import KeysCollection, NdarrayOrTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import MapTransform
from monai.utils import convert_to_tensor

from mrsr.errors import MRSRError, shown
from mrsr.geometry import Grid
from mrsr.labels import refuse_label_map
from mrsr.transforms.array import (
    BicubicDownsample,
    CropToMultiple,
    Downsample,
    KSpaceTruncation,
    resolve_axes,
)

__all__ = [
    "DEFAULT",
    "DEGRADATIONS",
    "Degradation",
    "MakePaird",
    "consistent_grids",
    "degrade",
    "describe",
    "get",
]


@dataclass(frozen=True)
class Degradation:
    """One acquisition model: ``transform(scale, axes)`` simulates it on the transform's grid.

    ``baselines``: networks of :data:`mrsr.networks.BASELINES` that interpolate its output back,
    weakest first (the last is the one a model has to beat); evaluation adds ``nearest``, the
    input as it is, to every degradation's. ``data_consistency``: whether the
    measured k-space can be put back into a super-resolved output
    (:func:`mrsr.kspace.data_consistency`).
    """

    name: str
    transform: type[Downsample]
    baselines: tuple[str, ...]
    data_consistency: bool
    description: str

    @property
    def grid(self) -> Grid:
        """Where low-resolution voxel 0 sits (:mod:`mrsr.geometry`)."""
        return self.transform.grid

    @property
    def strongest_baseline(self) -> str:
        """The baseline a model is compared against."""
        return self.baselines[-1]


# The in-plane degradations by name (--method, degradation.method in configs, checkpoints).
DEGRADATIONS: dict[str, Degradation] = {
    d.name: d
    for d in (
        Degradation(
            "kspace",
            KSpaceTruncation,
            ("bicubic", "zerofill"),
            True,
            "k-space truncation, the MR model (a scanner with a smaller matrix)",
        ),
        Degradation(
            "bicubic",
            BicubicDownsample,
            ("bicubic",),
            False,
            "antialiased bicubic downsampling in image space",
        ),
    )
}
DEFAULT = "kspace"  # the degradation when none is named


def get(name: str, where: str = "degradation") -> Degradation:
    """The entry called ``name``, else :class:`MRSRError` naming ``where`` and the choices."""
    if isinstance(name, str) and name in DEGRADATIONS:
        return DEGRADATIONS[name]
    raise MRSRError(f"{where} must be one of {', '.join(DEGRADATIONS)}, got {shown(name)}")


def describe() -> str:
    """The degradations for a help text: ``name (description), ...``."""
    return ", ".join(f"{d.name} ({d.description})" for d in DEGRADATIONS.values())


def consistent_grids() -> set[str]:
    """The sampling grids on which data consistency applies."""
    return {d.grid for d in DEGRADATIONS.values() if d.data_consistency}


def degrade(
    img: NdarrayOrTensor,
    scale: int,
    method: str = DEFAULT,
    axes: Sequence[int] | None = None,
) -> tuple[NdarrayOrTensor, NdarrayOrTensor]:
    """Simulate a ``scale``-times coarser acquisition of ``img``: returns ``(lr, hr)``.

    ``method`` names a degradation of :data:`DEGRADATIONS`. ``hr`` is ``img`` centre-cropped to
    a multiple of the scale along the axes, so that a ``scale``-times super-resolution of ``lr``
    on ``method``'s grid lands exactly on ``hr``. A volume or option that does not allow it
    raises :class:`~mrsr.errors.MRSRError` naming the volume's file, and so does a label map
    (:func:`mrsr.labels.refuse_label_map`).
    """
    name = getattr(img, "meta", {}).get("filename_or_obj", "image")
    refuse_label_map(img, "degrading", name)
    try:
        if method not in DEGRADATIONS:
            raise ValueError(
                f"unknown degradation method {method!r}; expected one of {tuple(DEGRADATIONS)}"
            )
        axes = resolve_axes(convert_to_tensor(img, track_meta=get_track_meta()), axes)
        hr = CropToMultiple(scale, axes)(img)
        return DEGRADATIONS[method].transform(scale, axes)(hr), hr
    except ValueError as exc:
        raise MRSRError(f"{name}: {exc}") from exc


class MakePaird(MapTransform):
    """Make a training or evaluation pair from one image: ``hr_key`` and ``lr_key`` are added.

    ``hr`` is the image centre-cropped to a multiple of ``scale`` along the axes; ``lr`` is its
    degradation by ``method`` (a name of :data:`DEGRADATIONS`), see :func:`degrade`.
    """

    def __init__(
        self,
        keys: KeysCollection,
        scale: int,
        method: str = DEFAULT,
        axes: Sequence[int] | None = None,
        lr_key: str = "lr",
        hr_key: str = "hr",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError("MakePaird takes exactly one source key")
        self.scale, self.method, self.axes = int(scale), method, axes
        self.lr_key, self.hr_key = lr_key, hr_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.lr_key], d[self.hr_key] = degrade(d[key], self.scale, self.method, self.axes)
        return d
