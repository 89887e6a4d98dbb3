"""One schema for what a deployed model says about itself.

The same fields travel in the ONNX file (``metadata_props``, JSON values under the
``cryoshift.`` prefix) and in the JSON sidecar of a TensorRT engine, so the runtime never
guesses box size, contrast, normalisation or class names.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from cryoshift.runtime.contract import (
    CONTRASTS,
    FEATURES,
    INPUT_NAME,
    LOGITS,
    MAX_BOX,
    NORMALISATIONS,
    VOXEL_SIZE_RANGE,
    class_names_problem,
    has_control_character,
    invisible_characters,
)
from cryoshift.runtime.errors import InputError, missing_reason
from cryoshift.runtime.jsonfile import JSON_ERRORS, real_number, shown
from cryoshift.runtime.outfiles import write_text

SCHEMA_VERSION = 1
PREFIX = "cryoshift."

# Size limits of stored metadata, in one place. A model's metadata is copied into every
# manifest.json, run.json and report, and shown by cryoshift info: a 50 MB ``method`` was accepted
# and copied into each (info laid it out for minutes). The limits lie far above what any export
# writes; they are checked on reading, so on writing too (:func:`checked`).
MAX_PROPERTY_CHARS = 4_000_000  # the JSON text of one cryoshift.* ONNX property, checked before parsing
MAX_CLASSES = 1000
# extra's record of the test views a model's calibration was fitted for, written by an export whose
# --test-views differs from them (extra["test_views"] is the count the graph averages)
CALIBRATION_VIEWS = "calibration_test_views"
MAX_CLASS_NAME_CHARS = 256
MAX_TEXT_CHARS = 4096  # any other metadata text: method, backbone, ..., extra's names and values
MAX_FEATURES = 65536  # values of feature_mean and of feature_var
MAX_OBJECT_ITEMS = 1000  # names and values in data_fingerprints, and in extra, at any depth

# Ranges of the numbers the scoring arithmetic (runtime/scoring.py) divides by or squares. Values
# that merely pass "finite and positive" overflowed there: a temperature of 5e-324 made every
# probability NaN (and every row class 0), a feature_mean of 1e308 or a shift_reference of 1e-320
# made every shift score inf. The ranges lie far outside anything training fits (a temperature is
# searched in [0.05, 20]; a shift reference is a median normalised distance, ~1).
TEMPERATURE_RANGE = (1e-3, 1e3)
# Features are float32 model outputs, so their mean lies within float32's range and their variance
# within its square; within these, (f - mean)^2 / var cannot overflow float64.
FLOAT32_MAX = float(np.finfo(np.float32).max)
FEATURE_MEAN_LIMIT = FLOAT32_MAX
FEATURE_VAR_LIMIT = FLOAT32_MAX**2
# The shift score divides the feature distance (at most ~1e42 within the limits above) by this.
SHIFT_REFERENCE_RANGE = (1e-9, 1e9)


@dataclass
class ModelMetadata:
    class_names: list[str]
    box_size: int
    voxel_size: float  # Angstrom per voxel
    contrast: str = "dark"
    normalisation: str = "zscore"
    temperature: float = 1.0  # calibration: probabilities = softmax(logits / temperature)
    unknown_threshold: float = 0.0  # calibrated confidence under which the answer is "unknown"
    # Shift score reference: diagonal Gaussian of the adapted target's features, and the
    # median normalised distance of those target features (so an in-domain score is ~1).
    feature_mean: list[float] = field(default_factory=list)
    feature_var: list[float] = field(default_factory=list)
    shift_reference: float = 1.0
    method: str = ""
    backbone: str = ""
    precision: str = "fp32"
    data_fingerprints: dict[str, str] = field(default_factory=dict)
    cryoshift_version: str = ""
    created: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if isinstance(self.schema_version, bool) or not isinstance(self.schema_version, int):
            raise ValueError(f"schema_version must be an integer, not {self.schema_version!r}")
        if not 1 <= self.schema_version <= SCHEMA_VERSION:  # a newer writer may mean other things
            raise ValueError(
                f"metadata schema {self.schema_version} is not one this cryoshift reads "
                f"(1..{SCHEMA_VERSION}); a model from a newer cryoshift needs that version"
            )
        if self.contrast not in CONTRASTS:
            raise ValueError(f"contrast must be one of {CONTRASTS}, not {self.contrast!r}")
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {NORMALISATIONS}, not {self.normalisation!r}")
        self.box_size = int(self.box_size)
        self.voxel_size = float(self.voxel_size)
        # The runtime trusts these numbers; a hand-edited or foreign file must fail here, in one
        # line, not as a numpy error in the middle of a run.
        if isinstance(self.class_names, tuple):
            self.class_names = list(self.class_names)
        if (
            not isinstance(self.class_names, list)
            or not self.class_names
            or not all(isinstance(c, str) and c for c in self.class_names)
        ):
            raise ValueError(f"class_names must be a non-empty list of names, not {self.class_names!r}")
        if self.box_size < 1:
            raise ValueError(f"box_size must be positive, not {self.box_size}")
        if self.box_size > MAX_BOX:  # 1e308 was taken from a sidecar, and overflowed bench's maths
            raise ValueError(
                f"box_size must be a whole number from 1 to {MAX_BOX}, not {shown(self.box_size)}"
            )
        self._check_voxel_size()
        self.temperature = float(self.temperature)
        if not math.isfinite(self.temperature) or self.temperature <= 0:
            raise ValueError(f"temperature must be a positive number, not {self.temperature:.6g}")
        low, high = TEMPERATURE_RANGE
        if not low <= self.temperature <= high:  # softmax(logits / T) overflowed to NaN at 5e-324
            raise ValueError(
                f"temperature must lie in [{low:g}, {high:g}] (a calibration temperature is ~1), "
                f"not {self.temperature:.6g}"
            )
        self.unknown_threshold = float(self.unknown_threshold)
        if not 0.0 <= self.unknown_threshold <= 1.0:
            raise ValueError(f"unknown_threshold must lie in [0, 1], not {self.unknown_threshold}")
        self.shift_reference = float(self.shift_reference)
        self.feature_mean = [float(v) for v in self.feature_mean]
        self.feature_var = [float(v) for v in self.feature_var]
        self._check_feature_reference()

    def _check_voxel_size(self) -> None:
        """A model's voxel size is that of its training data, which training refuses to take
        without one (``--voxel-size`` and a dataset's must be positive), so a model always has one.
        0 (or NaN) is no voxel size: the runtime compares data with the model only when both are
        known (:func:`~cryoshift.runtime.contract.voxel_mismatch`), and a model stating 0 made every
        run skip that check without a word. So it is refused as invalid metadata, not noted."""
        if not (math.isfinite(self.voxel_size) and self.voxel_size > 0):
            raise ValueError(
                f"voxel_size must be the positive voxel size (A) of the training data, not "
                f"{self.voxel_size:g} (the voxel size of the data to classify is checked against it)"
            )
        low, high = VOXEL_SIZE_RANGE  # what a dataset may declare: a model's came from one
        if not low <= self.voxel_size <= high:
            raise ValueError(
                f"voxel_size must lie in [{low:g}, {high:g}] A (the voxel size of the training data), "
                f"not {self.voxel_size:.6g}: a unit mix-up, not a voxel size"
            )

    def _check_feature_reference(self) -> None:
        """The shift score divides by ``feature_var`` element by element against ``feature_mean``:
        lists of different lengths, a zero or negative variance or a NaN would make every score
        NaN or Inf, so such metadata is refused here rather than scored. So are values whose
        arithmetic overflows (:data:`FEATURE_MEAN_LIMIT`, :data:`SHIFT_REFERENCE_RANGE`): a
        feature_mean of 1e308 gave inf scores with a note blaming the model's features."""
        mean, var = self.feature_mean, self.feature_var
        if len(mean) != len(var):
            raise ValueError(f"feature_mean has {len(mean)} values but feature_var has {len(var)}")
        if not all(math.isfinite(v) for v in mean):
            raise ValueError("feature_mean holds NaN/Inf")
        big = next((v for v in mean if abs(v) > FEATURE_MEAN_LIMIT), None)
        if big is not None:
            raise ValueError(
                f"feature_mean holds {big:.6g}; the mean of float32 features lies within "
                f"+-{FEATURE_MEAN_LIMIT:.6g} (the shift score's arithmetic overflows beyond)"
            )
        if not all(math.isfinite(v) and v > 0 for v in var):
            raise ValueError("feature_var must hold finite positive numbers")
        big = next((v for v in var if v > FEATURE_VAR_LIMIT), None)
        if big is not None:
            raise ValueError(
                f"feature_var holds {big:.6g}; the variance of float32 features is at most "
                f"{FEATURE_VAR_LIMIT:.6g}"
            )
        reference = self.shift_reference
        if not (math.isfinite(reference) and reference > 0):
            raise ValueError(f"shift_reference must be a positive number, not {reference:.6g}")
        low, high = SHIFT_REFERENCE_RANGE
        if not low <= reference <= high:  # 1e-320 made every shift score inf
            raise ValueError(
                f"shift_reference must lie in [{low:g}, {high:g}] (the median normalised feature "
                f"distance of the target data, ~1), not {reference:.6g}"
            )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | Path | None = None) -> ModelMetadata:
        known = {f.name for f in dataclasses.fields(cls)}
        missing = [n for n in ("class_names", "box_size", "voxel_size") if n not in data]
        if missing:
            raise InputError(source, f"model metadata lacks {', '.join(missing)}; not a cryoshift model?")
        problem = _wrong_type(data)
        if problem:
            raise InputError(source, f"invalid model metadata: {problem}")
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except (TypeError, ValueError, OverflowError) as exc:  # OverflowError: box_size 1e400
            raise InputError(source, f"invalid model metadata: {exc}") from exc

    # ONNX metadata_props: flat string map, one JSON value per field.
    def to_properties(self) -> dict[str, str]:
        return {PREFIX + k: json.dumps(v) for k, v in self.to_dict().items()}

    @classmethod
    def from_properties(cls, props: dict[str, str], source: str | Path | None = None) -> ModelMetadata:
        data = {}
        for key, value in props.items():
            if key.startswith(PREFIX):
                if len(value) > MAX_PROPERTY_CHARS:  # refused before json.loads spends time on it
                    raise InputError(
                        source,
                        f"metadata field {key} is {len(value):,} characters long; at most "
                        f"{MAX_PROPERTY_CHARS:,} are accepted (a model's metadata is a few KB)",
                    )
                try:
                    data[key[len(PREFIX) :]] = json.loads(value)
                except JSON_ERRORS as exc:
                    raise InputError(source, f"metadata field {key} is not JSON: {exc}") from exc
        return cls.from_dict(data, source)

    def write_json(self, path: str | Path) -> None:
        """Write the metadata as JSON (whole, renamed into place: a link at ``path`` is replaced,
        never written through; runtime/outfiles.py)."""
        write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def read_json(cls, path: str | Path) -> ModelMetadata:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, *JSON_ERRORS) as exc:
            raise InputError(path, f"cannot read model metadata: {exc}") from exc
        return cls.from_dict(data, path)


