"""The compression a lossy WebP or HEIC file was saved with, read from its bitstream.

JPEG has ``decode.estimate_jpeg_quality`` (from its quantisation tables).  The other
lossy codecs say it in their headers, without decoding any pixel:

* WebP (VP8): the key frame header's luma AC quantiser index (0..127), read with the
  VP8 boolean decoder (RFC 6386, 9.2-9.6).  ``WEBP_QUALITY`` maps it to the quality
  libwebp was given (libwebp, and so Pillow, cwebp and most tools, set the index from
  the quality by one fixed curve; measured on the developer photos: the same index for
  the same quality on every photo).
* HEIC (HEVC): the first slice's quantisation parameter (0..51): the picture
  parameter set's ``init_qp`` plus the slice header's ``slice_qp_delta`` (ITU-T H.265,
  7.3.2-7.3.6), the slice found through the file's item locations (ISO 23008-12).
  ``HEVC_QUALITY`` maps it to the quality libheif's x265 encoder was given.

Both give a number on JPEG's 0..100 scale (the encoders' own quality scales are
modelled on it), ``None`` where the header is not understood (another layout, a
lossless or grid-only file): the caller then falls back to bits per pixel.  AVIF is
not read (its frame header needs the whole sequence header); it falls back too.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import numpy as np

WEBP_QUALITY = ((0, 100), (6, 95), (12, 90), (20, 85), (27, 80), (36, 75), (39, 70),
                (45, 60), (52, 50), (68, 30), (92, 10), (127, 0))
"""(VP8 luma AC index, libwebp quality) measured with Pillow's libwebp."""

HEVC_QUALITY = ((0, 95), (2, 90), (4, 85), (7, 80), (9, 75), (12, 70), (17, 60), (22, 50),
                (32, 30), (42, 10), (51, 0))
"""(HEVC slice QP, libheif quality) measured with pillow-heif's x265."""


def _interpolate(table: tuple[tuple[int, int], ...], x: int) -> int:
    xs, ys = zip(*table, strict=True)
    return int(round(float(np.interp(x, xs, ys))))


# -- WebP --------------------------------------------------------------------------------------


class _BoolDecoder:
    """VP8's boolean entropy decoder (RFC 6386, section 7.3)."""

    def __init__(self, data: bytes) -> None:
        if len(data) < 2:
            raise ValueError("VP8 partition too short")
        self.data, self.pos = data, 2
        self.value, self.range, self.count = (data[0] << 8) | data[1], 255, 0

    def bit(self, prob: int = 128) -> int:
        split = 1 + (((self.range - 1) * prob) >> 8)
        big = split << 8
        if self.value >= big:
            out, self.range, self.value = 1, self.range - split, self.value - big
        else:
            out, self.range = 0, split
        while self.range < 128:
            self.value, self.range = (self.value << 1) & 0xFFFF, self.range << 1
            self.count += 1
            if self.count == 8:
                self.count = 0
                if self.pos < len(self.data):
                    self.value |= self.data[self.pos]
                self.pos += 1
        return out

    def literal(self, n: int) -> int:
        v = 0
        for _ in range(n):
            v = (v << 1) | self.bit()
        return v

    def optional_signed(self, n: int) -> int:
        if not self.bit():
            return 0
        v = self.literal(n)
        return -v if self.bit() else v


