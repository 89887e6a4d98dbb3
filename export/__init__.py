"""cryoshift."""
