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
    """Simulate -> train -> template-match -> export -> classify on built-in structures, and score.

    Simulates an 'experimental' target (tilt series, crowding, low SNR, 1/f noise, flexible and
    partly occupied particles) whose labels are held back.

    Trains source-only and `cryoshift train` at its defaults for the same short budget, and runs
    template matching against the same structures; target labels are never read by any of them.

    Exports the default model to ONNX and classifies the target with the PyTorch-free runtime.

    Prints each model's target accuracy (held-back labels) and both throughputs.

    A re-run re-uses finished stages in --out. Several minutes on 2 CPU cores. Needs the 'train' extra.

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
    table.add_column("scored", justify="right")
    for row in result.rows:
        table.add_row(row["model"], f"{row['accuracy'] * 100:.1f}%", f"{row['macro_f1'] * 100:.1f}%",
                      str(row["n"]))
    console.print(table)
    console.print("(one seed, a short budget: a demonstration, not a measurement; the benchmark over data "
                  "draws, with every baseline, is benchmarks/accuracy.py)")
    rt = result.runtime
    console.print(f"runtime ({rt['backend']}): {rt['rate']:,.0f} subtomograms/s end to end "
                  f"({rt['n']} subtomograms in {rt['wall_s']:.2f} s); template matching "
                  f"{rt['template_matching_rate']:.1f} subtomograms/s "
                  f"({rt['rate'] / max(rt['template_matching_rate'], 1e-9):,.0f}x slower)")
    console.print("stages (s): " + ", ".join(f"{k} {v:.0f}" for k, v in result.seconds.items()))
    console.print(f"outputs in {result.out_dir}: model {result.paths['onnx']}, "
                  f"predictions {result.paths['predictions_csv']}, summary {result.paths['summary']}")
