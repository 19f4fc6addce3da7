"""Tests of mrsr.networks: parameter counts of the papers, shapes, blocks against hand
computations, the external skip's sampling grid, training, export and the registry."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mrsr.networks import CSN, CSSFN, MSRN, Interpolation, available, create
from mrsr.networks.blocks import (
    CSSFU,
    MSRB,
    ChannelSplittingBlock,
    ExternalSkip,
    MergeAndRun,
    Upsampler,
)
from mrsr.networks.cssfn import SerialFusionBlock

SMALL = {
    "cssfn": dict(channels=16, n_blocks=2, n_units=2, q=2),
    "csn": dict(channels=16, n_blocks=2, n_stages=2, growth=8),
    "msrn": dict(channels=16, n_blocks=2),
}
SMALL_VARIANTS = [
    ("cssfn", SMALL["cssfn"]),
    ("cssfn", dict(SMALL["cssfn"], q=4, skip="kspace")),
    ("cssfn", dict(SMALL["cssfn"], unit="msrb", skip="none", grid="area")),
    ("csn", SMALL["csn"]),
    ("msrn", SMALL["msrn"]),
]
VARIANT_IDS = ["cssfn", "cssfn-q4-kspace", "cssfn-msrb", "csn", "msrn"]


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def paper_size(name: str, scale: int, **options) -> nn.Module:
    with torch.device("meta"):  # counting only: no memory, no initialisation cost
        return create(name, scale=scale, **options)


# ---------------------------------------------------------------------------- parameter counts

COUNTS = {
    ("cssfn", 2): 16_400_129,
    ("cssfn", 3): 19_350_529,
    ("cssfn", 4): 18_760_449,
    ("cssfn-q4", 2): 11_091_713,
    ("cssfn-q4", 3): 14_042_113,
    ("cssfn-q4", 4): 13_452_033,
    ("csn", 2): 13_646_593,
    ("csn", 3): 16_596_993,
    ("csn", 4): 16_006_913,
    ("msrn", 2): 5_928_001,
    ("msrn", 3): 6_112_641,
    ("msrn", 4): 6_075_713,
}
COUNT_OPTIONS = {  # the skip has no parameters; MSRN has none
    "cssfn": ("cssfn", {"skip": "bicubic"}),
    "cssfn-q4": ("cssfn", {"skip": "bicubic", "q": 4}),
    "csn": ("csn", {"skip": "bicubic"}),
    "msrn": ("msrn", {}),
}


@pytest.mark.parametrize(("key", "scale"), list(COUNTS), ids=[f"{k}-x{s}" for k, s in COUNTS])
def test_paper_parameter_counts(key, scale):
    name, options = COUNT_OPTIONS[key]
    net = paper_size(name, scale, **options)
    assert n_params(net) == COUNTS[key, scale]


@pytest.mark.parametrize(("scale", "count"), [(2, 16_535_297), (3, 19_485_697), (4, 18_895_617)])
def test_msrb_unit_cssfn_stays_close_to_cssfn(scale, count):
    msrb = n_params(paper_size("cssfn", scale, unit="msrb"))
    assert msrb == count  # the figures in CSSFN's docstring
    assert msrb <= 1.5 * n_params(paper_size("cssfn", scale))


def test_paper_size_forward_on_tiny_input():
    net = CSN(2).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 1, 8, 8)).shape == (1, 1, 16, 16)


# ---------------------------------------------------------------------------- shapes and options


@pytest.mark.parametrize("scale", [2, 3, 4, 6])
@pytest.mark.parametrize(("name", "options"), SMALL_VARIANTS, ids=VARIANT_IDS)
def test_output_shape(name, options, scale):
    net = create(name, scale=scale, **options).eval()
    with torch.no_grad():
        y = net(torch.rand(2, 1, 7, 10))
    assert y.shape == (2, 1, 7 * scale, 10 * scale)
    assert net.scale == scale


@pytest.mark.parametrize("name", ["cssfn", "csn"])
@pytest.mark.parametrize("out_channels", [1, 3])
def test_multichannel_input(name, out_channels):
    net = create(name, scale=2, in_channels=3, out_channels=out_channels, **SMALL[name]).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 3, 5, 6)).shape == (1, out_channels, 10, 12)


@pytest.mark.parametrize("name", ["cssfn", "csn"])
def test_skip_adds_the_interpolated_centre_slice(name):
    net = create(name, scale=3, in_channels=3, grid="area", **SMALL[name]).eval()
    nn.init.zeros_(net.tail[-1].weight)
    nn.init.zeros_(net.tail[-1].bias)
    x = torch.rand(1, 3, 6, 5)
    with torch.no_grad():
        expected = F.interpolate(x[:, 1:2], scale_factor=3, mode="bicubic", align_corners=False)
        torch.testing.assert_close(net(x), expected, atol=1e-5, rtol=0)
    assert (net.skip, net.grid) == ("bicubic", "area")


def test_network_wiring():
    """Each network composed by hand from its own parts, following the papers' equations:
    CSSFN dense fusion [x(i-1), ..., x0] and [xn, ..., x0]; CSN chain and [x0, ..., xn]; MSRN
    [M1, ..., Mn, x0] (official code), no skip."""
    x = torch.rand(2, 1, 5, 6)
    up = F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
    with torch.no_grad():
        net = CSSFN(2, grid="area", **SMALL["cssfn"]).eval()
        x0 = net.head(x)
        x1 = net.blocks[0](x0)
        x2 = net.blocks[1](cat(x1, x0))
        expected = net.tail(net.fusion(cat(x2, x1, x0)) + x0) + up
        torch.testing.assert_close(net(x), expected)

        net = CSN(2, grid="area", **SMALL["csn"]).eval()
        x0 = net.head(x)
        x1 = net.blocks[0](x0)
        x2 = net.blocks[1](x1)
        expected = net.tail(net.fusion(cat(x0, x1, x2)) + x0) + up
        torch.testing.assert_close(net(x), expected)

        net = MSRN(2, **SMALL["msrn"]).eval()
        x0 = net.head(x)
        m1 = net.blocks[0](x0)
        m2 = net.blocks[1](m1)
        torch.testing.assert_close(net(x), net.tail(net.fusion(cat(m1, m2, x0))))


@pytest.mark.parametrize("name", ["cssfn", "csn", "msrn"])
@pytest.mark.parametrize("scale", [5, 7, 1])
def test_unsupported_scale_raises(name, scale):
    with pytest.raises(ValueError, match="scale"):
        create(name, scale=scale, **SMALL[name])


@pytest.mark.parametrize(
    "options",
    [
        dict(skip="kspace", grid="area"),
        dict(skip="nearest"),
        dict(grid="centre"),
        dict(in_channels=3, out_channels=2),
    ],
)
def test_invalid_skip_options_raise(options):
    with pytest.raises(ValueError):
        CSN(2, **dict(SMALL["csn"], **options))


def test_invalid_cssfn_options_raise():
    with pytest.raises(ValueError, match="unit"):
        CSSFN(2, unit="rdb", **SMALL["cssfn"])
    with pytest.raises(ValueError, match="chunks"):
        CSSFN(2, channels=16, q=3)


def test_xavier_init_for_cssfn_and_csn_default_for_msrn():
    def biases(net):
        return torch.cat([m.bias for m in net.modules() if isinstance(m, nn.Conv2d)])

    for name in ("cssfn", "csn"):
        assert torch.count_nonzero(biases(create(name, scale=2, **SMALL[name]))) == 0
    assert torch.count_nonzero(biases(MSRN(2, **SMALL["msrn"]))) > 0


# ---------------------------------------------------------------------------- behaviour


@pytest.mark.parametrize(("name", "options"), SMALL_VARIANTS, ids=VARIANT_IDS)
def test_eval_is_deterministic(name, options):
    net = create(name, scale=2, **options).eval()
    x = torch.rand(2, 1, 9, 8)
    with torch.no_grad():
        assert torch.equal(net(x), net(x))


@pytest.mark.parametrize(("name", "options"), SMALL_VARIANTS, ids=VARIANT_IDS)
def test_export_matches_eager(name, options):
    net = create(name, scale=3, **options).eval()
    x = torch.rand(1, 1, 7, 6)
    exported = torch.export.export(net, (x,)).module()
    with torch.no_grad():
        torch.testing.assert_close(exported(x), net(x), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("cssfn", dict(SMALL["cssfn"], grid="area")),
        ("cssfn", dict(SMALL["cssfn"], unit="msrb", grid="area")),
        ("csn", dict(SMALL["csn"], grid="area")),
        ("msrn", SMALL["msrn"]),
    ],
    ids=["cssfn", "cssfn-msrb", "csn", "msrn"],
)
def test_a_few_adam_steps_reduce_l1(name, options):
    """LR = 2x2 average of smooth images (area sampling): 30 steps at least halve the L1 loss."""
    torch.manual_seed(0)
    hr = F.interpolate(torch.rand(4, 1, 5, 5), size=(16, 16), mode="bicubic", align_corners=True)
    lr = F.avg_pool2d(hr, 2)
    net = create(name, scale=2, **options)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        loss = F.l1_loss(net(lr), hr)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


# ---------------------------------------------------------------------------- blocks by hand


def make_pointwise(module: nn.Module, seed: int = 0) -> dict[str, tuple[torch.Tensor, ...]]:
    """Give every conv of ``module`` random centre-only kernels (a 1x1 conv in disguise)."""
    g = torch.Generator().manual_seed(seed)
    weights = {}
    with torch.no_grad():
        for name, m in module.named_modules():
            if isinstance(m, nn.Conv2d):
                w = torch.randn(m.out_channels, m.in_channels, generator=g, dtype=torch.float64)
                b = torch.randn(m.out_channels, generator=g, dtype=torch.float64)
                k = m.kernel_size[0] // 2
                m.weight.zero_()
                m.weight[:, :, k, k] = w
                m.bias.copy_(b)
                weights[name] = (w, b)
    return weights


def pointwise(x: torch.Tensor, wb: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    w, b = wb
    return torch.einsum("oi,bihw->bohw", w, x) + b[:, None, None]


def cat(*xs: torch.Tensor) -> torch.Tensor:
    return torch.cat(xs, dim=1)


def test_cssfu_q2_by_hand():
    unit = CSSFU(channels=4, q=2).double()
    w = make_pointwise(unit)
    x = torch.randn(2, 4, 5, 3, dtype=torch.float64)
    z1 = F.relu(pointwise(x[:, :2], w["fuse.0"]))
    z2 = F.relu(pointwise(cat(x[:, 2:], z1), w["fuse.1"]))
    torch.testing.assert_close(unit(x), pointwise(z2, w["extend"]))


def test_cssfu_q3_by_hand():
    unit = CSSFU(channels=6, q=3).double()
    w = make_pointwise(unit, seed=1)
    x = torch.randn(1, 6, 4, 4, dtype=torch.float64)
    z1 = F.relu(pointwise(x[:, 0:2], w["fuse.0"]))
    z2 = F.relu(pointwise(cat(x[:, 2:4], z1), w["fuse.1"]))
    z3 = F.relu(pointwise(cat(x[:, 4:6], z2), w["fuse.2"]))
    torch.testing.assert_close(unit(x), pointwise(z3, w["extend"]))


def test_serial_fusion_block_by_hand():
    block = SerialFusionBlock(in_channels=8, channels=4, n_units=1, q=2, unit="cssfu").double()
    w = make_pointwise(block)
    x = torch.randn(1, 8, 3, 5, dtype=torch.float64)
    a = pointwise(x, w["compress"])
    z1 = F.relu(pointwise(a[:, :2], w["units.0.fuse.0"]))
    z2 = F.relu(pointwise(cat(a[:, 2:], z1), w["units.0.fuse.1"]))
    torch.testing.assert_close(block(x), a + pointwise(z2, w["units.0.extend"]))


def test_merge_and_run_by_hand():
    stage = MergeAndRun(channels=3, growth=2).double()
    w = make_pointwise(stage)
    t, b = torch.randn(2, 2, 3, 4, 5, dtype=torch.float64)
    mean = (t + b) / 2
    top = pointwise(F.relu(pointwise(t, w["top.0"])), w["top.2"]) + mean
    bottom = pointwise(cat(b, F.relu(pointwise(b, w["grow"]))), w["bottom"]) + mean
    got_top, got_bottom = stage(t, b)
    torch.testing.assert_close(got_top, top)
    torch.testing.assert_close(got_bottom, bottom)


def test_channel_splitting_block_by_hand():
    block = ChannelSplittingBlock(channels=4, n_stages=2, growth=2).double()
    w = make_pointwise(block)
    x = torch.randn(1, 4, 3, 3, dtype=torch.float64)
    t, b = x[:, :2], x[:, 2:]
    for i in range(2):
        mean = (t + b) / 2
        p = f"stages.{i}."
        t, b = (
            pointwise(F.relu(pointwise(t, w[p + "top.0"])), w[p + "top.2"]) + mean,
            pointwise(cat(b, F.relu(pointwise(b, w[p + "grow"]))), w[p + "bottom"]) + mean,
        )
    torch.testing.assert_close(block(x), x + pointwise(cat(t, b), w["merge"]))


def test_msrb_by_hand():
    block = MSRB(channels=2).double()
    w = make_pointwise(block)
    x = torch.randn(2, 2, 4, 6, dtype=torch.float64)
    u = cat(F.relu(pointwise(x, w["conv3_1"])), F.relu(pointwise(x, w["conv5_1"])))
    v = cat(F.relu(pointwise(u, w["conv3_2"])), F.relu(pointwise(u, w["conv5_2"])))
    torch.testing.assert_close(block(x), pointwise(v, w["confusion"]) + x)
    assert [block.conv3_1.kernel_size, block.conv5_2.kernel_size] == [(3, 3), (5, 5)]


def test_msrb_with_zero_convs_is_identity():
    block = MSRB(channels=3)
    for p in block.parameters():
        nn.init.zeros_(p)
    x = torch.randn(1, 3, 5, 5)
    assert torch.equal(block(x), x)


@pytest.mark.parametrize("scale", [2, 3])
def test_upsampler_pixel_shuffle_order(scale):
    """Conv channel ``c*r*r + a*r + b`` lands on output channel ``c`` at offset ``(a, b)``."""
    channels, r = 2, scale
    up = Upsampler(channels, scale)
    conv = up[0]
    with torch.no_grad():
        conv.weight.zero_()
        for k in range(channels * r * r):
            conv.weight[k, k // (r * r), 1, 1] = 1.0
        conv.bias.copy_(torch.arange(channels * r * r, dtype=torch.float32))
    x = torch.randn(1, channels, 3, 4)
    expected = torch.empty(1, channels, 3 * r, 4 * r)
    for c in range(channels):
        for a in range(r):
            for b in range(r):
                expected[0, c, a::r, b::r] = x[0, c] + c * r * r + a * r + b
    torch.testing.assert_close(up(x), expected)


@pytest.mark.parametrize(("scale", "factors"), [(2, [2]), (3, [3]), (4, [2, 2]), (6, [2, 3])])
def test_upsampler_stages(scale, factors):
    up = Upsampler(8, scale)
    assert [m.upscale_factor for m in up if isinstance(m, nn.PixelShuffle)] == factors
    assert [m.out_channels for m in up if isinstance(m, nn.Conv2d)] == [8 * f * f for f in factors]


# ---------------------------------------------------------------------------- external skip grid


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_area_grid_bicubic_skip_is_interpolate(scale):
    x = torch.rand(2, 1, 9, 11)
    got = ExternalSkip("bicubic", scale, "area").interpolate(x)
    ref = F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)
    border = 2 * scale  # 2 low-resolution pixels
    inner = (..., slice(border, -border), slice(border, -border))
    torch.testing.assert_close(got[inner], ref[inner], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["bicubic", "kspace"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_kspace_grid_skips_pass_through_samples(kind, scale):
    x = torch.rand(2, 3, 8, 10)
    y = ExternalSkip(kind, scale, "kspace", in_channels=3, out_channels=3).interpolate(x)
    assert y.shape == (2, 3, 8 * scale, 10 * scale)
    torch.testing.assert_close(y[..., ::scale, ::scale], x, atol=1e-5, rtol=0)


def keys(d: torch.Tensor, a: float = -0.75) -> torch.Tensor:
    """Keys' cubic convolution kernel with PyTorch's ``a = -0.75``."""
    d = d.abs()
    near = (a + 2) * d**3 - (a + 3) * d**2 + 1
    far = a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a
    return torch.where(d <= 1, near, torch.where(d < 2, far, torch.zeros_like(d)))


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_kspace_grid_bicubic_skip_samples_ramp_at_n_over_s(scale):
    """High-resolution pixel n reads the ramp at n / s. Cubic convolution with a = -0.75 is exact
    on a ramp only at the half-way point, so compare with the kernel evaluated by hand too."""
    w = 12
    x = torch.arange(w, dtype=torch.float64).expand(1, 1, 5, w)
    y = ExternalSkip("bicubic", scale, "kspace").interpolate(x)[0, 0]
    p = torch.arange(w * scale, dtype=torch.float64) / scale
    i, t = p.floor(), p - p.floor()
    by_hand = sum(keys(t - k) * (i + k) for k in (-1, 0, 1, 2))
    inner = slice(scale, (w - 2) * scale + 1)  # all four taps inside the image
    torch.testing.assert_close(y[:, inner], by_hand[inner].expand(5 * scale, -1))
    assert (y[:, inner] - p[inner]).abs().max() < 0.05  # the "area" grid is (s - 1) / 2s off
    torch.testing.assert_close(y[:, inner][:, ::scale], p[inner][::scale].expand(5 * scale, -1))


def test_skip_channel_selection_and_none():
    lr, sr = torch.rand(1, 5, 4, 4), torch.rand(1, 1, 8, 8)
    esc = ExternalSkip("bicubic", 2, "kspace", in_channels=5, out_channels=1)
    torch.testing.assert_close(esc(lr, sr), sr + esc.interpolate(lr[:, 2:3]))
    assert ExternalSkip("none", 2, "kspace", in_channels=5, out_channels=1)(lr, sr) is sr


# ---------------------------------------------------------------------------- registry


def test_registry():
    assert available() == ["bicubic", "csn", "cssfn", "linear", "msrn", "nearest", "zerofill"]
    assert isinstance(create("CSSFN", scale=2, **SMALL["cssfn"]), CSSFN)
    assert isinstance(create("Csn", scale=3, **SMALL["csn"]), CSN)
    assert isinstance(create("msrn", scale=4, **SMALL["msrn"]), MSRN)
    zf = create("zerofill", scale=3)
    assert zf.mode == "kspace" and sum(p.numel() for p in zf.parameters()) == 0
    with pytest.raises(ValueError, match="csn, cssfn, linear, msrn"):
        create("edsr", scale=2)


@pytest.mark.parametrize("mode", ["nearest", "linear", "bicubic", "kspace"])
@pytest.mark.parametrize("scale", [2, 3])
def test_interpolation_baselines_pass_through_samples_on_the_kspace_grid(mode, scale):
    x = torch.rand(2, 1, 7, 9, dtype=torch.float64)
    y = Interpolation(scale, mode=mode, grid="kspace")(x)
    assert y.shape == (2, 1, 7 * scale, 9 * scale)
    torch.testing.assert_close(y[..., ::scale, ::scale], x)


@pytest.mark.parametrize("mode", ["nearest", "linear", "bicubic"])
def test_interpolation_on_the_area_grid_is_interpolate(mode):
    x = torch.rand(1, 1, 8, 10, dtype=torch.float64)
    torch_mode = {"linear": "bilinear"}.get(mode, mode)
    kwargs = {} if mode == "nearest" else {"align_corners": False}
    ref = F.interpolate(x, scale_factor=2, mode=torch_mode, **kwargs)
    got = Interpolation(2, mode=mode, grid="area")(x)
    torch.testing.assert_close(got[..., 2:-2, 2:-2], ref[..., 2:-2, 2:-2])


def test_zerofill_baseline_needs_the_kspace_grid():
    with pytest.raises(ValueError, match='needs grid="kspace"'):
        Interpolation(2, mode="kspace", grid="area")


@pytest.mark.parametrize("name", ["cssfn", "csn"])
def test_zero_tail_starts_as_the_skip(name):
    net = create(name, scale=2, skip="kspace", zero_tail=True, **SMALL[name]).eval()
    x = torch.rand(2, 1, 9, 8)
    torch.testing.assert_close(net(x), Interpolation(2, mode="kspace")(x))
    assert net.tail[-1].weight.abs().sum() == 0
    assert create(name, scale=2, **SMALL[name]).tail[-1].weight.abs().sum() > 0
