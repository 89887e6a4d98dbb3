"""``cryoshift report``: one self-contained HTML page about a classify output or a training run."""

from __future__ import annotations

from pathlib import Path

import typer

NAME = "report"
NO_ARGS_IS_HELP = True


def command(
    path: Path = typer.Argument(
        ...,
        metavar="RESULTS_OR_RUN",
        help="classify output folder (or its predictions.csv/.star), or a training run folder.",
    ),
    out: Path = typer.Option(
        None, "--out", "-o", help="HTML file to write (default: report.html in the folder)."
    ),
) -> None:
    """Write one HTML page (figures inline): class counts per tomogram, confidence and shift-score
    histograms, unknown fraction, throughput, the embedding and a confusion matrix when available;
    for a run folder, losses and model selection. Needs matplotlib (the plots extra).

    Example: cryoshift report results && xdg-open results/report.html
    """
    from cryoshift.runtime.report import write_report
    from cryoshift.runtime.terminal import visible  # notes name tomograms and classes from the files

    notes: list[str] = []
    written = write_report(path, out, notes)
    for note in notes:  # data the page leaves out (NaN scores): said here as well as on the page
        typer.echo(f"cryoshift: warning: {visible(note)}", err=True)
    typer.echo(f"report: {visible(written)}")
