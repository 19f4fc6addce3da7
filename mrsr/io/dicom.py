"""DICOM series folders (one file per slice, or one multi-frame file), read by SimpleITK.

A folder is a DICOM series when one of its first files starts with the ``DICM`` preamble. The
header probe refuses a folder with more than one series, files that are not readable slices of
the series (hidden files and ``DICOMDIR`` aside), slices of different sizes or without a
positive pixel spacing, or slices without a position or not evenly spaced; a multi-frame
(enhanced) file whose per-frame positions do not follow the grid SimpleITK reads. The slice
positions give the grid; SliceThickness (0018,0050) and SpacingBetweenSlices (0018,0088) are
read beside them (a thickness below the spacing is a gap, above it an overlap); ``--verbose``
says when the stated spacing disagrees with the positions.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from monai.data import MetaTensor

from mrsr.errors import MRSRError, shown
from mrsr.io.header import VolumeInfo, failure_reason
from mrsr.io.itk import sitk_dtype, sitk_volume
from mrsr.io.reader import Reader
from mrsr.progress import VERBOSE, note

__all__ = ["DicomReader"]


def _is_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _decimals(reader: sitk.ImageFileReader, tag: str, count: int) -> np.ndarray | None:
    """The ``count`` finite numbers of a DICOM decimal string tag, else None."""
    try:
        values = np.array([float(v) for v in reader.GetMetaData(tag).split("\\")])
    except (RuntimeError, ValueError):  # missing, or not numbers
        return None
    return values if values.shape == (count,) and np.isfinite(values).all() else None


def _check_pixel_spacing(spacing: np.ndarray | None, text: object, name: str, folder: Path) -> None:
    if spacing is None or spacing.min() <= 0:
        stated = "missing" if text is None else shown(text)
        raise MRSRError(
            f"{folder}: slice {shown(name)} has pixel spacing (0028,0030) {stated}: a zero, "
            "negative or missing spacing is corrupt geometry; re-export the series from the "
            "scanner or archive"
        )


def _check_even(positions: np.ndarray, folder: Path) -> float:
    """Refuse slice positions (mm along the slice normal) that are not evenly spaced; their
    step."""
    z = np.sort(positions)
    gaps = np.diff(z)
    step = float(np.median(gaps))
    worst = int(np.argmax(np.abs(gaps - step)))
    if step <= 0 or abs(gaps[worst] - step) > max(0.01, 0.01 * step):
        raise MRSRError(
            f"{folder}: slices are not evenly spaced: {gaps[worst]:.3g} mm between slice "
            f"positions {z[worst]:.3g} and {z[worst + 1]:.3g} mm where the series steps by "
            f"{step:.3g} mm (a missing or duplicated slice?)"
        )
    return step


def _check_spacing(stated: float | None, step: float | None, folder: Path) -> None:
    """Say (with ``--verbose``) when SpacingBetweenSlices (0018,0088) disagrees with the slice
    positions, which give the grid: the tag is often the thickness, stale, or (as SimpleITK
    writes it) a single slice's spacing."""
    if stated is not None and step is not None and abs(stated - step) > 0.01 * step:
        note(
            f"{folder}: SpacingBetweenSlices (0018,0088) says {stated:g} mm but the slice "
            f"positions are {step:.4g} mm apart; the positions are used",
            VERBOSE,
        )


def _dims(size: tuple[int, ...]) -> str:
    return "x".join(str(n) for n in (size if size[2:] != (1,) else size[:2]))


