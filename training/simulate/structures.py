"""Structures to simulate: density maps on one common voxel grid, from three kinds of source.

``load_structures`` accepts built-in procedural structures, MRC density maps of any voxel size
and atomic models (PDB/mmCIF, via gemmi). Whatever the source, the result is a stack of
(D, D, D) float32 maps with protein POSITIVE ("light"), the centre of mass on voxel D // 2,
zero solvent, a soft spherical edge (so that a rotation never moves density in or out of the
box) and the 99.9th percentile of the protein scaled to 1 (so that classes have comparable
contrast whatever the scale of the file they came from).
"""

from __future__ import annotations

import difflib
import errno
import itertools
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from cryoshift.runtime.contract import MAP_SUFFIXES, class_name_key, class_name_problem
from cryoshift.runtime.errors import InputError
from cryoshift.runtime.terminal import normalisation_difference
from cryoshift.training.simulate.atomic import model_suffix
from cryoshift.training.simulate.builtin import BUILTIN_NAMES, render_builtin
from cryoshift.training.simulate.config import BOUNDS

# Least share of a structure's (positive) density that must land inside the box's
# sphere: less means a box or voxel size far off for this particle (Angstrom taken for nm, a
# header's voxel size 10x off, a 300 A ribosome in a 160 A box: 10 %) or coordinates scattered far
# apart; the class would be a fragment. Not higher: a large complex in a box that crops its rim is a
# deliberate choice of the benchmarks (TRiC, 4v94, keeps 57 % in 16^3 x 20 A and 79 % in 32^3 x
# 10 A), so between this and WARN_IN_BOX the share lost is only said.
MIN_IN_BOX = 0.5
# below this share inside the box's sphere, a note says how much is cropped (not higher: a compact
# particle that fills its cube loses its corners' tails to the sphere, 10-15 %, and is no fragment)
WARN_IN_BOX = 0.8
# A filament or a membrane patch is longer than any box along one or two axes by nature
# (subtomograms of microtubules, actin, membranes): one larger than the box along fewer than all
# three axes is cropped with a note down to this share, refused only below it (coordinates
# scattered far apart, a voxel size 10x off).
MIN_IN_BOX_ELONGATED = 0.05
# Smallest and largest box simulated (config.BOUNDS; subtomograms are 16-256 voxels): one volume of
# box 1000 is 4 GB (and, before builtin.render_builtin rendered in chunks, rendering a built-in there
# asked for 1.5 TB), ending in a MemoryError or the kernel's OOM killer instead of a reason.
MIN_BOX = int(BOUNDS["box"].lo)
MAX_BOX = int(BOUNDS["box"].hi)
# Largest Pearson correlation two class maps may have. Above it the simulator renders the same
# particle for both classes (a voxel size of 1e-6 or 1e6 A makes every built-in one blob or one
# box-filling sphere: 1.000000; two copies of one map file), and training on them exits 0 with a
# model that cannot tell them apart. Real but subtle pairs stay below it: built-ins at ordinary
# grids reach 0.93 (32^3 at 20 A), 0.998 at 16^3 and 40 A, 0.9994 at 16^3 and 1 A; two states of
# one complex at a coarse voxel size may come close too, and are the user's call.
MAX_MAP_CORRELATION = 0.99999
# The same for a pair of which at least one class is a file: one particle's map at two samplings
# (2 and 1.06 A: 0.99997), its half maps and mask (0.98-0.993) were two classes. Real distinct
# complexes stay well below (the 16 maps of shared/data/maps/10A reach 0.92 at 32^3 x 10 A: 1s3x and
# 3qm1; 70S/80S ribosomes and p97/ClpB less), while built-ins at coarse grids reach 0.9994 and keep
# the limit above.
MAX_FILE_MAP_CORRELATION = 0.98

# Solvent noise (finding the particle in an unmasked map). A map's border is solvent; its noise is
# the MAD of the border face of lowest median (a face that the particle does not touch). Below
# NOISE_FLOOR x the peak the map counts as clean (the masked maps of shared/data have exactly 0) and
# goes through untouched; above it, density is what stands PARTICLE_SIGMAS noise sigmas above the
# solvent (white noise passes 5 sigma in 3 voxels of 10^7), in connected pieces each holding at least
# KEEP_PIECE of the largest piece's density, grown by MASK_GROW voxels (the tails below the
# threshold) with a soft edge of MASK_SOFT voxels; everything else is zeroed as solvent.
NOISE_FLOOR = 1e-3
PARTICLE_SIGMAS = 5.0
KEEP_PIECE = 0.05
MASK_GROW = 3
MASK_SOFT = 1.0
# A piece smaller than this (voxels above the threshold) is a noise speck, not a particle
MIN_PARTICLE_VOXELS = 8
# Span in A of a plausible particle's density (above 5 % of its peak): a small protein is ~30 A, a
# ribosome ~300 A, a large virus ~1000 A. Outside it a map's header voxel size is suspect: 1.0 A is
# the value many tools leave in an unset header, and 0.2 A a voxel size in nm written as A.
PLAUSIBLE_SPAN = (20.0, 1000.0)
UNSET_VOXEL_SIZE = 1.0
PLAUSIBLE_SPAN_UNSET = (40.0, 1000.0)  # stricter when the header holds the unset default
# EMDB's names of half maps and masks: neither is a class of its own (a half map is the particle
# again, a mask is a 0/1 shape)
HALF_MAP_NAME = re.compile(r"half_map_[12]|half[12](?![0-9])", re.IGNORECASE)
MASK_NAME = re.compile(r"_msk(_|$)", re.IGNORECASE)


@dataclass(frozen=True)
class SkippedSource:
    """A structure file of a source folder that could not be loaded (``file``), and why.

    Why two fields: the skip was kept as one ``"PATH: REASON"`` string and split back apart for
    selection.json, which cut a name holding ``": "`` in the wrong place (``x.mrc: copy.mrc`` was
    recorded as ``x.mrc``); the path and reason are known apart where the load fails."""

    file: str
    reason: str

    def record(self) -> dict[str, str]:
        """As written to dataset.json ``structures_skipped`` and selection.json ``source_structures``."""
        return {"file": self.file, "reason": self.reason}


@dataclass
class Structures:
    """K density maps on a common grid: ``maps[k]`` is class ``names[k]``."""

    names: list[str]
    maps: np.ndarray  # (K, D, D, D) float32, protein positive, centred, comparable scale
    voxel_size: float  # Angstrom
    sources: list[str] = field(default_factory=list)  # where each map came from (provenance)
    skipped: list[SkippedSource] = field(default_factory=list)  # the source files that failed

    @property
    def box_size(self) -> int:
        return int(self.maps.shape[-1])

    def __len__(self) -> int:
        return len(self.names)


