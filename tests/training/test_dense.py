"""Dense supervision: the decoder learns the clean particle, only simulated rows count, resume holds."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cryoshift.runtime.errors import InputError
from cryoshift.training import dense as dense_module
from cryoshift.training.backbones import create_backbone
from cryoshift.training.checkpoint import RUN_MODEL, load_checkpoint
from cryoshift.training.data import Domain
from cryoshift.training.dense import DenseSupervision, standardise
from cryoshift.training.trainer import TrainConfig, default_dense_weight, train


def _config(out: Path, **kw: object) -> TrainConfig:
    base = {
        "source": "builtin:ribosome,builtin:proteasome",
        "out": str(out),
        "box": 16,
        "voxel_size": 20.0,
        "backbone": "cryonet-small",
        "method": "source-only",
        "epochs": 2,
        "sim_per_epoch": 64,
        "sim_val": 16,
        "batch_size": 16,
        "template_labels": 0,
        "dense_weight": 1.0,
        "progress": False,
    }
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def test_the_feature_grid_is_found_for_each_cryonet_and_refused_elsewhere() -> None:
    for name, grid in (
        ("cryonet-deep-centred", 8),
        ("cryonet", 8),
        ("cryonet-fine", 8),
        ("cryonet-small", 8),
    ):
        net = create_backbone(name, num_classes=3, box_size=32, test_views=4)
        assert DenseSupervision(net, 1.0).grid == grid, name
        assert net.test_views == 4 and net.training  # the probe leaves the model as it was
    with pytest.raises(InputError, match="cryonet family"):
        DenseSupervision(create_backbone("cb3d", num_classes=3, box_size=32), 1.0)


def test_only_rows_with_a_particle_count_and_the_decoder_learns() -> None:
    torch.manual_seed(0)
    net = create_backbone("cryonet-small", num_classes=2, box_size=16)
    dense = DenseSupervision(net, 1.0)
    x = torch.randn(6, 1, 16, 16, 16)
    target = torch.from_numpy(standardise(np.random.default_rng(0).normal(size=(6, 4, 4, 4))))
    half = target.clone()
    half[3:] = float("nan")  # e.g. template-labelled target rows concatenated into the source
    opt = torch.optim.Adam([*net.parameters(), *dense.parameters()], 1e-2)
    losses = []
    for _ in range(30):
        dense.arm()
        net(x)
        loss = dense.loss(half)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]
    # the NaN rows were never looked at: the same loss as on the first three rows alone
    net.eval()  # batch statistics would differ between 6 and 3 volumes
    dense.arm()
    net(x)
    a = float(dense.loss(half).detach())
    dense.arm()
    net(x[:3])
    assert a == pytest.approx(float(dense.loss(target[:3]).detach()), rel=1e-5)
    dense.arm()
    net(x)
    assert float(dense.loss(torch.full((6, 4, 4, 4), float("nan"))).detach()) == 0.0
    with pytest.raises(RuntimeError, match="no backbone forward"):
        dense.loss(target)  # nothing captured since the last loss
    dense.close()
    dense.arm()
    net(x)
    with pytest.raises(RuntimeError):
        dense.loss(target)  # the hook is gone


def test_concatenated_domains_fill_missing_particles_with_nan() -> None:
    vols = np.zeros((2, 16, 16, 16), np.float32)
    a = Domain(
        vols, np.array([0, 1]), ["a", "b"], 16, 10.0, "dark", "x", "sim", particles=np.ones((2, 4, 4, 4))
    )
    b = Domain(vols, np.array([1, 0]), ["a", "b"], 16, 10.0, "dark", "y", "pseudo")
    both = a.concat(b)
    assert both.particles.shape == (4, 4, 4, 4)
    assert np.isfinite(both.particles[:2]).all() and np.isnan(both.particles[2:]).all()
    assert both.subset(np.array([3, 0])).particles[1].sum() == 64
    assert b.concat(b).particles is None


def test_training_with_dense_supervision_records_it_and_resumes_exactly(tmp_path: Path) -> None:
    full = train(_config(tmp_path / "full"))
    with (tmp_path / "full" / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    dense = [float(r["loss_dense"]) for r in rows]
    assert all(np.isfinite(dense)) and dense[-1] < dense[0]
    assert json.loads((tmp_path / "full" / "config.json").read_text())["dense_weight"] == 1.0
    model, _, _ = load_checkpoint(tmp_path / "full")
    # the decoder is not part of the model, and nothing stays hooked to it
    assert not any(m._forward_hooks for m in model.modules())
    state = torch.load(tmp_path / "full" / RUN_MODEL, weights_only=True)["state_dict"]
    assert not any("decoder" in k for k in state)
    train(_config(tmp_path / "cut"), stop_after_epoch=1)
    resumed = train(_config(tmp_path / "cut"), resume=True)
    assert resumed.state_digest == full.state_digest
    plain = train(_config(tmp_path / "plain", dense_weight=0.0))
    assert plain.state_digest != full.state_digest


def test_dense_supervision_needs_a_simulated_source_and_a_sane_weight(
    domains: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(InputError, match="simulated source"):
        train(_config(tmp_path / "ds", source=str(domains["source"]), box=None, voxel_size=None))
    with pytest.raises(InputError, match=r"cryonet family\), not cb3d"):
        train(_config(tmp_path / "cb", backbone="cb3d"))  # before anything is simulated
    assert not (tmp_path / "cb").exists()
    # a pose-normalised backbone's maps are of the rotated box: the particle density would not match
    with pytest.raises(InputError, match="canonical=true rotates the box"):
        train(_config(tmp_path / "rot", backbone_kwargs={"canonical": True}))
    assert not (tmp_path / "rot").exists()
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(InputError, match="--dense-weight"):
            train(_config(tmp_path / "bad", dense_weight=bad))


def test_the_default_weight_applies_only_where_dense_supervision_can_work(
    domains: dict[str, Path], tmp_path: Path
) -> None:
    simulated = _config(tmp_path / "a", dense_weight=None)
    assert default_dense_weight(simulated) == dense_module.DEFAULT_WEIGHT
    # skipped, not refused, where it cannot work: a dataset source, a backbone without a dense map
    from_dataset = _config(
        tmp_path / "b", dense_weight=None, source=str(domains["source"]), box=None, voxel_size=None
    )
    assert default_dense_weight(from_dataset) == 0.0
    assert default_dense_weight(_config(tmp_path / "c", dense_weight=None, backbone="cb3d")) == 0.0
    result = train(
        _config(
            tmp_path / "d",
            dense_weight=None,
            source=str(domains["source"]),
            box=None,
            voxel_size=None,
            epochs=1,
        )
    )
    assert json.loads((result.run_dir / "config.json").read_text())["dense_weight"] == 0.0


@pytest.mark.parametrize(
    "method", ["source-only", "adabn", "dann", "mada", "warp", "cryoshift", "selftrain", "oracle"]
)
def test_every_method_passes_the_source_first_so_dense_supervision_reads_its_rows(method: str) -> None:
    # The contract dense supervision relies on: the first backbone forward of a step has the source
    # batch as its first rows (alone or concatenated with warped or target volumes).
    from cryoshift.training.adapt import create_method

    torch.manual_seed(0)
    net = create_backbone("cryonet-small", num_classes=2, box_size=16)
    m = create_method(method, backbone=net, num_classes=2, box_size=16)
    dense = DenseSupervision(net, 1.0)
    m.eval()  # running BatchNorm statistics: each row's features do not depend on its batch
    sx, tx = torch.randn(4, 1, 16, 16, 16), torch.randn(4, 1, 16, 16, 16)
    sy, ty = torch.tensor([0, 1, 0, 1]), torch.tensor([1, 0, 1, 0])
    dense.arm()
    m.losses(sx, sy, target_x=tx, progress=0.9, target_y=ty if method == "oracle" else None)
    captured = dense._take()
    dense.arm()
    net(sx)
    assert torch.allclose(captured[:4], dense._take(), atol=1e-5)
