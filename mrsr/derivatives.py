"""BIDS datasets in, BIDS derivatives out: what ``mrsr bids`` reads and writes.

The raw dataset is read with pybids (:class:`bids.BIDSLayout`: entity queries, and each image's
sidecar metadata by the BIDS inheritance principle); file names are parsed and made with the
entity order of the BIDS schema (:mod:`bidsschematools`), so every entity of a source is kept:

    sub-01/ses-1/anat/sub-01_ses-1_acq-mprage_T1w.nii.gz        (raw)
    sub-01/ses-1/anat/sub-01_ses-1_acq-mprage_res-x2_T1w.nii.gz (derivative)

The new grid is the ``res`` entity, whose label :func:`resolution` derives from the request
(``x2``: in-plane scale 2; ``1mm``, ``0p5x0p5x2mm``: voxel sizes; ``like``: a reference grid)
and whose meaning each sidecar states under ``Resolution``, as the BIDS specification requires.
The sidecar (:func:`derived_metadata`) holds the source's metadata, less what describes the
voxel grid that mrsr changed, the source as a BIDS URI (``bids:raw:sub-01/anat/...``, resolved
through ``DatasetLinks`` of ``dataset_description.json``), and mrsr's provenance record.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nibabel as nib
import numpy as np

from mrsr import __version__
from mrsr.errors import MRSRError, one_line
from mrsr.files import atomic_files, check_regular, read_regular
from mrsr.provenance import SIDECAR

if TYPE_CHECKING:
    from mrsr.batch import Job, Made, Task

__all__ = [
    "AXIS_KEYS",
    "DEFAULT_SUFFIXES",
    "GRID_KEYS",
    "Derived",
    "Source",
    "anatomical_suffixes",
    "check_finished",
    "check_folders",
    "dataset_description",
    "derived_metadata",
    "derived_name",
    "find_outputs",
    "find_sources",
    "ignore_in_validation",
    "resolution",
    "same_axes",
    "write_description",
]

RAW = "raw"  # the source dataset's name in DatasetLinks and in the BIDS URIs of Sources
DEFAULT_SUFFIXES = ("T1w", "T2w", "PDw", "T2starw", "FLAIR")  # weighted structural images
NIFTI = (".nii.gz", ".nii")
# Source metadata that describes the voxel grid of the image, made wrong by a new grid: the
# reconstructed matrix and the echo spacing defined on it, the timing of each slice.
GRID_KEYS = ("ReconMatrixPE", "EffectiveEchoSpacing", "SliceTiming")
# Source metadata that names voxel axes or their orientation: kept only while the output's
# voxel axes are the source's (not after --like onto a grid of other axes).
AXIS_KEYS = (
    "PhaseEncodingDirection",
    "SliceEncodingDirection",
    "InPlanePhaseEncodingDirectionDICOM",
    "ImageOrientationPatientDICOM",
    "ImageOrientationText",
)
# Keys of a source's sidecar that say what the derivative itself is: replaced, never copied.
OWN_KEYS = ("Description", "Sources", "RawSources", "Resolution")


def _library(name: str) -> Any:
    """The module ``name`` of the BIDS libraries, or one line saying how to install them."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise MRSRError(
            f"mrsr bids needs pybids and bidsschematools ({exc}); pip install 'mrsr[bids]'"
        ) from exc


@cache
def _schema() -> Any:
    return _library("bidsschematools.schema").load_schema()


def _entity_order() -> list[str]:
    """The entities' short names (``sub``, ``ses``, ... ``res`` ... ``desc``) in file-name order."""
    schema = _schema()
    return [schema.objects.entities[e].name for e in schema.rules.entities]


def anatomical_suffixes() -> list[str]:
    """The suffixes of anatomical images in the BIDS schema (``T1w``, ``FLAIR``, ``T1map``...)."""
    anat = _schema().rules.files.raw.anat
    return sorted({s for rule in anat.values() for s in rule.get("suffixes", ())})


@dataclass(frozen=True)
class Source:
    """One image of the raw dataset: its ``path``, its path from the dataset root (``relative``,
    with ``/``), and its sidecar ``metadata`` (the inheritance principle applied)."""

    path: Path
    relative: str
    metadata: dict

    @property
    def uri(self) -> str:
        """The BIDS URI of the image, as ``Sources`` of a derivative name it."""
        return f"bids:{RAW}:{self.relative}"


