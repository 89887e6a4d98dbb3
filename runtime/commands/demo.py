"""``cryoshift demo``: the whole pipeline end to end on built-in structures, in a few minutes."""

from __future__ import annotations

from pathlib import Path

import typer

NAME = "demo"
NO_ARGS_IS_HELP = False


def command(
    out: Path = typer.Option(Path("demo_out"), "--out", help="Directory for everything the demo makes "
                             "(data, runs, ONNX model, predictions, demo.json)."),
    quick: bool = typer.Option(False, "--quick", help="Tiny sizes and 2 epochs: a smoke test in about a "
                               "minute (numbers are not meaningful)."),
    seed: int = typer.Option(0, "--seed", help="Seed for simulation and training."),
    threads: int = typer.Option(None, "--threads", help="CPU threads for PyTorch and onnxruntime "
                                "(default: all cores)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars (logs, CI)."),
) -> None:
    """Simulate -> train -> export -> classify on built-in structures, and score the result.

    Simulates a labelled source and a shifted target (tilt series, crowding, low SNR, 1/f noise).

    Trains source-only and Cryo-Shift for the same short budget; target labels are never read.

    Exports Cryo-Shift to ONNX and classifies the target with the PyTorch-free runtime.

    Prints each model's target accuracy (held-back labels) and the runtime's throughput.

    A re-run re-uses finished stages in --out. About 2 minutes on 2 CPU cores. Needs the 'train' extra.

    Example: cryoshift demo --out demo_out
    """
    from cryoshift.runtime.errors import require_extra

    require_extra("train", "cryoshift demo", "torch", "onnx")
    from rich.console import Console
    from rich.table import Table

    from cryoshift.training.demo import run_demo

    console = Console(stderr=False)
    result = run_demo(out, quick=quick, seed=seed, threads=threads, progress=not no_progress,
                      say=lambda line: console.print(f"[bold]demo[/bold] {line}"))
    table = Table(title=f"Target accuracy ({len(result.class_names)} classes, labels held back "
                        "from training)")
    table.add_column("model")
    table.add_column("target accuracy", justify="right")
    table.add_column("macro-F1", justify="right")
    for row in result.rows:
        table.add_row(row["model"], f"{row['accuracy'] * 100:.1f}%", f"{row['macro_f1'] * 100:.1f}%")
    console.print(table)
    console.print("(one seed, a short budget: a demonstration, not a measurement; the benchmark with seeds "
                  "and baselines is benchmarks/domain_shift.py)")
    rt = result.runtime
    console.print(f"runtime ({rt['backend']}): {rt['rate']:,.0f} subtomograms/s end to end "
                  f"({rt['n']} subtomograms in {rt['wall_s']:.2f} s)")
    console.print("stages (s): " + ", ".join(f"{k} {v:.0f}" for k, v in result.seconds.items()))
    console.print(f"outputs in {result.out_dir}: model {result.paths['onnx']}, "
                  f"predictions {result.paths['predictions_csv']}, summary {result.paths['summary']}")
