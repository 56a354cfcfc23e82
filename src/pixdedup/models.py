"""The typed records that flow between the pipeline stages.

    ImageRef --extract--> ImageRecord --candidates--> pairs --verify--> Edge
    Edge --group--> Group (with the best member chosen by select) --report--> rows

Records are plain dataclasses so that every stage can be tested alone, pickled to a
worker process and (later) stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from .features.faces import Face


def _window_count() -> int:
    from .features.hashes import WINDOW_COUNT

    return WINDOW_COUNT


@dataclass(frozen=True, slots=True)
class ImageRef:
    """One input object, as a source lists it (no bytes read yet)."""

    uri: str
    """Where to read it: a local path (later: a cloud URL)."""
    rel_path: str
    """Path relative to the collection root, '/'-separated; the output layout uses it."""
    size: int
    mtime: float
    etag: str | None = None
    """Cloud stores: the object's ETag (identity for incremental runs)."""
    md5: str | None = None
    """Cloud stores: the content MD5 the store reports (hex), when it has one: byte
    copies are recognised from it without downloading them."""


class RecordStatus(str, Enum):
    OK = "ok"
    ERROR = "error"
    SKIPPED = "skipped"


class ImageStatus(str, Enum):
    """The status column of the report (the seed's vocabulary)."""

    BEST = "Best"
    DUPLICATE = "Duplicate"
    UNIQUE = "Unique"
    ERROR = "Error"
    SKIPPED = "Skipped"
    NO_FACE = "NO_FACE_DETECTED"
    """Faces mode: a readable image without a face (and not a copy of another image)."""


@dataclass(frozen=True, slots=True)
class ColorSignature:
    histogram: np.ndarray
    """Hue x saturation histogram of the chromatic pixels (float32, sums to 1 or all 0)."""
    grey_fraction: float
    """Fraction of pixels with (almost) no saturation; 1.0 for a greyscale image."""
    colorfulness: float
    """Hasler-Suesstrunk colourfulness of the working image."""
    dominant_colors: tuple[str, ...]
    """Up to three '#rrggbb' colours, most frequent first."""


@dataclass(frozen=True, slots=True)
class QualityMetrics:
    width: int
    height: int
    effective_pixels: int
    """Pixels of the original excluding uniform borders (a padded copy gains nothing)."""
    bytes: int
    bits_per_pixel: float
    jpeg_quality: int | None
    """Estimated from the quantisation tables (JPEG only)."""
    lossless: bool
    bit_depth: int
    sharpness: float
    """Log variance of the Laplacian of the working image (higher = sharper)."""
    noise: float
    """Estimated noise sigma of the working image, in grey levels."""
    clipped_fraction: float
    """Fraction of pixels at pure black or pure white (exposure)."""
    colorfulness: float
    has_metadata: bool
    """EXIF/XMP/ICC present."""
    jpeg_primary_quality: int | None = None
    """A JPEG re-saved at a higher quality: the lower quality its coefficients still
    carry from the earlier save (``features.jpeg``; ``selection`` uses it)."""
    codec_quality: int | None = None
    """A lossy WebP or HEIC file: the quality it was saved with (``features.codecs``)."""
    lossless_file: bool = False
    """The file's own coding is lossless (PNG, TIFF, lossless WebP...), whatever its
    pixels went through before: ``lossless`` is False for one made from a JPEG."""


