"""Reading and writing images with stated conversion rules.

Reading (`read_image`) always returns an ``(H, W, 3)`` array, uint8 by default:

- 8-bit RGB: as stored.
- grayscale (``L``, bilevel ``1``): replicated to three channels.
- RGBA / grayscale+alpha / palette with transparency: **composited over white**,
  ``rgb = round(c * a / 255 + 255 * (1 - a / 255))`` (holes in this harness are white too, and a
  transparent pixel then reads as "nothing there" rather than black).
- 16-bit (grayscale or RGB PNG, 16-bit TIFF grayscale): converted to 8 bits by
  ``round(v / 257)`` (65535 -> 255, exact for values that came from 8-bit data); with
  ``depth=16`` the 16-bit values are returned as uint16 instead (8-bit files are then scaled by 257).
- anything else (CMYK, float, 32-bit integer, LAB, ...) is refused with `ImageReadError`.

Pillow reads 16-bit RGB PNGs by dropping the low byte (v >> 8, not round(v / 257)), so 16-bit PNGs
are decoded here with a small numpy PNG decoder (`_decode_png16`). A truncated or unreadable file
raises `ImageReadError` with one line naming the file. No EXIF orientation is applied.

Writing (`write_png`) is deterministic: no metadata chunks, no timestamps, filter type 0 on every
row, zlib level 9. The same array always gives the same bytes with the same zlib.
"""

from __future__ import annotations

import contextlib
import struct
import zlib
from pathlib import Path

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

CONVERSION_RULES = (
    "grayscale -> RGB by replication; RGBA/LA/transparent palette -> RGB by compositing over white; "
    "16-bit -> 8-bit by round(v / 257); any other mode refused"
)


class ImageReadError(ValueError):
    """A file that is not a readable image under the stated rules (message: one line, names it)."""


def _fail(path, why: str) -> ImageReadError:
    why = " ".join(str(why).split())  # one line
    return ImageReadError(f"cannot read image {path}: {why}")


# ------------------------------------------------------------------------------------------------
# reading


