"""Report figures reoriented from the affine: the same anatomy shows the same way whatever the
storage order, with R/L, A/P, S/I letters and the convention in the title."""

import nibabel as nib
import numpy as np
import pytest
from conftest import rotation
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform

from mrsr.cli import main
from mrsr.errors import MRSRError
from mrsr.evaluation import iter_pairs
from mrsr.orientation import View
from mrsr.report import slice_figures, write_report

SHAPE = (12, 14, 16)  # RAS voxels: x runs to the patient's right, y anterior, z superior
ZOOMS = (1.0, 1.2, 3.0)
LEFT, ANTERIOR, SUPERIOR = 2, 4, 8  # bits of the marker volume
WIDTH = 3
ORDERS = ["RAS", "LPS", "PIR", "ASL", "SLP", "IRA", "LAI"]
# (world axis of the normal, expected (left, right, top, bottom) labels in radiological view)
PLANES = {
    "axial": (2, ("R", "L", "A", "P")),
    "coronal": (1, ("R", "L", "S", "I")),
    "sagittal": (0, ("A", "P", "S", "I")),
}


def markers() -> np.ndarray:
    """1 everywhere, plus a bit on the left, anterior and superior slabs (RAS storage)."""
    volume = np.ones(SHAPE)
    volume[:WIDTH] += LEFT
    volume[:, -WIDTH:] += ANTERIOR
    volume[:, :, -WIDTH:] += SUPERIOR
    return volume