def map_suffix(path: str | Path) -> str:
    """The density-map suffix of a file name (``.mrc``, ``.map.gz`` ...), or ""."""
    from cryoshift.runtime.mrc import mrc_suffix

    suffix = mrc_suffix(path)
    return suffix if suffix.split(".gz")[0].split(".bz2")[0] in MAP_SUFFIXES else ""


def structure_name(path: str | Path) -> str:
    """Class name of a structure file: its name without the suffix (``1abc.cif.gz`` -> ``1abc``),
    bytes that are not UTF-8 written as ``\\xNN`` so that every output can hold it."""
    from cryoshift.runtime.ledger import escape_text

    name = Path(path).name
    suffix = map_suffix(name) or model_suffix(name)
    return escape_text(name[: len(name) - len(suffix)] if suffix else Path(name).stem)


def check_class_name(path: str | Path, name: str) -> None:
    """Refuse a file whose name gives no usable class name, by the contract's class-name rule
    (:func:`~cryoshift.runtime.contract.class_name_problem`), naming the file: the dataset writer
    would refuse the name only later, naming the output folder and not the file to rename. (``.pdb``
    gave an empty class; ``b copy.map`` a class that classify could not write to a STAR file;
    ``unknown.mrc`` a class whose predictions merged with classify's rejections.)"""
    problem = class_name_problem(name)
    if problem:
        raise InputError(
            path, f"its file name gives {problem}; class names come from file names: rename the file"
        )


def check_new_class_name(item: str, name: str, names: list[str], origins: list[str]) -> None:
    """Refuse a class name that is one of ``names`` already (``origins``: where each came from) by
    the contract's sameness (:func:`~cryoshift.runtime.contract.class_name_key`: ``X.mrc`` and
    ``x.pdb`` are one class name), naming the file that took it first: a class renamed behind the
    user's back would not say which file it is."""
    keys = [class_name_key(n) for n in names]
    if class_name_key(name) not in keys:
        return
    k = keys.index(class_name_key(name))
    if item.startswith("builtin:") and origins[k].split("?")[0] == item:
        raise InputError(item, "the built-in structure is given twice: give it once")
    if names[k] == name and _same_file(item, origins[k]):
        raise InputError(item, f"the same file is given twice (as {origins[k]} too): give it once")
    raise InputError(
        item,
        f"class name {name!r} {_how_taken(name, names[k])} by {origins[k]}: class names come from file "
        "names, rename one of the files",
    )


def _how_taken(name: str, taken: str) -> str:
    """How class name ``name`` clashes with the ``taken`` one. Names differing only in Unicode
    normalisation look identical, so "differs only in case" gave the wrong reason there."""
    if name == taken:
        return "is taken already"
    difference = normalisation_difference(name, taken)
    if difference:
        return f"differs only in {difference} from the class name taken"
    return f"differs only in case from {taken!r}, taken"


def _same_file(item: str, origin: str) -> bool:
    """Whether ``item`` is the file that gave ``origin`` (``m1.mrc`` and ``./m1.mrc``): that is
    one file given twice, not two files whose names clash. Built-ins are never files."""
    try:
        return os.path.samefile(item, origin)
    except (OSError, ValueError):  # builtin:NAME, or a path that cannot be looked at any more
        return False


def soft_sphere(box_size: int, radius: float | None = None, edge: float = 2.0) -> np.ndarray:
    """Mask that is 1 inside ``radius`` (default D/2 - edge) around voxel D // 2 with a cosine edge."""
    radius = box_size / 2 - edge if radius is None else radius
    axis = np.arange(box_size) - box_size // 2
    r = np.sqrt(axis[:, None, None] ** 2 + axis[None, :, None] ** 2 + axis[None, None, :] ** 2)
    mask = 0.5 * (1 + np.cos(np.pi * np.clip((r - radius) / edge, 0, 1)))
    return mask.astype(np.float32)


def finish_map(density: np.ndarray, box_size: int) -> np.ndarray:
    """Mask softly, clear the solvent and scale the protein to ~1 (see module docstring)."""
    out = density.astype(np.float64) * soft_sphere(box_size)
    positive = out[out > 0]
    if positive.size == 0:
        raise ValueError("no positive density inside the box")
    scale = np.percentile(positive, 99.9)
    return (out / scale).astype(np.float32)


def centre_of_mass(density: np.ndarray) -> np.ndarray:
    """(z, y, x) voxel centre of the positive density."""
    weights = np.clip(density, 0, None)
    total = weights.sum()
    if total <= 0:
        raise ValueError("map has no positive density")
    grids = np.indices(density.shape, sparse=True)
    return np.array([(g * weights).sum() / total for g in grids])


def share_in_box(
    density: np.ndarray,
    in_voxel: float | np.ndarray,
    voxel_size: float,
    box_size: int,
    centre_zyx: np.ndarray,
) -> float:
    """Share of the positive density inside the sphere of the box (radius D/2 - 2 output voxels
    around ``centre_zyx``), counted on the input grid (the sums run slice by slice). All of it, not
    only what is above 5 % of the peak: a 300 A particle denser at its centre counted as its
    central 50 A and passed whole into a 160 A box (solvent noise is masked off before this)."""
    in_voxel = np.broadcast_to(np.asarray(in_voxel, dtype=np.float64), (3,))
    radius = (box_size / 2 - 2.0) * voxel_size  # Angstrom
    dy = ((np.arange(density.shape[1]) - centre_zyx[1]) * in_voxel[1]) ** 2
    dx = ((np.arange(density.shape[2]) - centre_zyx[2]) * in_voxel[2]) ** 2
    plane = dy[:, None] + dx[None, :]
    inside = total = 0.0
    for z, section in enumerate(density):
        mass = np.maximum(section, 0.0)
        total += float(mass.sum())
        dz = ((z - centre_zyx[0]) * in_voxel[0]) ** 2
        inside += float(mass[plane + dz <= radius**2].sum())
    return inside / total if total > 0 else 0.0


