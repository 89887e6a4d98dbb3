"""Backbones: shapes for several box sizes, the registry, FLOP counting, rebuild from config."""

from __future__ import annotations

import pytest
import torch

from cryoshift.runtime.errors import InputError
from cryoshift.training.backbones import BACKBONES, check_backbone_kwarg_types, count_flops, create_backbone

TINY = {
    "cryonet": {},
    "cryonet-fine": {},
    "cryonet-deep": {},
    "cryonet-centred": {},
    "cryonet-deep-centred": {},
    "cryonet-small": {},
    "dsrf3d-v2": {"width": 0.125},
    "cb3d": {"width": 1 / 16},
    "encoder4": {},
}


def test_every_registered_backbone_is_covered() -> None:
    assert set(BACKBONES.names()) == set(TINY)


@pytest.mark.parametrize("box", [16, 24])
@pytest.mark.parametrize("name", sorted(TINY))
def test_backbone_shapes(name: str, box: int) -> None:
    torch.manual_seed(0)
    model = create_backbone(name, num_classes=3, box_size=box, **TINY[name]).eval()
    x = torch.randn(2, 1, box, box, box)
    feats = model.forward_features(x)
    assert feats.shape == (2, model.num_features)
    logits = model.forward_head(feats)
    assert logits.shape == (2, 3)
    torch.testing.assert_close(model(x), logits)
    assert torch.isfinite(logits).all()


def test_unknown_backbone_suggests_closest() -> None:
    with pytest.raises(ValueError, match="Did you mean 'cryonet'"):
        create_backbone("cryonett", num_classes=2, box_size=16)


def test_too_small_box_rejected() -> None:
    with pytest.raises(ValueError, match="box_size >= 16"):
        create_backbone("cryonet", num_classes=2, box_size=8)


def test_rebuild_from_config_loads_weights() -> None:
    model = create_backbone("dsrf3d-v2", num_classes=4, box_size=16, width=0.125, drop_rate=None)
    assert "drop_rate" not in model.config  # None keeps the family default
    again = create_backbone(model.backbone_name, **model.config)
    again.load_state_dict(model.state_dict())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"drop_rate": "abc"}, "--backbone-opt drop_rate=abc: cryonet expects a float (default 0.0)"),
        ({"depth": 2.5}, "--backbone-opt depth=2.5: cryonet expects an int (default 1)"),
        ({"depth": True}, "--backbone-opt depth=true: cryonet expects an int (default 1)"),
        ({"drop_rate": False}, "--backbone-opt drop_rate=false: cryonet expects a float (default 0.0)"),
        ({"residual": 1}, "--backbone-opt residual=1: cryonet expects a bool (default false)"),
        ({"head": 3}, "--backbone-opt head=3: cryonet expects a str (default avg)"),
    ],
)
def test_backbone_options_of_another_type_are_refused_in_one_line(kwargs: dict, message: str) -> None:
    """--backbone-opt drop_rate=abc reached the constructor as a string and failed inside torch."""
    with pytest.raises(InputError) as exc:
        check_backbone_kwarg_types("cryonet", kwargs)
    assert str(exc.value) == message


def test_backbone_option_types_pass_what_the_constructor_takes() -> None:
    """An int where a float is expected is fine; sequences, None (the default) and names the
    constructor does not know are left to it; an unknown backbone is one line too."""
    check_backbone_kwarg_types("cryonet", {"drop_rate": 1, "depth": 2, "residual": True, "head": "full"})
    check_backbone_kwarg_types("cryonet", {"widths": [8, 16], "drop_rate": None, "no_such_option": "x"})
    check_backbone_kwarg_types("cb3d", {"width": 0.0625, "fc_dim": 64})
    with pytest.raises(InputError, match=r"--backbone-opt fc_dim=1\.5: cb3d expects an int"):
        check_backbone_kwarg_types("cb3d", {"fc_dim": 1.5})
    with pytest.raises(InputError, match="unknown backbone 'cryonett'"):
        check_backbone_kwarg_types("cryonett", {})


