"""Atomic models (PDB / mmCIF) -> electron-scattering density with gemmi.

gemmi sums the electron scattering factors of every atom on a grid; a Gaussian blur of
B = 8 pi^2 sigma^2 with sigma = 0.225 * resolution (the molmap convention) limits the map to
the chosen resolution. Hydrogens and waters (the PDB's names and molecular dynamics' ones,
:data:`MD_WATER_NAMES`) are removed: at 1 nm voxels they only add a uniform haze. Alternate
conformations (altlocs) are all kept at their occupancies, as gemmi weighs every atom by its
occupancy. The models of an RCSB biological-assembly file (``.pdb1``, ``.pdb2`` ...) are the copies
of one assembly and all are used. Of several models in another file the first is used when they are
superposed (an NMR ensemble); models that lie apart (an assembly stored one copy per model) are
refused, since any one of them would be a wrong particle. Files may be gzipped (``.pdb.gz``, ``.cif.gz``).
"""

from __future__ import annotations

import gzip
import math
import re
import sys
import zlib
from pathlib import Path

import numpy as np

from cryoshift.runtime.contract import (
    ATOMIC_MODEL_COMPRESSED_SUFFIX,
    ATOMIC_MODEL_SUFFIXES,
    RCSB_ASSEMBLY_SUFFIXES,
)
from cryoshift.runtime.errors import InputError

# Largest density grid computed (float32, ~4 GiB, and gemmi needs about as much again): a
# 2000 A molecule at 2 A spacing. Coordinates spanning more are a broken file, not one particle.
MAX_GRID_VOXELS = 2**30


# Largest coordinate file read (uncompressed): the biggest deposited mmCIF files are ~1 GiB.
MAX_MODEL_BYTES = 2**31
# Models whose centres lie further apart than this (A) are not an ensemble of one molecule.
ENSEMBLE_TOLERANCE = 10.0
COMPRESSED_SUFFIX = ATOMIC_MODEL_COMPRESSED_SUFFIX
# Residue names of water in molecular-dynamics snapshots (GROMACS SOL, CHARMM TIP3 that a PDB file's
# 3 columns cut to TIP, AMBER WAT/TP3 ...). gemmi's remove_waters and is_water know only HOH, WAT,
# H2O and DOD, so a snapshot of a conformational state kept every water oxygen and its class was a
# block of solvent. They are the water models' names in the force fields' residue libraries.
MD_WATER_NAMES = ("SOL", "TIP", "TIP3", "TIP4", "TIP5", "TP3", "T3P", "T4P", "SPC", "SPCE", "OPC")


def model_suffix(path: str | Path) -> str:
    """The atomic-model suffix of a file name (``.pdb``, ``.cif.gz`` ...), or "" if it has none."""
    name = Path(path).name.lower()
    return next((suffix for suffix in ATOMIC_MODEL_SUFFIXES if name.endswith(suffix)), "")


def _read_bytes(path: Path) -> bytes:
    """The file's text as bytes, gunzipped; read in Python so that any file name works (gemmi
    takes only UTF-8 paths)."""
    from cryoshift.runtime.sources.cache import os_reason

    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
            fh.seek(0)
            if head == b"\x1f\x8b":
                with gzip.open(fh) as gz:
                    data = gz.read(MAX_MODEL_BYTES + 1)
            else:
                data = fh.read(MAX_MODEL_BYTES + 1)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(path, f"damaged gzip file ({exc})") from exc
    except OSError as exc:
        raise InputError(path, os_reason(path, exc)) from exc
    if len(data) > MAX_MODEL_BYTES:
        raise InputError(path, f"atomic model is over {MAX_MODEL_BYTES >> 30} GiB of text; not one particle")
    if not data.strip():
        raise InputError(path, "file is empty" if not data else "file holds only white space")
    return data


# gemmi's mmCIF errors start with the name of what it read, "string" for text it was given
# (string:46:0(1234): ... or string:3 in data_x: ...): the line, the column and byte offset are
# gemmi's; the name of the file is InputError's
_GEMMI_PLACE = re.compile(r"^string:(?P<line>\d+)(?::\d+)?(?:\(\d+\))?(?: in (?P<block>\S+))?: ")


