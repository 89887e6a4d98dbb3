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
# Above this many heavy atoms a model's density takes tens of seconds to minutes (gemmi sums every
# atom on a 2 A grid: 300k atoms ~25 s, 1.5M ~2 min single-threaded), so one note on stderr says
# so before the wait instead of a silent pause that looks like a hang.
LARGE_MODEL_ATOMS = 200_000
# An atom name that, without its leading digits, starts with H: a hydrogen's (HB2, 1HG1, HD21) in
# the PDB's and the force fields' conventions. Used only to word the note about atoms of unknown
# element (a blank element column with such a name is read as X), never to drop an atom.
HYDROGEN_NAME = re.compile(r"^[0-9]*H")
# Residues whose atom names say their elements: the amino acids (with selenomethionine,
# selenocysteine, pyrrolysine, UNK and the protonation-state names of AMBER and CHARMM) and the
# nucleotides. In them a name's first letter is the element (CA, CB, CG1 carbon; N*, O*, S*, P;
# H*, and D* in neutron models, hydrogens; leading digits as in 1HB aside), SE* selenium.
POLYMER_RESIDUE_NAMES = frozenset(
    {
        *("ALA", "ARG", "ASN", "ASP", "CYS", "GLN", "GLU", "GLY", "HIS", "ILE"),
        *("LEU", "LYS", "MET", "PHE", "PRO", "SER", "THR", "TRP", "TYR", "VAL"),
        *("MSE", "SEC", "PYL", "UNK", "HID", "HIE", "HIP", "HSD", "HSE", "HSP"),
        *("CYX", "CYM", "ASH", "GLH", "LYN"),
        *("A", "C", "G", "U", "I", "N", "DA", "DC", "DG", "DT", "DU", "DI", "DN"),
    }
)
POLYMER_ATOM_ELEMENTS = "CNOSPHD"  # the first letters of a polymer residue's atom names
# An ATOM/HETATM record whose element columns (77-78) are blank or missing; possessive, so a
# file that has them is scanned in one pass with no backtracking.
_BLANK_ELEMENT_RECORD = re.compile(rb"^(?:ATOM  |HETATM)[^\r\n]{0,70}+(?: ?+\r?$|  )", re.MULTILINE)


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
    """The whole file as a gemmi Structure (nothing removed) and how many of its first model's atoms
    got their elements from their names (:func:`_name_blank_elements`); refusals in one line."""
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
    named = _name_blank_elements(data, st) if kind == gemmi.CoorFormat.Pdb else 0
    return st, named


def _element_from_atom_name(name: str) -> str:
    """The element a polymer residue's atom name means (see :data:`POLYMER_RESIDUE_NAMES`), or ""
    for a name that follows no such rule (the element is then left as gemmi read it)."""
    bare = name.lstrip("0123456789").upper()
    if bare.startswith("SE"):
        return "Se"
    return bare[:1] if bare[:1] and bare[:1] in POLYMER_ATOM_ELEMENTS else ""


def _blank_element_atoms(data: bytes) -> set[tuple[int, str]]:
    """(serial, atom name) of the ATOM/HETATM records whose element columns (77-78) are blank."""
    if not _BLANK_ELEMENT_RECORD.search(data):
        return set()
    blank = set()
    for line in data.split(b"\n"):
        if line.startswith((b"ATOM  ", b"HETATM")) and not line[76:78].strip():
            try:
                blank.add((int(line[6:11]), line[12:16].decode("latin-1").strip()))
            except ValueError:  # a serial in hybrid-36 or stars: its element stays as gemmi read it
                continue
    return blank