# Field types of stored metadata (ONNX properties, engine sidecars, checkpoints), checked on reading:
# the constructor converts (int(16.7) is 16, float(True) is 1.0) and an ``extra`` or
# ``data_fingerprints`` of another type was a traceback in ``cryoshift info``. A class name holding a
# control character (a line break) split info's table, and the lines of every listing naming it; so
# did one in any other text info shows (method, backbone, ..., extra.backbone_options). Every other
# free text is held to the same rule (extra.int8_calibration, a path, is not shown today): a
# metadata text is one line wherever it goes next.
_NUMBERS = ("voxel_size", "temperature", "unknown_threshold", "shift_reference")
_NUMBER_LISTS = ("feature_mean", "feature_var")
_TEXTS = ("method", "backbone", "precision", "cryoshift_version", "created")  # contrast: its own check
_OBJECTS = ("data_fingerprints", "extra")


def _wrong_type(data: dict[str, Any]) -> str | None:
    """What is wrong with the types of stored metadata ``data`` (None: nothing), in words."""
    box = data["box_size"]
    number = real_number(box)
    if number is None or not math.isfinite(number) or number != int(number):
        return f"box_size must be a whole number, not {shown(box)}"
    for name in _NUMBERS:
        if name in data and real_number(data[name]) is None:
            return f"{name} must be a number, not {shown(data[name])}"
    for name in _NUMBER_LISTS:
        values = data.get(name, [])
        if not isinstance(values, list) or not all(real_number(v) is not None for v in values):
            return f"{name} must be a list of numbers"
    for name in _TEXTS:
        if name in data and not isinstance(data[name], str):
            return f"{name} must be text, not {shown(data[name])}"
    for name in _OBJECTS:
        if name in data and not isinstance(data[name], dict):
            return f"{name} must be a JSON object, not {shown(data[name])}"
    too_large = _too_large(data)
    if too_large:
        return too_large
    names = data["class_names"]
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
        problem = class_names_problem(names)
        if problem:  # a model made before the rule: refused at load, before any work
            return f"class_names has {problem}; train again with the class renamed"
    for where, text in _free_texts(data):
        if has_control_character(text):
            return (
                f"{where} holds a control character (a line break, tab ...): {shown(text)}; "
                "a metadata text must be one line, as cryoshift info and listings print it"
            )
        hidden = invisible_characters(text)
        if hidden:  # a bidi control makes cryoshift info show another text than the one stored
            return (
                f"{where} holds invisible characters ({', '.join(hidden)}: bidi controls, zero-width "
                f"spaces ...): {shown(text)}; a metadata text must print as what it holds"
            )
    return None


