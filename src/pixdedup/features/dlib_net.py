"""dlib's ResNet face descriptor run by ONNX Runtime, its weights read from dlib's own file.

dlib-bin is built without BLAS: its ResNet costs about 95 ms per face on one core, most of
a face scan.  The network is small and fixed (``dlib_face_recognition_resnet_model_v1``,
dlib's ``dnn_face_recognition_ex.cpp``), so this module reads its weights straight from
the ``.dat`` file of ``face-recognition-models`` and builds the same network as an ONNX
graph in memory (no file is written, nothing is downloaded); ONNX Runtime runs it with
the vectorised kernels of this CPU (or CUDA where it sees a GPU) on the same 150 px chips
dlib cuts.  The descriptors equal dlib's to float rounding (``tests/unit/test_faces.py``
compares them on real faces).

The architecture, innermost first, as dlib serialises it::

    input_rgb_image_sized<150>   (pixel - mean) / 256, mean = 122.782, 117.001, 104.298
    con 32 7x7 /2 -> affine -> relu -> max_pool 3x3 /2
    3 x res 32, res_down 64 + 3 x res 64, res_down 128 + 2 x res 128,
    res_down 256 + 2 x res 256, res_down 256
    avg_pool_everything -> fc 128 (no bias)

    res N      = relu(x + affine(con N 3x3(relu(affine(con N 3x3 (x))))))
    res_down N = relu(avg_pool 2x2 /2 (x) + the same block with its first con at /2)

Convolutions at stride 2 and the pools have no padding (dlib's default), stride-1
convolutions pad by 1.  Where the two sides of an addition differ in channels or size
(the skip of ``res_down`` keeps fewer channels; 8 px pool to 4, the /2 convolution to 3)
dlib adds them over their overlap and keeps the larger shape: the smaller is zero-padded
at its end.  Each affine layer follows a convolution directly and is folded into it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import PixdedupError

CHIP_SIZE = 150
CHIP_PADDING = 0.25
"""dlib's ``compute_face_descriptor`` cuts its chips with these (``get_face_chip``)."""

LEVELS = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))
"""(filters, blocks, first block halves the size) of each level, input side first."""


class DlibNetError(PixdedupError):
    """The file is not dlib's face-recognition ResNet (v1)."""


@dataclass(frozen=True, slots=True)
class Conv:
    weights: np.ndarray  # (filters, channels, rows, cols)
    bias: np.ndarray
    stride: int
    padding: int


@dataclass(frozen=True, slots=True)
class DlibResnetWeights:
    mean: tuple[float, float, float]
    convs: list[Conv]
    """In execution order, each with the affine layer after it folded in."""
    fc: np.ndarray  # (inputs, outputs): y = x @ fc


class _Reader:
    """dlib's serialisation: integers as a control byte (size | 0x80 when negative)
    and that many little-endian bytes; floats as mantissa and exponent integers;
    tensors as a version, four dimensions and raw little-endian float32."""

    def __init__(self, data: bytes, pos: int) -> None:
        self.data, self.pos = data, pos

    def int(self) -> int:
        control = self.data[self.pos]
        size = control & 0x0F
        if size == 0 or size > 8:
            raise DlibNetError(f"bad integer at byte {self.pos}")
        value = int.from_bytes(self.data[self.pos + 1:self.pos + 1 + size], "little")
        self.pos += 1 + size
        return -value if control & 0x80 else value

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        return float(np.ldexp(float(mantissa), exponent))

    def string(self) -> str:
        n = self.int()
        text = self.data[self.pos:self.pos + n].decode("ascii", "replace")
        self.pos += n
        return text

    def tensor(self) -> np.ndarray:
        if self.int() != 2:
            raise DlibNetError(f"unknown tensor version at byte {self.pos}")
        shape = tuple(self.int() for _ in range(4))
        count = int(np.prod(shape))
        end = self.pos + 4 * count
        if end > len(self.data):
            raise DlibNetError("the file ends inside a tensor")
        values = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos)
        self.pos = end
        return values.astype(np.float32).reshape(shape)


_MARKER = re.compile(rb"\x01(\x05con_4|\x05con_5|\x05con_6|\x07affine_|\x08affine_2|"
                     rb"\x04fc_2|\x04fc_3|\x15input_rgb_image_sized)")