def _name_blank_elements(data: bytes, st) -> int:
    """Set the element of each atom whose PDB record has blank element columns from its name where
    the name says it: in a :data:`POLYMER_RESIDUE_NAMES` residue, and in a single-atom residue named
    as its atom and as an element (a CA ion: calcium). Returns how many atoms of the first model
    were set.

    Why: gemmi reads a blank element from the name's alignment (a name in columns 13-14 is a
    two-letter element), so the left-aligned ``CA`` that many tools write became calcium, and
    ``HG`` mercury: every C-alpha scattered as calcium without a word. A right-aligned ion ``CA``
    was read as carbon."""
    import gemmi

    blank = _blank_element_atoms(data)
    if not blank:  # the common case: every record has its element
        return 0
    named = 0
    for number, model in enumerate(st):
        for chain in model:
            for residue in chain:
                polymer = residue.name in POLYMER_RESIDUE_NAMES
                ion = not polymer and all(a.name == residue.name for a in residue)
                if not (polymer or ion):
                    continue
                for atom in residue:
                    if (atom.serial, atom.name) not in blank:
                        continue
                    element = _element_from_atom_name(atom.name) if polymer else atom.name
                    if not element or gemmi.Element(element).name == "X":
                        continue
                    atom.element = gemmi.Element(element)
                    named += number == 0
    return named


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
    """The model cleaned up for density (no hydrogens, waters or unknown elements), how many atoms
    of unknown element were left out of its first model, how many of those have a hydrogen's
    name (:data:`HYDROGEN_NAME`), and how many atoms got their elements from their names
    (:func:`_name_blank_elements`)."""
    st, named = _parse(path)
    _merge_assembly(path, st)
    unknown, hydrogen_named = _clean_model(path, st)
    return st, unknown, hydrogen_named, named


