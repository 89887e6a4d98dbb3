"""Loading one planned item into a batch row: a single file, a stack slice or a crop from a
tomogram, checked (voxel size, NaN/Inf, absurd values) so that a bad item fails alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cryoshift.runtime.contract import VOXEL_TOLERANCE, percent, voxel_mismatch
from cryoshift.runtime.errors import InputError
from cryoshift.runtime.sources.cache import VolumeCache, open_mrc, os_reason
from cryoshift.runtime.sources.items import CHECKED_AGAINST, Item


def _check_item_voxel(item: Item, voxel: float, model_voxel: float | None, against: str) -> None:
    mismatch = voxel_mismatch(voxel, model_voxel or 0.0)
    if mismatch is not None and mismatch > VOXEL_TOLERANCE:
        raise InputError(
            item.path,
            f"voxel size {voxel:.3g} A differs from the {against}'s {model_voxel:.3g} A "
            f"by {percent(mismatch)}",
        )


VALUE_LIMIT = 1e15  # |voxel| beyond this overflows float32 sums of squares in the model's normalisation
# |voxel| all below this: float32 subnormals (precision lost, z-scoring amplifies the rounding)
VALUE_FLOOR = 1e-30


def _check_values(out: np.ndarray, item: Item) -> None:
    """NaN/Inf, values so large that z-scoring in float32 overflows (NaN logits), so small that
    they are float32 subnormals (the model classifies rounding noise), or a constant box (a pick
    in a tomogram's zero-filled margin: no signal), fail the item.

    Two reductions instead of ``isfinite(...).all()``: no temporary array, and NaN fails both
    comparisons, so one test covers NaN, Inf and absurd magnitudes.
    """
    lo, hi = float(out.min()), float(out.max())
    where = f" (item {item.id})" if item.id != item.path else ""
    if lo == hi and abs(lo) < VALUE_LIMIT:  # a confident class for a blank box: silently wrong
        raise InputError(
            item.path, f"every voxel is {lo:g}: nothing to classify (a blank or zero-filled region?)" + where
        )
    if lo > -VALUE_LIMIT and hi < VALUE_LIMIT:
        if max(abs(lo), abs(hi)) < VALUE_FLOOR:  # a confident class for rounding noise: silently wrong
            raise InputError(
                item.path,
                f"values are all below {VALUE_FLOOR:.0e} in magnitude (float32 subnormals, most precision "
                "lost): not subtomogram intensities; rescale the data" + where,
            )
        return
    if not np.isfinite(out).all():
        raise InputError(item.path, "contains NaN or infinite values" + where)
    raise InputError(
        item.path,
        f"values reach {max(abs(lo), abs(hi)):.3g}, beyond +-{VALUE_LIMIT:.0e}: "
        "not subtomogram intensities (normalisation would overflow)" + where,
    )


def load_item(
    item: Item,
    out: np.ndarray,
    cache: VolumeCache,
    voxel_size: float | None = None,
    against: str = CHECKED_AGAINST,
) -> None:
    """Fill ``out`` (D, D, D) float32 with ``item``'s voxels or raise InputError with the reason.

    ``voxel_size`` (the model's) makes single files of another voxel size fail as items;
    stacks and tomograms were already checked while planning. ``against`` names what the box and
    voxel size are compared with, as plan_inputs' does ("the model's 16^3").
    """
    if item.kind == "error":
        raise InputError(item.path, item.error)
    try:
        _load_item(item, out, cache, voxel_size, against)
    except OSError as exc:  # a file gone, a dangling link, no permission: said in words
        raise InputError(item.path, os_reason(item.path, exc)) from exc


def _load_item(
    item: Item, out: np.ndarray, cache: VolumeCache, voxel_size: float | None, against: str
) -> None:
    box = out.shape[0]
    if item.kind == "file":
        from cryoshift.runtime.mrc import read_plain_volume

        voxel = read_plain_volume(item.path, out)  # the fast path for plain files
        if voxel is not None:
            _check_item_voxel(item, voxel, voxel_size, against)
            _check_values(out, item)
            return
        with open_mrc(item.path) as vol:  # not cached: directories can hold millions of files
            images = getattr(vol, "header", {}).get("images", 0)  # a stack of 2-D images (mrc.py)
            if vol.anisotropic:
                from cryoshift.runtime.mrc import check_isotropic

                check_isotropic(vol.header, item.path)
            if vol.voxel_size_known:
                _check_item_voxel(item, vol.voxel_size, voxel_size, against)
            data = vol.data
            if vol.is_stack and data.ndim == 4:  # a listing row naming a stack without N@
                n = data.shape[0]
                raise InputError(
                    item.path,
                    f"is a stack of {n} volumes, not one volume: name one slice of it "
                    f"(N@{Path(item.path).name}, N from 1 to {n})",
                )
            if vol.is_stack or data.ndim != 3:
                raise InputError(item.path, f"expected a single volume, found shape {tuple(data.shape)}")
            if data.shape != (box, box, box):
                shown = "x".join(str(s) for s in data.shape)
                what = f" (and it is a stack of {images} 2-D images, not a 3-D map)" if images else ""
                raise InputError(item.path, f"box {shown} does not match the {against}'s {box}^3{what}")
            if images:  # box images of box x box were classified as one box^3 volume of them
                from cryoshift.runtime.mrc import refuse_image_stack

                refuse_image_stack(item.path, vol.header)
            out[...] = data
    elif item.kind == "stack":
        vol = cache.get(item.path)
        data = vol.data if vol.data.ndim == 4 else vol.data[None]
        if not 0 <= item.index < data.shape[0]:
            # the slice as a listing writes it (N@stack, from 1): "index 3" was 0-based and the
            # listing's 4@ could not be found in it
            n = data.shape[0]
            raise InputError(
                item.path, f"slice {item.index + 1} is out of range 1..{n} (the stack holds {n} volumes)"
            )
        if data.shape[1:] != (box, box, box):
            shown = "x".join(str(s) for s in data.shape[1:])
            raise InputError(item.path, f"box {shown} does not match the {against}'s {box}^3")
        out[...] = data[item.index]
    elif item.kind == "tomogram":
        from cryoshift.runtime.crop import crop_box

        # Crops straight into the batch row; a pick outside the tomogram raises InputError.
        crop_box(cache.get(item.path).data, (item.x, item.y, item.z), box, out=out, path=item.path)
    else:  # pragma: no cover - planning only makes the kinds above
        raise InputError(item.path, f"unknown item kind {item.kind}")
    _check_values(out, item)
