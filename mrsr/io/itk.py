"""What the SimpleITK formats share: a text header, maybe detached from its data, and the read.

:class:`TextHeaderReader` is the base of the NRRD and MetaImage readers. Its probe refuses,
besides the shared checks (:mod:`mrsr.io.header`):

- a detached header (``.nhdr``, ``.mhd``) whose data file lies outside the header's folder tree,
  after resolving links (``data file: ../../etc/passwd`` is refused, naming the header);
- a header longer than 16 MiB (no end of header found);
- zlib/gzip data that does not inflate to exactly the claimed size (a truncated file);
- non-positive or non-finite spacing, origin or direction.

:func:`sitk_volume` turns any SimpleITK image (DICOM too) into mrsr's RAS MetaTensor.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from monai.data import MetaTensor

from mrsr.errors import MRSRError, shown
from mrsr.io.header import VolumeInfo, check_finite, check_size, describe, spatial, unreadable
from mrsr.io.reader import Reader, metatensor
from mrsr.memory import human

__all__ = ["TextHeaderReader", "sitk_dtype", "sitk_volume"]

_MAX_HEADER = 16 << 20  # a text header (NRRD, MetaImage) longer than this is refused
_MAX_LISTED = 100_000  # data files a pattern or LIST may name
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK/GDCM warnings: errors raise anyway


def sitk_dtype(pixel_id: int) -> np.dtype:
    return np.dtype(sitk.GetArrayViewFromImage(sitk.Image([1, 1], pixel_id)).dtype)


def sitk_volume(image: sitk.Image, path: Path) -> MetaTensor:
    """A 3D scalar SimpleITK image as a channel-first MetaTensor, LPS converted to RAS."""
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise MRSRError(f"{path}: expected a 3D scalar volume, got {image.GetDimension()}D")
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction @ np.diag(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # (z, y, x) -> (x, y, z)
    return metatensor(array[None], _LPS_TO_RAS @ lps, path, source_dtype=array.dtype.name)


def _field(lines: list[str], names: tuple[str, ...], sep: str) -> tuple[str, int] | None:
    """(value, line index) of the first header line whose key is one of ``names``."""
    for i, line in enumerate(lines):
        key, found, value = line.partition(sep)
        if found and key.strip().lower() in names:
            return value.strip(), i
    return None


def _expand(spec: str, lines: list[str], index: int, header: Path) -> list[str] | None:
    """Data file names of a ``LIST`` or a printf pattern (``name%03d.raw min max step``)."""
    words = spec.split()
    if words and words[0] == "LIST":
        return [ln.strip() for ln in lines[index + 1 :] if ln.strip()][:_MAX_LISTED]
    if len(words) >= 4 and re.search(r"%[0-9]*d", words[0]):
        try:
            lo, hi, step = (int(w) for w in words[1:4])
        except ValueError:
            return None
        if step == 0 or abs((hi - lo) // step) >= _MAX_LISTED:
            raise MRSRError(f"{header}: the data file pattern {shown(spec)} names too many files")
        return [words[0] % i for i in range(lo, hi + (1 if step > 0 else -1), step)]
    return None


def _check_zlib(files: list[Path], offset: int, nbytes: int, path: Path) -> None:
    """Refuse zlib or gzip data (MetaImage, NRRD) that does not inflate to exactly ``nbytes``:
    ITK would hand back uninitialised memory (MetaImage) or fail with its source line (NRRD).
    Streams, at most 16 MiB out at a time: nothing is kept."""
    inflate, total = zlib.decompressobj(zlib.MAX_WBITS | 32), 0  # zlib or gzip header
    try:
        for i, name in enumerate(files):
            with open(name, "rb") as f:
                f.seek(offset if i == 0 else 0)
                while (chunk := f.read(1 << 20)) and total <= nbytes and not inflate.eof:
                    while chunk and total <= nbytes:
                        total += len(inflate.decompress(chunk, min(1 << 24, nbytes + 1 - total)))
                        chunk = inflate.unconsumed_tail
        if total <= nbytes:  # else the pending input could inflate without bound
            total += len(inflate.flush())
    except zlib.error as exc:
        raise MRSRError(f"{path}: its compressed data is corrupt ({exc})") from exc
    if total < nbytes and not inflate.eof:
        raise MRSRError(
            f"{path}: its compressed data ends early ({human(total)} of the {human(nbytes)} the "
            "header claims): the file is truncated; copy or export it again"
        )
    if total != nbytes:
        raise MRSRError(
            f"{path}: its compressed data inflates to {human(total)}, not the {human(nbytes)} "
            "the header claims; the header is wrong or the file corrupt"
        )


class TextHeaderReader(Reader):
    """A format with a text header that SimpleITK reads. A subclass says where its header ends
    (``header_end``), which key names detached data (``data_keys``, split from the value by
    ``separator``) and how its data are encoded (:meth:`encoding`)."""

    header_end: re.Pattern[bytes]
    data_keys: tuple[str, ...]
    separator: str
    attached_data: str | None = None  # the data file value that means "after the header"

    def encoding(self, lines: list[str], path: Path) -> str:
        """``raw``, ``gzip``, ``hex``, ``text`` or ``other``; refuses what ITK cannot read."""
        raise NotImplementedError

    def header(self, path: Path) -> bytes:
        """The whole text header, read to its real end (else the end of the file: a detached
        header). One longer than ``_MAX_HEADER`` is refused, never read in part."""
        head, size = b"", 1 << 16
        with open(path, "rb") as f:
            while chunk := f.read(size):
                head += chunk
                if found := self.header_end.search(head):
                    return head[: found.end()]
                if len(head) > _MAX_HEADER:
                    raise MRSRError(
                        f"{path}: its header goes on past {human(_MAX_HEADER)} (no end of "
                        "header); that is not a volume's header: check the file"
                    )
                size *= 2
        return head

    def _lines(self, path: Path) -> list[str]:
        return self.header(path).decode("latin-1").splitlines()

    def value(self, lines: list[str], keys: tuple[str, ...], default: str) -> str:
        """The value of the first header line whose key is one of ``keys``, lower case."""
        return (_field(lines, keys, self.separator) or (default, 0))[0].lower()

    def files(self, path: Path) -> list[Path]:
        """The data files a detached header reads, checked to lie inside its folder tree;
        ``[path]`` for attached data."""
        lines = self._lines(path)
        found = _field(lines, self.data_keys, self.separator)
        if found is None or (self.attached_data and found[0].upper() == self.attached_data):
            return [path]
        spec, index = found
        names = _expand(spec, lines, index, path) or [spec]
        folder = path.resolve().parent
        files = []
        for name in names:
            target = (path.parent / name).resolve()
            if not target.is_relative_to(folder):
                raise MRSRError(
                    f"{path}: its data file {shown(name)} lies outside the header's folder; "
                    "detached data must sit beside the header (or below it)"
                )
            if not target.is_file():
                raise MRSRError(f"{path}: its data file {shown(name)} does not exist")
            files.append(target)
        return files

    def probe(self, path: Path) -> VolumeInfo:
        files = self.files(path)
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except RuntimeError as exc:
            raise unreadable(path, exc) from exc
        encoding = self.encoding(self._lines(path), path)
        pixel = sitk.GetPixelIDValueAsString(reader.GetPixelID())
        if "complex" in pixel:
            raise MRSRError(f"{path}: complex voxels; save the magnitude image (abs) and give that")
        dtype = sitk_dtype(reader.GetPixelID())
        spacing = reader.GetSpacing()
        geometry = {"spacing": spacing, "origin": reader.GetOrigin()}
        check_finite({**geometry, "direction": reader.GetDirection()}, path)
        if min(spacing) <= 0:
            raise MRSRError(
                f"{path}: the header's spacing {spacing} is not positive; fix the geometry"
            )
        shape, channels = spatial(tuple(reader.GetSize()), path)
        info = VolumeInfo(path, shape, channels * reader.GetNumberOfComponents(), dtype, files)
        offset = len(self.header(path)) if files == [path] else 0
        stored = sum(f.stat().st_size for f in files) - offset
        if encoding == "gzip":
            _check_zlib(files, offset, info.nbytes, path)
        if encoding == "hex":  # two characters per byte
            stored //= 2
        elif encoding == "text":  # a digit and a separator at least per value
            stored = (stored // 2 + 1) * dtype.itemsize
        if encoding != "other":
            what = describe(shape, info.channels, dtype)
            check_size(info.nbytes, stored, encoding == "gzip", path, what)
        return info

    def read(self, info: VolumeInfo) -> MetaTensor:
        return sitk_volume(sitk.ReadImage(str(info.path)), info.path)
