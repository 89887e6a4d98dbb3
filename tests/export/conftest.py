"""Small real models and data for the export tests: a cryonet-small trained for a few steps to tell
dark spheres from dark rods in 16^3 boxes, so its logits have real margins (parity on an untrained
net with near-tied logits would test noise)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cryoshift.runtime.metadata import ModelMetadata

BOX = 16
CLASSES = ["sphere", "rod"]


def blobs(n: int, seed: int, offset: float = 0.0, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(N, 16, 16, 16) float32 volumes: a dark sphere (label 0) or a dark rod along x (label 1) in noise,
    raw intensities ``offset + scale * value`` as a detector would give them."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices((BOX,) * 3) - (BOX - 1) / 2
    labels = rng.integers(0, 2, size=n)
    vols = rng.normal(scale=0.5, size=(n, BOX, BOX, BOX)).astype(np.float32)
    for i, label in enumerate(labels):
        shift = rng.uniform(-1.5, 1.5, size=3)
        zz, yy, xx = z - shift[0], y - shift[1], x - shift[2]
        mask = (zz**2 + yy**2 + xx**2 < 16) if label == 0 else ((zz**2 + yy**2 < 4) & (np.abs(xx) < 7))
        vols[i][mask] -= 2.0
    return (offset + scale * vols).astype(np.float32), labels


def train_tiny(seed: int = 0, steps: int = 30, **backbone_kwargs: object) -> torch.nn.Module:
    """cryonet-small fitted on normalised blobs (a few seconds on one core)."""
    from cryoshift.training.backbones import create_backbone
    from cryoshift.training.normalise import normalise

    torch.manual_seed(seed)
    model = create_backbone("cryonet-small", num_classes=len(CLASSES), box_size=BOX, **backbone_kwargs)
    vols, labels = blobs(128, seed)
    x = normalise(torch.from_numpy(vols[:, None]))
    y = torch.from_numpy(labels)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (16,), generator=gen)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def tiny_metadata() -> ModelMetadata:
    rng = np.random.default_rng(1)
    return ModelMetadata(
        class_names=list(CLASSES),
        box_size=BOX,
        voxel_size=13.68,
        contrast="dark",
        normalisation="zscore",
        temperature=1.7,
        unknown_threshold=0.4,
        feature_mean=rng.normal(size=32).round(4).tolist(),
        feature_var=rng.uniform(0.5, 2, size=32).round(4).tolist(),
        shift_reference=2.5,
        method="cryoshift",
        backbone="cryonet-small",
        data_fingerprints={"source": "sha256:abc", "target": "sha256:def"},
    )


@pytest.fixture(scope="session", autouse=True)
def _few_threads() -> None:
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_model() -> torch.nn.Module:
    return train_tiny()


@pytest.fixture(scope="session")
def canonical_model() -> torch.nn.Module:
    """The same, with pose normalisation in front (backbone option canonical=true)."""
    return train_tiny(canonical=True)


@pytest.fixture(scope="session")
def antialias_model() -> torch.nn.Module:
    """The same, with the fixed low-pass in front (backbone option antialias=true)."""
    return train_tiny(antialias=True)


@pytest.fixture(scope="session")
def parity_volumes() -> np.ndarray:
    return blobs(24, seed=5, offset=300.0, scale=40.0)[0]


@pytest.fixture(scope="session")
def exported(
    tiny_model: torch.nn.Module, parity_volumes: np.ndarray, tmp_path_factory: pytest.TempPathFactory
):
    """One fp32 export shared by the tests that only read it: (result, metadata, path)."""
    from cryoshift.export import export_model

    meta = tiny_metadata()
    path = Path(tmp_path_factory.mktemp("export")) / "model.onnx"
    result = export_model(tiny_model, meta, path, parity_volumes=parity_volumes)
    return result, meta, path


@pytest.fixture(scope="session")
def make_blobs():
    """The blob generator, for tests that need more data (conftest is not importable in importlib mode)."""
    return blobs


@pytest.fixture
def metadata() -> ModelMetadata:
    return tiny_metadata()