@pytest.mark.parametrize("name", sorted(TINY))
def test_every_backbone_passes_its_own_defaults_and_checks_their_types(name: str) -> None:
    """The check finds the class each registry entry builds (not from a hand-kept list): its own
    defaults and the tiny test options pass, and a wrong type for any scalar default is refused."""
    import inspect

    built = type(create_backbone(name, num_classes=2, box_size=16, **TINY[name]))
    params = inspect.signature(built.__init__).parameters.values()
    defaults = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    check_backbone_kwarg_types(name, {**defaults, **TINY[name]})
    scalars = {k: v for k, v in defaults.items() if isinstance(v, (bool, int, float, str))}
    assert scalars or name == "encoder4", name  # encoder4's only option is its widths
    for key, value in scalars.items():
        wrong = 7 if isinstance(value, str) else "abc"
        with pytest.raises(InputError, match=f"--backbone-opt {key}={wrong}: {name} expects"):
            check_backbone_kwarg_types(name, {key: wrong})


def test_flops_counts_conv_and_linear_exactly() -> None:
    model = create_backbone("cryonet-small", num_classes=3, box_size=16)
    # widths 8,16,32 with stride 2: outputs 8^3, 4^3, 2^3 voxels; linear 32 -> 3
    expected = 2 * (8**3 * 8 * 27 * 1 + 4**3 * 16 * 27 * 8 + 2**3 * 32 * 27 * 16 + 32 * 3)
    assert count_flops(model, 16) == expected


def test_centred_head_is_fixed_to_its_box_and_sees_position() -> None:
    """The centred head weighs the final grid by position: moving the particle off-centre changes
    its features, where global average pooling barely notices; another box size is refused."""
    torch.manual_seed(0)
    x = torch.zeros(1, 1, 32, 32, 32)
    x[..., 12:20, 12:20, 12:20] = 1.0
    moved = torch.roll(x, shifts=8, dims=4)
    changes = {}
    for name in ("cryonet", "cryonet-centred"):
        model = create_backbone(name, num_classes=3, box_size=32).eval()
        with torch.no_grad():
            a, b = model.forward_features(x), model.forward_features(moved)
        changes[name] = float((a - b).norm() / a.norm())
    assert changes["cryonet-centred"] > 2 * changes["cryonet"]  # 0.85 vs 0.33 at seed 0
    model = create_backbone("cryonet-centred", num_classes=3, box_size=32).eval()
    with pytest.raises(RuntimeError):
        model(torch.zeros(1, 1, 24, 24, 24))


def test_default_backbone_is_cheap() -> None:
    """The throughput claim rests on the default staying in the 0.05-0.3 GFLOP range at 32^3."""
    flops = count_flops(create_backbone("cryonet", num_classes=5, box_size=32), 32)
    assert 0.05e9 <= flops <= 0.3e9


def _rot180(x: torch.Tensor, axes: tuple[int, int]) -> torch.Tensor:
    return torch.flip(x, [a + 2 for a in axes])


@pytest.mark.parametrize("name", ["cryonet-centred", "dsrf3d-v2"])
def test_test_views_average_the_wedge_preserving_poses_in_eval_only(name: str) -> None:
    torch.manual_seed(0)
    plain = create_backbone(name, num_classes=3, box_size=16, **TINY[name]).eval()
    viewed = create_backbone(name, num_classes=3, box_size=16, test_views=4, **TINY[name]).eval()
    viewed.load_state_dict(plain.state_dict())
    assert viewed.config["test_views"] == 4 and "test_views" not in plain.config
    x = torch.randn(3, 1, 16, 16, 16)
    with torch.no_grad():
        poses = [x, _rot180(x, (0, 1)), _rot180(x, (0, 2)), _rot180(x, (1, 2))]
        expected = torch.stack([plain(p) for p in poses]).mean(0)
        torch.testing.assert_close(viewed(x), expected, rtol=1e-4, atol=1e-5)
        # the four poses are a group: a rotated particle gets the same averaged answer
        torch.testing.assert_close(viewed(_rot180(x, (1, 2))), viewed(x), rtol=1e-4, atol=1e-5)
        assert not torch.allclose(plain(_rot180(x, (1, 2))), plain(x), rtol=1e-4, atol=1e-5)
    viewed.train()
    plain.train()
    torch.manual_seed(1)
    a = viewed(x)
    torch.manual_seed(1)
    torch.testing.assert_close(a, plain(x))  # training forwards see one pose (dropout seeded alike)


