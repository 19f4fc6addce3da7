"""What an input volume claims, read from its header alone, and checked before any voxel is read.

:func:`probe_volume` returns a :class:`VolumeInfo` (grid size, channels, data type, and every
file the volume is made of) or raises :class:`~mrsr.errors.MRSRError` when the header cannot be
trusted:

- a detached header (``.nhdr``, ``.mhd``) whose data file lies outside the header's folder tree,
  after resolving links (``data file: ../../etc/passwd`` is refused, naming the header);
- claimed sizes the file cannot hold: uncompressed data shorter than dimensions × type size,
  compressed data that would expand more than deflate's maximum ratio (1032:1), or zlib/gzip
  data (NRRD, MetaImage) that does not inflate to exactly the claimed size (a truncated file);
  bzip2 NRRD data, which ITK cannot read;
- non-finite geometry (NaN or infinite pixdim, quaternion, offsets, sform rows, spacing,
  origin or direction);
- complex or RGB voxels, which have no single intensity to super-resolve;
- a single-file NIfTI whose voxels would start inside its header (``vox_offset`` below 352,
  544 for NIfTI-2);
- a DICOM folder with more than one series, files that are not readable slices of the series
  (hidden files and ``DICOMDIR`` aside), slices of different sizes or without a positive pixel
  spacing, or slices without a position or not evenly spaced; a multi-frame (enhanced) file
  whose per-frame positions do not follow the grid SimpleITK reads.

:func:`failure_reason` turns a reader's exception into the problem in words, without ITK's
source locations.
"""

from __future__ import annotations

import gzip
import io
import itertools
import math
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from mrsr.errors import MRSRError, shown
from mrsr.memory import human
from mrsr.progress import warn

__all__ = ["VolumeInfo", "data_files", "failure_reason", "nifti_affine", "probe_volume"]

DEFLATE_MAX_RATIO = 1032  # the most a deflate stream can expand (RFC 1951: 258 bytes per 2 bits)
_MAX_HEADER = 16 << 20  # a text header (NRRD, MetaImage) longer than this is refused
_MAX_LISTED = 100_000  # data files a pattern or LIST may name


@dataclass
class VolumeInfo:
    """A volume's header facts: ``shape`` is spatial ``(X, Y, Z)``, ``channels`` the rest."""

    path: Path
    shape: tuple[int, int, int]
    channels: int
    dtype: np.dtype
    files: list[Path] = field(default_factory=list)
    slice_thickness: float | None = None  # mm, where the header records it (DICOM)

    @property
    def voxels(self) -> int:
        return math.prod(self.shape) * self.channels

    @property
    def nbytes(self) -> int:
        return self.voxels * self.dtype.itemsize


_ITK_NOISE = re.compile(
    r"Exception thrown in SimpleITK \w+: |\S+\.(?:cxx|hxx|txx|cpp|h):\d+:?|(?:ITK |itk::)ERROR: |"
    r"\w+\(0x[0-9a-fA-F]+\):? ?|\[(?:nrrd|biff)\] \w+:"
)


def failure_reason(exc: Exception) -> str:
    """A reader's failure as one short line: no ITK source location, object address or teem
    function name; teem's last (most specific) line, else the first line."""
    lines = [(line, _ITK_NOISE.sub("", line).strip(" :")) for line in str(exc).splitlines()]
    teem = [text for line, text in lines if line.startswith("[") and text]
    plain = [text for _, text in lines if text]
    return (teem[-1:] or plain[:1] or [type(exc).__name__])[0][:200]


def _spatial(dims: tuple[int, ...], path: Path) -> tuple[tuple[int, int, int], int]:
    if not dims or min(dims) < 1:
        raise MRSRError(f"{path}: the header gives no voxels (dimensions {dims})")
    spatial = (tuple(dims[:3]) + (1, 1))[:3]
    return spatial, math.prod(dims[3:]) if len(dims) > 3 else 1


def _describe(shape: tuple[int, ...], channels: int, dtype: np.dtype) -> str:
    dims = "x".join(map(str, shape)) + (f"x{channels}" if channels > 1 else "")
    return f"{dims} voxels of {dtype.name} ({human(math.prod(shape) * channels * dtype.itemsize)})"


def _check_size(
    claimed: int, stored: int, compressed: bool, path: Path, what: str, offset: int = 0
) -> None:
    """Refuse a header that claims more data than ``stored`` bytes can hold."""
    if compressed and claimed + offset > DEFLATE_MAX_RATIO * stored + (1 << 20):
        raise MRSRError(
            f"{path}: the header claims {what}, more than {human(stored)} of compressed data can "
            "hold; the header is wrong or the file is a decompression bomb"
        )
    if not compressed and claimed + offset > stored:
        raise MRSRError(
            f"{path}: the header claims {what}, but the data holds only {human(stored)}; the "
            "file is truncated or its header is wrong"
        )


