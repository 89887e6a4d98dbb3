"""The model contract and the data facts every wing must agree on, kept in one place.

Export writes models that follow it, the runtime trusts it, training makes data and
checkpoints that fit it; so runtime, export and training all import these names from here and
define none of them again. Constants only (numpy for the MRC dtypes): importing this module
pulls no wing and no heavy library.

The contract in words (``docs/design.md``): one float32 input ``subtomograms`` of shape
(batch, 1, D, H, W) with a dynamic batch; outputs ``logits`` (batch, K) and ``features``
(batch, F), ``features`` being optional (a model without it gets no shift score).
"""

from __future__ import annotations

import re

import numpy as np

# ONNX graph names -------------------------------------------------------------------------------
INPUT_NAME = "subtomograms"
LOGITS = "logits"
FEATURES = "features"  # optional: without it there is no shift score
OUTPUT_NAMES = (LOGITS, FEATURES)

# Metadata vocabularies ----------------------------------------------------------------------------
# dark: protein darker than solvent, as in raw cryo-ET tomograms; light: as in density maps.
CONTRASTS = ("dark", "light")
NORMALISATIONS = ("zscore", "minmax")  # per-subtomogram, inside the exported graph
# Precisions an exported model (ONNX or engine) may have: export/formats.py TOLERANCES has one each
PRECISIONS = ("fp32", "fp16", "int8")

# Data that meets a model --------------------------------------------------------------------------
# Largest box (voxels per side) a model, cryoshift bench's --box and training's --box may have
# (training/simulate/config.py BOUNDS["box"] reads it): one 512^3 float32 box is 0.5 GiB. A
# sidecar's box_size of 1e308 (an engine has no graph to bound it) overflowed bench's float maths
# into a traceback, and --box 10^23 printed a 57-digit memory figure. No lower bound beyond 1: the
# runtime documents none (the backbones' 16 is training's), so a foreign model of box 8 still runs.
MAX_BOX = 512
# A --device naming a GPU: torch takes cuda and cuda:N; anything else after 'cuda' was a torch traceback
CUDA_DEVICE = re.compile(r"cuda(:\d+)?")
VOXEL_TOLERANCE = 0.05  # relative voxel-size mismatch tolerated between data and model
# Voxel sizes (A) a dataset may declare: below, finer than any electron microscope samples (or a
# size in m or um); above, a micrometre per voxel. Outside it, a unit mix-up, not data.
VOXEL_SIZE_RANGE = (0.01, 10000.0)
# classify --binning: how many times finer pixel picks are than the reconstruction. Tomograms are
# binned 2 to 16 times in practice; beyond 64 (runtime/tomograms.py MAX_BINNING_HINT, the largest
# ratio read as a binning mismatch) a value is a mistake, and inf scaled every pick to (0, 0, 0).
MAX_BINNING = 64.0


# Unicode categories of characters that break a line of text: controls (tab, line break, escape,
# DEL, C1) and the line and paragraph separators.
CONTROL_CATEGORIES = ("Cc", "Zl", "Zp")


def has_control_character(text: str) -> bool:
    """Whether ``text`` holds a control character (tab, line break, escape, DEL, C1) or a Unicode
    line or paragraph separator. Class names are one line of text in every table and listing that
    shows them (predictions, info, the report), so a model's or a dataset's names may hold none."""
    import unicodedata

    return any(unicodedata.category(ch) in CONTROL_CATEGORIES for ch in text)


# Unicode categories of characters that do not show as themselves: format characters (Cf: the bidi
# controls U+202A..U+202E and U+2066..U+2069 that reorder what follows them, zero-width spaces and
# joiners, the soft hyphen, U+FEFF) and lone surrogates (Cs, which no UTF-8 file can hold).
INVISIBLE_CATEGORIES = ("Cf", "Cs")


def invisible_characters(text: str) -> list[str]:
    """The characters of ``text`` in :data:`INVISIBLE_CATEGORIES`, as ``U+XXXX`` names, sorted.

    Why a name may hold none: ``ribo``, U+202E (right-to-left override), ``some`` shows as
    ``riboemos``, so a table or listing shows another name than the one stored, and two names that
    look the same (one with a zero-width space) are two classes."""
    import unicodedata

    return sorted({f"U+{ord(c):04X}" for c in text if unicodedata.category(c) in INVISIBLE_CATEGORIES})


# Class names ---------------------------------------------------------------------------------------
# The class_name classify writes for a subtomogram under the confidence threshold: a rejection, not
# a class. (runtime.pipeline.UNKNOWN is this label.)
REJECT_LABEL = "unknown"
# Why two names differing only in case are one name (see class_name_key), in the words of messages
CASE_REASON = "one file on a case-insensitive file system, and easily taken for one class"


def class_name_key(name: str) -> str:
    """The form in which two class names count as the same name: Unicode-normalised (NFKC) and
    case-folded, so ``A`` and ``a`` (or a composed and a decomposed ``é``) are one name.

    Why names differing only in case are refused rather than kept apart: per-class outputs named by
    the class (copick picks, a user's own per-class folders) land in one file on the case-insensitive
    file systems of macOS and Windows, and a reader of a table takes ``A`` and ``a`` for one class;
    the cost of refusing is a rename, the cost of accepting is a silently merged class."""
    import unicodedata

    return unicodedata.normalize("NFKC", name).casefold()


