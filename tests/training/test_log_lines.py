"""train prints plain lines (one per epoch, the target count) when stdout is not a terminal."""

from __future__ import annotations

from pathlib import Path

from cryoshift.training.log import epoch_line
from cryoshift.training.trainer import TrainConfig, train


def test_plain_epoch_lines_when_stdout_is_a_file(domains: dict[str, Path], tmp_path: Path, capsys) -> None:
    config = TrainConfig(
        source=str(domains["source"]),
        target=str(domains["target_unlabelled"]),
        out=str(tmp_path / "run"),
        method="dann",
        backbone="cryonet-small",
        epochs=2,
        batch_size=8,
        progress=False,
        val_fraction=0.25,
    )
    train(config, log_lines=True)
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("cryoshift: target: ") and "items read" in line for line in lines)
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/2", "2/2"]
    assert all(" s" in line for line in epochs)


def test_epoch_line_format() -> None:
    row = {
        "epoch": 3,
        "loss": 0.91234,
        "val_acc": 0.5,
        "train_vol_per_s": 410.2,
        "seconds": 12.34,
        "note": "x",
    }
    assert epoch_line(row, 20) == "epoch 3/20 loss 0.9123 val_acc 0.5 12.3 s 410 vol/s"