def _refuse_not_bids(root: Path) -> None:
    if not root.is_dir():
        raise MRSRError(f"{one_line(root)}: no such folder; give the root of a BIDS dataset")
    description = root / "dataset_description.json"
    if not check_regular(description):
        raise MRSRError(
            f"{one_line(root)}: not a BIDS dataset (no dataset_description.json); give the "
            "root folder of the dataset, the one holding the sub-* folders"
        )
    try:
        content = json.loads(read_regular(description, 1 << 20))
    except (ValueError, UnicodeDecodeError) as exc:
        raise MRSRError(f"{one_line(description)}: not valid JSON ({exc})") from exc
    if not isinstance(content, dict):
        raise MRSRError(f"{one_line(description)}: not a JSON object; fix the dataset")


def _labels(given: Sequence[str] | None, root: Path, key: str) -> list[str] | None:
    """The labels given without their ``sub-``/``ses-`` prefix (BIDS Apps accept both)."""
    if not given:
        return None
    labels = [label.removeprefix(f"{key}-") for label in given]
    bad = [label for label in labels if not re.fullmatch(r"[a-zA-Z0-9]+", label)]
    if bad:
        raise MRSRError(f"{key}-{one_line(bad[0])}: a BIDS label is letters and digits only")
    if key == "sub":
        present = sorted(p.name[4:] for p in root.glob("sub-*") if p.is_dir())
        missing = [label for label in labels if label not in present]
        if missing:
            raise MRSRError(
                f"{one_line(root)}: no participant {', '.join(missing)} (it has "
                f"{', '.join(present[:20]) or 'none'}{' ...' if len(present) > 20 else ''})"
            )
    return labels


def _layout(root: Path, ignore: Sequence[Any] | None = None) -> Any:
    """The pybids index of the dataset at ``root`` (paths as given, nothing written there)."""
    layout = _library("bids.layout")
    indexer = layout.BIDSLayoutIndexer(validate=False, ignore=ignore)
    try:
        return layout.BIDSLayout(root, validate=False, indexer=indexer)
    except (ValueError, OSError) as exc:  # pybids' errors of a broken dataset
        raise MRSRError(f"{one_line(root)}: cannot be read as a BIDS dataset ({exc})") from exc


def find_sources(
    root: Path,
    participants: Sequence[str] | None = None,
    sessions: Sequence[str] | None = None,
    suffixes: Sequence[str] = DEFAULT_SUFFIXES,
) -> list[Source]:
    """The anatomical NIfTI images of the BIDS dataset at ``root``: of the ``participants`` and
    ``sessions`` given (labels, all when ``None``), with one of ``suffixes``, magnitude images
    only (no ``part-phase``, ``-real`` or ``-imag``: not images a model can super-resolve),
    in path order. Refuses a folder that is not a BIDS dataset, unknown labels and suffixes,
    and a selection that holds no image."""
    root = Path(root)
    _refuse_not_bids(root)
    layout = _library("bids.layout")
    known = anatomical_suffixes()
    unknown = [s for s in suffixes if s not in known]
    if unknown:
        raise MRSRError(
            f"--suffix {one_line(unknown[0])}: not an anatomical BIDS suffix ({', '.join(known)})"
        )
    subjects = _labels(participants, root, "sub")
    ignore = [*layout.validation.DEFAULT_LOCATIONS_TO_IGNORE, re.compile(r"^/derivatives(/|$)")]
    if subjects:  # index the chosen participants only, as large datasets need
        chosen = "|".join(map(re.escape, subjects))
        ignore.append(re.compile(rf"^/sub-(?!(?:{chosen})(?:/|$))"))
    dataset = _layout(root, ignore)
    query: dict[str, Any] = dict(datatype="anat", suffix=list(suffixes), extension=list(NIFTI))
    query["part"] = [layout.Query.NONE, "mag"]
    if subjects:
        query["subject"] = subjects
    labels = _labels(sessions, root, "ses")
    if labels:
        query["session"] = labels
    files = sorted(dataset.get(return_type="filename", **query))
    if not files:
        which = f" of sub-{', sub-'.join(subjects)}" if subjects else ""
        which += f" in ses-{', ses-'.join(labels)}" if labels else ""
        raise MRSRError(
            f"{one_line(root)}: no {'/'.join(suffixes)} images{which} (anat/*.nii[.gz]); "
            "choose other --suffix, --participant-label or --session-label"
        )
    top = Path(dataset.root)  # absolute, as the paths pybids gives
    return [
        Source(Path(f), Path(f).relative_to(top).as_posix(), dict(dataset.get_metadata(f)))
        for f in files
    ]


