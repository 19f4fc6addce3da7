"""Dictionary versions of :mod:`mrsr.transforms.array`, for ``monai.transforms.Compose``.

A typical pair-making pipeline from a file on disk::

    from monai.transforms import Compose
    from mrsr.transforms import LoadVolumed, MakePaird

    pairs = Compose([
        LoadVolumed("image"),  # as every mrsr command reads it (MONAI's LoadImaged may take
        MakePaird("image", scale=2, method="kspace"),  # the qform over the sform); adds hr, lr
    ])
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform

from mrsr.transforms.array import BicubicDownsample, CropToMultiple, KSpaceTruncation

__all__ = [
    "BicubicDownsampled",
    "CropToMultipled",
    "KSpaceTruncationd",
    "RandKSpaceTruncationd",
]


class _Wrapped(MapTransform):
    """Apply one array transform ``self.t`` to every key."""

    def __init__(self, keys: KeysCollection, transform, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.t = transform

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.t(d[key])
        return d


class KSpaceTruncationd(_Wrapped):
    """Dictionary version of :class:`~mrsr.transforms.array.KSpaceTruncation`."""

    def __init__(
        self,
        keys: KeysCollection,
        scale: int,
        axes: Sequence[int] | None = None,
        zero_filled: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, KSpaceTruncation(scale, axes, zero_filled), allow_missing_keys)


class BicubicDownsampled(_Wrapped):
    """Dictionary version of :class:`~mrsr.transforms.array.BicubicDownsample`."""

    def __init__(
        self,
        keys: KeysCollection,
        scale: int,
        axes: Sequence[int] | None = None,
        antialias: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, BicubicDownsample(scale, axes, antialias), allow_missing_keys)


class CropToMultipled(_Wrapped):
    """Dictionary version of :class:`~mrsr.transforms.array.CropToMultiple`."""

    def __init__(
        self,
        keys: KeysCollection,
        scale: int,
        axes: Sequence[int] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, CropToMultiple(scale, axes), allow_missing_keys)


class RandKSpaceTruncationd(RandomizableTransform, MapTransform):
    """k-space truncation at a scale drawn from ``scales``, the same for every key of a call.

    With probability ``1 - prob`` the data pass unchanged. Reseed with ``set_random_state``
    (``Compose.set_random_state`` and MONAI's ``DataLoader`` workers reach it).

    >>> import torch
    >>> t = RandKSpaceTruncationd("lr", scales=(2, 4), axes=(0, 1)).set_random_state(0)
    >>> t({"lr": torch.ones(1, 8, 8)})["lr"].shape[-1] in (2, 4)
    True
    """

    def __init__(
        self,
        keys: KeysCollection,
        scales: Sequence[int] = (2, 3, 4),
        axes: Sequence[int] | None = None,
        zero_filled: bool = False,
        prob: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.scales = tuple(int(s) for s in scales)
        self.axes = axes
        self.zero_filled = zero_filled
        self.scale = self.scales[0]

    def randomize(self, data: object = None) -> None:
        super().randomize(None)
        self.scale = int(self.R.choice(self.scales))

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        t = KSpaceTruncation(self.scale, self.axes, self.zero_filled)
        for key in self.key_iterator(d):
            d[key] = t(d[key])
        return d