def _gemmi_reason(exc: BaseException) -> str:
    """gemmi's message with "line N" (and the mmCIF block) for its "string:N:C(B):" prefix.

    Why: the text is read in Python (:func:`_read_bytes`) and handed to gemmi as a string, so its
    errors cited "string:46:0", a name the user never gave; the file is named before the reason."""
    text = str(exc)
    match = _GEMMI_PLACE.match(text)
    if match is None:
        return text
    block = f", block {match['block']}" if match["block"] else ""
    return f"line {match['line']}{block}: {text[match.end() :]}"


def _parse(path: Path):
    """The whole file as a gemmi Structure (nothing removed); refusals in one line."""
    import gemmi

    suffix = model_suffix(path).removesuffix(COMPRESSED_SUFFIX)
    kind = gemmi.CoorFormat.Mmcif if suffix in (".cif", ".mmcif") else gemmi.CoorFormat.Pdb
    data = _read_bytes(path)
    if kind == gemmi.CoorFormat.Pdb and b"*" in data:  # the byte test keeps the common case free
        _refuse_starred_coordinates(path, data)
    try:
        st = gemmi.read_structure_string(data, format=kind)
    except (RuntimeError, ValueError, OSError, IndexError, TypeError) as exc:
        what = "mmCIF" if kind == gemmi.CoorFormat.Mmcif else "PDB"
        raise InputError(path, f"cannot read atomic model as {what}: {_gemmi_reason(exc)}") from exc
    if kind == gemmi.CoorFormat.Mmcif and not _has_atoms(st):
        st = _read_without_alt_id(data) or st
    if not _has_atoms(st):
        # gemmi reads binary junk, a UTF-16 file or a PDB of REMARKs as a model of no atoms; it
        # was called one with "no heavy atoms (hydrogens and waters are left out)"
        mmcif = kind == gemmi.CoorFormat.Mmcif
        what = "mmCIF file (no _atom_site rows)" if mmcif else "PDB file (no ATOM/HETATM records)"
        raise InputError(path, f"atomic model holds no atoms: not a {what}, or an empty one")
    return st


_PDB_XYZ_COLUMNS = slice(30, 54)  # columns 31-54 of an ATOM/HETATM record: X, Y, Z as 8.3f


def _refuse_starred_coordinates(path: Path, data: bytes) -> None:
    """Refuse a PDB file with an atom whose coordinate is ``********``: what PDB writers print for
    a value their 8 columns cannot hold (10000 A and more, or -1000 A and less), as in large
    assemblies.

    Why: gemmi reads that field as 0 without a word, so each such atom was put at the origin and
    the simulated density was silently wrong. mmCIF has no column limits."""
    starred = [
        number
        for number, line in enumerate(data.decode("latin-1").splitlines(), 1)
        if line.startswith(("ATOM", "HETATM")) and "*" in line[_PDB_XYZ_COLUMNS]
    ]
    if starred:
        some = f"{len(starred)} atoms have" if len(starred) > 1 else "1 atom has"
        raise InputError(
            path,
            f"line {starred[0]}: {some} an overflowed coordinate (********: beyond the 8 columns a PDB "
            "file gives X, Y and Z), which would be read as 0; use mmCIF for models this large",
        )


def _has_atoms(st) -> bool:
    return any(True for model in st for ch in model for r in ch for a in r)


def _read_without_alt_id(text: str):
    """The structure of an mmCIF file whose ``_atom_site`` loop lacks ``label_alt_id``, read with
    that column added as "." (no altloc), or None. Why: gemmi (0.7) reads no atoms at all from such
    a loop, and several modelling tools write these short files; they were refused as "holds no
    atoms"."""
    import gemmi

    try:
        block = gemmi.cif.read_string(text).sole_block()
        table = block.find_mmcif_category("_atom_site.")
        if not table.loop or "_atom_site.label_alt_id" in list(table.tags):
            return None
        table.loop.add_columns(["_atom_site.label_alt_id"], ".")
        st = gemmi.make_structure_from_block(block)
    except (RuntimeError, ValueError, IndexError, TypeError, AttributeError):
        return None
    return st if _has_atoms(st) else None


_PDB_COORDINATE_POINTS = (34, 42, 50)  # 0-based columns of the decimal points of X, Y, Z (8.3f)