def _clean_model(path: Path, st) -> tuple[int, int]:
    """Remove what carries no density from a parsed (assembly-merged) structure, in place:
    hydrogens, waters (MD ones too), atoms of unknown element, empty chains; then check its models.
    Returns :func:`_drop_unknown_elements`'s counts."""
    st.remove_hydrogens()
    st.remove_waters()
    _remove_md_waters(st)
    unknown, hydrogen_named = _drop_unknown_elements(path, st)
    st.remove_empty_chains()
    _check_models(path, st)
    return unknown, hydrogen_named


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
    and they were simulated without a word. Returns their number in the first model and how many
    of those have a hydrogen's name (a PDB file without an element column whose hydrogens are
    named ``HB2``: left out as hydrogens are anyway); a model of nothing else is refused."""
    import gemmi

    unknown = gemmi.Element("X")
    counts = []
    hydrogen_named = 0
    for number, model in enumerate(st):
        dropped = 0
        for chain in model:
            for residue in chain:
                for i in reversed(range(len(residue))):
                    if residue[i].element == unknown:
                        if number == 0 and HYDROGEN_NAME.match(residue[i].name):
                            hydrogen_named += 1
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
    return (counts[0] if counts else 0), hydrogen_named


def _atom_table(model) -> np.ndarray:
    """(N, 5) x, y, z, occupancy, B-factor of every atom of ``model``, in one pass over the atoms.

    Why one table: the checks and the density each walked the atoms in Python (coordinates, then
    occupancies and B-factors, then the lowest B-factor), seconds per pass for a model of 10^5-10^6
    atoms; one pass and numpy for the rest cost a fraction."""
    values = [v for ch in model for r in ch for a in r for v in (*a.pos.tolist(), a.occ, a.b_iso)]
    return np.array(values, dtype=np.float64).reshape(-1, 5)


def _heavy_xyz(model, table: np.ndarray | None = None) -> np.ndarray:
    """The coordinates of the atoms that carry density: an atom of occupancy 0 adds none, so it
    must not stretch the extent or move the centre the checks below measure either. ``table``:
    :func:`_atom_table` of ``model``, when the caller has it."""
    table = _atom_table(model) if table is None else table
    return np.ascontiguousarray(table[table[:, 3] > 0, :3])


def _usable_xyz(path: Path, model, table: np.ndarray | None = None) -> np.ndarray:
    """The heavy atoms' coordinates, refused when there are none or any is not finite."""
    # gemmi weighs every atom by its occupancy and blurs it by its B-factor: one NaN made the whole
    # density NaN, refused as "only 0.0 % of its density falls inside the box" of a fine model
    table = _atom_table(model) if table is None else table
    odd = int((~np.isfinite(table[:, 3:])).any(axis=1).sum())
    if odd:
        raise InputError(path, f"{odd} atoms have a NaN or infinite occupancy or B-factor")
    xyz = _heavy_xyz(model, table)
    if len(xyz) == 0:
        unoccupied = len(table)
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
    st, _named = _parse(path)
    models = len(st)
    _merge_assembly(path, st)
    model = st[0]
    chains = len(model)
    atoms = [a for ch in model for r in ch for a in r]
    n_atoms = len(atoms)
    hydrogens = sum(a.is_hydrogen() for a in atoms)
    waters = sum(len(r) for ch in model for r in ch if _is_water(r))
    altlocs = sum(a.altloc != "\0" for a in atoms)
    del atoms  # the cleanup below removes some of them from the structure, which is parsed once
    unknown, _hydrogen_named = _clean_model(path, st)
    used = _usable_xyz(path, st[0])
    span = used.max(0) - used.min(0)
    gz = ", gzip" if model_suffix(path).endswith(COMPRESSED_SUFFIX) else ""
    kind = "mmCIF" if ".cif" in model_suffix(path) else "PDB"
    rows = [
        ("type", f"atomic model ({kind}{gz})"),
        ("models", f"{models}" + _models_note(path, models)),
        ("chains", str(chains)),
        ("atoms", f"{n_atoms} ({hydrogens} hydrogens, {waters} in waters, {altlocs} with altlocs)"),
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


def _unknown_elements_line(path: Path, unknown: int, total: int, hydrogen_named: int) -> str:
    """The stderr line about ``unknown`` atoms of unknown element (of ``total``) left out of a
    model's density, ``hydrogen_named`` of them named as hydrogens (:data:`HYDROGEN_NAME`).

    Why three wordings: a PDB file without an element column whose hydrogens are named ``HB2`` was
    told to "set their elements to include them"; hydrogens are left out of the density anyway, so
    for them there is nothing to set, and for the others there is."""
    lead = f"{unknown} of {total} atoms have an unknown element (X) and are left out of its density"
    if hydrogen_named == unknown:
        return (
            f"cryoshift: note: {path}: {lead}; all are named as hydrogens (H...), which are left out "
            "anyway: nothing to set"
        )
    others = ""
    if hydrogen_named:
        others = (
            f" ({hydrogen_named} of them are named as hydrogens, left out anyway; "
            f"{unknown - hydrogen_named} are not)"
        )
    return (
        f"cryoshift: warning: {path}: {lead}{others}; set their elements (columns 77-78 of a PDB "
        "file, _atom_site.type_symbol) to include them"
    )


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
    st, unknown, hydrogen_named, named = _read_model(path)
    model = st[0]
    table = _atom_table(model)
    xyz = _usable_xyz(path, model, table)
    if named:
        print(
            f"cryoshift: note: {path}: {named} atoms have blank element columns (77-78) and got their "
            "elements from their names: in amino acids and nucleotides CA, CB ... are carbon, in an "
            "ion CA is calcium",
            file=sys.stderr,
        )
    if unknown:
        print(_unknown_elements_line(path, unknown, unknown + len(table), hydrogen_named), file=sys.stderr)
    if len(xyz) > LARGE_MODEL_ATOMS:
        print(
            f"cryoshift: note: {path}: {len(xyz)} heavy atoms; computing their density takes a while "
            "(about 2 minutes per million atoms)",
            file=sys.stderr,
            flush=True,
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
    # one translation in gemmi (the rotation is the identity, so B-factors and ANISOU stay as they
    # are), not a Python loop over the atoms
    model.transform_pos_and_adp(gemmi.Transform(gemmi.Mat33(), gemmi.Vec3(*(-origin))))
    lengths = size * spacing
    st.cell = gemmi.UnitCell(float(lengths[0]), float(lengths[1]), float(lengths[2]), 90.0, 90.0, 90.0)
    st.spacegroup_hm = "P 1"
    calc = gemmi.DensityCalculatorE()
    calc.d_min = 2.0 * spacing
    calc.blur = 8.0 * math.pi**2 * sigma**2
    lowest = float(table[:, 4].min())
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
