"""PNG framing for the report's per-example gallery: uint8 pixels (as report.json stores them, base64) to a
``data:image/png`` URI. No image library: a PNG is a signature, an IHDR chunk, the zlib-compressed rows
(each prefixed by filter type 0) and IEND, each chunk with its CRC-32 (W3C PNG specification, 2nd ed.,
sections 5 and 11). Deterministic: zlib at a fixed level gives the same bytes for the same pixels."""

from __future__ import annotations

import base64
import struct
import zlib
from typing import Any

_COLOUR_TYPE = {1: 0, 3: 2}  # channels -> PNG colour type (greyscale, truecolour)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(pixels: bytes, height: int, width: int, channels: int) -> bytes:
    """PNG bytes of ``height`` rows of ``width`` pixels of ``channels`` (1 or 3) uint8 values, row-major."""
    if channels not in _COLOUR_TYPE:
        raise ValueError(f"a PNG needs 1 or 3 channels, not {channels}")
    if len(pixels) != height * width * channels:
        raise ValueError(f"{len(pixels)} bytes for a {height}x{width}x{channels} image")
    stride = width * channels
    raw = b"".join(b"\x00" + pixels[r * stride:(r + 1) * stride] for r in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, _COLOUR_TYPE[channels], 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b"")


def data_uri(img: dict[str, Any]) -> str:
    """``img``: {"b64": base64 of the uint8 pixels (height, width, channels), "shape": [h, w, c]}."""
    h, w, c = (int(v) for v in img["shape"])
    png = encode_png(base64.b64decode(img["b64"]), h, w, c)
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