def check_in_box(
    path: Path,
    density: np.ndarray,
    in_voxel: float | np.ndarray,
    voxel_size: float,
    box_size: int,
    centre_zyx: np.ndarray,
) -> None:
    """Refuse a structure of which under :data:`MIN_IN_BOX` lands in the box's sphere (under
    :data:`MIN_IN_BOX_ELONGATED` for one larger than the box along fewer than three axes: a
    filament or membrane), and say how much is cropped below :data:`WARN_IN_BOX` (see there): the
    class would be a fragment."""
    share = share_in_box(density, in_voxel, voxel_size, box_size, centre_zyx)
    if share >= WARN_IN_BOX:
        return
    box = f"{box_size * voxel_size:g} A at {voxel_size:g} A voxels"
    # the span of the density itself (above 1 % of its peak), not of the map's box (an unmasked
    # map's box is mostly solvent, an atomic model's grid has margins)
    strong = np.nonzero(density > 0.01 * float(density.max()))
    voxels = np.broadcast_to(np.asarray(in_voxel, dtype=np.float64), (3,))
    extent = [
        (float(i.max() - i.min()) + 1) * v if i.size else 0.0 for i, v in zip(strong, voxels, strict=True)
    ]
    longer = sum(span > box_size * voxel_size for span in extent)
    elongated = 1 <= longer <= 2
    least = MIN_IN_BOX_ELONGATED if elongated else MIN_IN_BOX
    if share >= least:
        # what was measured, not a guess at what the particle is: TRiC (4v94) at 32^3 x 10 A is
        # longer than the box along one axis and was called "a filament or membrane?"
        axes = "one axis" if longer == 1 else "two axes"
        shape = f"; the structure is longer than the box along {axes}" if elongated else ""
        print(
            f"cryoshift: note: {path}: {100 * share:.0f} % of its density falls inside the sphere of "
            f"the {box_size}-voxel box ({box}{shape}); the class is cropped to it",
            file=sys.stderr,
        )
        return
    size = " x ".join(f"{v:.0f}" for v in extent[::-1])
    raise InputError(
        path,
        f"only {100 * share:.1f} % of its density falls inside the {box_size}-voxel box's sphere "
        f"({box}; at least {100 * least:.0f} % must); the structure spans {size} A (X, Y, Z): "
        "give a larger --box or --voxel-size, check the voxel size (Angstrom), or crop the "
        "structure deliberately",
    )


def place_map(
    density: np.ndarray,
    in_voxel: float | np.ndarray,
    voxel_size: float,
    box_size: int,
    centre_zyx: np.ndarray | None = None,
) -> np.ndarray:
    """Resample a (Z, Y, X) density to ``voxel_size`` with its centre of mass on voxel D // 2.

    ``in_voxel`` is the input voxel size (one value, or z, y, x values). Downsampling first
    low-passes with a Gaussian so that the map is not aliased; the interpolation is trilinear
    on the (usually finer) input grid.
    """
    density = np.asarray(density, dtype=np.float64)
    factor = voxel_size / np.broadcast_to(np.asarray(in_voxel, dtype=np.float64), (3,))  # z, y, x
    if factor.max() > 1.0:
        density = ndimage.gaussian_filter(density, sigma=0.42 * np.maximum(factor, 1.0), mode="constant")
    if centre_zyx is None:
        centre_zyx = centre_of_mass(density)
    out_axis = np.arange(box_size) - box_size // 2
    coords = np.stack(
        np.meshgrid(
            out_axis * factor[0] + centre_zyx[0],
            out_axis * factor[1] + centre_zyx[1],
            out_axis * factor[2] + centre_zyx[2],
            indexing="ij",
        )
    )
    return ndimage.map_coordinates(density, coords, order=1, mode="constant", cval=0.0)


# |skewness| below this leaves a map's contrast undecided (the 10 A maps of shared/data have 5-46)
AMBIGUOUS_SKEW = 0.3
# Least mean correlation of a map's voxels with their next neighbours (neighbour_correlation). A
# density is smooth on the scale of a voxel: the 10 A maps of shared/data have 0.82-0.95, the
# built-ins 0.8-1 at 2-30 A voxels, a blob of 2 voxels 0.26; noise has about 0 (+-0.01 in a 24^3
# box). Skewed all-positive noise (exponential, log-normal) passed the contrast check and became a
# class of noise.
MIN_NEIGHBOUR_CORRELATION = 0.1
# A map refused for its neighbour correlation whose largest value is HOT_RATIO times its 99.9th
# percentile (of |value|) or more, carried by at most HOT_VOXELS voxels, is a density spoiled by hot
# voxels (one 1000x voxel in a fine map gives correlation 0.02), not noise: said so. Noise maps
# reach 1.4 (exponential noise, 24^3); a density's own peak is a few times its 99.9th percentile.
HOT_RATIO = 20.0
HOT_VOXELS = 8
# Least thickness (map_thickness, in the map's own voxels) of a map's density across its thinnest
# direction. A particle is a 3-D object several voxels across every way: the 10 A maps of shared/data
# are 3.5-19 voxels thick, the built-ins 3.3 or more at 2-20 A voxels (the membrane patch 8, a
# filament at 20 A 4.3). A smooth sheet of 2 voxels filling the box in X and Y (2.0; 2.6 blurred by
# half a voxel) was taken as a class, as maps of one voxel on an axis and of noise once were.
# Spanning the box is no reason to refuse: filaments span it along one axis, membrane patches (like
# builtin:membrane) along two, and a map cropped tightly touches its faces too.
MIN_THICKNESS = 3.0
SHEET_RATIO = 3.0  # a density this many times wider across its middle direction than its thinnest is a sheet


def map_thickness(idx: tuple[np.ndarray, ...], weights: np.ndarray) -> tuple[float, float]:
    """How many voxels thick a density is across its thinnest and its middle principal directions:
    the spread of its voxels ``idx`` (np.nonzero's), weighted by ``weights``, along those axes, as
    the number of voxel planes a uniform slab of that spread covers (sqrt(12 variance + 1): a sheet
    of 2 voxels gives 2.0, of 3 voxels 3.0). A sheet is thin across one and wide across the middle
    one; a rod is thin across both; a small ball is small across all three."""
    w = weights.astype(np.float64)
    total = float(w.sum())
    if total <= 0:
        return 0.0, 0.0
    centred = [i - float((i * w).sum() / total) for i in idx]
    cov = np.empty((3, 3))
    for a in range(3):
        for b in range(a, 3):
            cov[a, b] = cov[b, a] = float((centred[a] * centred[b] * w).sum() / total)
    thinnest, middle, _ = (math.sqrt(12 * max(float(v), 0.0) + 1) for v in np.linalg.eigvalsh(cov))
    return thinnest, middle


def neighbour_correlation(density: np.ndarray) -> float:
    """Mean Pearson correlation of each voxel with its next neighbour along X, Y and Z, summed
    section by section (no copy of the map)."""
    corrs = []
    for axis in range(3):
        stack = np.moveaxis(density, axis, 0)
        sums = np.zeros(5)  # x, y, x^2, y^2, x*y
        count = 0
        for here, there in itertools.pairwise(stack):
            x, y = here.astype(np.float64), there.astype(np.float64)
            sums += (x.sum(), y.sum(), (x * x).sum(), (y * y).sum(), (x * y).sum())
            count += x.size
        if count == 0:
            continue
        mx, my = sums[0] / count, sums[1] / count
        cov = sums[4] / count - mx * my
        var = (sums[2] / count - mx * mx) * (sums[3] / count - my * my)
        corrs.append(cov / math.sqrt(var) if var > 0 else 0.0)
    return float(np.mean(corrs)) if corrs else 0.0