@dataclass(slots=True)
class ImageRecord:
    """Everything extracted from one image's single decode."""

    ref: ImageRef
    status: RecordStatus
    error: str | None = None
    content_hash: str | None = None
    format: str | None = None
    width: int = 0
    height: int = 0
    hashes: dict[str, int] = field(default_factory=dict)
    oriented_hashes: tuple[int, ...] = ()
    """The DCT hash of the image mirrored and turned, in ``features.hashes.ORIENTATIONS``
    order (near and similar modes): the orientation search and verify use them."""
    window_hashes: tuple[int, ...] = ()
    """DCT hashes of the sub-windows (``features.hashes.WINDOW_LAYOUT``: 90% of the frame
    at 3x3 positions, 80% at 5x5): a cropped copy's full-frame hash is close to one of
    its original's window hashes."""
    window_checks: tuple[int, ...] = ()
    """Wavelet hashes of the same windows (``features.hashes.window_check_hashes``):
    a window hit is a candidate only where these agree too."""
    color: ColorSignature | None = None
    quality: QualityMetrics | None = None
    quality_score: float | None = None
    thumbnail: bytes | None = None
    """A small JPEG (longest side ``thumbnail_size``) from the same decode; local
    verification and reports use it, so the original is never read twice."""
    model_input: np.ndarray | None = None
    """Similar mode only, in flight: the embedding model's uint8 RGB input square, made
    from the same decode; the scan hands it to the embedder, it is never stored."""
    note: str | None = None
    """A readable image: what was left out and why (a degenerate image gets no
    perceptual hashes: ``extract.near_search_note``); the report's Note column."""
    faces: tuple[Face, ...] | None = None
    """Faces mode only, in flight: the faces found in the same decode (None: not
    looked for, or the face stage failed: ``face_error``); the scan stores them in the
    vectors table, never in the record."""
    face_error: str | None = None
    face_seconds: float = 0.0
    """Faces mode, in flight: the time the face stage took on this image."""
    requests: dict[str, Any] | None = None
    """In flight, from a worker that read the image from a bucket itself: its requests
    (``RequestStats.drain``), added to the scan's on the driver."""

    @property
    def ok(self) -> bool:
        return self.status is RecordStatus.OK


class RecordLookup(Protocol):
    """Records by index: a list, a dict or the store-backed collection view."""

    def __getitem__(self, index: int, /) -> ImageRecord: ...


@dataclass(frozen=True, slots=True)
class Evidence:
    """Why two images were judged duplicates (or how close they are)."""

    stage: str
    """Which stage decided: 'exact', 'hash' (perceptual hash + pixel check), 'local'
    (keypoints + RANSAC alignment) or, in similar mode, 'embedding' (an embedding
    candidate confirmed by keypoints + RANSAC, mirrored copies and colour filters
    included), in faces mode 'face' (the same person by face distance); of a rejected
    pair also 'color', 'moment' (aligned, but content moved:
    video or burst frames, a stereo pair), 'signatures' (near mode: no candidate pair
    joins the two and their stored hashes are not near, ``modes.near.Reach``),
    'not-duplicate' (the user's decision) or 'error'."""
    hash_distance: int | None = None
    """Smallest Hamming distance over the hash kinds (of 64 bits)."""
    color_correlation: float | None = None
    similarity: float | None = None
    """Pixel similarity of the aligned pair, 0..1 (1.0 for exact copies)."""
    inliers: int | None = None
    transform: str | None = None
    embedding_similarity: float | None = None
    """Similar mode: cosine similarity of the two images' embeddings."""
    face_distance: float | None = None
    """Faces mode: distance of the two images' faces (stage 'face': within the model's
    threshold)."""
    error: str | None = None
    """A pair that could not be verified (stage 'error'): the exception, in one line.
    Such a pair is never joined; report.json counts the reasons."""


@dataclass(frozen=True, slots=True)
class Edge:
    a: int
    b: int
    evidence: Evidence


@dataclass(slots=True)
class Group:
    id: int
    best: int
    members: list[int]
    """Image positions (readable images in relative-path order), best first."""
    evidence: dict[int, Evidence] = field(default_factory=dict)
    """For each member other than the best: the evidence against the best."""

    @property
    def size(self) -> int:
        return len(self.members)


@dataclass(frozen=True, slots=True)
class ImageResult:
    """One row of the report: an input image and its fate."""

    path: str
    status: ImageStatus
    group_id: int | None
    group_size: int
    quality_score: float | None
    best_path: str | None
    evidence: Evidence | None
    uri: str
    size: int
    width: int | None = None
    height: int | None = None
    format: str | None = None
    content_hash: str | None = None
    dominant_colors: str | None = None
    error: str | None = None
    avg_color_correlation: float | None = None
    output_path: str | None = None
    note: str | None = None
    face_count: int | None = None
    """Faces mode: faces found in the image (None: not looked for)."""
    face_box: str | None = None
    """Faces mode: each face's box ``x0,y0,x1,y1`` in the image's pixels, largest first."""
    face_distance: float | None = None
    """Faces mode: distance of this image's face to the group's best face."""
    person_id: int | None = None
    """Faces mode: the person shown (a group's id; other images with a face get their own)."""


