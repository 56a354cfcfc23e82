"""Typed, validated configuration.  Defaults are the literals below.

Precedence, resolved here and nowhere else: defaults < config file (TOML, table
``[scan]``) < environment (``PIXDEDUP_<FIELD>``, e.g. ``PIXDEDUP_WORKERS=4``) < flags.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .engines.local import default_workers
from .errors import ConfigError
from .features.hashes import DEFAULT_HASH_KINDS, HASH_KINDS
from .selection import DEFAULT_QUALITY_TOLERANCE, KEEPER_RULES

CLUSTER_METHODS = ("components", "dbscan")
DEVICES = ("auto", "cpu", "cuda")
LINK_MODES = ("copy", "hard", "sym")


@dataclass(frozen=True, slots=True)
class ScanConfig:
    mode: str = "near"
    """'near' (default): exact + near duplicates; 'exact': byte-identical only;
    'similar': near + learned embeddings (strong crops, colour filters); 'faces': the
    same person in different photos."""
    out: str | None = None
    """Output folder; default: '<input>_deduplicated' next to the input."""
    link: str = "copy"
    dry_run: bool = False
    workers: int = field(default_factory=default_workers)
    engine: str = "local"
    """Where the work runs: 'local' (this machine's processes and threads) or 'ray' (the
    nodes of a Ray cluster)."""
    address: str | None = None
    """--engine ray: the cluster ('auto', 'HOST:6379', 'ray://HOST:10001'); None: a local
    Ray started for the scan, bound to 127.0.0.1."""
    keep: str = "quality"
    quality_tolerance: float = DEFAULT_QUALITY_TOLERANCE
    max_hamming_distance: int = 10
    max_window_distance: int = 10
    orientations: bool = True
    """Near and similar modes: also find mirrored, upside-down and 90/180/270-degree
    turned copies (their DCT hashes mirrored and turned are searched too)."""
    max_orientation_distance: int = 10
    """Radius of that search, and the most a pair's oriented DCT hashes may differ for
    verification to try that orientation (an oriented try costs a keypoint alignment)."""
    max_check_distance: int = 16
    """Near and similar modes: a hash hit (the same frame, a window, an orientation)
    becomes a candidate pair only where the wavelet hashes of the same two frames are
    within this many bits too (-1: hits are not confirmed).  On real photographs the
    DCT hash alone pairs unrelated pieces of one texture or one kind of scene ever more
    often as the collection grows; the wavelet hash of the same frames rarely agrees
    with it there, and does on copies (also cropped, bordered, turned)."""
    max_candidates_per_image: int = 8
    """Near and similar modes: each image keeps at most this many candidate pairs from
    the hash searches, the nearest by ``candidates.pair_distance`` (a pair stays when
    it is among the nearest of either image; 0: no limit, and the searches keep every
    hit within their radii, not each image's ``candidates.SEARCH_NEAREST`` nearest).
    Verification then grows linearly with the collection; the images of a large
    duplicate group are still joined through their nearest copies and checked against
    the group's best."""
    max_sure_distance: int = 2
    """Near and similar modes: which hash candidate pairs may start a group.  A pair
    within this distance (``candidates.pair_distance``: the DCT plus the wavelet check
    bits) may, and so may two images that are each other's distinct nearest (the images
    within this distance of each other counting as one); every other candidate pair is
    verified only where one of its images is already in a group, against that group's
    best (-1: every pair may start a group).  Unrelated real images that look alike
    (pieces of one texture, skies, smooth gradients) come in crowds, about equally near
    each other: verifying all their pairs made verification grow with N squared."""
    max_unpaired_margin: int = 6
    """Near mode: two images that no candidate pair joins (an image reaching a group's
    best through another member: a member checked against a new best, an image left
    out tried against a group) are verified only where some way of pairing them (the
    same frames, a window, an orientation) is within this many bits beyond the search
    radii, and their check hashes within twice as many beyond ``max_check_distance``
    (-1: always verified).  A copy lies near the group's best too; an unrelated
    look-alike that is near one member only is rejected on its hashes, and those grow
    with the collection."""
    min_color_correlation: float = 0.6
    min_pixel_similarity: float = 0.975
    """Aligned pixel similarity needed to call a pair duplicates (near cascade)."""
    max_changed_fraction: float = 0.12
    model: str = "efficientnet-lite0"
    """Similar mode: embedding model (``pixdedup models``), or onnx:PATH / torchscript:PATH."""
    min_cosine_similarity: float = 0.6
    """Similar mode: embedding cosine similarity that makes a pair a candidate (each
    candidate is then confirmed by keypoints + RANSAC)."""
    max_neighbors: int = 16
    """Similar mode: at most this many most-similar candidates per image; faces mode:
    the nearest faces searched per face."""
    device: str = "auto"
    """Similar mode: 'cuda' when torch sees a GPU (auto), else 'cpu'."""
    embed_batch_size: int = 0
    """Similar mode: images per inference batch; 0: 256 on CUDA, 32 on CPU."""
    cluster: str = "components"
    """'components': verified pairs joined, chains broken (default); 'dbscan': plain
    connected components of embedding pairs within ``eps`` cosine distance, unverified
    (DBSCAN with min_samples=1, as the tools it replaces)."""
    eps: float | None = None
    """--cluster dbscan: cosine distance (1 - similarity); default 1 - min_cosine_similarity."""
    face_detector: str = "hog"
    """Faces mode: the face detector (``pixdedup models``)."""
    face_model: str = "dlib-resnet"
    """Faces mode: the face embedder (``pixdedup models``), or onnx:PATH."""
    max_face_distance: float | None = None
    """Faces mode: face distance at or below which two faces are one person; default:
    the model's calibrated value (dlib-resnet 0.45, onnx: 0.6 cosine distance)."""
    faces: str = "largest"
    """Faces mode: 'largest' matches each image by its largest face (registration
    photos); 'all' by any of its faces."""
    min_face_size: int = 32
    """Faces mode: faces smaller than this (px, shorter side) are never merged
    automatically (reported as possible same person)."""
    working_size: int = 480
    """Longest side (px) of the working image every feature is measured on (hashes,
    colour, quality; the thumbnail is made from it).  JPEGs are decoded DCT-scaled to
    the smallest 1/2, 1/4 or 1/8 that keeps this side: at 480 the commonest camera and
    screen sizes (4000 and 4032 px wide: 1/8; 2000 and 1920 px: 1/4) decode one step
    smaller than at 512 (12 MP extraction 0.60x -> 0.72x the decode floor)."""
    thumbnail_size: int = 320
    max_megapixels: float = 200.0
    hash_kinds: tuple[str, ...] = DEFAULT_HASH_KINDS
    search_hash_kinds: tuple[str, ...] = ("phash",)
    """The full-frame hashes searched for candidate pairs (each within
    ``max_hamming_distance``); the others are computed and reported (Hash Distance)
    but not searched: on real photographs the wavelet and difference hashes match
    unrelated images with the same layout or smooth gradients so often (2.7% and 1.6%
    of all pairs of 5,569 real image tiles within 10 bits, the DCT hash 0.003%) that
    candidates would grow with N squared."""
    db: str | None = None
    """Feature store file; default: 'pixdedup.db' in the output folder."""
    reset: bool = False
    """Discard the feature store and start from scratch."""
    batch_size: int = 64
    """Records per feature-store transaction (the most a kill can lose)."""
    endpoint_url: str | None = None
    """Cloud: the service endpoint (S3-compatible stores, Azure emulators)."""
    max_connections: int = 64
    download_concurrency: int = 16
    max_requests_per_second: float = 0.0
    """Cloud: request rate limit shared by all downloads, copies and uploads (0: none)."""
    retries: int = 5
    """Cloud: retries per request on throttling (429/503), timeouts and dropped connections."""
    request_timeout: float = 60.0

    def validate(self) -> ScanConfig:
        from .engines import ENGINES
        from .modes import mode_names

        if self.mode not in mode_names():
            raise ConfigError(f"unknown mode '{self.mode}'; valid modes: {', '.join(mode_names())}")
        if self.engine not in ENGINES:
            raise ConfigError(f"unknown engine '{self.engine}'; valid engines: "
                              f"{', '.join(ENGINES.names())}")
        if self.link not in LINK_MODES:
            raise ConfigError(f"unknown link mode '{self.link}'; valid: {', '.join(LINK_MODES)}")
        KEEPER_RULES.get(self.keep)
        for kind in self.hash_kinds:
            HASH_KINDS.get(kind)
        if "phash" not in self.hash_kinds or "phash" not in self.search_hash_kinds:
            raise ConfigError("hash_kinds and search_hash_kinds must include 'phash' (the "
                              "crop and mirrored/turned searches use it)")
        if not set(self.search_hash_kinds) <= set(self.hash_kinds):
            raise ConfigError("search_hash_kinds must be among hash_kinds")
        if self.workers < 1:
            raise ConfigError("workers must be at least 1")
        if not 0 <= self.max_hamming_distance <= 32:
            raise ConfigError("max_hamming_distance must be between 0 and 32 (of 64 bits)")
        if self.max_candidates_per_image < 0:
            raise ConfigError("max_candidates_per_image must be >= 0 (0: no limit)")
        if not -1 <= self.max_sure_distance <= 128:
            raise ConfigError("max_sure_distance must be between -1 (off) and 128")
        if not -1 <= self.max_unpaired_margin <= 32:
            raise ConfigError("max_unpaired_margin must be between -1 (off) and 32")
        if not -1 <= self.max_check_distance <= 64:
            raise ConfigError("max_check_distance must be between -1 (off) and 64")
        if not 0 <= self.max_orientation_distance <= 32:
            raise ConfigError("max_orientation_distance must be between 0 and 32 (of 64 bits)")
        if not -1 <= self.max_window_distance <= 32:
            raise ConfigError("max_window_distance must be between -1 (off) and 32")
        if self.cluster not in CLUSTER_METHODS:
            raise ConfigError(f"unknown cluster method '{self.cluster}'; valid: "
                              f"{', '.join(CLUSTER_METHODS)}")
        if self.device not in DEVICES:
            raise ConfigError(f"unknown device '{self.device}'; valid: {', '.join(DEVICES)}")
        if self.eps is not None and not 0.0 <= self.eps <= 2.0:
            raise ConfigError("eps must be between 0 and 2 (cosine distance)")
        if self.cluster == "dbscan" and self.mode != "similar":
            raise ConfigError("--cluster dbscan works on embeddings: use it with --mode similar")
        if self.max_neighbors < 1 or self.embed_batch_size < 0:
            raise ConfigError("max_neighbors must be at least 1 and embed_batch_size >= 0")
        if self.mode == "similar" and not self.model.startswith(("onnx:", "torchscript:")):
            from .features.embeddings import MODELS

            MODELS.get(self.model)
        for name in ("min_cosine_similarity", "min_pixel_similarity", "max_changed_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be between 0 and 1")
        if not -1.0 <= self.min_color_correlation <= 1.0:
            raise ConfigError("min_color_correlation must be between -1 and 1")
        if self.working_size < 64 or self.thumbnail_size < 64:
            raise ConfigError("working_size and thumbnail_size must be at least 64")
        for name in ("batch_size", "max_connections", "download_concurrency"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.max_requests_per_second < 0 or self.retries < 0 or self.request_timeout <= 0:
            raise ConfigError("max_requests_per_second and retries must be >= 0, "
                              "request_timeout > 0")
        if self.mode == "faces":
            self._validate_faces()
        if self.max_megapixels <= 0:
            raise ConfigError("max_megapixels must be positive")
        return self


    def _validate_faces(self) -> None:
        from .features.faces import DETECTORS, FaceError, face_model_spec

        if self.faces not in FACE_POLICIES:
            raise ConfigError(f"unknown --faces policy '{self.faces}'; valid: "
                              f"{', '.join(FACE_POLICIES)}")
        DETECTORS.get(self.face_detector)
        try:
            face_model_spec(self.face_model)
        except FaceError as exc:
            raise ConfigError(str(exc)) from None
        if self.max_face_distance is not None and not 0.0 < self.max_face_distance <= 2.0:
            raise ConfigError("max_face_distance must be between 0 and 2")
        if self.min_face_size < 0:
            raise ConfigError("min_face_size must be >= 0")


FACE_POLICIES = ("largest", "all")

RENAMED = {"min_similarity": "min_cosine_similarity"}
"""Old setting names still read (config files, PIXDEDUP_* variables): old -> new."""


def _coerce(name: str, value: Any, kind: Any) -> Any:
    text = str(kind)
    try:
        if isinstance(value, str):
            if "bool" in text:
                low = value.strip().lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            if "tuple" in text:
                return tuple(v.strip() for v in value.split(",") if v.strip())
            if text.startswith("int"):
                return int(value)
            if text.startswith("float"):
                return float(value)
        if "tuple" in text and isinstance(value, list):
            return tuple(value)
        return value
    except ValueError:
        raise ConfigError(f"invalid value for {name}: {value!r}") from None


def load_config(
    flags: Mapping[str, Any] | None = None, config_file: str | None = None,
    env: Mapping[str, str] | None = None,
) -> ScanConfig:
    """Resolve defaults < config file < environment < flags (None flags are unset)."""
    env = os.environ if env is None else env
    types = {f.name: f.type for f in fields(ScanConfig)}
    values: dict[str, Any] = {}
    path = config_file or env.get("PIXDEDUP_CONFIG")
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        section = data.get("scan", data)
        for key, value in section.items():
            key = key.replace("-", "_")
            key = RENAMED.get(key, key)
            if key not in types:
                raise ConfigError(f"unknown setting '{key}' in {path}")
            values[key] = _coerce(key, value, types[key])
    for old, new in RENAMED.items():
        raw = env.get(f"PIXDEDUP_{old.upper()}")
        if raw:
            values[new] = _coerce(new, raw, types[new])
    for name in types:
        raw = env.get(f"PIXDEDUP_{name.upper()}")
        if raw is not None and raw != "":
            values[name] = _coerce(name, raw, types[name])
    for name, value in (flags or {}).items():
        name = RENAMED.get(name, name)
        if value is not None:
            if name not in types:
                raise ConfigError(f"unknown setting '{name}'")
            values[name] = _coerce(name, value, types[name])
    return dataclasses.replace(ScanConfig(), **values).validate()