def _overflowing_coordinates(path: Path) -> int:
    """How many ATOM/HETATM records of a PDB file have coordinates that do not fit their 8.3f
    columns (31-54; -8800.000 is nine characters): gemmi then reads shifted numbers, an occupancy
    of 0 among them, and the model was refused for its occupancies."""
    if ".cif" in model_suffix(path) or ".mmcif" in model_suffix(path):
        return 0
    try:
        lines = _read_bytes(path).decode("latin-1").splitlines()
    except InputError:
        return 0
    return sum(
        1
        for line in lines
        if line.startswith(("ATOM", "HETATM"))
        and any(len(line) <= c or line[c] != "." for c in _PDB_COORDINATE_POINTS)
    )


def _read_model(path: Path):
    """The model cleaned up for density (no hydrogens, waters or unknown elements), and how many
    atoms of unknown element were left out of its first model."""
    st = _parse(path)
    _merge_assembly(path, st)
    st.remove_hydrogens()
    st.remove_waters()
    _remove_md_waters(st)
    unknown = _drop_unknown_elements(path, st)
    st.remove_empty_chains()
    _check_models(path, st)
    return st, unknown


def is_assembly_file(path: str | Path) -> bool:
    """Whether ``path`` is an RCSB biological-assembly file (``.pdb1``, ``.pdb2.gz`` ...)."""
    return model_suffix(path).removesuffix(COMPRESSED_SUFFIX) in RCSB_ASSEMBLY_SUFFIXES


def _merge_assembly(path: Path, st) -> None:
    """Put every MODEL of an RCSB assembly file into the first: there each MODEL is one copy of the
    assembly (that is what the format means), never an NMR ensemble. Why: copies whose centres
    lie within ENSEMBLE_TOLERANCE (an intertwined or coiled-coil dimer) were taken for an ensemble
    and the first alone simulated, a monomer for a dimer; copies further apart were refused."""
    if not is_assembly_file(path) or len(st) < 2:
        return
    first = st[0]
    for model in list(st)[1:]:
        for chain in model:
            first.add_chain(chain)
    while len(st) > 1:
        del st[len(st) - 1]


def _remove_md_waters(st) -> None:
    """Remove the residues named as molecular-dynamics water (:data:`MD_WATER_NAMES`), in every
    model; one gemmi selection, as deleting 10^5 residues one by one is quadratic."""
    import gemmi

    names = set(MD_WATER_NAMES)
    if not any(r.name in names for model in st for ch in model for r in ch):
        return  # (the selection also removes an emptied model: a hydrogens-only file lost its model)
    gemmi.Selection(f"({','.join(MD_WATER_NAMES)})").remove_selected(st)


def _is_water(residue) -> bool:
    """Water by gemmi's names (HOH, WAT, H2O, DOD) or a molecular-dynamics name."""
    return residue.is_water() or residue.name in MD_WATER_NAMES


def _drop_unknown_elements(path: Path, st) -> int:
    """Leave out atoms of unknown element (gemmi's X: an element column of X or junk, or a blank one
    with an atom name it cannot read): gemmi gave them a made-up scattering factor (0.8 x carbon's)
    and they were simulated without a word. Returns their number in the first model; a model of
    nothing else is refused."""
    import gemmi

    unknown = gemmi.Element("X")
    counts = []
    for model in st:
        dropped = 0
        for chain in model:
            for residue in chain:
                for i in reversed(range(len(residue))):
                    if residue[i].element == unknown:
                        del residue[i]
                        dropped += 1
            for i in reversed(range(len(chain))):
                if len(chain[i]) == 0:
                    del chain[i]
        counts.append(dropped)
    if counts and counts[0] and not any(True for ch in st[0] for r in ch for a in r):
        raise InputError(
            path,
            f"all {counts[0]} atoms have an unknown element (X), whose scattering cryoshift cannot "
            "know: set the elements (columns 77-78 of a PDB file, _atom_site.type_symbol)",
        )
    return counts[0] if counts else 0


def _heavy_xyz(model) -> np.ndarray:
    """The coordinates of the atoms that carry density: an atom of occupancy 0 adds none, so it
    must not stretch the extent or move the centre the checks below measure either."""
    xyz = [a.pos.tolist() for ch in model for r in ch for a in r if a.occ > 0]
    return np.array(xyz, dtype=np.float64).reshape(-1, 3)