def _check_dtype(dtype: np.dtype, path: Path) -> None:
    if dtype.kind == "c":
        raise MRSRError(
            f"{path}: complex voxels ({dtype.name}); save the magnitude image (abs) and give that"
        )
    if dtype.fields is not None or dtype.kind not in "biuf":
        raise MRSRError(f"{path}: {dtype} voxels (RGB or records) are not a single intensity")


def _check_finite(values: dict[str, np.ndarray], path: Path) -> None:
    for name, value in values.items():
        if not np.isfinite(np.asarray(value, dtype=np.float64)).all():
            raise MRSRError(f"{path}: the header's {name} is NaN or infinite; fix the geometry")


def _read_prefix(path: Path, size: int, compressed: bool) -> bytes:
    with gzip.open(path, "rb") if compressed else open(path, "rb") as f:
        return f.read(size)


def _sizes(affine: np.ndarray) -> str:
    return "x".join(f"{v:.3g}" for v in np.linalg.norm(affine[:3, :3], axis=0))


def nifti_affine(header: nib.Nifti1Header, path: Path) -> tuple[np.ndarray, int]:
    """The voxel-to-RAS affine of a NIfTI header, chosen as nibabel and FSL choose it (the sform
    when its code is set, else the qform when its code is set, else pixdim scaling), and the
    code of the form it came from (0 for pixdim scaling).

    Warns, naming ``path``, when both forms are set and place a corner of the grid more than
    the smallest voxel apart (a registration tool rewrote one and not the other).
    """
    affine = header.get_best_affine()
    sform_code, qform_code = int(header["sform_code"]), int(header["qform_code"])
    if sform_code > 0 and qform_code > 0:
        qform = header.get_qform()
        shape = (tuple(header.get_data_shape()[:3]) + (1, 1))[:3]
        corners = np.array([(*c, 1) for c in itertools.product(*[(0, n - 1) for n in shape])])
        apart = float(np.linalg.norm((affine - qform)[:3] @ corners.T, axis=0).max())
        voxel = float(np.linalg.norm(np.hstack([affine[:3, :3], qform[:3, :3]]), axis=0).min())
        if apart > voxel:
            warn(
                f"{path}: its sform and qform disagree (corners of the grid up to {apart:.3g} mm "
                f"apart; voxels {_sizes(affine)} and {_sizes(qform)} mm); using the sform "
                f"(code {sform_code}), as nibabel and FSL do"
            )
    return affine, sform_code or qform_code


def _probe_nifti(path: Path) -> VolumeInfo:
    compressed = path.name.lower().endswith(".gz")
    try:
        raw = _read_prefix(path, 540, compressed)
    except (OSError, EOFError) as exc:
        raise MRSRError(f"{path}: cannot be read as a volume ({exc})") from exc
    kind = None
    for order in ("<", ">"):
        size = int(np.frombuffer(raw[:4].ljust(4, b"\0"), dtype=f"{order}i4")[0])
        kind = {348: nib.Nifti1Header, 540: nib.Nifti2Header}.get(size, kind)
    if kind is None or len(raw) < (348 if kind is nib.Nifti1Header else 540):
        raise MRSRError(f"{path}: cannot be read as a volume (not a NIfTI header)")
    try:
        header = kind.from_fileobj(io.BytesIO(raw))
        dtype = np.dtype(header.get_data_dtype())
        dims = tuple(int(d) for d in header.get_data_shape())
    except Exception as exc:  # noqa: BLE001 - nibabel raises several types for bad headers
        raise MRSRError(f"{path}: cannot be read as a volume ({shown(str(exc))})") from exc
    spatial, channels = _spatial(dims, path)
    _check_dtype(dtype, path)
    fields = {"pixdim": header["pixdim"][1:4]}
    if header["qform_code"] > 0:
        fields["quaternion"] = [header[k] for k in ("quatern_b", "quatern_c", "quatern_d")]
        fields["qoffset"] = [header[k] for k in ("qoffset_x", "qoffset_y", "qoffset_z")]
    if header["sform_code"] > 0:
        fields["sform"] = [header[k] for k in ("srow_x", "srow_y", "srow_z")]
    _check_finite(fields, path)
    claimed = math.prod(dims) * dtype.itemsize
    offset = float(header["vox_offset"])
    first = header.sizeof_hdr + 4  # the header and its extension flag come before any voxel
    if not offset >= first:
        raise MRSRError(
            f"{path}: the header's vox_offset ({offset:g}) points inside the header (the voxels of "
            f"a single-file NIfTI start at byte {first} or later); the header is corrupt: "
            "re-export the file"
        )
    offset = int(offset)
    what = _describe(spatial, channels, dtype)
    _check_size(claimed, path.stat().st_size, compressed, path, what, offset)
    return VolumeInfo(path, spatial, channels, dtype, [path])


