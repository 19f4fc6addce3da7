"""Volume I/O: NIfTI via nibabel; DICOM series, NRRD and MetaImage via SimpleITK.

Every reader returns a channel-first :class:`monai.data.MetaTensor` ``(C, X, Y, Z)`` of float32
whose ``affine`` maps voxel indices to RAS world millimetres, exactly as in the file. Writers
produce NIfTI with the affine in both sform and qform, and replace the destination atomically.
Each format is one reader module registered in :data:`mrsr.io.formats.READERS`.

>>> from mrsr.io import load_volume, sample_path
>>> load_volume(sample_path()).shape
torch.Size([1, 180, 216, 24])
"""

from mrsr.io.formats import FORMATS, is_volume_path, list_volumes, volume_stem
from mrsr.io.header import VolumeInfo
from mrsr.io.inputs import as_values, as_volume, checked_affine
from mrsr.io.load import checked_volume, inspect_volume, load_volume, read_bytes, sample_path
from mrsr.io.writer import save_volume

__all__ = [
    "FORMATS",
    "VolumeInfo",
    "as_values",
    "as_volume",
    "checked_affine",
    "checked_volume",
    "inspect_volume",
    "is_volume_path",
    "list_volumes",
    "load_volume",
    "read_bytes",
    "sample_path",
    "save_volume",
    "volume_stem",
]