def derived_name(name: str, label: str) -> str:
    """The file name ``name`` (a BIDS image) with the entity ``res-<label>`` at its place in
    the schema's order, every other entity kept.

    >>> derived_name("sub-01_ses-2_acq-fast_run-1_T2w.nii.gz", "x2")
    'sub-01_ses-2_acq-fast_run-1_res-x2_T2w.nii.gz'
    """
    extension = next((e for e in NIFTI if name.endswith(e)), None)
    if extension is None:
        raise MRSRError(f"{one_line(name)}: not a NIfTI image (.nii or .nii.gz)")
    *pairs, suffix = name[: -len(extension)].split("_")
    order = _entity_order()
    keys = [pair.partition("-")[0] for pair in pairs]
    bad = next((p for p, k in zip(pairs, keys) if k not in order or "-" not in p), None)
    if bad is not None or not pairs:
        raise MRSRError(
            f"{one_line(name)}: not a BIDS file name ({one_line(bad or name)} is no entity); "
            "rename it as the BIDS specification says (check with the BIDS validator)"
        )
    if "res" in keys:
        raise MRSRError(f"{one_line(name)}: has a res- entity already; give raw images")
    after = order.index("res")
    at = next((k for k, key in enumerate(keys) if order.index(key) > after), len(pairs))
    return "_".join([*pairs[:at], f"res-{label}", *pairs[at:], suffix]) + extension


def _mm(values: Sequence[float]) -> str:
    """``0.5`` -> ``0p5``: a voxel size as a BIDS label (letters and digits)."""
    return "x".join(f"{v:g}".replace(".", "p") for v in values) + "mm"


def resolution(
    scale: int, voxel_size: Sequence[float] | None = None, like: Path | None = None
) -> tuple[str, str]:
    """``(label, description)`` of the ``res`` entity of outputs made with these options: onto
    ``like``'s grid, else ``voxel_size`` (mm, 1 or 3 values), else ``scale`` times in-plane."""
    if like is not None:
        grid = os.path.abspath(like)
        return "like", f"the grid of {grid} (its shape and affine), by mrsr super-resolution"
    if voxel_size:
        sizes = " x ".join(f"{v:g}" for v in voxel_size)
        return _mm(voxel_size), (
            f"voxels of {sizes} mm (one value: all axes) over the source's field of view, by "
            "mrsr super-resolution where finer than the source"
        )
    return f"x{scale}", (
        f"the source's in-plane voxel size divided by {scale} by mrsr super-resolution, slice "
        "spacing and field of view kept"
    )


