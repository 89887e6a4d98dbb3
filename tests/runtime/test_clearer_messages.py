"""Refusals that gave the wrong reason or hid it (reports/paths.md, finding 9): STAR text under a
non-.star name, names that differ only in Unicode normalisation, a structure name with a leading
space, and one structure file given twice under two spellings."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
from hostile_inputs import BOX, Capsys, assert_error, density_map, run_cli

from cryoshift.runtime.errors import InputError
from cryoshift.runtime.picks import read_picks
from cryoshift.runtime.sources.paths import match_tomogram, tomogram_index
from cryoshift.runtime.tables import pick_layout

STAR_PICKS = (
    "data_particles\n\nloop_\n_rlnTomoName #1\n_rlnCoordinateX #2\n_rlnCoordinateY #3\n"
    "_rlnCoordinateZ #4\nTS_01 8 8 8\n"
)
NFD = unicodedata.normalize("NFD", "é")
NFC = unicodedata.normalize("NFC", "é")


def _simulate(out: Path, structures: str, capsys: Capsys) -> tuple[int | str, str, str]:
    """A tiny one-thread simulate run: these refusals come before any volume is made."""
    argv = ["simulate", out, "--n", 4, "--box", BOX, "--no-progress", "--threads", 1]
    return run_cli([*argv, "--structures", structures], capsys)


@pytest.mark.parametrize("name", ["picks.txt", "picks.star.bak", "picks"])
def test_star_text_under_another_name_is_said_to_be_star(tmp_path: Path, name: str) -> None:
    """Was "no coordinate columns: need x, y, z; found data_particles" (the reader classify uses)."""
    path = tmp_path / name
    path.write_text(STAR_PICKS)
    with pytest.raises(InputError, match=r"looks like a STAR file \(data_particles\); give it a \.star name"):
        pick_layout(path)


def test_read_picks_says_a_one_column_star_text_is_star(tmp_path: Path) -> None:
    """read_picks's own check (a STAR text that pandas reads as one column) says it too."""
    path = tmp_path / "picks.txt"
    path.write_text("data_particles\n\nloop_\n_rlnCoordinateX\n")
    with pytest.raises(InputError, match=r"looks like a STAR file \(data_particles\)"):
        read_picks(path)


def test_info_says_a_txt_file_of_star_text_is_star(tmp_path: Path, capsys: Capsys) -> None:
    path = tmp_path / "picks.txt"
    path.write_text(STAR_PICKS)
    line = assert_error(run_cli(["info", path], capsys), path)
    assert "looks like a STAR file (data_particles); give it a .star name" in line, line


def test_a_csv_without_coordinates_still_lists_its_columns(tmp_path: Path) -> None:
    path = tmp_path / "picks.csv"
    path.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(InputError, match="need x, y, z; found a, b, c"):
        pick_layout(path)
    with pytest.raises(InputError, match="need x, y, z; found a, b, c"):
        read_picks(path)


def test_class_names_differing_in_normalisation_say_so(tmp_path: Path, capsys: Capsys) -> None:
    """Was "class name 'é' differs only in case from 'é'": the wrong reason, two identical-looking names."""
    first = density_map(tmp_path / f"{NFD}.mrc")
    second = density_map(tmp_path / f"{NFC}.mrc")
    line = assert_error(_simulate(tmp_path / "sim", f"{first},{second}", capsys), second)
    assert "differs only in Unicode normalisation (NFC/NFD: '\\xe9' against 'e\\u0301')" in line, line
    assert "case" not in line


def test_a_pick_name_differing_in_normalisation_is_not_matched(tmp_path: Path) -> None:
    """Was "no tomogram matches name 'TS_é'" beside a TS_é.mrc; matching it would be a guess."""
    tomogram = tmp_path / f"TS_{NFC}.mrc"
    tomogram.write_bytes(b"")
    with pytest.raises(InputError) as refused:
        match_tomogram(f"TS_{NFD}", tomogram_index([str(tmp_path)]), tmp_path / "picks.csv")
    reason = refused.value.reason
    assert (
        f"{tomogram} differs only in Unicode normalisation (NFC/NFD: 'TS_e\\u0301' against 'TS_\\xe9')"
        in reason
    )


def test_a_structure_name_with_a_leading_space_is_quoted(tmp_path: Path, capsys: Capsys) -> None:
    """'m1.mrc, m2.mrc' was "error:  m2.mrc: no such file": the space could not be seen."""
    first = density_map(tmp_path / "m1.mrc")
    density_map(tmp_path / "m2.mrc")
    line = assert_error(_simulate(tmp_path / "sim", f"{first}, {tmp_path / 'm2.mrc'}", capsys), "m2.mrc")
    assert f"the name ' {tmp_path / 'm2.mrc'}' has leading white space" in line, line


def test_one_structure_file_given_twice_is_said_to_be_one_file(
    tmp_path: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """'m1.mrc,./m1.mrc' was "class name 'm1' is taken already by .../m1.mrc"."""
    density_map(tmp_path / "m1.mrc")
    monkeypatch.chdir(tmp_path)
    line = assert_error(_simulate(tmp_path / "sim", "m1.mrc,./m1.mrc", capsys), "m1.mrc")
    assert "the same file is given twice" in line and "taken already" not in line, line


def test_two_files_of_one_name_still_clash(tmp_path: Path, capsys: Capsys) -> None:
    (tmp_path / "a").mkdir()
    first = density_map(tmp_path / "m1.mrc")
    second = density_map(tmp_path / "a" / "m1.mrc")
    line = assert_error(_simulate(tmp_path / "sim", f"{first},{second}", capsys), second)
    assert "class name 'm1' is taken already" in line, line