def _too_large(data: dict[str, Any]) -> str | None:
    """Which field of stored metadata ``data`` is over its size limit (``MAX_*`` above), and by how
    much, in words; None when none is. Called after the type checks."""
    names = data["class_names"]
    if isinstance(names, list):
        if len(names) > MAX_CLASSES:
            return f"class_names holds {len(names):,} names; at most {MAX_CLASSES:,} are accepted"
        for name in names:
            if isinstance(name, str) and len(name) > MAX_CLASS_NAME_CHARS:
                return (
                    f"class_names holds a name of {len(name):,} characters ({shown(name)}); "
                    f"a class name may have at most {MAX_CLASS_NAME_CHARS}"
                )
    for name in _NUMBER_LISTS:
        count = len(data.get(name, []))
        if count > MAX_FEATURES:
            return f"{name} holds {count:,} values; at most {MAX_FEATURES:,} are accepted"
    for name in _OBJECTS:
        items = sum(1 for _ in itertools.islice(_items_in(data.get(name, {})), MAX_OBJECT_ITEMS + 1))
        if items > MAX_OBJECT_ITEMS:
            return (
                f"{name} holds more than {MAX_OBJECT_ITEMS:,} names and values; at most "
                f"{MAX_OBJECT_ITEMS:,} are accepted"
            )
    for where, text in _free_texts(data):
        if len(text) > MAX_TEXT_CHARS:
            return (
                f"{where} is {len(text):,} characters long ({shown(text)}); a metadata text may "
                f"have at most {MAX_TEXT_CHARS:,}"
            )
    return None