def read_dlib_resnet(path: str) -> DlibResnetWeights:
    """The weights of ``dlib_face_recognition_resnet_model_v1.dat``, checked against the
    architecture above (raises ``DlibNetError`` for any other network)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise DlibNetError(f"cannot read {path}: {exc.strerror}") from None
    mean: tuple[float, float, float] | None = None
    raw: list[tuple[np.ndarray, int, int, int, int]] = []  # params, filters, size, stride, pad
    affines: list[np.ndarray] = []
    fc: np.ndarray | None = None
    for m in _MARKER.finditer(data):
        r = _Reader(data, m.start())
        kind = r.string()
        if kind == "input_rgb_image_sized":
            mean = (r.float(), r.float(), r.float())
            if (r.int(), r.int()) != (CHIP_SIZE, CHIP_SIZE):
                raise DlibNetError(f"{path}: the input is not {CHIP_SIZE} px")
        elif kind.startswith("con_"):
            params, filters = r.tensor(), r.int()
            rows, cols, stride_y, stride_x, pad_y, pad_x = (r.int() for _ in range(6))
            if rows != cols or stride_y != stride_x or pad_y != pad_x:
                raise DlibNetError(f"{path}: a convolution that is not square")
            raw.append((params.reshape(-1), filters, rows, stride_y, pad_y))
        elif kind.startswith("affine_"):
            affines.append(r.tensor().reshape(-1))
        elif kind.startswith("fc_"):
            outputs, inputs = r.int(), r.int()
            fc = r.tensor().reshape(-1)[:inputs * outputs].reshape(inputs, outputs)
    if mean is None or fc is None or len(raw) != len(affines):
        raise DlibNetError(f"{path} is not dlib's face-recognition ResNet")
    convs: list[Conv] = []
    channels = 3
    for (params, filters, size, stride, padding), affine in zip(raw, affines, strict=True):
        n_weights = filters * channels * size * size
        if params.size != n_weights + filters or affine.size != 2 * filters:
            raise DlibNetError(f"{path}: layer sizes do not match dlib's face ResNet")
        w = params[:n_weights].reshape(filters, channels, size, size)
        gamma, beta = affine[:filters], affine[filters:]
        convs.append(Conv(np.ascontiguousarray(w * gamma[:, None, None, None]),
                          params[n_weights:] * gamma + beta, stride, padding))
        channels = filters
    expected = 1 + sum(2 * blocks for _, blocks, _ in LEVELS)
    if len(convs) != expected or fc.shape != (channels, 128):
        raise DlibNetError(f"{path}: {len(convs)} convolutions, not dlib's face ResNet "
                           f"({expected})")
    return DlibResnetWeights(mean, convs, np.ascontiguousarray(fc))


def onnx_model(weights: DlibResnetWeights) -> Any:
    """The network as an ONNX model (opset 13): input ``x`` N x 3 x 150 x 150 float32,
    already ``(pixel - mean) / 256``; output ``y`` N x 128."""
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[Any] = []
    inits: list[Any] = []
    counter = iter(range(1_000_000))

    def name(prefix: str) -> str:
        return f"{prefix}{next(counter)}"

    def const(array: np.ndarray, prefix: str) -> str:
        n = name(prefix)
        inits.append(numpy_helper.from_array(array, n))
        return n

    def conv(x: str, c: Conv, shape: tuple[int, int, int]) -> tuple[str, tuple[int, int, int]]:
        out = name("conv")
        k = c.weights.shape[2]
        nodes.append(helper.make_node(
            "Conv", [x, const(c.weights, "w"), const(c.bias.astype(np.float32), "b")], [out],
            kernel_shape=[k, k], strides=[c.stride, c.stride], pads=[c.padding] * 4))
        side = 1 + (shape[1] + 2 * c.padding - k) // c.stride
        return out, (c.weights.shape[0], side, side)

    def relu(x: str) -> str:
        out = name("relu")
        nodes.append(helper.make_node("Relu", [x], [out]))
        return out

    def pool(op: str, x: str, shape: tuple[int, int, int], k: int
             ) -> tuple[str, tuple[int, int, int]]:
        out = name("pool")
        nodes.append(helper.make_node(op, [x], [out], kernel_shape=[k, k], strides=[2, 2]))
        side = 1 + (shape[1] - k) // 2
        return out, (shape[0], side, side)

    def pad_to(x: str, shape: tuple[int, int, int], to: tuple[int, int, int]) -> str:
        if shape == to:
            return x
        out = name("pad")
        pads = np.array([0, 0, 0, 0, 0, to[0] - shape[0], to[1] - shape[1], to[2] - shape[2]],
                        dtype=np.int64)
        nodes.append(helper.make_node("Pad", [x, const(pads, "pads")], [out]))
        return out

    shape = (3, CHIP_SIZE, CHIP_SIZE)
    convs = iter(weights.convs)
    x, shape = conv("x", next(convs), shape)
    x, shape = pool("MaxPool", relu(x), shape, 3)
    for _filters, blocks, down in LEVELS:
        for b in range(blocks):
            y, yshape = conv(x, next(convs), shape)
            y, yshape = conv(relu(y), next(convs), yshape)
            skip, sshape = pool("AveragePool", x, shape, 2) if down and b == 0 else (x, shape)
            to = (max(yshape[0], sshape[0]), max(yshape[1], sshape[1]),
                  max(yshape[2], sshape[2]))
            out = name("add")
            nodes.append(helper.make_node("Add", [pad_to(y, yshape, to),
                                                  pad_to(skip, sshape, to)], [out]))
            x, shape = relu(out), to
    pooled, flat = name("gap"), name("flat")
    nodes.append(helper.make_node("GlobalAveragePool", [x], [pooled]))
    nodes.append(helper.make_node("Flatten", [pooled], [flat]))
    nodes.append(helper.make_node("MatMul", [flat, const(weights.fc, "fc")], ["y"]))
    graph = helper.make_graph(
        nodes, "dlib_face_recognition_resnet_model_v1",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, CHIP_SIZE, CHIP_SIZE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 128])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="pixdedup")
    model.ir_version = 7
    return model


def chips_to_input(chips: list[np.ndarray], mean: tuple[float, float, float]) -> np.ndarray:
    """150 px RGB uint8 chips -> the network's N x 3 x 150 x 150 input."""
    x = (np.asarray(chips, dtype=np.float32) - np.asarray(mean, dtype=np.float32)) / 256.0
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