def _usable_xyz(path: Path, model) -> np.ndarray:
    """The heavy atoms' coordinates, refused when there are none or any is not finite."""
    # gemmi weighs every atom by its occupancy and blurs it by its B-factor: one NaN made the whole
    # density NaN, refused as "only 0.0 % of its density falls inside the box" of a fine model
    atoms = [a for ch in model for r in ch for a in r]
    odd = sum(1 for a in atoms if not (math.isfinite(a.occ) and math.isfinite(a.b_iso)))
    if odd:
        raise InputError(path, f"{odd} atoms have a NaN or infinite occupancy or B-factor")
    xyz = _heavy_xyz(model)
    if len(xyz) == 0:
        unoccupied = sum(1 for ch in model for r in ch for a in r)
        overflow = _overflowing_coordinates(path)
        if overflow:
            raise InputError(
                path,
                f"{overflow} ATOM/HETATM records have coordinates that overflow their PDB columns "
                "(31-54, 8 characters each, e.g. -8800.000 is 9), so every number after them is "
                "misread: move the model near the origin or write it as mmCIF",
            )
        if unoccupied:  # some modelling tools write 0.00: their density would be empty
            raise InputError(
                path,
                f"all {unoccupied} heavy atoms have occupancy 0 or less, so the model has no density; "
                "set the occupancies (columns 55-60 of a PDB file, _atom_site.occupancy) to 1",
            )
        raise InputError(path, "atomic model has no heavy atoms (hydrogens and waters are left out)")
    bad = int((~np.isfinite(xyz)).any(axis=1).sum())
    if bad:
        raise InputError(path, f"{bad} atoms have NaN or infinite coordinates")
    return xyz


def _check_models(path: Path, st) -> None:
    """Several models are fine when superposed (an NMR ensemble: the first is used); apart, they
    are copies of an assembly or unrelated molecules, and any one of them is the wrong particle."""
    if len(st) < 2:
        return
    centres = [xyz.mean(0) for m in st if len(xyz := _heavy_xyz(m)) and np.isfinite(xyz).all()]
    if len(centres) < 2:
        return
    gaps = np.linalg.norm(np.array(centres[1:]) - centres[0], axis=1)
    if gaps.max() > ENSEMBLE_TOLERANCE:
        raise InputError(
            path,
            f"{len(st)} models that are not superposed (centres up to {gaps.max():.0f} A apart): an "
            "assembly stored one copy per model? cryoshift uses one model; write the particle as one "
            "model (e.g. gemmi or ChimeraX) or give a density map",
        )


def describe_model(path: str | Path) -> list[tuple[str, str]]:
    """(key, value) rows for ``cryoshift info``: what the file holds and what cryoshift would use.

    Raises :class:`InputError` for what ``simulate`` and ``train`` refuse (no heavy atoms, NaN
    coordinates, models that are not superposed)."""
    path = Path(path)
    st = _parse(path)
    models = len(st)
    _merge_assembly(path, st)
    model = st[0]
    atoms = [a for ch in model for r in ch for a in r]
    hydrogens = sum(a.is_hydrogen() for a in atoms)
    waters = sum(len(r) for ch in model for r in ch if _is_water(r))
    altlocs = sum(a.altloc != "\0" for a in atoms)
    cleaned, unknown = _read_model(path)
    used = _usable_xyz(path, cleaned[0])
    span = used.max(0) - used.min(0)
    gz = ", gzip" if model_suffix(path).endswith(COMPRESSED_SUFFIX) else ""
    kind = "mmCIF" if ".cif" in model_suffix(path) else "PDB"
    rows = [
        ("type", f"atomic model ({kind}{gz})"),
        ("models", f"{models}" + _models_note(path, models)),
        ("chains", str(len(model))),
        ("atoms", f"{len(atoms)} ({hydrogens} hydrogens, {waters} in waters, {altlocs} with altlocs)"),
        (
            "heavy atoms used",
            str(len(used)) + (f" ({unknown} of unknown element left out)" if unknown else ""),
        ),
        ("extent (A)", " x ".join(f"{v:.1f}" for v in span) + " (X, Y, Z)"),
    ]
    return rows


def _models_note(path: Path, models: int) -> str:
    """What ``cryoshift info`` says cryoshift does with a file's several models."""
    if models < 2:
        return ""
    if is_assembly_file(path):
        return " (copies of one biological assembly: all are used)"
    return " (superposed: the first is used)"


def atom_positions(path: str | Path) -> np.ndarray:
    """(N, 3) x, y, z in Angstrom of the heavy atoms of the first model (after the same cleanup)."""
    return _heavy_xyz(_read_model(Path(path))[0][0])


