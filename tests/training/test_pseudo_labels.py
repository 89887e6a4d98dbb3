"""Template-matching pseudo-labels and the tilt range they need, on simulated data with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryoshift.training.pseudo_labels import PseudoLabels, agreement_labels, template_pseudo_labels
from cryoshift.training.simulate import builtin_structures
from cryoshift.training.simulate.config import SimulationConfig
from cryoshift.training.simulate.simulator import Simulator
from cryoshift.training.spectrum import estimate_tilt_max


@pytest.fixture(scope="module")
def structures():
    return builtin_structures(24, 14.0, seed=0, names=["ribosome", "proteasome", "p97", "membrane"])


def _simulate(structures, tilt_max: float, n: int, snr: tuple[float, float] | None) -> tuple:
    torch.set_num_threads(1)
    config = SimulationConfig(
        snr=snr, tilt_max=(tilt_max, tilt_max), defocus_um=(-3.0, -3.0), shift_voxels=1.0
    )
    vol, labels, _ = Simulator(structures, config, seed=1).sample(n)
    return vol.numpy(), labels.numpy()


@pytest.mark.parametrize("tilt_max", [45.0, 65.0])
def test_tilt_range_is_read_from_the_spectrum(structures, tilt_max: float) -> None:
    volumes, _ = _simulate(structures, tilt_max, 60, snr=(0.5, 1.0))
    assert abs(estimate_tilt_max(volumes) - tilt_max) <= 7.0


def test_no_wedge_reads_as_a_full_tilt_range() -> None:
    rng = np.random.default_rng(0)
    assert estimate_tilt_max(rng.normal(size=(40, 16, 16, 16)).astype(np.float32)) == 90.0


def test_pseudo_labels_are_right_and_class_balanced(structures) -> None:
    volumes, labels = _simulate(structures, 60.0, 24, snr=(2.0, 4.0))
    found = template_pseudo_labels(
        volumes, structures.maps, structures.voxel_size, count=20, keep=0.5, seed=0, threads=1
    )
    assert found.matched == 20 and 8 <= len(found.index) <= 14
    assert len(np.unique(found.index)) == len(found.index)
    assert (labels[found.index] == found.labels).mean() >= 0.9
    assert sum(found.class_counts) == len(found.index)
    assert len(found.matched_index) == len(found.predictions) == 20  # every match, for agreement_labels
    kept = np.searchsorted(found.matched_index, found.index)
    assert np.array_equal(found.matched_index[kept], found.index)
    assert np.array_equal(found.predictions[kept], found.labels)


def test_agreement_keeps_the_matches_the_network_predicts_too() -> None:
    """agreement_labels: every matched volume on whose class both classifiers agree, with that class;
    a network that is always right keeps exactly the matches template matching got right."""
    truth = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    matched_index = np.array([3, 5, 8, 13, 21, 34, 55, 89])  # rows of a larger target
    tm = np.array([0, 1, 1, 0, 2, 2, 0, 0])  # wrong on the 3rd, 5th and 8th
    found = PseudoLabels(matched_index[:2], tm[:2], 60.0, 1.0, 8, [1, 1, 0], np.ones(8), matched_index, tm)
    rows, labels = agreement_labels(found, truth)
    assert rows.tolist() == [3, 5, 13, 34, 55] and labels.tolist() == [0, 1, 0, 2, 0]
    assert len(agreement_labels(found, (tm + 1) % 3)[0]) == 0
    with pytest.raises(ValueError, match="3 network predictions for 8 matched volumes"):
        agreement_labels(found, truth[:3])