@pytest.mark.parametrize("views", [0, 5, 2.0, True])
def test_test_views_out_of_range_are_refused(views) -> None:
    with pytest.raises(ValueError, match="test_views must be an integer from 1 to 4"):
        create_backbone("cryonet-small", num_classes=2, box_size=16, test_views=views)


def test_a_model_that_cannot_average_poses_is_never_given_views() -> None:
    from cryoshift.training.backbones import set_test_views

    plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(2))
    set_test_views(plain, 1)  # one pose is what any model does
    with pytest.raises(ValueError, match="Sequential does not support test_views"):
        set_test_views(plain, 4)
    assert not hasattr(plain, "test_views")


def test_one_pose_scores_one_pose_and_restores_the_views_even_on_error() -> None:
    from cryoshift.training.backbones import one_pose

    torch.manual_seed(0)
    viewed = create_backbone("cryonet-small", num_classes=3, box_size=16, test_views=4).eval()
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        four = viewed(x)
        with one_pose(viewed):
            one = viewed(x)
        viewed.test_views = 1
        torch.testing.assert_close(one, viewed(x))  # inside the block: exactly the one-pose forward
        viewed.test_views = 4
        assert not torch.allclose(one, four)
    with pytest.raises(RuntimeError), one_pose(viewed):
        raise RuntimeError("scoring failed")
    assert viewed.test_views == 4


def test_residual_stages_start_from_the_identity_and_keep_the_layout() -> None:
    """With its last BatchNorm zeroed, a residual stage passes its input through unchanged; the model
    keeps the plain model's shapes and features count, so export and the head see no difference."""
    from cryoshift.training.backbones.cryonet import ResidualConvs

    torch.manual_seed(0)
    block = ResidualConvs(4, 2).eval()
    x = torch.relu(torch.randn(2, 4, 6, 6, 6))
    assert not torch.allclose(block(x), x)
    last_bn = block.body[-1]
    torch.nn.init.zeros_(last_bn.weight)
    torch.nn.init.zeros_(last_bn.bias)
    torch.testing.assert_close(block(x), x)
    plain = create_backbone("cryonet-deep-centred", num_classes=3, box_size=16).eval()
    residual = create_backbone("cryonet-deep-centred", num_classes=3, box_size=16, residual=True).eval()
    assert any(isinstance(m, ResidualConvs) for m in residual.modules())
    assert residual.num_features == plain.num_features
    assert count_flops(residual, 16) == count_flops(plain, 16)
    assert residual(torch.randn(2, 1, 16, 16, 16)).shape == (2, 3)


def test_centre_branch_reads_the_central_crop_at_full_resolution() -> None:
    """The centre branch adds its features to the main branch's and sees only the central crop; a crop
    that does not fit the box symmetrically is refused."""
    torch.manual_seed(0)
    plain = create_backbone("cryonet-centred", num_classes=3, box_size=24)
    model = create_backbone("cryonet-centred", num_classes=3, box_size=24, centre_crop=12).eval()
    assert model.num_features == 2 * plain.num_features
    x = torch.randn(2, 1, 24, 24, 24)
    outside = x.clone()
    outside[..., :4, :, :] += 5.0  # change only voxels outside the central 12^3
    inside = x.clone()
    inside[..., 12, 12, 12] += 5.0
    with torch.no_grad():
        f, f_out, f_in = (model.forward_features(v)[:, plain.num_features :] for v in (x, outside, inside))
    torch.testing.assert_close(f_out, f)
    assert not torch.allclose(f_in, f)
    for bad in (24, 11, -2, 2.5, "12", True):
        with pytest.raises(ValueError, match="centre_crop"):
            create_backbone("cryonet-centred", num_classes=3, box_size=24, centre_crop=bad)
    with pytest.raises(ValueError, match="stem"):
        create_backbone("cryonet-centred", num_classes=3, box_size=24, stem="8")
    with pytest.raises(ValueError, match="residual"):
        create_backbone("cryonet-deep", num_classes=3, box_size=24, residual="yes")