def stored(order: str, affine: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The marker volume and its affine, stored in the axis order ``order``."""
    affine = np.diag([*ZOOMS, 1.0]) if affine is None else affine
    transform = ornt_transform(axcodes2ornt("RAS"), axcodes2ornt(order))
    data = apply_orientation(markers(), transform)
    return data, affine @ inv_ornt_aff(transform, SHAPE)


def displayed(order: str, plane: str, convention: str = "radiological", affine=None):
    """The displayed slice through the volume's centre, and its view."""
    data, aff = stored(order, affine)
    world = nib.orientations.io_orientation(aff)[:, 0].astype(int)
    axis = int(np.flatnonzero(world == PLANES[plane][0])[0])
    ras_centre = np.array([*(np.array(SHAPE) // 2), 1.0])
    base = np.diag([*ZOOMS, 1.0]) if affine is None else affine
    k = int(np.rint(np.linalg.solve(aff, base @ ras_centre))[axis])
    view = View.of(aff, axis, convention)
    return view.show(np.take(data, k, axis=axis)), view


def bit_at(image: np.ndarray, bit: int) -> np.ndarray:
    return (image.astype(int) & bit) != 0


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("plane", PLANES)
def test_every_storage_order_shows_the_same_anatomy_the_same_way(order, plane):
    image, view = displayed(order, plane)
    reference, _ = displayed("RAS", plane)
    assert view.plane == plane and view.labels == PLANES[plane][1]
    np.testing.assert_array_equal(image, reference)
    rows, cols = image.shape
    # the marked sides sit at the edges their letters name
    if plane != "sagittal":
        left = bit_at(image, LEFT)
        assert left[:, cols - WIDTH :].all() and not left[:, : cols - WIDTH].any()  # L: right
    if plane == "axial":
        front = bit_at(image, ANTERIOR)
        assert front[:WIDTH].all() and not front[WIDTH:].any()  # A: top
    else:
        top = bit_at(image, SUPERIOR)
        assert top[:WIDTH].all() and not top[WIDTH:].any()  # S: top
    if plane == "sagittal":
        front = bit_at(image, ANTERIOR)
        assert front[:, :WIDTH].all() and not front[:, WIDTH:].any()  # A: left


@pytest.mark.parametrize("order", ["RAS", "LPS", "PIR"])
def test_neurological_puts_the_patients_left_on_the_left(order):
    image, view = displayed(order, "axial", "neurological")
    assert view.labels == ("L", "R", "A", "P")
    assert bit_at(image, LEFT)[:, :WIDTH].all() and not bit_at(image, LEFT)[:, WIDTH:].any()
    assert "neurological" in view.caption() and "patient's left" in view.caption()
    sagittal, view = displayed(order, "sagittal", "neurological")
    assert view.labels == ("A", "P", "S", "I")  # sagittal views are the same in both


def test_oblique_volume_is_shown_as_the_nearest_plane_and_pixels_keep_their_aspect():
    oblique = np.diag([*ZOOMS, 1.0])
    oblique[:3, :3] = rotation((0.0, 0.0, 20.0)) @ oblique[:3, :3]
    image, view = displayed("PIR", "axial", affine=oblique)
    np.testing.assert_array_equal(image, displayed("RAS", "axial")[0])
    assert view.labels == ("R", "L", "A", "P")
    assert view.spacing == pytest.approx((1.2, 1.0)) and view.aspect == pytest.approx(1.2)
    assert displayed("SLP", "coronal")[1].spacing == pytest.approx((3.0, 1.0))


def test_unknown_convention_is_refused():
    with pytest.raises(MRSRError, match="convention must be one of radiological, neurological"):
        View.of(np.eye(4), 2, "upside-down")


def scored_case(tmp_path, write_nifti, order: str):
    data, affine = stored(order, np.diag([1.2, 1.2, 3.0, 1.0]))  # thick axial slices
    noise = np.random.default_rng(0).normal(0, 0.3, data.shape)
    (tmp_path / "pred").mkdir()
    ref = write_nifti("ref.nii.gz", (data * 10).astype(np.float32), affine)
    pred = write_nifti("pred/ref.nii.gz", (data * 10 + noise).astype(np.float32), affine)
    return next(iter_pairs(pred, ref, mask="none"))


def test_figure_shows_reoriented_slices_letters_and_the_slices_own_scores(tmp_path, write_nifti):
    case = scored_case(tmp_path, write_nifti, "PIR")  # slices along voxel axis 1 (I), 3 mm
    comparison, profile = slice_figures(case, 5)
    panel = comparison.axes[0]
    shown = panel.images[0].get_array()
    ref = np.asarray(case.reference.as_tensor()[0], dtype=np.float64)
    pred = np.asarray(case.predictions["prediction"].as_tensor()[0], dtype=np.float64)
    expected = View.of(np.asarray(case.reference.affine), 1).show(np.take(pred, 5, axis=1))
    np.testing.assert_array_equal(shown, expected)
    assert bit_at(np.rint(shown / 10), LEFT)[:, -WIDTH:].all()  # the patient's left: right
    assert sorted(t.get_text() for t in panel.texts) == ["A", "L", "P", "R"]
    assert "axial, radiological (the patient's right on the image's left)" in (
        comparison._suptitle.get_text()
    )
    # the slice's own PSNR, with the volume's data range, beside the volume's
    mse = np.mean((np.take(pred, 5, axis=1) - np.take(ref, 5, axis=1)) ** 2)
    slice_psnr = 10 * np.log10((ref.max() - ref.min()) ** 2 / mse)
    title = panel.get_title()
    assert f"slice: {slice_psnr:.2f} dB" in title
    assert f"volume: {case.rows[0]['psnr']:.2f} dB" in title
    assert "towards" in profile.axes[0].get_xlabel()


@pytest.mark.slow
def test_report_states_the_convention_and_the_cli_takes_it(tmp_path, write_nifti, capsys):
    case = scored_case(tmp_path, write_nifti, "LPS")
    write_report(tmp_path / "r", [case])
    assert "radiological convention" in (tmp_path / "r" / "report.md").read_text()
    ref, pred = str(tmp_path / "ref.nii.gz"), str(tmp_path / "pred" / "ref.nii.gz")
    argv = ["evaluate", "--pred", pred, "--ref", ref, "--report", str(tmp_path / "n")]
    assert main([*argv, "--convention", "neurological", "-q"]) == 0
    assert "neurological convention" in (tmp_path / "n" / "report.md").read_text()
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--convention", "upside-down"])
    assert exit_.value.code == 2
    assert "--convention" in capsys.readouterr().err