def read_image(path, depth: int = 8) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 (``depth=8``) or uint16 (``depth=16``)."""
    if depth not in (8, 16):
        raise ValueError(f"depth must be 8 or 16, got {depth!r}")
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(33)
    except OSError as exc:
        raise _fail(path, exc.strerror or exc) from None
    if head.startswith(PNG_SIGNATURE) and len(head) >= 33 and head[12:16] == b"IHDR":
        bit_depth = head[24]
        if bit_depth == 16:
            arr16 = _decode_png16(path)
            return _finish16(arr16, depth)
    return _read_with_pillow(path, depth)


def _finish16(arr16: np.ndarray, depth: int) -> np.ndarray:
    """arr16: (H, W, C) uint16 with C in 1..4 -> (H, W, 3)."""
    c = arr16.shape[2]
    if c in (2, 4):  # with alpha: composite over white in 16-bit
        color = arr16[..., : c - 1].astype(np.float64)
        alpha = arr16[..., c - 1 :].astype(np.float64) / 65535.0
        color = np.floor(color * alpha + 65535.0 * (1.0 - alpha) + 0.5)
        arr16 = color.astype(np.uint16)
        c -= 1
    if c == 1:
        arr16 = np.repeat(arr16, 3, axis=2)
    if depth == 16:
        return np.ascontiguousarray(arr16)
    return to_uint8_from16(arr16)


def to_uint8_from16(arr16: np.ndarray) -> np.ndarray:
    """round(v / 257) with exact integer arithmetic (half rounds up)."""
    v = arr16.astype(np.uint32)
    return ((v * 2 + 257) // 514).astype(np.uint8)


@contextlib.contextmanager
def _pillow_errors(path: Path):
    """Pillow's and the decoders' errors while reading ``path`` as one ``ImageReadError``."""
    from PIL import UnidentifiedImageError

    try:
        yield
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise _fail(path, "not a recognised image format") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as exc:
        raise _fail(path, exc) from None


def _read_with_pillow(path: Path, depth: int) -> np.ndarray:
    from PIL import Image

    with _pillow_errors(path), Image.open(path) as im:
        im.load()
        mode = im.mode
        if mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            mode = im.mode
        if mode == "PA":
            im = im.convert("RGBA")
            mode = "RGBA"
        if mode == "1":
            im = im.convert("L")
            mode = "L"
        if mode in ("I;16", "I;16B", "I;16L"):
            arr16 = np.asarray(im, dtype=np.uint16)[..., None]
            return _finish16(arr16, depth)
        if mode not in ("L", "LA", "RGB", "RGBA"):
            raise _fail(path, f"unsupported image mode {mode!r} ({CONVERSION_RULES})")
        arr = np.asarray(im, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[..., None]
    c = arr.shape[2]
    if c in (2, 4):
        color = arr[..., : c - 1].astype(np.uint32)
        alpha = arr[..., c - 1 :].astype(np.uint32)
        # round(c * a / 255 + 255 * (1 - a / 255)) = round((c * a + 255 * (255 - a)) / 255)
        num = color * alpha + 255 * (255 - alpha)
        arr = ((num * 2 + 255) // 510).astype(np.uint8)
        c -= 1
    if c == 1:
        arr = np.repeat(arr, 3, axis=2)
    if depth == 16:
        return arr.astype(np.uint16) * 257
    return np.array(arr, dtype=np.uint8, order="C", copy=not arr.flags.writeable or None)


def _read_chunks(path: Path, data: bytes):
    if not data.startswith(PNG_SIGNATURE):
        raise _fail(path, "not a PNG file")
    pos = len(PNG_SIGNATURE)
    while True:
        if pos + 8 > len(data):
            raise _fail(path, "truncated PNG (no IEND chunk)")
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        crc = data[pos + 8 + length : pos + 12 + length]
        if len(body) != length or len(crc) != 4:
            raise _fail(path, f"truncated PNG (chunk {ctype.decode('latin-1')!r} cut short)")
        if struct.unpack(">I", crc)[0] != (zlib.crc32(ctype + body) & 0xFFFFFFFF):
            raise _fail(path, f"corrupt PNG (bad CRC in chunk {ctype.decode('latin-1')!r})")
        yield ctype, body
        if ctype == b"IEND":
            return
        pos += 12 + length


def _decode_png16(path: Path) -> np.ndarray:
    """Decode a non-interlaced 16-bit PNG (gray, gray+alpha, RGB, RGBA) to (H, W, C) uint16."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _fail(path, exc.strerror or exc) from None
    ihdr = None
    idat = []
    for ctype, body in _read_chunks(path, data):
        if ctype == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif ctype == b"IDAT":
            idat.append(body)
    if ihdr is None:
        raise _fail(path, "PNG without IHDR")
    w, h, bit_depth, color_type, _comp, _filt, interlace = ihdr
    channels = {0: 1, 4: 2, 2: 3, 6: 4}.get(color_type)
    if bit_depth != 16 or channels is None:
        raise _fail(path, f"unsupported PNG (bit depth {bit_depth}, colour type {color_type})")
    if interlace:
        raise _fail(path, "interlaced 16-bit PNG is not supported")
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error as exc:
        raise _fail(path, f"corrupt or truncated PNG data ({exc})") from None
    bpp = 2 * channels
    stride = w * bpp
    if len(raw) != h * (stride + 1):
        raise _fail(path, f"truncated PNG data ({len(raw)} bytes, expected {h * (stride + 1)})")
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(h, stride + 1)
    ftype = rows[:, 0].copy()
    if ftype.max(initial=0) > 4:
        raise _fail(path, "corrupt PNG (unknown row filter)")
    out = _unfilter(rows[:, 1:].astype(np.int32), ftype, bpp)
    arr = out.astype(np.uint8).reshape(h, w, channels, 2)
    return (arr[..., 0].astype(np.uint16) << 8) | arr[..., 1].astype(np.uint16)


