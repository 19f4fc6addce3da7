"""The Python API and the options at its boundary: right or refused.

Every misuse of a public entry point raises :class:`mrsr.errors.MRSRError` (a ``ValueError``) with
one line naming the argument; options given explicitly are never silently overridden; label
maps are refused wherever a volume would be super-resolved or degraded.
"""

import nibabel as nib
import numpy as np
import pytest
from conftest import phantom
from test_hostile import refused

from mrsr import Pipeline
from mrsr.errors import MRSRError

# ---------------------------------------------------------------- the error type


def test_user_errors_are_value_errors_and_bugs_stay_unexpected(tmp_path, capsys, monkeypatch):
    with pytest.raises(ValueError, match="batch_size must be"):  # old `except ValueError` code
        Pipeline("zerofill", batch_size=0)
    src = tmp_path / "a.nii.gz"
    nib.save(nib.Nifti1Image(phantom((8, 8, 2)), np.eye(4)), str(src))
    import mrsr.pipeline

    def bug(*args, **kwargs):
        raise ValueError("a bug")

    monkeypatch.setattr(mrsr.pipeline, "super_resolve", bug)
    argv = ["upscale", src, tmp_path / "o.nii.gz", "--model", "zerofill"]
    refused(capsys, argv, "unexpected ValueError: a bug (rerun with --debug")

    def user_error(*args, **kwargs):
        raise MRSRError("a.nii.gz: something the user can fix")

    monkeypatch.setattr(mrsr.pipeline, "super_resolve", user_error)
    line = refused(capsys, argv, "a.nii.gz: something the user can fix")
    assert "unexpected" not in line