def _incoherence_reason(data: np.ndarray) -> str:
    """Why a map's voxels do not correlate with their neighbours, and what to do (``data``:
    solvent 0, protein positive). Why: a fine map with one hot voxel 1000x its peak was called
    "noise, not a particle's density"; its few extreme voxels are the fault (HOT_RATIO)."""
    peak = float(data.max())
    typical = float(np.percentile(np.abs(data), 99.9))
    hot = int(np.count_nonzero(data > 0.5 * peak))
    if hot <= HOT_VOXELS and peak >= HOT_RATIO * max(typical, 1e-300):
        some = "voxel stands" if hot == 1 else f"{hot} voxels stand"
        return (
            f"its brightest {some} {peak / typical:.0f} times above the 99.9th percentile of the rest "
            "(hot voxels or corrupted values?): clip or zero them and give the map again"
        )
    return "this is noise, not a particle's density; give the particle's map or its atomic model"


def _check_map_shape(path: Path, header: dict) -> None:
    """Refuse a map of one voxel on any axis in words: 1 x 1 x 1 was called "a 2-D image (1x1)"."""
    shape = tuple(int(v) for v in header["shape"])
    if len(shape) == 2:  # nz = 1
        shape = (1, *shape)
    if len(shape) != 3 or min(shape) >= 2:  # a stack is refused by read_volume
        return
    size = " x ".join(str(v) for v in shape[::-1])
    what = "a single voxel" if max(shape) == 1 else f"{size} voxels (X, Y, Z)"
    raise InputError(
        path, f"the map is {what}: a density map needs at least 2 voxels on every axis (a 3-D map)"
    )


def _quietest_face(data: np.ndarray) -> np.ndarray:
    """The border face of ``data`` that varies least (by its MAD): the one :func:`solvent_level`
    measures the solvent on."""
    faces = [np.take(data, end, axis=axis) for axis in range(3) for end in (0, -1)]
    spreads = [float(np.median(np.abs(face - np.median(face)))) for face in faces]
    return faces[int(np.argmin(spreads))]


# Least mean neighbour correlation of the voxels of a map's quietest face for that face to hold
# density rather than solvent noise (ambiguous_contrast_advice): the tight crops of the maps of
# shared/data (the particle on every face) have 0.73-0.84, a face of white noise 0.00 (+-0.01).
SMOOTH_FACE = 0.5


def ambiguous_contrast_advice(data: np.ndarray, noise: float) -> str:
    """What to do with a map whose contrast cannot be told (skewness near 0), by what its quietest
    face holds (``data`` with the solvent level removed, ``noise`` its sigma).

    Why: every such map was told "crop it to the particle", also a map cropped tightly already
    (its faces cut through the particle: the fix is a margin of solvent) and a map whose solvent
    noise drowns the particle (the fix is less noise, or a closer crop)."""
    face = _quietest_face(data).astype(np.float64)
    pairs = [(face[1:], face[:-1]), (face[:, 1:], face[:, :-1])]
    corrs = [
        float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
        for a, b in pairs
        if a.size > 1 and a.std() > 0 and b.std() > 0
    ]
    smooth = float(np.mean(corrs)) if corrs else 0.0
    if smooth >= SMOOTH_FACE:
        return (
            f"even its quietest face holds smooth density (neighbour correlation {smooth:.2f}), so the "
            "particle fills the map to its faces (cropped tightly?): pad it with solvent on every side "
            "(a margin of a few voxels) or give the model as PDB/mmCIF"
        )
    if noise > 0:
        share = 100 * noise / float(np.abs(data).max())
        return (
            f"its solvent noise (sigma {share:.2g} % of the largest value, on its quietest face) hides "
            "the particle: low-pass filter the map or crop it closer around the particle, or give the "
            "model as PDB/mmCIF"
        )
    return "check that it is a particle's density, or give the model as PDB/mmCIF"


def solvent_level(data: np.ndarray) -> tuple[float, float]:
    """The solvent's level and noise (sigma) of a map: the median and the MAD (x 1.4826) of the
    border face that varies least. Why one face and not the whole border: a map cropped tightly has
    protein on some faces, and the whole border's median subtracted protein as "solvent"; a face
    the particle does not touch is flat (a masked map) or noise only (an unmasked one)."""
    face = _quietest_face(data)
    median = float(np.median(face))
    return median, 1.4826 * float(np.median(np.abs(face - median)))


# Least share of a map's border voxels above TOUCH_LEVEL x its peak (and above the noise) for the
# density to "touch the faces": the masked maps of shared/data have none; a tight crop of the
# tripod of the tests 24 %. A box cutting through a particle shows only the cut's cross-section on
# the border: cutting 5-8 % of the density off the maps of shared/data/maps/10A leaves 0.2-2.4 % of
# the border above the level (1 % let a 6 % cut pass unsaid), so 0.1 %: every cut of 5 % or more.
TOUCH_SHARE = 0.001
TOUCH_LEVEL = 0.1


def touches_faces(data: np.ndarray, noise: float) -> float:
    """The share of the border of ``data`` (solvent 0, protein positive) that is density, or 0.0
    under TOUCH_SHARE. Why: a map cropped tightly (ChimeraX "volume copy subregion") lost what lay
    beyond its faces, and its class was smaller and centred off by up to a voxel without a word;
    the loader cannot put the density back, but it can say so."""
    border = np.concatenate([data[[0, -1]].ravel(), data[:, [0, -1]].ravel(), data[..., [0, -1]].ravel()])
    level = max(TOUCH_LEVEL * float(data.max()), PARTICLE_SIGMAS * noise)
    share = float(np.mean(border > level))
    return share if share >= TOUCH_SHARE else 0.0


# A bright detached piece (a gold bead, contamination): a connected piece of the density above
# PIECE_LEVEL x the map's peak, apart from the largest piece (the particle, by voxels), whose own
# peak is BRIGHT_PIECE times the particle's or more. Such a piece is kept in the class and, as the
# brightest voxels, sets finish_map's scale, so a note names it. Safe margins: the 16 maps of
# shared/data/maps/10A (loaded at 32^3 x 10 A) and the built-ins are one piece at this level; the
# brightest second piece of an unmasked 1.06 A map with 5 % noise peaks at 0.05 x its particle's;
# a 7-voxel bead at 8x a map's peak gives 8.
PIECE_LEVEL = 0.02
BRIGHT_PIECE = 2.0


