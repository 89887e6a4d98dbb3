"""Small training settings shared by the trainer tests (single process and two-process)."""

from __future__ import annotations

# a simulated source of three built-ins, small enough for template matching in seconds
TINY_SIMULATED_SELFTRAIN = {
    "source": "builtin:ribosome,builtin:proteasome,builtin:membrane",
    "box": 16,
    "sim_per_epoch": 16,
    "sim_val": 8,
    "method": "selftrain",
}

# two epochs of the smallest backbone on a dataset source (the conftest's domains): runs whose
# records, selection and evaluation the tests read
TINY_DATASET_RUN = {
    "backbone": "cryonet-small",
    "epochs": 2,
    "batch_size": 8,
    "progress": False,
}

# `run_demo` in seconds: three built-ins, one epoch, a tiny target (the demo and report tests)
TINY_DEMO = {
    "n_target": 24,
    "epochs": 1,
    "sim_per_epoch": 32,
    "template_labels": 8,
    "tm_count": 6,
    "threads": 1,
    "progress": False,
    "structures": ["ribosome", "proteasome", "membrane"],
}