def _dicom_geometry(files: list[str], folder: Path) -> float | None:
    """Refuse slices of different sizes or without a positive pixel spacing, and a series whose
    slices have no position or are not evenly spaced along the slice normal; the step between
    their positions (``None`` for one slice)."""
    reader = sitk.ImageFileReader()
    positions, normal, size = [], None, None
    for name in files:
        reader.SetFileName(name)
        reader.ReadImageInformation()
        if size is None:
            size, first = reader.GetSize(), Path(name).name
        if reader.GetSize() != size:
            raise MRSRError(
                f"{folder}: DICOM slices of different sizes ({_dims(size)} in {shown(first)} and "
                f"{_dims(reader.GetSize())} in {shown(Path(name).name)}): not one series; put "
                "each series in its own folder"
            )
        text = reader.GetMetaData("0028|0030") if reader.HasMetaDataKey("0028|0030") else None
        _check_pixel_spacing(_decimals(reader, "0028|0030", 2), text, Path(name).name, folder)
        cosines = _decimals(reader, "0020|0037", 6)
        position = _decimals(reader, "0020|0032", 3)
        if cosines is None or position is None:
            if len(files) == 1:
                return None
            raise MRSRError(
                f"{folder}: slice {shown(Path(name).name)} has no usable position or orientation "
                "(0020,0032 and 0020,0037), so the spacing between slices is unknown; re-export "
                "the series with its patient geometry"
            )
        if normal is None:
            normal = np.cross(cosines[:3], cosines[3:])
        positions.append(float(position @ normal))
    return _check_even(np.array(positions), folder) if len(positions) > 1 else None


def _frame_geometry(
    path: str, reader: sitk.ImageFileReader, folder: Path
) -> tuple[float | None, float | None]:
    """Check that SimpleITK puts every frame of a multi-frame file (enhanced MR or CT) where
    its per-frame functional groups say the frame lies: GDCM falls back to 1 mm voxels,
    silently, for frames without positions or not evenly spaced. The slice thickness and
    spacing between slices, where recorded."""
    import pydicom  # only multi-frame files need it

    name, n = Path(path).name, reader.GetSize()[2]
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    shared = (ds.get("SharedFunctionalGroupsSequence") or [pydicom.Dataset()])[0]
    frames = ds.get("PerFrameFunctionalGroupsSequence") or []

    def value(frame: pydicom.Dataset, sequence: str, keyword: str) -> object:
        for group in (frame, shared):
            items = group.get(sequence)
            if items and keyword in items[0]:
                return items[0].get(keyword)
        return None

    def numbers(sequence: str, keyword: str, count: int) -> np.ndarray | None:
        try:
            values = np.array([[float(v) for v in value(f, sequence, keyword)] for f in frames])
        except (TypeError, ValueError):  # missing, or not numbers
            return None
        ok = values.shape == (n, count) and np.isfinite(values).all()
        return values if ok else None

    positions = numbers("PlanePositionSequence", "ImagePositionPatient", 3)
    cosines = numbers("PlaneOrientationSequence", "ImageOrientationPatient", 6)
    if len(frames) != n or positions is None or cosines is None:
        raise MRSRError(
            f"{folder}: {shown(name)} holds {n} frames without a position and orientation for "
            "each (per-frame functional groups), so the spacing between them is unknown; "
            "re-export it with its patient geometry"
        )
    spacing = numbers("PixelMeasuresSequence", "PixelSpacing", 2)
    text = value(frames[0], "PixelMeasuresSequence", "PixelSpacing")
    _check_pixel_spacing(spacing, text, name, folder)
    step = _check_even(positions @ np.cross(cosines[0, :3], cosines[0, 3:]), folder)
    grid = np.asarray(reader.GetDirection()).reshape(3, 3) @ np.diag(reader.GetSpacing())
    placed = np.asarray(reader.GetOrigin()) + np.arange(n)[:, None] * grid[:, 2]
    in_plane = np.hstack([cosines[:, :3] * spacing[:, 1:], cosines[:, 3:] * spacing[:, :1]])
    off = float(np.abs(positions - placed).max())
    if off > max(0.01, 0.01 * abs(reader.GetSpacing()[2])) or not np.allclose(
        in_plane, grid[:, :2].T.ravel(), rtol=0, atol=1e-4 * spacing.max()
    ):
        raise MRSRError(
            f"{folder}: the frames of {shown(name)} do not lie on one regular grid in the order "
            f"they are stored (up to {off:.3g} mm off); re-export it as one file per slice"
        )
    thickness, stated = (
        _positive(str(value(frames[0], "PixelMeasuresSequence", keyword) or ""))
        for keyword in ("SliceThickness", "SpacingBetweenSlices")
    )
    _check_spacing(stated, step, folder)
    return thickness, stated