def bright_detached_piece(data: np.ndarray) -> tuple[float, int] | None:
    """(peak ratio, voxels) of the brightest piece of ``data`` (solvent 0, protein positive) that is
    detached from the particle and BRIGHT_PIECE times brighter than it or more, else None."""
    above = data > PIECE_LEVEL * float(data.max())
    labels, count = ndimage.label(above)
    if count < 2:
        return None
    index = np.arange(1, count + 1)
    sizes = np.asarray(ndimage.sum(above, labels, index))
    peaks = np.asarray(ndimage.maximum(data, labels, index))
    main = int(np.argmax(sizes))
    if peaks[main] <= 0:
        return None
    others = np.delete(np.arange(count), main)
    brightest = int(others[np.argmax(peaks[others])])
    ratio = float(peaks[brightest] / peaks[main])
    return (ratio, int(sizes[brightest])) if ratio >= BRIGHT_PIECE else None


def mask_particle(path: Path, data: np.ndarray, noise: float) -> np.ndarray:
    """``data`` (solvent at 0, protein positive) with the solvent noise zeroed outside a soft mask
    around the particle (see NOISE_FLOOR for the rule). Why: in an unmasked map (an EMDB map, a
    subtomogram average) every positive noise voxel counted as density: the centre of mass was the
    box's, and the class carried a halo of fixed noise or was the noise itself."""
    above = data > PARTICLE_SIGMAS * noise
    labels, count = ndimage.label(above)
    mass = np.asarray(ndimage.sum(data, labels, index=np.arange(1, count + 1))) if count else np.zeros(0)
    size = np.asarray(ndimage.sum(above, labels, index=np.arange(1, count + 1))) if count else np.zeros(0)
    if count == 0 or size[int(np.argmax(mass))] < MIN_PARTICLE_VOXELS:
        raise InputError(
            path,
            f"the map looks like solvent noise only (no connected density {PARTICLE_SIGMAS:g} noise sigmas "
            "above its border's level): mask it to the particle (e.g. ChimeraX 'volume mask' or "
            "RELION's mask) or give the particle's atomic model",
        )
    keep = np.flatnonzero(mass >= KEEP_PIECE * mass.max()) + 1
    mask = ndimage.binary_dilation(np.isin(labels, keep), iterations=MASK_GROW)
    soft = ndimage.gaussian_filter(mask.astype(np.float64), MASK_SOFT)
    return data * soft


def _check_plausible_span(path: Path, span: float, in_voxel: float) -> None:
    """Refuse a map whose header voxel size makes its density span implausibly little or much
    (PLAUSIBLE_SPAN): the class would be the particle at a wrong scale (1.0 A left in an unset
    header halved a 2 A map; a voxel size in nm shrank it to a voxel), simulated with a mere note."""
    unset = in_voxel == UNSET_VOXEL_SIZE
    low, high = PLAUSIBLE_SPAN_UNSET if unset else PLAUSIBLE_SPAN
    if low <= span <= high:
        return
    why = " (the value many programs leave in an unset header)" if unset else ""
    raise InputError(
        path,
        f"its header voxel size {in_voxel:g} A{why} makes the particle span {span:.0f} A, outside the "
        f"{low:g}-{high:g} A of macromolecules: set the true voxel size in the header (e.g. "
        "python -c \"import mrcfile; m = mrcfile.open('MAP', 'r+'); m.voxel_size = TRUE_A; m.close()\")",
    )


