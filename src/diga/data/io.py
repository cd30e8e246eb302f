"""Reading and writing images and label maps with errors that name the file.

Every failure a user can cause with their data (missing file, truncated/corrupt PNG, wrong mode,
size mismatch, unknown label ids) raises `DatasetError` with the offending path in the message.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from diga.utils.io import atomic_write_bytes


class DatasetError(RuntimeError):
    """Bad on-disk data. The message always names the file and the problem."""


def read_rgb(path: str | Path) -> np.ndarray:
    """H×W×3 uint8 RGB."""
    img = _open(path)
    try:
        return np.array(img.convert("RGB"))
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: cannot decode image ({e})") from e


def read_label(path: str | Path, channel: int | None = None) -> np.ndarray:
    """H×W integer label map as stored (palette index or grey value, 8- or 16-bit).

    `channel` picks one channel of a multi-channel label PNG (SYNTHIA stores the class in channel 0 of a
    16-bit RGBA/RGB PNG). Palette images return their indices, never the colours.
    """
    if channel is not None:
        return _read_label_channel(path, channel)
    img = _open(path)
    try:
        if img.mode in ("P", "L", "I", "I;16", "I;16B", "I;16L", "1"):
            arr = np.asarray(img)
        else:
            raise DatasetError(
                f"{path}: label image has mode {img.mode!r}; expected a single-channel (L/P/I;16) id map"
            )
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: cannot decode label ({e})") from e
    if arr.ndim != 2:
        raise DatasetError(f"{path}: label image must be 2-D, got shape {arr.shape}")
    return arr.astype(np.int64 if arr.dtype != np.uint8 else np.uint8, copy=False)


def _read_label_channel(path: str | Path, channel: int) -> np.ndarray:
    import cv2  # albumentations depends on opencv; it reads 16-bit multi-channel PNGs, PIL does not.

    data = _archive_bytes(path)
    if data is None and not os.path.isfile(path):
        raise DatasetError(f"{path}: file not found")
    if data is not None:
        arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    else:
        arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise DatasetError(f"{path}: cannot decode label (corrupt or not an image)")
    if arr.ndim == 2:
        return arr.astype(np.int64)
    # OpenCV returns BGR(A): channel 0 of the file is the last colour channel (DAFormer's synthia.py does the same).
    order = list(range(arr.shape[2]))[:3][::-1] + list(range(3, arr.shape[2]))
    if channel >= len(order):
        raise DatasetError(f"{path}: label has {arr.shape[2]} channels, channel {channel} requested")
    return arr[:, :, order[channel]].astype(np.int64)


def _archive_bytes(path: str | Path) -> bytes | None:
    """The bytes of a file that lives in a zip archive (`diga.data.archives.ArchivePath`), None for a real file."""
    from diga.data.archives import ArchivePath

    return path.read_bytes() if isinstance(path, ArchivePath) else None


def _open(path: str | Path) -> Image.Image:
    import io

    data = _archive_bytes(path)
    if data is None and not os.path.isfile(path):
        raise DatasetError(f"{path}: file not found")
    where = path.where() if data is not None else path  # type: ignore[union-attr]
    try:
        img = Image.open(io.BytesIO(data) if data is not None else path)
        img.load()  # force full decode now so truncation is reported here, with the path
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DatasetError(f"{where}: corrupt or truncated image ({e})") from e
    return img


def map_label(raw: np.ndarray, lut: np.ndarray, path: str | Path, strict: bool = True) -> np.ndarray:
    """Apply a raw-id → train-id lookup table.

    With `strict`, a raw id beyond the table's range is an error (it means the wrong label file or format);
    ids inside the range but absent from the mapping are ignore (255) by definition of the format.
    """
    if raw.size and int(raw.max()) >= len(lut):
        if strict:
            raise DatasetError(
                f"{path}: label id {int(raw.max())} is outside the {len(lut)}-entry id mapping of this dataset "
                "(wrong label file or format?)"
            )
        raw = np.where(raw >= len(lut), 0, raw)
    if raw.size and int(raw.min()) < 0:
        raise DatasetError(f"{path}: negative label id {int(raw.min())}")
    return lut[raw]


def check_ids(label: np.ndarray, num_classes: int, path: str | Path) -> np.ndarray:
    """Train-id maps must hold only 0..C-1 and 255."""
    bad = (label >= num_classes) & (label != 255)
    if bad.any():
        ids = sorted({int(v) for v in np.unique(label[bad])})[:10]
        raise DatasetError(f"{path}: label ids {ids} are neither a class id (0..{num_classes - 1}) nor 255")
    return label


def png_bytes(array: np.ndarray, palette: list[int] | None = None) -> bytes:
    """A PNG of an H×W×3 uint8 picture or an H×W label/confidence map (8-bit for uint8, 16-bit for uint16;
    palettised when a palette is given)."""
    import io as _io

    if array.dtype not in (np.uint8, np.uint16) or (array.ndim == 3 and array.dtype != np.uint8):
        raise TypeError(f"a PNG holds uint8 pictures or uint8/uint16 maps, got {array.dtype} of shape {array.shape}")
    img = Image.fromarray(np.ascontiguousarray(array))  # mode RGB, L or I;16 from the shape and dtype
    if palette:
        if img.mode != "L":
            raise TypeError(f"only a uint8 label map takes a palette, got {array.dtype} of shape {array.shape}")
        img = Image.frombytes("P", img.size, img.tobytes())  # the same indices, shown in the palette's colours
        img.putpalette(palette)
    buf = _io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def save_png(path: str | Path, array: np.ndarray, palette: list[int] | None = None) -> None:
    """Atomically write `png_bytes(array, palette)`: a reader never sees half a picture."""
    atomic_write_bytes(path, png_bytes(array, palette))


def save_label_png(path: str | Path, label: np.ndarray, palette: list[int] | None = None) -> None:
    """Atomically write an 8-bit label PNG (palettised when a palette is given)."""
    save_png(path, label.astype(np.uint8), palette)
