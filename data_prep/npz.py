"""Read MedMNIST-style .npz files safely and with bounded memory.

`np.load(..., allow_pickle=False)` for the small label arrays; image arrays are streamed row by row straight out of the
zip member (the .npy header is parsed with numpy's own format reader), so a 8 GB `tissuemnist_224.npz` never has to
fit in memory. Object dtypes are refused (no pickle, ever).
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Iterator, Sequence
from math import prod
from pathlib import Path

import numpy as np

from data_prep.report import DataPrepError

# what a damaged zip member raises while it is read (bad CRC, bad deflate stream, cut short; encrypted or an
# unsupported compression method: RuntimeError, NotImplementedError)
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError)


class NpzError(DataPrepError):
    """A malformed npz or array inside one (not a zip, wrong header, dtype, truncated or damaged data)."""


class NpzArrays:
    """Lazy access to the arrays of one .npz file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError) as exc:  # empty, truncated (no central directory), not a zip
            raise NpzError(f"{self.path} is not a valid .npz (zip) file: {exc}") from exc
        self.keys = sorted(n[: -len(".npy")] for n in self._zip.namelist() if n.endswith(".npy"))

    def load(self, key: str) -> np.ndarray:
        """Load a whole (small) array, without pickle."""
        with np.load(self.path, allow_pickle=False) as data:
            try:
                return data[key]
            except ValueError as exc:  # object arrays need pickle
                raise NpzError(f"{self.path.name}:{key}: {exc}") from exc
            except _READ_ERRORS as exc:
                raise NpzError(f"{self.path.name}:{key}: damaged member ({exc})") from exc

    def header(self, key: str) -> tuple[tuple[int, ...], np.dtype, int]:
        """(shape, dtype, data offset) of an array, from its .npy header only."""
        try:
            with self._zip.open(key + ".npy") as fh:
                shape, fortran, dtype = _read_header(fh, f"{self.path.name}:{key}")
                offset = fh.tell()
        except _READ_ERRORS as exc:
            raise NpzError(f"{self.path.name}:{key}: damaged member ({exc})") from exc
        if fortran and len(shape) > 1:
            raise NpzError(f"{self.path.name}:{key}: Fortran-ordered arrays are not supported")
        need = offset + prod(shape) * dtype.itemsize
        have = self._zip.getinfo(key + ".npy").file_size
        if have < need:
            raise NpzError(f"{self.path.name}:{key}: truncated ({have} bytes, header needs {need})")
        return shape, dtype, offset

    def iter_rows(self, key: str, rows: Sequence[int]) -> Iterator[np.ndarray]:
        """Yield array[row] for each row (ascending rows read the member once, front to back)."""
        shape, dtype, offset = self.header(key)
        row_bytes = prod(shape[1:]) * dtype.itemsize
        with self._zip.open(key + ".npy") as fh:
            for row in rows:
                if not 0 <= row < shape[0]:
                    raise IndexError(f"{self.path.name}:{key}: row {row} out of range {shape[0]}")
                try:
                    fh.seek(offset + row * row_bytes)
                    buf = fh.read(row_bytes)
                except _READ_ERRORS as exc:
                    raise NpzError(f"{self.path}:{key}: damaged at row {row} ({exc})") from exc
                if len(buf) != row_bytes:
                    raise NpzError(f"{self.path.name}:{key}: truncated at row {row}")
                yield np.frombuffer(buf, dtype=dtype).reshape(shape[1:])

    def close(self) -> None:
        """Close the zip file."""
        self._zip.close()


def _read_header(fh, where: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise NpzError(f"{where}: unsupported .npy version {version}")
    except ValueError as exc:
        raise NpzError(f"{where}: bad .npy header: {exc}") from exc
    if dtype.hasobject:
        raise NpzError(f"{where}: object arrays are refused (they need pickle)")
    return tuple(int(s) for s in shape), bool(fortran), dtype