def _blobs(centres: torch.Tensor, box: int) -> torch.Tensor:
    """Dark Gaussian blobs (sigma 1 voxel) at ``centres`` (zyx voxels from the box centre)."""
    g = torch.arange(box, dtype=torch.float32) - box // 2
    grid = torch.stack(torch.meshgrid(g, g, g, indexing="ij"), -1)
    d2 = ((grid[None] - centres[:, None, None, None]) ** 2).sum(-1)
    return -torch.exp(-d2 / 2).sum(0)


def test_canonical_pose_undoes_a_rotation_of_the_particle() -> None:
    """Rotated copies of one asymmetric particle (rendered at rotated positions, no interpolation)
    look alike after pose normalisation and unlike before; the flag is validated."""
    from cryoshift.training.backbones.canonical import CanonicalPose

    torch.manual_seed(0)
    box = 24
    centres = torch.tensor(
        [[0.0, 0.0, 0.0], [7.0, 0.0, 0.0], [3.0, 4.0, 0.0], [-2.0, -1.0, 2.5], [4.0, 0.0, 2.0]]
    )
    centres = centres - centres.mean(0)
    rotations = torch.linalg.qr(torch.randn(6, 3, 3)).Q
    rotations = rotations * torch.linalg.det(rotations).sign()[:, None, None]  # proper rotations
    vols = torch.stack([_blobs(centres @ r.T, box) for r in rotations])[:, None]
    out = CanonicalPose(box)(vols)

    def mean_cc(v: torch.Tensor) -> float:
        f = v.flatten(1) / v.flatten(1).norm(dim=1, keepdim=True)
        c = f @ f.T
        return float(c[torch.triu_indices(len(v), len(v), 1).unbind()].mean())

    assert mean_cc(vols) < 0.5
    assert mean_cc(out) > 0.9
    model = create_backbone("cryonet-deep-centred", num_classes=3, box_size=box, canonical=True).eval()
    with torch.no_grad():
        logits = model(vols)
    torch.testing.assert_close(logits, logits[:1].expand_as(logits), atol=0.05, rtol=0.0)
    with pytest.raises(ValueError, match="canonical"):
        create_backbone("cryonet-deep", num_classes=3, box_size=24, canonical="yes")


def test_antialias_passes_the_particle_band_and_stops_what_the_strided_stem_would_fold() -> None:
    """antialias=true low-passes the main branch's input: a slow cosine passes almost whole, one at
    the first convolution's output Nyquist is quartered, one at the input's Nyquist is removed;
    the cost is nothing learnt (no parameters) and the flag is validated."""
    import math

    from cryoshift.training.backbones.lowpass import AntiAlias

    box = 24
    filt = AntiAlias(box)

    def gain(cycles_per_voxel: float) -> float:
        wave = torch.cos(2 * math.pi * cycles_per_voxel * torch.arange(box, dtype=torch.float32))
        out = filt(wave.expand(1, 1, box, box, box).contiguous())
        return float(out[0, 0, 12, 12, 6:18].abs().max() / wave[6:18].abs().max())

    assert gain(1 / 24) > 0.95
    assert gain(0.25) == pytest.approx(0.25, abs=0.01)
    assert gain(0.5) < 1e-6
    flat = torch.full((2, 1, box, box, box), 3.0)
    torch.testing.assert_close(filt(flat), flat)  # rows renormalised at the box edge
    plain = create_backbone("cryonet-deep-centred", num_classes=3, box_size=box)
    model = create_backbone("cryonet-deep-centred", num_classes=3, box_size=box, antialias=True)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in plain.parameters())
    noise = torch.randn(2, 1, box, box, box)
    model.load_state_dict(plain.state_dict())  # same weights: only the filtered input differs
    with torch.no_grad():
        assert not torch.allclose(model.eval()(noise), plain.eval()(noise))
    with pytest.raises(ValueError, match="antialias"):
        create_backbone("cryonet", num_classes=3, box_size=24, antialias=1)