def _items_in(value: Any) -> Iterator[Any]:
    """Every name and value in a JSON ``value``, at any depth (lazily: it is counted up to a limit)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _items_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from _items_in(item)
    else:
        yield value


def _free_texts(data: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(field, text) for every free text of stored metadata besides the class names (checked on
    their own) and the vocabularies (contrast, normalisation): the text fields, data_fingerprints'
    and extra's names and values at any depth. Called after the type checks."""
    for name in _TEXTS:
        if isinstance(data.get(name), str):
            yield name, data[name]
    for name in _OBJECTS:
        for key, value in data.get(name, {}).items():
            yield from _texts_in(key, name)
            yield from _texts_in(value, f"{name}.{key}")


def _texts_in(value: Any, where: str) -> Iterator[tuple[str, str]]:
    """Every text in a JSON ``value`` (object names too), with the field it sits in."""
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _texts_in(key, where)
            yield from _texts_in(item, f"{where}.{key}")
    elif isinstance(value, list):
        for item in value:
            yield from _texts_in(item, where)


def checked(metadata: ModelMetadata, source: str | Path | None) -> ModelMetadata:
    """``metadata`` as a reader gets it back from a model written with it: the same round trip
    (:meth:`ModelMetadata.to_properties`, :meth:`ModelMetadata.from_properties`) and so the same
    checks. A writer calls it before writing, so that it refuses what the runtime would refuse when
    it reads the model (an object set after construction, a line break in a text info shows ...);
    the refusal names ``source``, what the metadata came from."""
    if not isinstance(metadata, ModelMetadata):
        raise InputError(source, f"model metadata must be a ModelMetadata, not {type(metadata).__name__}")
    try:
        props = metadata.to_properties()
    except (TypeError, ValueError) as exc:  # json.dumps: an object JSON cannot hold, a circular list
        raise InputError(source, f"invalid model metadata: not JSON: {exc}") from exc
    return ModelMetadata.from_properties(props, source)


