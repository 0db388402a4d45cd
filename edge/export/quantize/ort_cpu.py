"""INT8 for ONNX Runtime's CPU provider (``edge quantize --target onnxruntime``).

TensorRT's explicit Q/DQ form (``edge.export.quantize.int8``: symmetric int8 activations, float weights with
Q/DQ pairs, float bias, Q/DQ only around the weighted layers) is what TensorRT fuses; ONNX Runtime's CPU
provider cannot fuse most of it on x86 and runs it slower than FP32. This target writes the form ONNX
Runtime's own graph optimizer turns into integer kernels (``OrtCpuQuantizer``), still plain QDQ of the
standard ONNX domain, so the file loads in any ``onnxruntime.InferenceSession`` with no custom ops:

* activations uint8, asymmetric, per tensor (the u8 x s8 kernels that use VNNI / AVX2 dot products);
  weights int8, symmetric, per output channel, stored quantized; bias int32 (folded into QLinearConv);
* the layers stay int8 from one to the next: besides the weighted layers, their activations, pooling,
  resizes, slices and concatenations are quantized (QLinearLeakyRelu, uint8 MaxPool/Resize, QLinearConcat
  after ONNX Runtime's fusion), so a Q/DQ pair is left only where float begins;
* the head layers (weighted layers whose output is a raw head output the decode reads) stay float: int8
  raw box offsets cost box precision (mAP50-95) and the decode reads float anyway; the decode,
  sigmoid/softmax and NMS stay float as in every target;
* the in-graph input preprocessing (uint8 -> float, channel swap, scale/offset) is folded into the first
  convolution's weights when that is exact (``fold_input_preprocessing``): the first layer then reads raw
  pixel values, quantized with scale 1 and zero point 0, which is exact for a uint8 input (a mean offset
  in front of a padded first convolution stays as one Add, and calibration sets that input's range).

Calibration, the accuracy gate and the sidecar are those of the TensorRT target (``Int8Quantizer``, whose
hooks this subclass fills); ranges are asymmetric (uint8 activations with a zero point).
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from edge.errors import MissingDependencyError, ModelError
from edge.export.quantize.int8 import Int8Quantizer, _ort_quantization, _ort_version

log = logging.getLogger(__name__)

TARGETS = ("tensorrt", "onnxruntime")

#: op types quantized besides the weighted layers: those ONNX Runtime's CPU provider runs in uint8 after its
#: QDQ fusion (QLinearLeakyRelu, QLinearConcat, QLinearAdd, QLinearAveragePool, ...) or whose Q/DQ pairs it
#: drops (MaxPool, Resize, Slice, Reshape, Transpose, ...). Relu and Clip fuse into the layer before them.
ORT_CPU_OPS = ("Conv", "Gemm", "MatMul", "LeakyRelu", "Relu", "Clip", "MaxPool", "AveragePool", "GlobalAveragePool",
               "Concat", "Resize", "Slice", "Add", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze")

#: the first onnxruntime whose quantizer takes ``TensorQuantOverrides`` (the exact scale of a raw uint8 input)
MIN_ORT_FOR_CPU_TARGET = (1, 17)

#: the folded preprocessing must reproduce the source graph's outputs within these (else it is not folded)
FOLD_TOLERANCE = {"max_box_error_px": 1e-2, "max_score_error": 1e-4}

_ELEMENTWISE = ("Mul", "Add", "Sub", "Div")


def _const_arrays(model: Any) -> Dict[str, np.ndarray]:
    from onnx import numpy_helper

    out = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    out[n.output[0]] = numpy_helper.to_array(a.t)
    return out


def _per_channel(k: np.ndarray, axis: int, rank: int) -> Optional[np.ndarray]:
    """``k`` as a vector along ``axis`` of a rank-``rank`` tensor (a scalar: one value), or None when it
    broadcasts along another axis."""
    if k.size == 1:
        return k.reshape(1).astype(np.float64)
    if k.ndim > rank:
        return None
    shape = (1,) * (rank - k.ndim) + tuple(k.shape)
    if any(d != 1 for i, d in enumerate(shape) if i != axis):
        return None
    return k.reshape(-1).astype(np.float64)


class _Chain:
    """conv_input[c] = a[c] * T[src[c]] + b[c] along the channel ``axis`` of the tensor T reached so far."""

    def __init__(self, channels: int) -> None:
        self.src = np.arange(channels)
        self.a = np.ones(channels)
        self.b = np.zeros(channels)
        self.axis = 1
        self.removed: List[Any] = []

    def take(self, node: Any, consts: Dict[str, np.ndarray]) -> Optional[str]:
        """Fold ``node`` (the producer of T) into the chain; returns its data input, or None to stop there."""
        op = node.op_type
        if op == "Transpose":
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
            if perm is None or len(perm) != 4:
                return None
            self.axis = int(perm[self.axis])
            return str(node.input[0])
        if op == "Gather":
            axis = next((int(a.i) for a in node.attribute if a.name == "axis"), 0) % 4
            idx = consts.get(node.input[1])
            if axis != self.axis or idx is None or idx.ndim != 1 or node.input[0] in consts:
                return None
            self.src = idx.astype(np.int64)[self.src]
            self.removed.append(node)
            return str(node.input[0])
        if op in _ELEMENTWISE:
            data = [i for i in node.input if i not in consts]
            const = [i for i in node.input if i in consts]
            if len(data) != 1 or len(const) != 1 or (op in ("Sub", "Div") and node.input[1] != const[0]):
                return None
            k = _per_channel(consts[const[0]], self.axis, 4)
            if k is None:
                return None
            kc = k[self.src] if k.size > 1 else np.full(len(self.src), k[0])
            if kc.size != len(self.src) or (op == "Div" and not np.all(kc)):
                return None
            if op == "Mul":
                self.a = self.a * kc
            elif op == "Div":
                self.a = self.a / kc
            elif op == "Add":
                self.b = self.b + self.a * kc
            else:
                self.b = self.b - self.a * kc
            self.removed.append(node)
            return data[0]
        return None


def _first_conv(model: Any, consts: Dict[str, np.ndarray]) -> Optional[Any]:
    for n in model.graph.node:
        if n.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul") and len(n.input) > 1 and n.input[1] in consts:
            group = next((int(a.i) for a in n.attribute if a.name == "group"), 1)
            ok = n.op_type == "Conv" and group == 1 and consts[n.input[1]].ndim == 4
            return n if ok else None
    return None


def _walk(model: Any, conv: Any, consts: Dict[str, np.ndarray]) -> Tuple[_Chain, bool]:
    """Walk up from the first convolution's input through single-consumer preprocessing nodes; returns
    the chain and whether it starts at a Cast of a uint8 graph input (the conv then reads raw pixels)."""
    from onnx import TensorProto

    producer = {o: n for n in model.graph.node for o in n.output}
    uses: Dict[str, int] = {}
    for n in model.graph.node:
        for t in n.input:
            uses[t] = uses.get(t, 0) + 1
    outputs = {o.name for o in model.graph.output}
    inputs = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
    chain = _Chain(int(consts[conv.input[1]].shape[1]))
    tensor = str(conv.input[0])
    raw_uint8 = False
    while True:
        node = producer.get(tensor)
        if node is None or uses.get(tensor, 0) != 1 or tensor in outputs:
            break
        if node.op_type == "Cast":
            raw_uint8 = inputs.get(node.input[0]) == TensorProto.UINT8
            break
        nxt = chain.take(node, consts)
        if nxt is None:
            break
        tensor = nxt
    return chain, raw_uint8


def fold_input_preprocessing(model: Any) -> Optional[Dict[str, Any]]:
    """Fold the input preprocessing in front of the first convolution (channel Gather, Mul/Div by a scale,
    Add/Sub of an offset; Cast and Transpose stay) into its weights and bias, in place.

    Exact: a channel permutation and a per-channel scale move into the weights; an offset moves into the
    bias when the convolution does not pad. When it pads, the zero border must not see the offset: it stays
    as one Add right before the convolution, divided by the scale (``x * s + b = s * (x + b / s)``), and
    only the channel swap and the scale are folded. Returns what was folded (``None`` and the model
    untouched when there is nothing to fold or it cannot be exact).
    """
    from onnx import numpy_helper

    consts = _const_arrays(model)
    conv = _first_conv(model, consts)
    if conv is None:
        return None
    chain, raw_uint8 = _walk(model, conv, consts)
    channels = len(chain.src)
    if not chain.removed or sorted(chain.src.tolist()) != list(range(channels)):
        return None
    attrs = {a.name: a for a in conv.attribute}
    pads = list(attrs["pads"].ints) if "pads" in attrs else []
    auto_pad = attrs["auto_pad"].s.decode() if "auto_pad" in attrs else "NOTSET"
    keep_offset = bool(np.any(chain.b)) and (any(pads) or auto_pad not in ("NOTSET", "VALID"))
    if keep_offset and not np.all(chain.a):
        return None
    weight = consts[conv.input[1]].astype(np.float64)
    folded = np.zeros_like(weight)
    for c in range(channels):
        folded[:, chain.src[c]] = weight[:, c] * chain.a[c]
    bias = consts[conv.input[2]].astype(np.float64) if len(conv.input) > 2 and conv.input[2] else \
        np.zeros(weight.shape[0])
    if not keep_offset:
        bias = bias + np.einsum("ochw,c->o", weight, chain.b)
    dtype = consts[conv.input[1]].dtype
    w_name, b_name = f"{conv.name}_weight_folded", f"{conv.name}_bias_folded"
    model.graph.initializer.extend([numpy_helper.from_array(folded.astype(dtype), w_name),
                                    numpy_helper.from_array(bias.astype(dtype), b_name)])
    del conv.input[1:]
    conv.input.extend([w_name, b_name])
    for node in chain.removed:  # each has one consumer: rewire it to the node's data input
        data = next(i for i in node.input if i not in consts)
        for n in model.graph.node:
            for k, t in enumerate(n.input):
                if t == node.output[0]:
                    n.input[k] = data
        model.graph.node.remove(node)
    stale = {n.output[0] for n in chain.removed}
    for vi in [v for v in model.graph.value_info if v.name in stale]:
        model.graph.value_info.remove(vi)
    if keep_offset:
        _offset_before(model, conv, chain, dtype)
    _drop_unused_initializers(model)
    return {"folded_ops": [n.op_type for n in chain.removed][::-1], "into": conv.name,
            "input_tensor": str(conv.input[0]), "offset_kept_before_conv": keep_offset,
            "raw_uint8_input": bool(raw_uint8 and not np.any(chain.b))}


def _offset_before(model: Any, conv: Any, chain: _Chain, dtype: Any) -> None:
    """Insert ``Add(x, b / a)`` (per channel, in the order of the convolution's new input) before ``conv``."""
    from onnx import helper, numpy_helper

    offset = np.zeros(len(chain.src))
    offset[chain.src] = chain.b / chain.a
    k_name, out = f"{conv.name}_input_offset_value", f"{conv.name}_input_offset"
    model.graph.initializer.append(numpy_helper.from_array(offset.reshape(1, -1, 1, 1).astype(dtype), k_name))
    add = helper.make_node("Add", [conv.input[0], k_name], [out], name=f"{conv.name}_input_offset")
    conv.input[0] = out
    index = list(model.graph.node).index(conv)
    model.graph.node.insert(index, add)


def _drop_unused_initializers(model: Any) -> None:
    used = {t for n in model.graph.node for t in n.input} | {o.name for o in model.graph.output}
    keep = [i for i in model.graph.initializer if i.name in used]
    if len(keep) != len(model.graph.initializer):
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)


