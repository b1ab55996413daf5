"""ONNX Runtime int8: static quantisation of an exported ONNX model, calibrated on training images.

Static (not dynamic) quantisation: a student is mostly convolutions, and ONNX Runtime's dynamic
quantisation covers only matrix products (MatMul/Gemm), leaving the convolutions in fp32.
Convolutions and matrix products (:data:`QUANTIZED_OPS`) are quantised; weights are int8 per
output channel, activations uint8 with ranges from min/max calibration on
``data`` training images run through the evaluation preprocessing; QDQ format (ONNX Runtime
fuses each quantize/dequantize pair into integer kernels on the CPU). The model is first
prepared with ONNX Runtime's ``quant_pre_process`` (shape inference and graph optimisation).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterable, Union

import numpy as np

from hdkd_lightning.files import publish

__all__ = ["quantize_int8", "QUANTIZED_OPS"]

#: the operators turned into int8 kernels; normalisations, softmax and element-wise work stay fp32
QUANTIZED_OPS = ["Conv", "MatMul", "Gemm"]


class _Batches:
    """ONNX Runtime's CalibrationDataReader protocol over an iterable of float32 NCHW batches."""

    def __init__(self, batches: Iterable[np.ndarray]) -> None:
        self._it = iter(batches)

    def get_next(self):
        batch = next(self._it, None)
        return None if batch is None else {"image": np.ascontiguousarray(batch, dtype=np.float32)}

    def rewind(self) -> None:  # not needed by min/max calibration (one pass)
        pass


def quantize_int8(onnx_path: Union[str, Path], output: Union[str, Path], calibration: Iterable[np.ndarray]) -> Path:
    """Write the int8 model of ``onnx_path`` to ``output`` (atomically) and return its path."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    output = Path(output)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".int8-") as work:
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
        tmp = Path(work) / "int8.onnx"
        quantize_static(str(prepared), str(tmp), _Batches(calibration), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=QUANTIZED_OPS)
        publish(tmp, output)
    return output