# Tag bytes of the ModelProto fields that follow ir_version (producer_name, ..., graph, opset_import,
# metadata_props ...): the third byte of an ONNX file is one of them.
_ONNX_NEXT_TAGS = frozenset((0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72, 0xA2, 0xCA))


def is_onnx(path: str | Path) -> bool:
    """An exported ONNX model, by suffix or content: one test for every verb that takes a model, so
    a run's ``model.pt`` that is really ONNX goes to onnxruntime rather than to torch.load.

    A path that is there but neither a regular file nor a folder (a named pipe, a device, a socket)
    is refused (:func:`refuse_special`) rather than opened: a pipe blocked ``evaluate`` forever.

    Content: an ONNX file is a protobuf ``ModelProto`` opening with ``ir_version`` (tag byte 0x08,
    a one-byte varint) and then another ModelProto field; a torch checkpoint starts with ``PK``
    (zip) or 0x80 (pickle), so the two cannot be confused.
    """
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        return True
    refuse_special(path)  # a named pipe would block the read below forever
    if not path.is_file():
        return False  # missing, or a folder (a training run): the reader that follows says so
    try:
        with open(path, "rb") as fh:
            head = fh.read(3)
    except OSError:
        return False  # the reader that follows reports the failure
    return len(head) == 3 and head[0] == 0x08 and 0 < head[1] < 0x80 and head[2] in _ONNX_NEXT_TAGS


def refuse_special(path: str | Path) -> None:
    """Refuse a path that is there but is neither a regular file nor a folder (a named pipe, a
    device, a socket, or a link to one) in one line saying what it is, before anything opens it:
    opening a pipe blocks until something writes to it. The wording is ``cryoshift info``'s, from
    the one function (runtime/mrc.py) that every reader calls."""
    from cryoshift.runtime.mrc import refuse_special as refuse

    refuse(path)


def check_model_path(path: str | Path, folders: bool = False) -> None:
    """Refuse a model path that no verb can read, before anything opens it, in one line: nothing
    there (or a link that cannot be followed), a folder (unless ``folders``: evaluate takes a
    training run's), a named pipe, device or socket. classify and bench said "no such model file"
    for a pipe or a link to /dev/zero; evaluate blocked forever on a pipe."""
    path = Path(path)
    if not os.path.lexists(path) or (path.is_symlink() and not path.exists()):
        raise InputError(path, missing_reason(path, "no such model file"))
    if path.is_dir():
        if folders:
            return
        raise InputError(path, "is a folder, not a model file")
    refuse_special(path)