def _refuse_half_map_or_mask(path: Path, data: np.ndarray) -> None:
    """Refuse an EMDB half map or a mask (by its name, or a map of two values): neither is a class
    of its own; given with the entry's map (an EMDB folder), one particle became 3-4 classes."""
    name = Path(path).name
    if HALF_MAP_NAME.search(name):
        raise InputError(
            path,
            "this is a half map by its name: a half map is the same particle as the full map, not a "
            "class of its own; give the full (or sharpened) map once",
        )
    # a look at every 64th section first: np.unique of a whole 1000^3 map sorts 4 GB
    sample = np.unique(data[:: max(1, data.shape[0] // 64)])
    two_valued = len(sample) <= 2 and len(np.unique(data)) == 2
    if MASK_NAME.search(name) or two_valued:
        why = "the map holds only two values" if two_valued else "by its name"
        raise InputError(path, f"this is a mask ({why}), not a particle's density: give the particle's map")


def _refuse_unmarked_bytes(path: Path, header: dict, raw: np.ndarray) -> None:
    """Refuse a mode-0 (8-bit) map without IMOD's stamp that holds negative bytes.

    Why: MRC2014 says mode-0 bytes are signed, but old tools and converters write unsigned bytes
    without IMOD's stamp that says so; read signed, every voxel above 127 (the particle's core)
    wrapped to negative and the class was a hollow shell, silently. Without the stamp the bytes are
    ambiguous, and nothing in a density proves either reading; only where no byte is negative (all
    below 128) do both readings agree, and the map is read."""
    if header["mode"] != 0 or header["unsigned_bytes"]:
        return
    if header["imod_flags"] is not None:  # stamped: signed as its flag says
        return
    negative = int(np.count_nonzero(raw < 0))
    if negative:
        raise InputError(
            path,
            f"an 8-bit (mode 0) map without IMOD's flag that says whether its bytes are signed, and "
            f"{negative} voxels are negative read signed (as the core of an unsigned map, above 127, "
            "would be): give it as a float32 (mode 2) map",
        )


def read_density_map(path: Path, box_size: int, voxel_size: float) -> np.ndarray:
    """Load an MRC density map of any voxel size; dark maps (protein negative) are inverted.

    The contrast convention is decided from the sign of the skewness after removing the solvent
    level (:func:`solvent_level`): a protein is a sparse tail of strong voxels, positive in
    a density map and negative in a raw tomogram average.
    """
    from cryoshift.runtime.mrc import check_isotropic, read_header, read_volume

    # The runtime reader checks the header against the file first (no mrcfile warnings on stderr,
    # no gigabyte reads for a lying header) and refuses 2-D images, stacks and NaN/Inf in one line;
    # it also puts any axis order (mapc/mapr/maps) into (Z, Y, X). Resampling assumes cubic voxels.
    header = read_header(path)
    _check_map_shape(path, header)
    check_isotropic(header, path)
    raw = read_volume(path)
    _refuse_unmarked_bytes(path, header, raw)
    data = raw.astype(np.float64)
    in_voxel = float(header["voxel_size"]) if header["voxel_size_known"] else 0.0
    if data.ndim != 3 or min(data.shape) < 2:
        shape = None if data is None else data.shape
        raise InputError(path, f"expected a 3-D density map, got shape {shape}")
    if not np.isfinite(data).all():
        raise InputError(path, "map contains NaN or infinite values")
    if in_voxel <= 0:  # a negative or NaN cell was reported as "missing (0)", hiding the value
        cell = header["cell"][0]
        what = "missing (cell 0)" if cell == 0 else f"unusable (cell X {cell:g} A)"
        raise InputError(path, f"voxel size {what} in the MRC header; set it, e.g. with mrcfile")
    if data.min() == data.max():  # it was "cannot tell whether protein is bright or dark"
        raise InputError(path, f"map is constant (every voxel {data.flat[0]:g}): it holds no density")
    _refuse_half_map_or_mask(path, data)
    level, noise = solvent_level(data)
    data = data - level
    # in units of its spread: a map of small numbers (1e-20, a scale in other units) is as skewed as
    # any; an absolute floor under the variance called it "skewness 0.00" and refused it
    centred = (data - data.mean()) / data.std()
    skew = float((centred**3).mean())
    if abs(skew) < AMBIGUOUS_SKEW:  # inverting a map by a coin toss would train on the wrong contrast
        raise InputError(
            path,
            f"cannot tell whether protein is bright or dark in this map (skewness {skew:.2f}, "
            f"deposited maps have 5-50): {ambiguous_contrast_advice(data, noise)}",
        )
    if skew < 0:
        data = -data
    if data.max() <= 0:
        raise InputError(path, "map is empty (no density above the solvent level)")
    coherence = neighbour_correlation(data)
    if coherence < MIN_NEIGHBOUR_CORRELATION:
        shown = round(coherence, 2) + 0.0  # + 0.0: no "-0.00"
        raise InputError(
            path,
            f"its voxels do not correlate with their neighbours (mean correlation {shown:.2f}; "
            f"density maps have 0.8-0.95): {_incoherence_reason(data)}",
        )
    masked = noise > NOISE_FLOOR * data.max()  # unmasked: a clean map goes on untouched
    if masked:
        noise_share = noise / data.max()
        data = mask_particle(path, data, noise)
    touching = touches_faces(data, noise)
    bright = bright_detached_piece(data)
    strong = np.nonzero(data > 0.05 * data.max())  # the particle's span and thickness
    span = max(float(idx.max() - idx.min() + 1) for idx in strong) * in_voxel
    if span < voxel_size:  # as for atomic models: a featureless blob simulated as a class
        raise InputError(
            path,
            f"its density spans only {span:.2g} A, less than one {voxel_size:g} A voxel: the class "
            "would be a featureless blob (a voxel size in nm in the header, or a map of one atom?)",
        )
    _check_plausible_span(path, span, in_voxel)
    thick, middle = map_thickness(strong, data[strong])
    # a sheet as thin as the grid: no particle. A thin rod (DNA at 10 A) or a small compact
    # particle in coarse voxels is thin across two or three ways and stays a class.
    if thick < MIN_THICKNESS and middle >= SHEET_RATIO * thick:
        raise InputError(
            path,
            f"its density is a sheet {thick:.1f} voxels thick across its thinnest direction and "
            f"{middle:.0f} wide across the next (a particle's map is at least {MIN_THICKNESS:g} voxels "
            "thick wherever it is that wide): give the particle's map or its atomic model",
        )
    try:
        centre = centre_of_mass(data)
        check_in_box(path, data, in_voxel, voxel_size, box_size, centre)
        out = finish_map(place_map(data, in_voxel, voxel_size, box_size, centre), box_size)
    except InputError:
        raise
    except ValueError as exc:
        raise InputError(path, str(exc)) from exc
    done = (
        [f"{in_voxel:.4g} A voxels resampled to {voxel_size:g} A"]
        if abs(in_voxel / voxel_size - 1) > 1e-3
        else []
    )
    if skew < 0:
        done.append("protein dark, inverted to light")
    if masked:
        done.append(f"solvent noise ({100 * noise_share:.2g} % of the peak) masked off around the particle")
    if touching:
        done.append(
            f"its density touches the map's faces ({100 * touching:.2g} % of the border is density: "
            "cropped tightly?); what lay beyond them is missing from the class, give the uncropped map"
        )
    if bright:
        done.append(
            f"a detached piece of {bright[1]} voxels, apart from the particle, is {bright[0]:.1f} times "
            "as bright as it (a gold bead or contamination?); it is kept in the class and sets its "
            "scale: mask it off if it is not part of the particle"
        )
    if done:
        print(f"cryoshift: note: {path}: {'; '.join(done)}", file=sys.stderr)
    return out


def read_atomic_model(path: Path, box_size: int, voxel_size: float, resolution: float | None) -> np.ndarray:
    """Density of a PDB/mmCIF model at ``resolution`` (default 2 voxels), centred in the box."""
    from cryoshift.training.simulate.atomic import atomic_density

    density, _origin, spacing_xyz = atomic_density(
        path,
        resolution=resolution or 2.0 * voxel_size,
        spacing=min(voxel_size / 2.0, 2.0),
        voxel_size=voxel_size,
    )
    try:
        centre = centre_of_mass(density)
        check_in_box(path, density, spacing_xyz[::-1], voxel_size, box_size, centre)
        return finish_map(place_map(density, spacing_xyz[::-1], voxel_size, box_size, centre), box_size)
    except InputError:
        raise
    except ValueError as exc:
        raise InputError(path, str(exc)) from exc


def builtin_structures(
    box_size: int, voxel_size: float, seed: int = 0, names: list[str] | None = None
) -> Structures:
    """The built-in procedural structures (all of BUILTIN_NAMES unless ``names`` is given)."""
    names = list(BUILTIN_NAMES if names is None else names)
    maps = np.stack([finish_map(render_builtin(n, box_size, voxel_size, seed), box_size) for n in names])
    return Structures(
        names=names,
        maps=maps,
        voxel_size=float(voxel_size),
        sources=[f"builtin:{n}?seed={seed}" for n in names],
    )


def _expand(source: str) -> list[str]:
    """One source string -> list of concrete sources ("builtin:NAME" or file paths)."""
    if source == "builtin":
        return [f"builtin:{n}" for n in BUILTIN_NAMES]
    if source.startswith("builtin:"):
        name = source.split(":", 1)[1]
        if name not in BUILTIN_NAMES:
            close = difflib.get_close_matches(name, BUILTIN_NAMES, n=1)
            hint = f" (did you mean {close[0]}?)" if close else f"; choose from {', '.join(BUILTIN_NAMES)}"
            raise InputError(source, f"unknown built-in structure{hint}")
        return [source]
    path = Path(source)
    if path.is_dir():
        # Files with a map or model name; folders (a link to "." included) are not sources, while
        # a broken link stays in to be reported as a skipped item rather than vanish unsaid.
        files = sorted(p for p in path.iterdir() if _is_structure_name(p) and not p.is_dir())
        if not files:
            raise InputError(path, "directory holds no MRC maps or PDB/mmCIF models")
        return [str(p) for p in files]
    _check_exists(path)
    if not _is_structure_name(path):
        raise InputError(
            path,
            f"unknown structure type {path.suffix!r}: expected an MRC map ({' '.join(MAP_SUFFIXES)}; gzip "
            "or bzip2 ok) or a PDB/mmCIF model (.pdb .ent .cif .mmcif, RCSB assemblies .pdb1 .pdb2 "
            "..., gzip ok)",
        )
    return [str(path)]


def _is_structure_name(path: Path) -> bool:
    return bool(map_suffix(path) or model_suffix(path))


def _check_exists(path: Path) -> None:
    """A missing path, a dangling link or a loop of links, said in words."""
    from cryoshift.runtime.sources.cache import os_reason

    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(path, f"symbolic link loop (points to {os.readlink(path)})") from exc
        if isinstance(exc, FileNotFoundError) and not path.is_symlink():
            reason = f"no such file or directory{_spaces_note(str(path))} (or use 'builtin' / 'builtin:NAME')"
            raise InputError(path, reason) from exc
        raise InputError(path, os_reason(path, exc)) from exc


def _spaces_note(name: str) -> str:
    """A note naming the space a missing ``name`` starts or ends with (``'m1.mrc, m2.mrc'`` gives
    `` m2.mrc``): in ``error:  m2.mrc: no such file`` the space cannot be seen."""
    ends = [
        where for where, text in (("leading", name.lstrip()), ("trailing", name.rstrip())) if text != name
    ]
    if not ends:
        return ""
    return f": the name {name!r} has {' and '.join(ends)} white space"


def load_structures(
    sources: list[str], box_size: int, voxel_size: float, seed: int = 0, resolution: float | None = None
) -> Structures:
    """Load structures from a list of sources onto one (box_size, voxel_size) grid.

    Items: "builtin" (all built-ins), "builtin:NAME", an MRC path, a PDB/mmCIF path or a directory
    of those. A file inside a directory that cannot be read is reported on stderr and skipped;
    a file named directly is an error. ``resolution`` (A) applies to atomic models.
    """
    if box_size < MIN_BOX:
        raise InputError(None, f"box size {box_size} is too small (at least {MIN_BOX} voxels)")
    if box_size > MAX_BOX:  # before rendering: a box of 1000 is 4 GB per map
        gib = box_size**3 * 4 / 2**30
        raise InputError(
            None,
            f"box size {box_size} is too large (at most {MAX_BOX} voxels; one {box_size}^3 volume "
            f"is {gib:.1f} GiB): bin the data or crop a smaller box",
        )
    if not (math.isfinite(voxel_size) and voxel_size > 0):  # NaN passes a plain "<= 0" test
        raise InputError(None, f"voxel size must be a positive number, got {voxel_size}")
    if not sources:
        raise InputError(None, "no structure sources given (try 'builtin')")
    names: list[str] = []
    maps: list[np.ndarray] = []
    origins: list[str] = []
    given: list[str] = []  # each class's source as the user named it (for messages)
    skipped: list[SkippedSource] = []
    for source in sources:
        items = _expand(source)
        from_dir = len(items) > 1 and Path(source).is_dir()
        for item in items:
            try:
                if item.startswith("builtin:"):
                    name = item.split(":", 1)[1]
                    density = finish_map(render_builtin(name, box_size, voxel_size, seed), box_size)
                    origin = f"{item}?seed={seed}"
                else:
                    path = Path(item)
                    name = structure_name(path)
                    check_class_name(path, name)
                    if map_suffix(path):
                        density = read_density_map(path, box_size, voxel_size)
                    else:
                        density = read_atomic_model(path, box_size, voxel_size, resolution)
                    origin = str(path.resolve())
            except InputError as exc:
                if not from_dir:
                    raise
                skipped.append(SkippedSource(exc.path if exc.path is not None else item, exc.reason))
                print(f"cryoshift: skipped {exc}", file=sys.stderr)
                continue
            check_new_class_name(item, name, names, origins)
            names.append(name)
            maps.append(density)
            origins.append(origin)
            given.append(item)
    if not maps:
        raise InputError(", ".join(sources), "no structure could be loaded")
    stack = np.stack(maps)
    _refuse_lookalikes(names, stack, given, box_size, voxel_size)
    _refuse_turned_lookalikes(names, stack, given)
    return Structures(names=names, maps=stack, voxel_size=float(voxel_size), sources=origins, skipped=skipped)


def _map_correlations(maps: np.ndarray) -> np.ndarray:
    """(K, K) Pearson correlations of K maps, summed in float64 over chunks of voxels: a float64
    copy of all maps at once (np.corrcoef) would be K GiB at the largest box."""
    k = len(maps)
    flat = maps.reshape(k, -1)
    n = flat.shape[1]
    gram = np.zeros((k, k))
    sums = np.zeros(k)
    step = max(1, 2**22 // k)
    for start in range(0, n, step):
        part = flat[:, start : start + step].astype(np.float64)
        gram += part @ part.T
        sums += part.sum(axis=1)
    cov = gram - np.outer(sums, sums) / n
    # finish_map leaves zero corners and some positive density: no map is constant (sd > 0)
    sd = np.sqrt(np.clip(np.diag(cov), 1e-300, None))
    return np.asarray(cov / np.outer(sd, sd))


def _refuse_lookalikes(
    names: list[str], maps: np.ndarray, given: list[str], box_size: int, voxel_size: float
) -> None:
    """Refuse two classes whose maps correlate above MAX_MAP_CORRELATION, naming them (and their
    files): the simulated classes would be one particle under two labels."""
    if len(maps) < 2:
        return
    corr = _map_correlations(maps)
    builtin = [g.startswith("builtin:") for g in given]

    def limit(i: int, j: int) -> float:
        return MAX_MAP_CORRELATION if builtin[i] and builtin[j] else MAX_FILE_MAP_CORRELATION

    pairs = [(i, j) for i in range(len(maps)) for j in range(i + 1, len(maps)) if corr[i, j] > limit(i, j)]
    if not pairs:
        return
    i, j = pairs[0]
    extra = len(pairs) - 1
    more = f"; {extra} more pair{'s' if extra > 1 else ''} too" if extra else ""
    digits = 6 if limit(i, j) == MAX_MAP_CORRELATION else 5
    same = f"(Pearson correlation {corr[i, j]:.{digits}f} > {limit(i, j):g}{more})"
    files = [k for k in (i, j) if not given[k].startswith("builtin:")]
    if not files:
        raise InputError(
            None,
            f"built-in classes {names[i]!r} and {names[j]!r} render as the same map at {voxel_size:g} A "
            f"per voxel in a {box_size}^3 box {same}: check --voxel-size (Angstrom per voxel; "
            "subtomograms are typically 2-20 A)",
        )
    k = files[-1]  # the error names this file; the message names the other class's source
    other = i if k == j else j
    raise InputError(
        given[k],
        f"class {names[k]!r} has the same map as class {names[other]!r} ({given[other]}) on the "
        f"{box_size}^3 grid at {voxel_size:g} A {same}: the same structure twice (a copy, one map at "
        "two samplings, a half map)? check that the maps differ and that the voxel sizes (map "
        "headers, --voxel-size) are right",
    )


# Rotation-invariant near-duplicates. The simulator turns every particle at random, so one structure
# in two orientations or hands (two depositions of one complex, each in its own frame; a hand-flipped
# reconstruction) gives the same class under two labels, though the maps correlate 0.53-0.81 as they
# lie. A pair is a candidate when its invariants agree: the square roots of the sorted eigenvalues
# of the density's second moments within TURNED_SHAPE_TOLERANCE of the largest (one map turned or
# mirrored: 0.003; the closest distinct maps of shared/data/maps/10A at 32^3 x 10 A: 0.057) and its
# radial profiles correlating above TURNED_PROFILE_CORRELATION (1.000 against 0.986 and less among
# those). A candidate is then aligned (TURNED_ROTATIONS near-uniform rotations and as many mirrored,
# the best refined to TURNED_FINEST_DEG) on a grid of at most TURNED_GRID voxels, and refused above
# MAX_FILE_MAP_CORRELATION (one map turned 17 or 90 degrees or mirrored: 0.996-0.997).
TURNED_SHAPE_TOLERANCE = 0.03
TURNED_PROFILE_CORRELATION = 0.99
TURNED_ROTATIONS = 400
TURNED_FINEST_DEG = 0.5
TURNED_GRID = 32


def _shape_invariants(density: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Square roots of the sorted eigenvalues of a map's second moments (its positive density), its
    radial mass profile (1-voxel shells around its centre of mass) and that centre (z, y, x)."""
    weights = np.clip(density.astype(np.float64), 0, None).ravel()
    weights = weights / weights.sum()
    idx = np.indices(density.shape).reshape(3, -1).astype(np.float64)
    centre = idx @ weights
    offsets = idx - centre[:, None]
    cov = (offsets * weights) @ offsets.T
    radius = np.rint(np.sqrt((offsets**2).sum(0))).astype(int)
    profile = np.bincount(radius, weights=weights)[: density.shape[0]]
    return np.sqrt(np.clip(np.linalg.eigvalsh(cov), 0, None)), profile, centre


def _turned(density: np.ndarray, matrix: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``density`` rotated (or mirrored) by ``matrix`` about voxel ``source``, moved onto ``target``."""
    return ndimage.affine_transform(
        density, matrix, offset=source - matrix @ target, order=1, mode="constant"
    )


def _best_aligned_correlation(
    a: np.ndarray, b: np.ndarray, centre_a: np.ndarray, centre_b: np.ndarray
) -> float:
    """The highest Pearson correlation of map ``a`` with map ``b`` turned about its centre of mass
    onto ``a``'s, proper rotations and mirror images alike: a coarse near-uniform search, the best
    three refined by halving steps about each axis."""
    from scipy.spatial.transform import Rotation

    from cryoshift.training.template_matching import fibonacci_rotations

    def corr(matrix: np.ndarray) -> float:
        return float(np.corrcoef(a.ravel(), _turned(b, matrix, centre_b, centre_a).ravel())[0, 1])

    rotations = fibonacci_rotations(TURNED_ROTATIONS)
    candidates = [*rotations, *(r @ np.diag([-1.0, 1.0, 1.0]) for r in rotations)]
    scores = [corr(m) for m in candidates]
    best = -1.0
    for k in np.argsort(scores)[-3:]:
        matrix, score, step = candidates[k], scores[k], 8.0
        while step >= TURNED_FINEST_DEG:
            moves = [
                Rotation.from_rotvec(math.radians(sign * step) * axis).as_matrix() @ matrix
                for axis in np.eye(3)
                for sign in (1, -1)
            ]
            moved = [corr(m) for m in moves]
            if max(moved) > score:
                score, matrix = max(moved), moves[int(np.argmax(moved))]
            else:
                step /= 2
        best = max(best, score)
    return best


def _refuse_turned_lookalikes(names: list[str], maps: np.ndarray, given: list[str]) -> None:
    """Refuse two classes, at least one from a file, that are one structure turned or mirrored
    (see TURNED_SHAPE_TOLERANCE), naming both files: the simulator turns every particle at random,
    so the two classes would be one particle under two labels. _refuse_lookalikes compares the maps
    only as they lie."""
    if len(maps) < 2:
        return
    box = maps.shape[-1]
    factor = min(1.0, TURNED_GRID / box)
    small = [
        np.clip(m.astype(np.float64), 0, None)
        if factor == 1.0
        else ndimage.zoom(
            ndimage.gaussian_filter(np.clip(m.astype(np.float64), 0, None), 0.42 / factor), factor, order=1
        )
        for m in maps
    ]
    invariants = [_shape_invariants(m) for m in small]
    for i, j in itertools.combinations(range(len(maps)), 2):
        if given[i].startswith("builtin:") and given[j].startswith("builtin:"):
            continue
        (axes_i, profile_i, centre_i), (axes_j, profile_j, centre_j) = invariants[i], invariants[j]
        if np.abs(axes_i - axes_j).max() > TURNED_SHAPE_TOLERANCE * max(axes_i.max(), axes_j.max()):
            continue
        if np.corrcoef(profile_i, profile_j)[0, 1] <= TURNED_PROFILE_CORRELATION:
            continue
        score = _best_aligned_correlation(small[i], small[j], centre_i, centre_j)
        if score > MAX_FILE_MAP_CORRELATION:
            k, other = (j, i) if not given[j].startswith("builtin:") else (i, j)
            raise InputError(
                given[k],
                f"class {names[k]!r} is the same structure as class {names[other]!r} ({given[other]}) "
                f"turned or mirrored (Pearson correlation {score:.4f} > {MAX_FILE_MAP_CORRELATION:g} "
                "once aligned): the simulator turns particles at random, so they would be one class "
                "under two labels; give one of them",
            )


def split_sources(items: list[str]) -> list[str]:
    """``--structures`` (simulate) or ``--source`` (train) values as sources: comma-separated lists
    are split, but a comma that is part of an existing file or folder name is kept (``a,b.pdb``
    could be given only inside a folder)."""
    import os

    sources: list[str] = []
    for item in items:
        parts = item.split(",")
        i = 0
        while i < len(parts):
            # the longest run of parts from here that names an existing path, else one part
            j = next(
                (j for j in range(len(parts), i + 1, -1) if os.path.lexists(",".join(parts[i:j]))),
                i + 1,
            )
            source = ",".join(parts[i:j])
            if source:
                sources.append(source)
            i = j
    return sources