def _unfilter(filt: np.ndarray, ftype: np.ndarray, bpp: int) -> np.ndarray:
    """PNG row unfiltering, vectorised.

    Without Average/Paeth rows, rows are processed in order with one vector op each (Sub is a
    cumulative sum modulo 256). Otherwise pixels are reconstructed along anti-diagonals
    (a wavefront): pixel (y, x) needs only its left, upper and upper-left neighbours, which all
    lie on earlier diagonals, so each diagonal is one set of vector ops whatever the row filters.
    """
    h, stride = filt.shape
    npx = stride // bpp
    if not np.any(ftype >= 3):
        out = np.zeros((h, stride), dtype=np.int32)
        prev = np.zeros(stride, dtype=np.int32)
        for y in range(h):
            f = filt[y]
            t = ftype[y]
            if t == 0:
                cur = f
            elif t == 1:
                cur = np.cumsum(f.reshape(npx, bpp), axis=0).reshape(-1) & 0xFF
            else:
                cur = (f + prev) & 0xFF
            out[y] = cur
            prev = cur
        return out
    f3 = filt.reshape(h, npx, bpp)
    rec = np.zeros((h + 1, npx + 1, bpp), dtype=np.int32)  # row 0 and column 0: zero padding
    rows_all = np.arange(h)
    for d in range(h + npx - 1):
        y0 = max(0, d - npx + 1)
        y1 = min(h - 1, d)
        ys = rows_all[y0 : y1 + 1]
        xs = d - ys
        a = rec[ys + 1, xs]
        b = rec[ys, xs + 1]
        c = rec[ys, xs]
        t = ftype[ys][:, None]
        p = a + b - c
        pa = np.abs(p - a)
        pb = np.abs(p - b)
        pc = np.abs(p - c)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        pred = np.select(
            [t == 0, t == 1, t == 2, t == 3], [0, a, b, (a + b) >> 1], default=paeth
        )
        rec[ys + 1, xs + 1] = (f3[ys, xs] + pred) & 0xFF
    return rec[1:, 1:].reshape(h, stride)


def read_mask(path) -> np.ndarray:
    """Read a mask file as a (H, W) uint8 array of the stored gray values (RGB masks: max over
    channels; alpha ignored). Holes are decided by the caller (e.g. ``> 0``)."""
    from PIL import Image

    path = Path(path)
    with _pillow_errors(path), Image.open(path) as im:
        im.load()
        mode = im.mode
        if mode in ("1", "P"):
            im = im.convert("L")
            mode = "L"
        if mode in ("I;16", "I;16B", "I;16L"):
            return to_uint8_from16(np.asarray(im, dtype=np.uint16))
        if mode not in ("L", "LA", "RGB", "RGBA"):
            raise _fail(path, f"unsupported mask mode {mode!r}")
        arr = np.asarray(im, dtype=np.uint8)
    if arr.ndim == 3:
        arr = arr[..., : 1 if mode == "LA" else 3].max(axis=2)
    return np.ascontiguousarray(arr)


# ------------------------------------------------------------------------------------------------
# writing


def encode_png(arr: np.ndarray) -> bytes:
    """Encode (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) uint8/uint16 as PNG bytes, deterministically."""
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"cannot encode an array of shape {arr.shape} as PNG")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype == np.uint8:
        bit_depth = 8
        payload = arr
    elif arr.dtype == np.uint16:
        bit_depth = 16
        payload = arr.astype(">u2")
    else:
        raise ValueError(f"PNG needs uint8 or uint16 data, got {arr.dtype}")
    h, w, c = arr.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    rows = np.ascontiguousarray(payload).view(np.uint8).reshape(h, -1)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()

    def chunk(ctype: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + ctype
            + body
            + struct.pack(">I", zlib.crc32(ctype + body) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def write_png(path, arr: np.ndarray) -> None:
    Path(path).write_bytes(encode_png(arr))