@dataclass(slots=True)
class ScanSummary:
    images: int = 0
    ok: int = 0
    errors: int = 0
    skipped: int = 0
    groups: int = 0
    duplicates: int = 0
    unique: int = 0
    bytes_freeable: int = 0
    extracted: int = 0
    """Images decoded in this run (the others came from the feature store)."""
    reused: int = 0
    removed: int = 0
    """Store rows dropped because their file is gone."""
    retries: int = 0
    """Cloud requests retried (throttling, timeouts, dropped connections)."""
    bytes_downloaded: int = 0
    embedded: int = 0
    """Similar mode: images whose embedding this run computed (the rest were stored)."""
    pairs_verified: int = 0
    """Candidate pairs verified in this run."""
    pairs_reused: int = 0
    """Candidate pairs answered from a remembered verdict instead of verified: one an
    earlier run stored (both images unchanged), or this run's own for a pair asked
    again."""
    faces: int = 0
    """Faces mode: faces found in the readable images."""
    no_face: int = 0
    """Faces mode: readable images in which no face was found (NO_FACE_DETECTED)."""
    persons: int = 0
    """Faces mode: distinct persons (groups with a face, and the other images with one)."""
    face_seconds: float = 0.0
    """Faces mode: CPU seconds of face detection and embedding in this run (all workers)."""
    face_failures: int = 0
    """Faces mode: images whose face stage failed (tried again on the next run)."""
    possible_same: int = 0
    """Faces mode: pairs just above the threshold, reported for review, not merged."""


class Problems:
    """Failures that the run turned into data instead of stopping: for each stage
    ('verify', 'keeper', 'thumbnail', 'embedding'), how often each reason
    occurred.  report.json lists them under "problems"."""

    MAX_REASONS = 50
    """Distinct reasons kept per stage (the rest are counted as 'other')."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, int]] = {}

    def add(self, stage: str, reason: str, count: int = 1) -> None:
        reasons = self.counts.setdefault(stage, {})
        if reason not in reasons and len(reasons) >= self.MAX_REASONS:
            reason = "other"
        reasons[reason] = reasons.get(reason, 0) + count

    def total(self, stage: str | None = None) -> int:
        stages = [stage] if stage else list(self.counts)
        return sum(sum(self.counts.get(s, {}).values()) for s in stages)

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {s: dict(sorted(r.items(), key=lambda kv: -kv[1])) for s, r in self.counts.items()}


def describe_exception(exc: BaseException) -> str:
    """One line for a report: the exception's type and the first line of its text."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


@dataclass(slots=True)
class ScanResult:
    results: list[ImageResult]
    """Every image, by path (empty when the caller asked not to collect them)."""
    groups: list[Group]
    """Members are positions of the readable images in relative-path order."""
    summary: ScanSummary
    timings: dict[str, float]
    output_dir: str | None
    report_paths: dict[str, str] = field(default_factory=dict)
    problems: Problems = field(default_factory=Problems)
    engine: dict[str, Any] = field(default_factory=dict)
    """Where the work ran (``Engine.describe``): nodes, workers, items per node."""


@dataclass(frozen=True, slots=True)
class DecodedImage:
    pixels: np.ndarray
    """uint8 RGB array, oriented; longest side >= the requested working size when the
    original is at least that large (JPEG DCT scaling keeps it close to it)."""
    width: int
    """Width of the original image, after EXIF orientation."""
    height: int
    format: str
    bit_depth: int
    jpeg_quality: int | None
    has_metadata: bool
    lossless: bool
    jpeg_primary_quality: int | None = None
    """A JPEG re-saved at a higher quality: the lower quality its coefficients still
    carry from the earlier save; a lossless file: the quality of the JPEG it was decoded
    from (``features.jpeg``, read by ``decode``).  Full-size decodes only (JPEGs up to twice the working
    size), else None."""
    codec_quality: int | None = None
    """A lossy WebP or HEIC file: the quality it was saved with (``features.codecs``)."""


