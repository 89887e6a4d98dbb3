"""cryoshift.training: simulate labelled subtomograms and train domain-adapted classifiers (PyTorch)."""