def same_axes(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether the voxel axes of affines ``a`` and ``b`` point the same ways."""
    da, db = (m[:3, :3] / np.linalg.norm(m[:3, :3], axis=0) for m in (a, b))
    return bool(np.allclose(da, db, atol=1e-4))


def derived_metadata(
    source: Source, label: str, description: str, same_axes: bool = True
) -> tuple[dict, list[str]]:
    """``(sidecar keys, source keys left out)`` of an output of ``source``: its metadata less
    :data:`GRID_KEYS` (and :data:`AXIS_KEYS` unless the output has the ``same_axes``), then
    ``Sources``, ``Resolution``, and ``SkullStripped`` (required of anatomical derivatives:
    the source's, else false, as raw images are and mrsr strips nothing)."""
    dropped = [*GRID_KEYS, *(() if same_axes else AXIS_KEYS), *OWN_KEYS]
    kept = {k: v for k, v in source.metadata.items() if k not in dropped}
    left_out = sorted(set(source.metadata) & set(dropped) - set(OWN_KEYS))
    kept.setdefault("SkullStripped", False)
    return {**kept, "Sources": [source.uri], "Resolution": {label: description}}, left_out


@dataclass(frozen=True)
class Derived:
    """A :class:`mrsr.batch.Task` whose results' sidecars are those of BIDS derivatives: the
    ``task``'s provenance record, with the keys of :func:`derived_metadata` of each job's
    source (``sources``: by output path) on top."""

    task: Task
    sources: Mapping[Path, Source]
    label: str
    description: str

    def read(self, job: Job) -> Any:
        return self.task.read(job)

    def make(self, job: Job) -> Made:
        made = []
        for out, (volume, rec) in zip(job.outputs, self.task.make(job)):
            source = self.sources[out]
            axes = same_axes(nib.load(source.path).affine, np.asarray(volume.affine))
            keys, left_out = derived_metadata(source, self.label, self.description, axes)
            rec = {**rec, "source_metadata_left_out": left_out, SIDECAR: keys}
            made.append((volume, rec))
        return made


def check_finished(outputs: Sequence[Path], label: str, description: str) -> None:
    """Refuse an existing output whose sidecar gives its ``res`` label another meaning (made
    with other options): a rerun must not take it for its own finished output."""
    from mrsr.provenance import sidecar_path

    for out in outputs:
        sidecar = sidecar_path(out)
        if not (check_regular(out) and check_regular(sidecar)):
            continue
        try:
            said = json.loads(read_regular(sidecar, 1 << 24)).get("Resolution", {})
        except (ValueError, UnicodeDecodeError, AttributeError):
            said = None
        if not isinstance(said, dict) or said.get(label) != description:
            raise MRSRError(
                f"{one_line(out)}: exists, made with other options (its sidecar's Resolution is "
                f"not res-{label}: {description}); give another OUTPUT_DIR, or --overwrite"
            )


def check_folders(raw: Path, out: Path) -> None:
    """Refuse an output folder that is the dataset, or inside it elsewhere than under
    ``derivatives/`` (its outputs would be read as raw images by the next run)."""
    raw_real, out_real = (Path(os.path.realpath(p)) for p in (raw, out))
    if out_real == raw_real:
        raise MRSRError(
            f"{one_line(out)}: is the BIDS dataset; give OUTPUT_DIR, e.g. "
            f"{one_line(raw / 'derivatives' / 'mrsr')}"
        )
    if out_real.is_relative_to(raw_real) and not out_real.is_relative_to(raw_real / "derivatives"):
        raise MRSRError(
            f"{one_line(out)}: inside the BIDS dataset but not under its derivatives/ folder; "
            f"give e.g. {one_line(raw / 'derivatives' / 'mrsr')}, or a folder outside it"
        )


def _link(raw: Path, out: Path) -> str:
    """Where the derivatives find their raw dataset: a relative path when they sit inside it
    (moved together), else its absolute ``file://`` URI."""
    raw_real, out_real = (Path(os.path.realpath(p)) for p in (raw, out))
    if out_real.is_relative_to(raw_real):
        return Path(os.path.relpath(raw_real, out_real)).as_posix()
    return raw_real.as_uri()


def dataset_description(raw: Path, out: Path, command: str) -> dict:
    """The ``dataset_description.json`` of the derivatives of ``raw`` written to ``out`` by
    ``command``."""
    try:
        source = json.loads(read_regular(raw / "dataset_description.json", 1 << 20))
    except (MRSRError, ValueError, UnicodeDecodeError):
        source = {}
    link = _link(raw, out)
    origin = {"URL": link}
    if isinstance(source.get("DatasetDOI"), str):
        origin["DOI"] = source["DatasetDOI"]
    name = source.get("Name") if isinstance(source.get("Name"), str) else raw.name
    return {
        "Name": f"mrsr super-resolution of {name}",
        "BIDSVersion": str(_schema().bids_version),
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "mrsr", "Version": __version__, "Description": command}],
        "SourceDatasets": [origin],
        "DatasetLinks": {RAW: link},
    }


def _is_ours(content: Any) -> bool:
    generated = content.get("GeneratedBy") if isinstance(content, dict) else None
    return (
        content.get("DatasetType") == "derivative"
        and isinstance(generated, list)
        and any(isinstance(g, dict) and g.get("Name") == "mrsr" for g in generated)
    )


