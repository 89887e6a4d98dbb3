"""fp32 ONNX -> fp16 ONNX for GPUs (and for TensorRT 11, whose networks are strongly typed).

The converter is onnxconverter-common's float16 pass with ``keep_io_types=True``: the runtime
still feeds float32 raw voxels and reads float32 logits/features. The per-subtomogram
normalisation (every node between the input and the first convolution: its sums of squares
overflow fp16 on raw intensities) and softmax-sensitive or normalisation ops stay in fp32.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from cryoshift.export.formats import artefact_name
from cryoshift.export.job import ExportJob
from cryoshift.export.parity import ParityError, check_onnx_parity
from cryoshift.export.result import ExportResult
from cryoshift.runtime.metadata import ModelMetadata

# Ops whose range or accumulation makes fp16 risky; kept in fp32 on top of the converter's defaults.
FP32_OPS = (
    "Softmax",
    "LogSoftmax",
    "Exp",
    "Log",
    "Pow",
    "Sqrt",
    "Reciprocal",
    "ReduceSumSquare",
    "ReduceL2",
    "InstanceNormalization",
    "LayerNormalization",
    "GroupNormalization",
    "BatchNormalization",
)
# Where the network proper starts: its first convolution. Matrix products before it belong to the
# input's preprocessing (the pose normalisation of training/backbones/canonical.py blurs and
# diagonalises with MatMul), which must stay fp32 and unquantised like the normalisation.
FIRST_COMPUTE_OPS = ("Conv", "ConvTranspose")
# onnxconverter_common's warning for each weight it rounds to fp16's range (a raw source line that
# leaked through export_checkpoint(fp16=True)); matched by its message, as warnings filters are
TRUNCATED_WARNING = r"the float32 number .* will be truncated to "


def preprocessing_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes that run before the first convolution on the input's path: the in-graph
    normalisation (and pose normalisation, where the backbone has it)."""
    graph = model.graph
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    seen: set[str] = set()
    frontier = [graph.input[0].name]
    while frontier:
        tensor = frontier.pop()
        for node in consumers.get(tensor, []):
            if node.op_type in FIRST_COMPUTE_OPS or node.name in seen:
                continue
            seen.add(node.name)
            frontier.extend(node.output)
    return [n.name for n in graph.node if n.name in seen]


def _name_nodes(model: onnx.ModelProto) -> None:
    # node_block_list works by name; unnamed nodes (legal in ONNX) get a unique one.
    used = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)


def _isolate_outputs(model: onnx.ModelProto) -> None:
    """Route each graph output through an Identity node. The converter mistypes a tensor that is
    both a graph output and consumed inside the graph (``features`` feeds the head), so the
    internal tensor gets its own name."""
    graph = model.graph
    for out in graph.output:
        inner = f"{out.name}__internal"
        for node in graph.node:
            node.output[:] = [inner if v == out.name else v for v in node.output]
            node.input[:] = [inner if v == out.name else v for v in node.input]
        graph.node.append(helper.make_node("Identity", [inner], [out.name], name=f"output_{out.name}"))


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """The fp16 graph: float32 input/outputs, fp32 normalisation and sensitive ops.

    The normalisation prefix is cut off, the body (first convolution to the outputs) converted on
    its own and the two joined again: the converter's ``node_block_list`` mistypes chains of
    blocked nodes, while a whole fp32 prefix feeding a converted body with fp32 inputs is simple.
    """
    from onnxconverter_common import float16

    model = onnx.ModelProto.FromString(model.SerializeToString())
    _name_nodes(model)
    graph = model.graph
    pre = set(preprocessing_nodes(model))
    pre_nodes = [n for n in graph.node if n.name in pre]
    produced = {t for n in pre_nodes for t in n.output}
    crossing = (t for n in graph.node if n.name not in pre for t in n.input if t in produced)
    boundary = list(dict.fromkeys(crossing))
    if not boundary:
        boundary = [graph.input[0].name]
    body = onnx.utils.Extractor(model).extract_model(boundary, [o.name for o in graph.output])
    _isolate_outputs(body)
    with warnings.catch_warnings():  # only around the converter: a caller's filters stay as they were
        # weights below fp16's smallest value are rounded (a UserWarning per tensor): the parity
        # check that follows measures what that does to the logits, so the warning adds nothing
        warnings.filterwarnings("ignore", TRUNCATED_WARNING, UserWarning)
        half = float16.convert_float_to_float16(
            body,
            keep_io_types=True,
            op_block_list=[*float16.DEFAULT_OP_BLOCK_LIST, *FP32_OPS],
        )
    used = {t for n in pre_nodes for t in n.input}
    merged = helper.make_graph(
        [*pre_nodes, *half.graph.node],
        graph.name,
        list(graph.input),
        list(half.graph.output),
        initializer=[i for i in graph.initializer if i.name in used and not (pre and i.name in boundary)]
        + list(half.graph.initializer),
        value_info=[v for v in half.graph.value_info if v.name not in produced],
    )
    out = helper.make_model(merged, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    out.metadata_props.extend(model.metadata_props)
    return out


def export_fp16(
    onnx_path: str | Path,
    out_path: str | Path,
    metadata: ModelMetadata,
    parity_volumes: np.ndarray,
    reference_logits: np.ndarray,
    parity_source: str = "",
) -> ExportResult:
    """Write the fp16 ONNX next to the fp32 one and check it (ORT CPU runs fp16 graphs)."""
    from cryoshift.export.onnx import set_metadata
    from cryoshift.runtime.outfiles import write_bytes

    start = time.perf_counter()
    out_path = Path(out_path)
    half = to_fp16(onnx.load(str(onnx_path)))
    set_metadata(half, replace(metadata, precision="fp16"))
    onnx.checker.check_model(half, full_check=True)
    write_bytes(out_path, half.SerializeToString())  # a link at the name is replaced, not followed
    report, notes = None, []
    for providers in _fp16_providers():
        try:
            report = check_onnx_parity(
                out_path, parity_volumes, reference_logits, "fp16", parity_source, providers=providers
            )
            notes.append(f"checked on {providers[0]}")
            break
        except Exception as exc:  # ORT raises NotImplemented/Fail when a provider lacks an fp16 kernel
            notes.append(f"{providers[0]} cannot run it: {type(exc).__name__}")
    if report is None:
        notes.append("parity not checked: no available ONNX Runtime provider runs this fp16 graph")
    elif not report.passed:
        out_path.unlink(missing_ok=True)
        raise ParityError(out_path, report)
    return ExportResult("fp16", out_path, out_path.stat().st_size, report, time.perf_counter() - start, notes)


def _fp16_providers() -> list[list[str]]:
    """CPU first (always there); the CUDA provider as fallback where onnxruntime-gpu has it."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [
        [p, "CPUExecutionProvider"] if p != "CPUExecutionProvider" else [p]
        for p in ("CPUExecutionProvider", "CUDAExecutionProvider")
        if p in available
    ]


def build_fp16(job: ExportJob) -> list[ExportResult]:
    """The formats table's ``fp16`` builder: converts the fp32 ONNX that ``build_onnx`` wrote."""
    onnx_path, reference = job.fp32()
    job.say("converting to fp16 ONNX")
    result = export_fp16(
        onnx_path, job.out_dir / artefact_name("fp16"), job.metadata, job.volumes, reference, job.source
    )
    job.onnx_variants.append((result.path, "fp16"))
    return [result]