def class_name_problem(name: str) -> str | None:
    """What makes ``name`` unusable as a class name, as a phrase that completes "class_names has
    ..." or "its file name gives ..."; None for a usable name. The one rule every reader and writer
    of class names calls (dataset, model metadata, simulate's file names).

    Refused: an empty or blank name (nothing to show); a control character (it splits the lines of
    every table and listing, and STAR files cannot keep it); an invisible character
    (:func:`invisible_characters`: a bidi control makes a listing show another name); whitespace (a
    space splits a STAR label, ``prob_b copy``, and the columns of whitespace-separated tables:
    classify died at its end with a traceback); :data:`REJECT_LABEL`, in any case (the class's predictions and
    classify's rejections would share one class_name and be counted as one)."""
    if not name.strip():
        return f"an empty class name ({name!r})"
    if has_control_character(name):
        chars = ", ".join(sorted({repr(c) for c in name if has_control_character(c)}))
        return (
            f"a name with a control character: {name!r} holds control characters ({chars}), which "
            "split the lines of tables and listings"
        )
    hidden = invisible_characters(name)
    if hidden:
        return (
            f"a name with invisible characters: {name!r} holds {', '.join(hidden)} (Unicode format "
            "characters such as bidi controls or zero-width spaces, which make a name print as another)"
        )
    if any(ch.isspace() for ch in name):
        return f"a name with whitespace: {name!r} (it splits STAR labels such as prob_NAME); use _ or -"
    if class_name_key(name) == class_name_key(REJECT_LABEL):
        return (
            f"the name {name!r}, classify's label for rejected subtomograms (the class's predictions "
            "and the rejections could not be told apart)"
        )
    return None


def class_names_problem(names: list[str]) -> str | None:
    """What makes a list of class names unusable (a phrase completing "class_names has ..."), None
    when every name passes :func:`class_name_problem` and no two are one name by
    :func:`class_name_key` (a duplicate; or names that differ only in case, such as ``A`` and
    ``a``: refused, not kept apart, for the reasons given there). Labels index the list, so two
    equal names make every per-class number wrong far from here."""
    for name in names:
        problem = class_name_problem(name)
        if problem:
            return problem
    from collections import Counter

    dupes = sorted(n for n, k in Counter(names).items() if k > 1)
    if dupes:
        return f"duplicates: {', '.join(dupes)}"
    first: dict[str, str] = {}
    for name in names:
        other = first.setdefault(class_name_key(name), name)
        if other != name:
            return f"names that differ only in case: {other!r} and {name!r} ({CASE_REASON})"
    return None


def voxel_mismatch(voxel: float, model_voxel: float) -> float | None:
    """The relative voxel-size difference of data and model (compared with VOXEL_TOLERANCE),
    None when either is unknown (<= 0)."""
    if not (voxel > 0 and model_voxel > 0):
        return None
    return abs(voxel - model_voxel) / model_voxel


def percent(fraction: float) -> str:
    """``fraction`` as a percentage for a message, to 3 significant digits ("25%", "6.12%",
    "6e+29%"): ``{:.0%}`` printed a voxel-size mismatch of a header with a cell of 1e30 A as a
    30-digit number."""
    return f"{fraction * 100:.3g}%"


# Reduced precision --------------------------------------------------------------------------------
# fp16 must give the fp32 answer (argmax) on at least this share of subtomograms: the bar of an
# fp16 export's parity check and of the runtime's fp16 host-to-device transfer check.
FP16_AGREEMENT = 0.98

# MRC files ---------------------------------------------------------------------------------------
MRC_HEADER_BYTES = 1024
# MRC mode -> little-endian numpy dtype, for the modes cryoshift reads and writes.
MRC_MODES: dict[int, np.dtype] = {
    0: np.dtype("<i1"),
    1: np.dtype("<i2"),
    2: np.dtype("<f4"),
    6: np.dtype("<u2"),
    12: np.dtype("<f2"),
}
MRC_MODE_NAMES = {0: "int8", 1: "int16", 2: "float32", 6: "uint16", 12: "float16"}
# The one suffix table every reader uses. Maps and volumes (structures, parity data, ...):
MAP_SUFFIXES = (".mrc", ".mrcs", ".map", ".rec", ".ccp4")  # CCP4 maps are MRC files
# ... plus tilt series and aligned stacks: every MRC file (info, classify inputs, tomograms).
MRC_BASE_SUFFIXES = (*MAP_SUFFIXES, ".st", ".ali")
MRC_COMPRESSED_SUFFIXES = (".gz", ".bz2")
MRC_SUFFIXES = MRC_BASE_SUFFIXES + tuple(b + c for b in MRC_BASE_SUFFIXES for c in MRC_COMPRESSED_SUFFIXES)
# RCSB's biological assembly files are PDB text named 1abc.pdb1, 1abc.pdb2 ... (one per assembly); a
# folder of them was left out without a word and a named one refused as an unknown type. Up to 99:
# entries list a few assemblies, rarely more than ten.
RCSB_ASSEMBLY_SUFFIXES = tuple(f".pdb{n}" for n in range(1, 100))
# Atomic models of class structures (simulate, train --source, info); gemmi reads them gzipped too,
# as the PDB serves them (bzip2 it does not)
ATOMIC_MODEL_BASE_SUFFIXES = (".pdb", ".ent", ".cif", ".mmcif", *RCSB_ASSEMBLY_SUFFIXES)
ATOMIC_MODEL_COMPRESSED_SUFFIX = ".gz"
ATOMIC_MODEL_SUFFIXES = ATOMIC_MODEL_BASE_SUFFIXES + tuple(
    b + ATOMIC_MODEL_COMPRESSED_SUFFIX for b in ATOMIC_MODEL_BASE_SUFFIXES
)