def _readme(description: Mapping) -> str:
    generated = description["GeneratedBy"][0]
    return f"""# {description["Name"]}

A BIDS derivatives dataset made by mrsr {generated["Version"]} from the BIDS dataset at
`{description["DatasetLinks"][RAW]}` with

    {generated["Description"]}

Each image keeps its source's name, with a `res-<label>` entity for its new grid. Its JSON
sidecar says what the label means (`Resolution`), names the source (`Sources`, a BIDS URI
whose dataset name `{RAW}` is resolved by `DatasetLinks` in dataset_description.json), keeps
the source's metadata less what described the source's voxel grid (those keys are listed in
`mrsr.source_metadata_left_out`), and holds mrsr's record of what it did (`mrsr`).
"""


def write_description(raw: Path, out: Path, command: str) -> None:
    """Write ``out``'s ``dataset_description.json`` and ``README.md`` unless an earlier run of
    mrsr (or another rank) did; refuse a folder of another dataset."""
    path = out / "dataset_description.json"
    if check_regular(path):
        try:
            ours = _is_ours(json.loads(read_regular(path, 1 << 20)))
        except (ValueError, UnicodeDecodeError):
            ours = False
        if not ours:
            raise MRSRError(
                f"{one_line(out)}: holds another dataset (its dataset_description.json is not "
                "mrsr's derivatives); give another OUTPUT_DIR"
            )
        return
    description = dataset_description(raw, out, command)
    texts = {path: json.dumps(description, indent=2) + "\n"}
    if not check_regular(out / "README.md"):  # one of the user's stays
        texts[out / "README.md"] = _readme(description)
    with atomic_files() as new:
        for target, text in texts.items():  # a rank's at the same time: the same, replaced
            with new(target, overwrite=True) as stream:
                stream.write(text.encode("utf-8"))


def find_outputs(
    out: Path,
    raw: Path,
    participants: Sequence[str] | None = None,
    sessions: Sequence[str] | None = None,
) -> list[tuple[Path, Path | None]]:
    """``(output, its source in raw or None)`` of every image of mrsr's derivatives dataset at
    ``out`` (of the ``participants`` and ``sessions`` given), in path order; the source is
    the one its sidecar's ``Sources`` names (``bids:raw:...``), where it exists."""
    from mrsr.provenance import sidecar_path

    path = out / "dataset_description.json"
    try:
        ours = _is_ours(json.loads(read_regular(path, 1 << 20)))
    except (MRSRError, ValueError, UnicodeDecodeError):
        ours = False
    if not ours:
        raise MRSRError(
            f"{one_line(out)}: not a derivatives dataset of mrsr (no dataset_description.json "
            "of mrsr's); run the participant level into it first"
        )
    query: dict[str, Any] = dict(datatype="anat", extension=list(NIFTI))
    subjects, labels = _labels(participants, out, "sub"), _labels(sessions, out, "ses")
    query.update({"subject": subjects} if subjects else {})
    query.update({"session": labels} if labels else {})
    found = []
    for f in sorted(_layout(out).get(return_type="filename", **query)):
        try:
            sources = json.loads(read_regular(sidecar_path(f), 1 << 24)).get("Sources", [])
        except (MRSRError, ValueError, UnicodeDecodeError, AttributeError):
            continue  # not one of mrsr's outputs
        prefix = f"bids:{RAW}:"
        named = [raw / s.removeprefix(prefix) for s in sources if str(s).startswith(prefix)]
        found.append((Path(f), named[0] if named and check_regular(named[0]) else None))
    if not found:
        raise MRSRError(f"{one_line(out)}: holds no images; run the participant level first")
    return found


def ignore_in_validation(out: Path, name: str) -> None:
    """List ``name`` (a file of ``out`` that BIDS does not define, e.g. a report) in ``out``'s
    ``.bidsignore``, so that the BIDS validator accepts the dataset."""
    path = out / ".bidsignore"
    lines = read_regular(path).decode("utf-8").splitlines() if check_regular(path) else []
    if name in lines:
        return
    with atomic_files() as new, new(path, overwrite=True) as stream:
        stream.write("\n".join([*lines, name, ""]).encode("utf-8"))