def ort_failure(exc: BaseException) -> str:
    """What onnxruntime's refusal means, in one line: a missing external-data file is named as
    such; otherwise ORT's message without its ``[ONNXRuntimeError] : 1 : FAIL :`` prefix."""
    import re

    text = " ".join(str(exc).split())
    missing = re.search(r'External data path does not exist: "?([^"]+)"?', text)
    if missing:
        return (
            f"its weights live in an external data file, {missing.group(1)}, which is missing; keep "
            "that file next to the .onnx (or export again)"
        )
    if "external data" in text.lower():
        where = re.search(r"initializer: ([^.\s]+)", text)
        tensor = f" (tensor {where.group(1)})" if where else ""
        return f"its external data file cannot be used{tensor}: {text.split('Error:')[-1].strip()}"
    ir = re.search(r"Unsupported model IR version: (\d+), max supported IR version: (\d+)", text)
    if ir:  # ORT's C++ text named a header file; the remedy is what the user needs
        return (
            f"the model is ONNX IR version {ir.group(1)}, newer than this onnxruntime reads "
            f"({ir.group(2)}): upgrade onnxruntime, or export with an older onnx"
        )
    opset = re.search(r"Opset (\d+) is under development.*?domain (\S+) is till opset (\d+)", text)
    if opset:
        return (
            f"the model needs opset {opset.group(1)} of {opset.group(2)}, newer than this onnxruntime "
            f"supports ({opset.group(3)}): upgrade onnxruntime, or export it again with `cryoshift export`"
        )
    text = re.sub(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*", "", text)
    if len(text) > 400:  # one line, but with its end: ORT says what failed last (a Reshape's shapes)
        text = f"{text[:250]} ... {text[-140:]}"
    return text or type(exc).__name__


def read_onnx_metadata(path: str | Path) -> ModelMetadata:
    """Metadata of an exported ONNX model, read with onnxruntime (no onnx package needed)."""
    return read_onnx_model(path)[0]


class OnnxModel(NamedTuple):
    """What one read of an exported ONNX file tells (:func:`read_onnx_model`)."""

    metadata: ModelMetadata
    outputs: set[str]  # graph output names: 'features' is optional in the model contract
    input_shape: list[Any]  # of the input; a dim that is not fixed is a name or None


def read_onnx_model(path: str | Path) -> OnnxModel:
    """Metadata, graph output names and input shape of an exported ONNX model, from one read (a
    driver refuses ``--features`` without running the model; a backend refuses a fixed batch size
    before it builds its own session, which for TensorRT takes minutes)."""
    path = Path(path)
    sess = _cpu_session(path)
    _refuse_duplicate_keys(path)  # before the map, in which onnxruntime kept the last of each
    meta = ModelMetadata.from_properties(sess.get_modelmeta().custom_metadata_map, path)
    _check_graph(sess, meta, path)
    shape = next(list(i.shape) for i in sess.get_inputs() if i.name == INPUT_NAME)
    return OnnxModel(meta, {o.name for o in sess.get_outputs()}, shape)


def _cpu_session(path: Path) -> Any:
    """A CPU onnxruntime session of ``path``, for reading it (not for classifying)."""
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - depends on the install
        from cryoshift.runtime.errors import MissingExtraError

        raise MissingExtraError("cpu", "reading an ONNX model", exc) from exc
    refuse_special(path)  # "no such file" was the answer for a named pipe
    if not path.is_file():
        raise InputError(path, missing_reason(path))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own exception types for corrupt files
        if is_checkpoint(path):  # "Protobuf parsing failed" said nothing to a user who gave model.pt
            raise InputError(
                path,
                "is a PyTorch checkpoint, not an exported model: run `cryoshift export "
                f"{path} -o DIR` and give DIR/model.onnx",
            ) from exc
        raise InputError(path, f"not a readable ONNX model: {ort_failure(exc)}") from exc


CHECKPOINT_SUFFIXES = (".pt", ".pth")  # training's checkpoints (an ONNX model under .pt is read as ONNX)


def is_checkpoint(path: Path) -> bool:
    """Whether ``path`` looks like a torch.save file: its suffix, or a zip archive holding a
    ``data.pkl`` (the archive's names are listed; nothing is unpickled)."""
    import zipfile

    if path.suffix.lower() in CHECKPOINT_SUFFIXES:
        return True
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/data.pkl") or name == "data.pkl" for name in archive.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def _check_graph(sess: Any, meta: ModelMetadata, path: Path) -> None:
    """The graph must keep the model contract its metadata describes (names, classes, box)."""
    outputs = {o.name: o.shape for o in sess.get_outputs()}
    inputs = {i.name: i.shape for i in sess.get_inputs()}
    if INPUT_NAME not in inputs or LOGITS not in outputs:  # 'features' is optional (no shift score)
        raise InputError(
            path,
            f"graph does not follow the cryoshift model contract (input '{INPUT_NAME}', "
            f"output '{LOGITS}'); has inputs {sorted(inputs)}, outputs {sorted(outputs)}",
        )
    if len(inputs) > 1:  # refused at load, on every path (it failed at the first batch, -o made)
        names = ", ".join(repr(name) for name in inputs)
        raise InputError(
            path,
            f"graph has {len(inputs)} inputs ({names}); a cryoshift model has one, {INPUT_NAME!r} "
            "(see the model contract): re-export with `cryoshift export`",
        )
    arg = next(i for i in sess.get_inputs() if i.name == INPUT_NAME)
    if not arg.shape and not _input_shape_declared(path):  # onnxruntime says rank 0 for both
        raise InputError(
            path,
            f"input '{INPUT_NAME}' must be float32 (batch, 1, D, H, W); the graph does not declare "
            "its shape (export it again with the input shape)",
        )
    if len(arg.shape) != 5 or arg.type != "tensor(float)":
        raise InputError(
            path,
            f"input '{INPUT_NAME}' must be float32 (batch, 1, D, H, W); the graph has "
            f"{arg.type} of rank {len(arg.shape)}",
        )
    k = outputs[LOGITS][-1] if outputs[LOGITS] else None
    if isinstance(k, int) and k != meta.num_classes:
        raise InputError(path, f"graph gives {k} logits but the metadata names {meta.num_classes} classes")
    _check_features(outputs.get(FEATURES), meta, path)
    spatial = list(inputs[INPUT_NAME])[2:]
    if any(isinstance(d, int) and d != meta.box_size for d in spatial):
        raise InputError(path, f"graph takes boxes of {spatial} but the metadata says {meta.box_size}^3")


def _check_features(shape: list[Any] | None, meta: ModelMetadata, path: Path) -> None:
    """A ``features`` output whose width differs from the stored feature reference gives a NaN
    shift score on every row: refused at load, like logits that do not fit the class names.
    A width the graph leaves symbolic is checked on the first batch (:func:`check_feature_width`)."""
    width = shape[-1] if shape else None
    if isinstance(width, int):
        check_feature_width(width, meta, path)


def check_feature_width(width: int, meta: ModelMetadata, path: str | Path) -> None:
    """Refuse features of ``width`` that the metadata's feature_mean (when it has one) does not fit."""
    if meta.feature_mean and width != len(meta.feature_mean):
        raise InputError(
            path,
            f"graph gives {width} features but the metadata's feature_mean has {len(meta.feature_mean)} "
            "values (shift scores would all be NaN); export the model again",
        )


# Reading a model's protobuf fields from the file, seeking past what is not wanted (a graph's
# weights): onnxruntime's custom_metadata_map keeps the last of two equal keys and its input shape
# says rank 0 for a shape the graph does not declare, so the runtime reads those two facts itself.
# The onnx package would do it but is not a runtime dependency (only the 'train' extra has it).
# Field numbers (onnx.proto3): ModelProto.graph 7, metadata_props 14; StringStringEntryProto.key 1;
# GraphProto.input 11; ValueInfoProto.name 1, type 2; TypeProto.tensor_type 1; Tensor.shape 2.
_GRAPH, _METADATA_PROPS, _GRAPH_INPUT = 7, 14, 11
_LONGEST_KEY = len(PREFIX) + max(len(f.name) for f in dataclasses.fields(ModelMetadata))


def _read_varint(fh: Any) -> int:
    result = shift = 0
    while True:
        byte = fh.read(1)
        if not byte:
            raise ValueError("the file ends inside a field")
        result |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return result
        shift += 7
        if shift > 63:
            raise ValueError("a varint longer than 10 bytes")


def _skip(fh: Any, number: int, wire: int) -> None:
    """Move past the payload of a field that is not length-delimited (a group: to its end)."""
    if wire == 0:
        _read_varint(fh)
    elif wire in (1, 5):
        fh.seek(8 if wire == 1 else 4, os.SEEK_CUR)
    elif wire == 3:
        while True:
            key = _read_varint(fh)
            if key & 7 == 4:
                if key >> 3 != number:
                    raise ValueError("a group closed by another field")
                return
            _skip_field(fh, key >> 3, key & 7)
    else:
        raise ValueError(f"protobuf wire type {wire}")


def _skip_field(fh: Any, number: int, wire: int) -> None:
    if wire == 2:
        fh.seek(_read_varint(fh), os.SEEK_CUR)
    else:
        _skip(fh, number, wire)


def _length_fields(fh: Any, end: int) -> Iterator[tuple[int, int, int]]:
    """(field number, payload offset, payload length) of the length-delimited fields of the message
    that runs from the file position to ``end``; the others are skipped, and so is every payload
    that the loop body leaves unread."""
    while fh.tell() < end:
        key = _read_varint(fh)
        number, wire = key >> 3, key & 7
        if wire != 2:
            _skip(fh, number, wire)
            continue
        length = _read_varint(fh)
        start = fh.tell()
        if start + length > end:
            raise ValueError("a field runs past the end of its message")
        yield number, start, length
        fh.seek(start + length)


def _metadata_keys(fh: Any, size: int) -> Iterator[str | None]:
    """The key of every metadata_props entry (None for a key longer than any cryoshift field's)."""
    for number, start, length in _length_fields(fh, size):
        if number != _METADATA_PROPS:
            continue
        key: str | None = ""
        for field_number, field_start, field_length in _length_fields(fh, start + length):
            if field_number == 1:  # the last key field is the key, as protobuf reads it
                fh.seek(field_start)
                raw = fh.read(field_length) if field_length <= _LONGEST_KEY else None
                key = None if raw is None else raw.decode("utf-8", "replace")
        yield key


def _refuse_duplicate_keys(path: Path) -> None:
    """Refuse a model that names one cryoshift metadata field twice. onnx.checker rejects such a
    file; onnxruntime keeps the last value, so a model whose second ``cryoshift.class_names``
    listed the classes in another order was used with those names, silently."""
    from collections import Counter

    try:
        with open(path, "rb") as fh:
            keys = Counter(k for k in _metadata_keys(fh, os.fstat(fh.fileno()).st_size) if k)
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot read the model's metadata_props: {exc}") from exc
    twice = sorted(k for k, n in keys.items() if n > 1 and k.startswith(PREFIX))
    if twice:
        shown = ", ".join(f"{k} ({keys[k]} times)" for k in twice)
        raise InputError(
            path,
            f"metadata names a field more than once: {shown}; onnxruntime would use the last one "
            "unchecked (onnx.checker refuses such a file): keep one of each",
        )


def _input_shape_declared(path: Path) -> bool:
    """Whether the graph declares a shape for its input ``subtomograms`` (a scalar's is declared,
    with no dimension); True when the file cannot be read that far (the caller's message stands)."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            for number, start, length in _length_fields(fh, size):
                if number == _GRAPH:
                    return _graph_input_declared(fh, start + length)
    except (OSError, ValueError):
        pass
    return True


def _graph_input_declared(fh: Any, end: int) -> bool:
    for number, start, length in _length_fields(fh, end):
        if number != _GRAPH_INPUT or length > 1 << 20:
            continue
        fh.seek(start)
        value = fh.read(length)
        if _name_of(value) == INPUT_NAME:
            return _has_shape(value)
    return True


def _message_fields(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(field number, payload) of the length-delimited fields of a small message in memory."""
    import io

    buffer = io.BytesIO(data)
    for number, start, length in _length_fields(buffer, len(data)):
        yield number, data[start : start + length]


def _name_of(value_info: bytes) -> str:
    names = [v for n, v in _message_fields(value_info) if n == 1]
    return names[-1].decode("utf-8", "replace") if names else ""


def _has_shape(value_info: bytes) -> bool:
    for number, type_proto in _message_fields(value_info):
        if number == 2:
            for tn, tensor in _message_fields(type_proto):
                if tn == 1 and any(n == 2 for n, _ in _message_fields(tensor)):
                    return True
    return False