def check_ort_cpu_graph(model: Any) -> None:
    """Raise ModelError unless ``model`` uses only standard ONNX ops (no custom or contrib domain) and loads
    in a plain ONNX Runtime session on CPUExecutionProvider."""
    from edge.ort import open_session

    foreign = sorted({f"{n.domain}::{n.op_type}" for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    if foreign:
        raise ModelError(f"the ONNX Runtime INT8 graph uses non-standard ops {foreign}; expected standard "
                         "QuantizeLinear/DequantizeLinear only (a custom op would need a plugin library)")
    open_session(model, threads=1, providers=["CPUExecutionProvider"])


class OrtCpuQuantizer(Int8Quantizer):
    """``Int8Quantizer`` in ONNX Runtime's CPU form (see the module docstring). Same arguments, same
    ``quantize(keep_float=..., only=...)`` for the accuracy gate: ``keep_float``/``only`` name weighted
    layers, and each layer's own activation, pooling, resize and concatenation follow it (quantized when
    every weighted layer feeding them is)."""

    def __init__(self, model: Any, batches: Sequence[np.ndarray], **kwargs: Any) -> None:
        version = tuple(int(p) for p in _ort_version().split(".")[:2] if p.isdigit())
        if len(version) == 2 and version < MIN_ORT_FOR_CPU_TARGET:
            raise MissingDependencyError(
                f"onnxruntime >= {MIN_ORT_FOR_CPU_TARGET[0]}.{MIN_ORT_FOR_CPU_TARGET[1]} (found {_ort_version()})",
                "INT8 for ONNX Runtime's CPU (--target onnxruntime)",
                "pip install -U 'onnxruntime>=1.17' on the machine that quantizes")
        self.folded: Optional[Dict[str, Any]] = None
        super().__init__(model, batches, **kwargs)
        self.head_layers = [n.name for n in self.model.graph.node if n.name in set(self.partition.weighted)
                            and any(o in set(self.partition.head_outputs) for o in n.output)]
        self._owners = _layer_owners(self.model, self.partition)
        present = {n.op_type for n in self.model.graph.node if n.name in self._owners}
        self._quant_ops = [op for op in ORT_CPU_OPS if op in present | set(self._ops)]

    # -- the hooks of Int8Quantizer --------------------------------------------------------------
    def _prepare_graph(self, work: Any) -> Any:
        from edge.export.quantize.compare import output_errors, run_outputs
        from edge.ort import import_onnx

        onnx = import_onnx()
        candidate = onnx.ModelProto()
        candidate.CopyFrom(work)
        record = fold_input_preprocessing(candidate)
        if record is None:
            return work
        samples = self.batches[:2]
        errors = output_errors(run_outputs(candidate, samples), run_outputs(work, samples))
        over = {k: v for k, v in errors.items() if k in FOLD_TOLERANCE and v > FOLD_TOLERANCE[k]}
        if over:
            log.warning("folding the input preprocessing into %s changes the outputs (%s): left unfolded",
                        record["into"], over)
            return work
        record["max_errors"] = {k: float(f"{errors[k]:.3g}") for k in FOLD_TOLERANCE}
        log.info("folded the input preprocessing (%s) into %s", ", ".join(record["folded_ops"]), record["into"])
        self.folded = record
        return candidate

    def _calibrated_ops(self) -> Sequence[str]:
        return list(self._quant_ops)

    def _static_options(self, chosen: Sequence[str]) -> Dict[str, Any]:
        q = _ort_quantization()
        layers = set(chosen) - set(self.head_layers)
        nodes = sorted(layers | {n for n, owners in self._owners.items() if owners and owners <= layers})
        return {"quant_format": q.QuantFormat.QDQ, "op_types_to_quantize": list(self._quant_ops),
                "activation_type": q.QuantType.QUInt8, "weight_type": q.QuantType.QInt8,
                "nodes_to_quantize": nodes,
                "nodes_to_exclude": [n.name for n in self.model.graph.node if n.name not in set(nodes)]}

    def calibrator_options(self) -> Dict[str, Any]:
        opts = super().calibrator_options()
        opts["symmetric"] = False  # uint8 activations with a zero point use the whole range
        return opts

    def extra_options(self) -> Dict[str, Any]:
        opts: Dict[str, Any] = {
            "ActivationSymmetric": False,
            "WeightSymmetric": True,
            "CalibTensorRangeSymmetric": False,
            "QDQOpTypePerChannelSupportToAxis": {"Conv": 0},
        }
        if self.method == "percentile":
            opts["CalibPercentile"] = float(self.percentile)  # type: ignore[arg-type]
        if self.folded and self.folded["raw_uint8_input"]:
            # raw uint8 pixels: scale 1, zero point 0 is exact (calibration could clip bright pixels)
            opts["TensorQuantOverrides"] = {self.folded["input_tensor"]: [
                {"scale": np.array(1.0, dtype=np.float32), "zero_point": np.array(0, dtype=np.uint8)}]}
        return opts

    def settings(self) -> Dict[str, Any]:
        kept = ["decode, sigmoid/softmax and NMS (everything downstream of the raw head outputs)"]
        if self.head_layers:
            kept.append(f"the head layers {self.head_layers} (their raw outputs feed the float decode)")
        kept.append("the input preprocessing: " + (
            f"folded into {self.folded['into']} ({', '.join(self.folded['folded_ops'])}), which reads "
            + ("raw uint8 pixels quantized exactly (scale 1, zero point 0)" if self.folded["raw_uint8_input"]
               else "the cast input" + (" plus a per-channel offset (one float Add; the conv pads)"
                                        if self.folded["offset_kept_before_conv"] else ""))
            if self.folded else "float, not folded (not exactly foldable)"))
        return {
            "target": "onnxruntime",
            "format": "QDQ (QuantizeLinear/DequantizeLinear, ONNX standard domain), in the form ONNX Runtime's "
                      "CPU provider fuses into QLinearConv/QLinearLeakyRelu/QLinearConcat/uint8 pooling",
            "activations": "uint8, asymmetric (zero point), per tensor",
            "weights": "int8, symmetric, " + ("per output channel" if self.per_channel else "per tensor")
                       + "; stored quantized",
            "bias": "int32 (quantized, folded into the integer convolution)",
            "per_channel": self.per_channel,
            "quantized_op_types": list(self._quant_ops),
            "kept_float": kept,
            "preprocessing_folded": self.folded,
            "method": self.method,
            "percentile": self.percentile,
            "calibrator": self.calibrator_options(),
        }


def _layer_owners(model: Any, partition: Any) -> Dict[str, Set[str]]:
    """For each non-weighted node of the body outside the preprocessing: the weighted layers whose
    outputs reach it through non-weighted nodes only (the layer its activation, pooling or resize belongs
    to; a concatenation belongs to all of its inputs' layers)."""
    weighted, pre = set(partition.weighted), set(partition.pre)
    body = set(partition.body)
    producer = {o: n for n in model.graph.node for o in n.output}
    owners: Dict[str, Set[str]] = {}
    for n in model.graph.node:  # topological order
        if n.name in weighted or n.name in pre or n.name not in body:
            continue
        found: Set[str] = set()
        for t in n.input:
            p = producer.get(t)
            if p is None:
                continue
            if p.name in weighted:
                found.add(p.name)
            else:
                found |= owners.get(p.name, set())
        owners[n.name] = found
    return owners


def quantizer_class(target: str) -> type:
    """The INT8 quantizer of a ``--target``."""
    if target not in TARGETS:
        raise ModelError(f"--target {target!r} is not one of {list(TARGETS)}")
    return OrtCpuQuantizer if target == "onnxruntime" else Int8Quantizer