def _header(path: Path) -> bytes:
    """The whole text header of a NRRD or MetaImage file, read to its real end: NRRD's first
    blank line, MetaImage's ``ElementDataFile = LOCAL`` line, else the end of the file (a
    detached header). One longer than ``_MAX_HEADER`` is refused, never read in part."""
    nrrd = path.suffix.lower() in (".nrrd", ".nhdr")
    end = re.compile(rb"\r?\n\r?\n" if nrrd else rb"(?im)^\s*ElementDataFile\s*=\s*LOCAL[^\n]*\n")
    head, size = b"", 1 << 16
    with open(path, "rb") as f:
        while chunk := f.read(size):
            head += chunk
            if found := end.search(head):
                return head[: found.end()]
            if len(head) > _MAX_HEADER:
                raise MRSRError(
                    f"{path}: its header goes on past {human(_MAX_HEADER)} (no end of header); "
                    "that is not a volume's header: check the file"
                )
            size *= 2
    return head


def _header_lines(path: Path) -> list[str]:
    return _header(path).decode("latin-1").splitlines()


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


def data_files(header: Path) -> list[Path]:
    """The data files a detached ``.nhdr``/``.mhd`` header reads, checked to lie inside its
    folder tree; ``[header]`` for attached data (``.nrrd``, ``.mha``, ``LOCAL``)."""
    nrrd = header.suffix.lower() in (".nrrd", ".nhdr")
    lines = _header_lines(header)
    found = (
        _field(lines, ("data file", "datafile"), ":")
        if nrrd
        else _field(lines, ("elementdatafile",), "=")
    )
    if found is None or (not nrrd and found[0].upper() == "LOCAL"):
        return [header]
    spec, index = found
    names = _expand(spec, lines, index, header) or [spec]
    folder = header.resolve().parent
    files = []
    for name in names:
        target = (header.parent / name).resolve()
        if not target.is_relative_to(folder):
            raise MRSRError(
                f"{header}: its data file {shown(name)} lies outside the header's folder; "
                "detached data must sit beside the header (or below it)"
            )
        if not target.is_file():
            raise MRSRError(f"{header}: its data file {shown(name)} does not exist")
        files.append(target)
    return files


def _encoding(lines: list[str], nrrd: bool) -> str:
    """``raw``, ``gzip``, ``bzip2``, ``hex``, ``text`` or ``other``."""
    if nrrd:
        value = (_field(lines, ("encoding",), ":") or ("raw", 0))[0].lower()
        names = {"raw": "raw", "gzip": "gzip", "gz": "gzip", "bzip2": "bzip2", "bz2": "bzip2"}
        names["hex"] = "hex"
        return names.get(value, "text" if value in ("ascii", "text", "txt") else "other")
    value = (_field(lines, ("compresseddata",), "=") or ("false", 0))[0].lower()
    return "gzip" if value == "true" else "raw"


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