def _riff_chunks(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    p = 12
    while p + 8 <= len(data):
        tag, size = data[p:p + 4], struct.unpack("<I", data[p + 4:p + 8])[0]
        yield tag, data[p + 8:p + 8 + size]
        p += 8 + size + (size & 1)


def vp8_quantizer(data: bytes) -> int | None:
    """The luma AC quantiser index of a lossy WebP's key frame, or None."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    frame = next((body for tag, body in _riff_chunks(data) if tag == b"VP8 "), None)
    if frame is None or len(frame) < 12 or frame[0] & 1 or frame[3:6] != b"\x9d\x01\x2a":
        return None  # no lossy frame, or not a key frame
    bd = _BoolDecoder(frame[10:])
    bd.literal(2)  # colour space, clamping
    if bd.bit():  # segmentation
        update_map, update_data = bd.bit(), bd.bit()
        if update_data:
            bd.bit()
            for _ in range(4):
                bd.optional_signed(7)
            for _ in range(4):
                bd.optional_signed(6)
        if update_map:
            for _ in range(3):
                if bd.bit():
                    bd.literal(8)
    bd.literal(1 + 6 + 3)  # filter type, level, sharpness
    if bd.bit() and bd.bit():  # loop filter deltas, updated
        for _ in range(8):
            bd.optional_signed(6)
    bd.literal(2)  # partitions
    return bd.literal(7)


def webp_quality(data: bytes) -> int | None:
    """The quality (0..100) a lossy WebP was saved with, or None."""
    try:
        q = vp8_quantizer(data)
    except (ValueError, IndexError, struct.error):
        return None
    return None if q is None else _interpolate(WEBP_QUALITY, q)


# -- HEIC --------------------------------------------------------------------------------------


class _Bits:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def u(self, n: int) -> int:
        v = 0
        for _ in range(n):
            byte = self.data[self.pos >> 3]
            v = (v << 1) | ((byte >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return v

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("bad exp-Golomb code")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def _rbsp(nal: bytes) -> bytes:
    """A NAL unit's payload without emulation-prevention bytes (and its 2-byte header)."""
    out, zeros = bytearray(), 0
    for x in nal[2:]:
        if zeros >= 2 and x == 3:
            zeros = 0
            continue
        out.append(x)
        zeros = zeros + 1 if x == 0 else 0
    return bytes(out)


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    p = start
    while p + 8 <= end:
        size, kind = struct.unpack(">I4s", data[p:p + 8])
        head = 8
        if size == 1:
            size, head = struct.unpack(">Q", data[p + 8:p + 16])[0], 16
        elif size == 0:
            size = end - p
        if size < head:
            return
        yield kind, p + head, min(end, p + size)
        p += size


def _child(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int]:
    for k, s, e in _boxes(data, start, end):
        if k == kind:
            return s, e
    raise ValueError(f"no {kind!r} box")


def _first_hevc_item(data: bytes) -> tuple[bytes, tuple[int, int]]:
    """(the hvcC configuration of the first HEVC-coded item, its data's first extent)."""
    ms, me = _child(data, 0, len(data), b"meta")
    ms += 4  # a full box
    s, e = _child(data, ms, me, b"iinf")
    version = data[s]
    p = s + 4 + (2 if version == 0 else 4)
    hevc: list[int] = []
    for kind, bs, _ in _boxes(data, p, e):
        if kind == b"infe" and data[bs] >= 2:
            q = bs + 4
            width = 2 if data[bs] == 2 else 4
            item = int.from_bytes(data[q:q + width], "big")
            if data[q + width + 2:q + width + 6] == b"hvc1":
                hevc.append(item)
    if not hevc:
        raise ValueError("no HEVC item")
    s, e = _child(data, ms, me, b"iprp")
    s, e = _child(data, s, e, b"ipco")
    config = next(data[bs:be] for kind, bs, be in _boxes(data, s, e) if kind == b"hvcC")
    s, e = _child(data, ms, me, b"iloc")
    version = data[s]
    p = s + 4

    def read(n: int) -> int:
        nonlocal p
        v = int.from_bytes(data[p:p + n], "big") if n else 0
        p += n
        return v

    sizes = read(1), read(1)
    offset_size, length_size, base_size = sizes[0] >> 4, sizes[0] & 15, sizes[1] >> 4
    index_size = sizes[1] & 15 if version in (1, 2) else 0
    for _ in range(read(2) if version < 2 else read(4)):
        item = read(2) if version < 2 else read(4)
        if version in (1, 2):
            read(2)  # construction method
        read(2)  # data reference
        base = read(base_size)
        extents = []
        for _ in range(read(2)):
            read(index_size)
            extents.append((base + read(offset_size), read(length_size)))
        if item == hevc[0] and extents:
            return config, extents[0]
    raise ValueError("HEVC item has no location")


def _parameter_sets(config: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    p = 23
    for _ in range(config[22]):
        kind, count = config[p] & 0x3F, int.from_bytes(config[p + 1:p + 3], "big")
        p += 3
        for _ in range(count):
            n = int.from_bytes(config[p:p + 2], "big")
            out.setdefault(kind, config[p + 2:p + 2 + n])
            p += 2 + n
    return out


def _sps(nal: bytes) -> tuple[int, int, int]:
    """(chroma format, separate colour planes, SAO enabled) of a sequence parameter set."""
    b = _Bits(_rbsp(nal))
    b.u(4)
    sub_layers = b.u(3)
    b.u(1)
    b.u(8 + 32 + 48 + 8)  # general profile, tier and level
    flags = [(b.u(1), b.u(1)) for _ in range(sub_layers)]
    if sub_layers:
        b.u(2 * (8 - sub_layers))
    for profile, level in flags:
        b.u(88 if profile else 0)
        b.u(8 if level else 0)
    b.ue()
    chroma = b.ue()
    separate = b.u(1) if chroma == 3 else 0
    b.ue()
    b.ue()
    if b.u(1):  # conformance window
        for _ in range(4):
            b.ue()
    b.ue()
    b.ue()
    b.ue()  # bit depths, log2 max POC lsb
    ordering = b.u(1)
    for _ in range(0 if ordering else sub_layers, sub_layers + 1):
        b.ue()
        b.ue()
        b.ue()
    for _ in range(6):
        b.ue()  # block sizes, transform depths
    if b.u(1) and b.u(1):
        raise ValueError("scaling lists are not read")
    b.u(1)  # AMP
    return chroma, separate, b.u(1)


def hevc_slice_qp(data: bytes) -> int | None:
    """The quantisation parameter of the first slice of a HEIC file's first HEVC
    image, or None."""
    if data[4:8] != b"ftyp":
        return None
    config, (offset, _) = _first_hevc_item(data)
    sets = _parameter_sets(config)
    chroma, separate, sao = _sps(sets[33])
    pps = _Bits(_rbsp(sets[34]))
    pps.ue()
    pps.ue()
    pps.u(1)
    output_flag = pps.u(1)
    extra_bits = pps.u(3)
    pps.u(2)
    pps.ue()
    pps.ue()
    init_qp = 26 + pps.se()
    n = int.from_bytes(data[offset:offset + 4], "big")  # length-prefixed NAL units
    nal = data[offset + 4:offset + 4 + min(n, 64)]
    kind = (nal[0] >> 1) & 0x3F
    if kind not in (19, 20):  # IDR: no picture order count or reference sets to skip
        return None
    b = _Bits(_rbsp(nal))
    if not b.u(1):  # first slice segment of the picture
        return None
    b.u(1)  # no output of prior pictures
    b.ue()
    b.u(extra_bits)
    b.ue()  # slice type
    if output_flag:
        b.u(1)
    if separate:
        b.u(2)
    if sao:
        b.u(1)
        if chroma:
            b.u(1)
    return init_qp + b.se()


def heif_quality(data: bytes) -> int | None:
    """The quality (0..100) a HEIC file was saved with, or None."""
    try:
        qp = hevc_slice_qp(data)
    except (ValueError, IndexError, KeyError, StopIteration, struct.error):
        return None
    return None if qp is None or not 0 <= qp <= 51 else _interpolate(HEVC_QUALITY, qp)


def webp_lossless(data: bytes) -> bool:
    """A WebP whose image is coded losslessly (a VP8L chunk, no VP8 one)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return False
    try:
        tags = {tag for tag, _ in _riff_chunks(data)}
    except struct.error:
        return False
    return b"VP8L" in tags and b"VP8 " not in tags


def codec_quality(fmt: str, data: bytes) -> int | None:
    """The saved quality of a lossy WebP or HEIC file (see the module docstring)."""
    if fmt == "WEBP":
        return webp_quality(data)
    if fmt == "HEIF":
        return heif_quality(data)
    return None