def _check_entries(folder: Path, files: list[str]) -> None:
    """Refuse files in the series folder that are not slices of the series: a damaged or
    unreadable slice is left out by the series reader, and one missing at an end leaves no gap
    to see. Hidden files and a ``DICOMDIR`` (a medium's index) are not slices."""
    slices = {Path(f).name for f in files}
    strays = [
        p.name
        for p in sorted(folder.iterdir())
        if p.name not in slices
        and not p.name.startswith(".")
        and p.name.upper() != "DICOMDIR"
        and p.is_file()
    ]
    if strays:
        listed = ", ".join(shown(n) for n in strays[:3]) + (" ..." if len(strays) > 3 else "")
        raise MRSRError(
            f"{folder}: {len(strays)} of its files are not readable slices of the series "
            f"({listed}); a damaged slice would leave the volume a slice short: repair or remove "
            "them"
        )


def _positive(text: str) -> float | None:
    """A DICOM decimal string as a positive finite number, else None (missing or garbage)."""
    try:
        value = float(text.strip().split("\\")[0])
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


class DicomReader(Reader):
    name = "a DICOM series folder"

    def claims(self, path: Path) -> bool:
        """A folder holding DICOM files (judged by the first few, by their preamble)."""
        if not path.is_dir():
            return False
        return any(_is_dicom_file(p) for p in sorted(path.iterdir())[:16] if p.is_file())

    def probe(self, folder: Path) -> VolumeInfo:
        series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
        if len(series) > 1:
            listed = ", ".join(shown(s) for s in series[:4]) + (" ..." if len(series) > 4 else "")
            raise MRSRError(
                f"{folder}: holds {len(series)} DICOM series ({listed}); put each series in its "
                "own folder"
            )
        files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
        if not files:
            raise MRSRError(f"{folder}: no readable DICOM series")
        _check_entries(folder, files)
        reader = sitk.ImageFileReader()
        try:
            reader.SetFileName(files[0])
            reader.ReadImageInformation()
            frames = (*reader.GetSize(), 1)[2]
            if frames > 1 and len(files) > 1:
                raise MRSRError(
                    f"{folder}: holds {len(files)} multi-frame DICOM files; give each its own "
                    "folder"
                )
            if frames > 1:
                thickness, stated = _frame_geometry(files[0], reader, folder)
            else:
                step = _dicom_geometry(files, folder)
                thickness, stated = (
                    _positive(reader.GetMetaData(tag) if reader.HasMetaDataKey(tag) else "")
                    for tag in ("0018|0050", "0018|0088")
                )
                _check_spacing(stated, step, folder)
        except MRSRError:
            raise
        except (RuntimeError, ValueError) as exc:
            reason = failure_reason(exc)
            raise MRSRError(f"{folder}: cannot be read as a DICOM series ({reason})") from exc
        size = reader.GetSize()
        dtype = sitk_dtype(reader.GetPixelID())
        shape = (size[0], size[1], max(frames, len(files)))
        channels = reader.GetNumberOfComponents()
        paths = [Path(f) for f in files]
        return VolumeInfo(folder, shape, channels, dtype, paths, thickness, stated)

    def read(self, info: VolumeInfo) -> MetaTensor:
        """Every slice by the series reader; a single file (multi-frame) as a volume."""
        if len(info.files) > 1:
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames([str(f) for f in info.files])
            return sitk_volume(reader.Execute(), info.path)
        return sitk_volume(sitk.ReadImage(str(info.files[0])), info.path)