def _probe_sitk_file(path: Path) -> VolumeInfo:
    files = data_files(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise MRSRError(f"{path}: cannot be read as a volume ({failure_reason(exc)})") from exc
    nrrd = path.suffix.lower() in (".nrrd", ".nhdr")
    encoding = _encoding(_header_lines(path), nrrd)
    if encoding == "bzip2":
        raise MRSRError(
            f"{path}: bzip2-compressed NRRD data cannot be read (ITK's NRRD reader has no "
            "bzip2); save it with gzip or raw encoding (e.g. unu save -e gzip)"
        )
    return _sitk_info(reader, path, files, encoding)


def _sitk_dtype(pixel_id: int) -> np.dtype:
    return np.dtype(sitk.GetArrayViewFromImage(sitk.Image([1, 1], pixel_id)).dtype)


def _sitk_info(
    reader: sitk.ImageFileReader, path: Path, files: list[Path], encoding: str
) -> VolumeInfo:
    pixel = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    if "complex" in pixel:
        raise MRSRError(f"{path}: complex voxels; save the magnitude image (abs) and give that")
    dtype = _sitk_dtype(reader.GetPixelID())
    _check_finite(
        {
            "spacing": reader.GetSpacing(),
            "origin": reader.GetOrigin(),
            "direction": reader.GetDirection(),
        },
        path,
    )
    if min(reader.GetSpacing()) <= 0:
        raise MRSRError(
            f"{path}: the header's spacing {reader.GetSpacing()} is not positive; fix the geometry"
        )
    spatial, channels = _spatial(tuple(reader.GetSize()), path)
    channels *= reader.GetNumberOfComponents()
    info = VolumeInfo(path, spatial, channels, dtype, files)
    stored = sum(f.stat().st_size for f in files)
    offset = len(_header(path)) if files == [path] else 0
    stored -= offset
    if encoding == "gzip":
        _check_zlib(files, offset, info.nbytes, path)
    if encoding == "hex":  # two characters per byte
        stored //= 2
    elif encoding == "text":  # a digit and a separator at least per value
        stored = (stored // 2 + 1) * dtype.itemsize
    if encoding != "other":
        what = _describe(spatial, channels, dtype)
        _check_size(info.nbytes, stored, encoding == "gzip", path, what)
    return info


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


def _check_even(positions: np.ndarray, folder: Path) -> None:
    """Refuse slice positions (mm along the slice normal) that are not evenly spaced."""
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


def _dims(size: tuple[int, ...]) -> str:
    return "x".join(str(n) for n in (size if size[2:] != (1,) else size[:2]))


def _dicom_geometry(files: list[str], folder: Path) -> None:
    """Refuse slices of different sizes or without a positive pixel spacing, and a series whose
    slices have no position or are not evenly spaced along the slice normal."""
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
                return
            raise MRSRError(
                f"{folder}: slice {shown(Path(name).name)} has no usable position or orientation "
                "(0020,0032 and 0020,0037), so the spacing between slices is unknown; re-export "
                "the series with its patient geometry"
            )
        if normal is None:
            normal = np.cross(cosines[:3], cosines[3:])
        positions.append(float(position @ normal))
    if len(positions) > 1:
        _check_even(np.array(positions), folder)


def _frame_geometry(path: str, reader: sitk.ImageFileReader, folder: Path) -> float | None:
    """Check that SimpleITK puts every frame of a multi-frame file (enhanced MR or CT) where
    its per-frame functional groups say the frame lies: GDCM falls back to 1 mm voxels,
    silently, for frames without positions or not evenly spaced. The slice thickness, if
    recorded."""
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
    _check_even(positions @ np.cross(cosines[0, :3], cosines[0, 3:]), folder)
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
    return _positive(str(value(frames[0], "PixelMeasuresSequence", "SliceThickness") or ""))


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


def _probe_dicom(folder: Path) -> VolumeInfo:
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if len(series) > 1:
        listed = ", ".join(shown(s) for s in series[:4]) + (" ..." if len(series) > 4 else "")
        raise MRSRError(
            f"{folder}: holds {len(series)} DICOM series ({listed}); put each series in its own "
            "folder"
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
                f"{folder}: holds {len(files)} multi-frame DICOM files; give each its own folder"
            )
        if frames > 1:
            thickness = _frame_geometry(files[0], reader, folder)
        else:
            _dicom_geometry(files, folder)
            has = reader.HasMetaDataKey("0018|0050")
            thickness = _positive(reader.GetMetaData("0018|0050") if has else "")
    except MRSRError:
        raise
    except (RuntimeError, ValueError) as exc:
        reason = failure_reason(exc)
        raise MRSRError(f"{folder}: cannot be read as a DICOM series ({reason})") from exc
    size = reader.GetSize()
    dtype = _sitk_dtype(reader.GetPixelID())
    shape = (size[0], size[1], max(frames, len(files)))
    channels = reader.GetNumberOfComponents()
    return VolumeInfo(folder, shape, channels, dtype, [Path(f) for f in files], thickness)


def _positive(text: str) -> float | None:
    """A DICOM decimal string as a positive finite number, else None (missing or garbage)."""
    try:
        value = float(text.strip().split("\\")[0])
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


def probe_volume(path: Path, kind: str) -> VolumeInfo:
    """Header facts of the volume at ``path``; ``kind`` is ``"nifti"``, ``"sitk"`` or
    ``"dicom"``. Raises :class:`MRSRError` for any header that cannot be trusted."""
    if kind == "nifti":
        return _probe_nifti(path)
    if kind == "dicom":
        return _probe_dicom(path)
    return _probe_sitk_file(path)