@dataclass(frozen=True, slots=True)
class Signatures:
    """What the candidate search needs, as arrays; ``ids[k]`` is the caller's id of row k."""

    ids: np.ndarray
    hashes: dict[str, np.ndarray]
    """Hash kind -> uint64 array aligned with ``ids``."""
    windows: np.ndarray
    """uint64 window hashes of all rows, concatenated."""
    window_owner: np.ndarray
    """Row (position in ``ids``) of each window hash."""
    oriented: np.ndarray = field(default_factory=lambda: np.zeros((0, 7), np.uint64))
    """N x 7 uint64: each row's ``ORIENTED_HASH_KIND`` hash mirrored and turned (in
    ``ORIENTATIONS`` order), or 0 rows where none are known (orientations not searched)."""
    check: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    """N uint64: each row's ``features.hashes.CHECK_HASH_KIND`` hash, which confirms a
    hit of the searched hashes (``candidates.corroborated``); empty where not every row
    has one (then hits are not confirmed)."""
    window_checks: np.ndarray = field(default_factory=lambda: np.zeros((0, _window_count()), np.uint64))
    """N x ``WINDOW_COUNT`` uint64: the check hashes of each row's windows, in the order of its window
    hashes; 0 rows where not every row has them."""

    hue: np.ndarray = field(default_factory=lambda: np.zeros((0, 18), np.float16))
    """N x 18 float16: each row's hue distribution (``features.color.hue_row``; zero
    for greyscale), for the colour gate before verification; 0 rows where not every
    row has one (then the gate waits for verification)."""

    @property
    def checked(self) -> bool:
        """Whether search hits can be confirmed by the check hashes (of the full frames
        and, where there are windows, of the windows)."""
        return len(self.check) == len(self.ids) > 0 and (
            not len(self.windows) or len(self.window_checks) == len(self.ids))

    @classmethod
    def from_records(cls, records: Sequence[ImageRecord], hash_kinds: Sequence[str]) -> Signatures:
        ok = [i for i, r in enumerate(records) if r.ok and r.hashes]
        hashes = {k: np.fromiter((records[i].hashes.get(k, 0) for i in ok), np.uint64, len(ok))
                  for k in hash_kinds}
        win: list[int] = []
        owner: list[int] = []
        for pos, i in enumerate(ok):
            wh = records[i].window_hashes
            win.extend(wh)
            owner.extend([pos] * len(wh))
        oriented = np.zeros((0, 7), np.uint64)
        if ok and all(len(records[i].oriented_hashes) == 7 for i in ok):
            oriented = np.array([records[i].oriented_hashes for i in ok], dtype=np.uint64)
        from .features.hashes import CHECK_HASH_KIND
        check = np.zeros(0, np.uint64)
        if ok and all(CHECK_HASH_KIND in records[i].hashes for i in ok):
            check = np.array([records[i].hashes[CHECK_HASH_KIND] for i in ok], dtype=np.uint64)
        count = _window_count()
        window_checks = np.zeros((0, count), np.uint64)
        if ok and all(len(records[i].window_checks) == count
                      and len(records[i].window_hashes) == count for i in ok):
            window_checks = np.array([records[i].window_checks for i in ok], dtype=np.uint64)
        from .features.color import hue_row
        colors = [c for i in ok if (c := records[i].color) is not None]
        hue = np.array([hue_row(c) for c in colors], dtype=np.float16) \
            if ok and len(colors) == len(ok) else np.zeros((0, 18), np.float16)
        return cls(np.asarray(ok, dtype=np.int64), hashes, np.asarray(win, dtype=np.uint64),
                   np.asarray(owner, dtype=np.int64), oriented, check, window_checks, hue)