def atomic_density(
    path: str | Path,
    resolution: float,
    spacing: float = 2.0,
    margin: float | None = None,
    voxel_size: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Density of the first model of ``path`` on a grid of about ``spacing`` Angstrom.

    Returns ``(density (Z, Y, X) float32, origin_xyz, spacing_xyz)``: voxel (i, j, k) of the map
    sits at x, y, z = origin + (k, j, i) * spacing in the model's Angstrom coordinates (gemmi
    rounds the grid to FFT-friendly sizes, so the spacing differs slightly per axis). With
    ``voxel_size`` (A) a model whose atoms all fit in less than one voxel is refused: its class
    would be a featureless blob, and such a model is most often one in nm or a lone ligand.
    """
    import gemmi

    path = Path(path)
    if resolution <= 0 or spacing <= 0:
        raise InputError(path, "resolution and spacing must be positive")
    st, unknown = _read_model(path)
    model = st[0]
    xyz = _usable_xyz(path, model)
    if unknown:
        total = unknown + sum(1 for ch in model for r in ch for a in r)
        print(
            f"cryoshift: warning: {path}: {unknown} of {total} "
            "atoms have an unknown element (X) and are left out of its density; set their elements "
            "(columns 77-78 of a PDB file, _atom_site.type_symbol) to include them",
            file=sys.stderr,
        )
    sigma = 0.225 * resolution
    margin = max(3.0 * sigma + 5.0, 2 * spacing) if margin is None else margin
    span = xyz.max(0) - xyz.min(0)
    if voxel_size is not None and span.max() < voxel_size:
        raise InputError(
            path,
            f"its {len(xyz)} heavy atoms span only {span.max():.1f} A, less than one {voxel_size:g} A "
            "voxel: the class would be a featureless blob (coordinates in nm, or only a ligand?)",
        )
    size = np.ceil((span + 2 * margin) / spacing).astype(int)
    if float(np.prod(size.astype(np.float64))) > MAX_GRID_VOXELS:
        extent = " x ".join(f"{v:.0f}" for v in span)
        grid = "x".join(str(v) for v in size)
        raise InputError(
            path,
            f"atoms span {extent} A: its density grid at {spacing:g} A spacing would be {grid} "
            f"voxels, over the limit of {MAX_GRID_VOXELS} (is this one particle? check the "
            "coordinates, or give a density map instead)",
        )
    size += size % 2  # even sizes suit FFT-based tools
    origin = xyz.min(0) - margin
    shift = gemmi.Position(*(-origin))
    for ch in model:
        for r in ch:
            for a in r:
                a.pos = a.pos + shift
    lengths = size * spacing
    st.cell = gemmi.UnitCell(float(lengths[0]), float(lengths[1]), float(lengths[2]), 90.0, 90.0, 90.0)
    st.spacegroup_hm = "P 1"
    calc = gemmi.DensityCalculatorE()
    calc.d_min = 2.0 * spacing
    calc.blur = 8.0 * math.pi**2 * sigma**2
    lowest = min(a.b_iso for ch in model for r in ch for a in r)
    if lowest + calc.blur <= 0:  # each atom is a Gaussian of B-factor + blur: none is defined (NaN)
        raise InputError(
            path,
            f"B-factors down to {lowest:g} A^2: at {resolution:g} A resolution an atom's density needs "
            f"a B-factor above {-calc.blur:.0f} A^2 (negative B-factors are not physical; check the "
            "columns 61-66 of a PDB file, _atom_site.B_iso_or_equiv)",
        )
    calc.rate = 1.0
    calc.set_grid_cell_and_spacegroup(st)
    try:
        calc.put_model_density_on_grid(model)
    except (RuntimeError, ValueError) as exc:
        raise InputError(path, f"gemmi could not compute density ({exc})") from exc
    grid = calc.grid
    density = np.array(grid, copy=True).transpose(2, 1, 0)  # gemmi (x, y, z) -> (Z, Y, X)
    if not np.isfinite(density).all():  # what the checks above do not cover (ANISOU records)
        raise InputError(path, "its density holds NaN or infinite values: check the ANISOU records")
    actual = lengths / np.array([grid.nu, grid.nv, grid.nw], dtype=np.float64)
    return density.astype(np.float32), origin, actual
