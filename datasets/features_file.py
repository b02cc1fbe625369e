"""A user's encoder latents read from a file: ``.npy``, ``.npz`` or ``.safetensors``, memory-mapped.

The file holds one float array, either (N, d) (N feature vectors) or a batch of latent maps
(N, H, W, d) (``layout = "nhwc"``) or (N, d, H, W) (``layout = "nchw"``), whose N * H * W
positions are the feature vectors. The array is never read into memory: it is memory-mapped
(``np.load(mmap_mode="r")`` for ``.npy``; for ``.npz`` the stored member is mapped at its offset
inside the archive, which needs an uncompressed archive, ``np.savez``, not ``np.savez_compressed``;
for ``.safetensors`` the tensor's byte range, located from the file's JSON header; names, dtypes
and shapes are read with ``safetensors.safe_open``). A batch reads only the rows it draws.

Split: the N rows (the leading axis: whole latent maps for 4-D arrays, so all vectors of one image
land in the same split) are permuted once with ``split_seed``; the first ``test_fraction`` of the
permutation is the test set, the next ``validation_fraction`` the validation set, the rest the
training set (``split_sizes``: at least one row each when its fraction is > 0). The sets are
disjoint, so evaluation never sees a training row. ``sample(n, generator, split)`` draws ``n``
vectors uniformly with replacement from the split's vectors: i.i.d. draws from the split's
empirical distribution, on ``generator.device``, float32 whatever the file's float dtype (float16,
bfloat16, float32, float64).

Checks at load (errors name the file): the file exists (a folder, a dangling link or a symlink
loop is named as such), the array name (``key`` for ``.npz``,
``tensor`` for ``.safetensors``; optional when the file holds one array) exists, else the valid
names are listed; a float dtype; 2-D, or 4-D with a ``layout``; d at most ``MAX_DIM`` (the moments
need d x d floats: a (d, N) array saved untransposed is refused before anything is read); ``dim``
(if given) equals d; enough rows for the split; every value finite as float32, scanned in chunks of
``CHUNK_BYTES`` whose pages are released as the scan goes (memory stays at a few chunks, whatever
the file's size; the error names the first bad row). ``mean`` and ``covariance`` are the float64 empirical moments of the
training split (streamed in chunks on first use). ``file_sha256()`` pins the file for a manifest.
Memory: the split permutation, 4 bytes per row (8 beyond 2^31 rows).
"""
from __future__ import annotations

import contextlib
import errno
import json
import mmap
import os
import stat
import struct
import zipfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._common import (
    CHUNK_BYTES, DatasetNotFoundError, FeatureDistribution, check_fractions, check_int, check_split,
    sha256_file, split_permutation, split_sizes,
)
from ._registry import register

FORMATS = (".npy", ".npz", ".safetensors")
MAX_DIM = 16384  # features per vector: the float64 covariance is then 2 GiB
RELEASE_EVERY = 16  # chunks scanned between two releases of the mapped pages (madvise DONTNEED)
LAYOUTS = ("nhwc", "nchw")

# safetensors dtype name -> numpy dtype of the stored bytes (bfloat16 is read as its uint16 bits)
_SAFETENSORS_FLOATS = {"F16": np.dtype("<f2"), "F32": np.dtype("<f4"), "F64": np.dtype("<f8"),
                       "BF16": np.dtype("<u2")}
_ZIP_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # 30 bytes; the last two fields: name and extra lengths


@dataclass(frozen=True)
class FeaturesFileOptions:
    path: str | None = None  # the .npy / .npz / .safetensors file
    key: str | None = None  # .npz: the array's name (optional when the archive holds one)
    tensor: str | None = None  # .safetensors: the tensor's name (optional when the file holds one)
    layout: str | None = None  # 4-D arrays: "nhwc" (N, H, W, d) or "nchw" (N, d, H, W)
    dim: int | None = None  # d, if given: must match the file
    validation_fraction: float = 0.1
    test_fraction: float = 0.1
    split_seed: int = 0

    def __post_init__(self) -> None:
        if self.path is None or self.path == "":
            raise ValueError(f"path: required; pass a {' / '.join(FORMATS)} file of features")
        if not isinstance(self.path, (str, os.PathLike)):
            raise ValueError(f"path: must be a path, got {self.path!r}")
        path = Path(self.path).expanduser()
        object.__setattr__(self, "path", str(path))
        suffix = path.suffix.lower()
        if suffix not in FORMATS:
            raise ValueError(f"path: {path}: unsupported file type {path.suffix!r}; valid: {list(FORMATS)}")
        for name, applies in (("key", ".npz"), ("tensor", ".safetensors")):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{name}: must be a non-empty string, got {value!r}")
            if value is not None and suffix != applies:
                raise ValueError(f"{name}: only applies to {applies} files, {path} is {suffix}")
        if self.layout is not None and self.layout not in LAYOUTS:
            raise ValueError(f"layout: must be one of {list(LAYOUTS)}, got {self.layout!r}")
        if self.dim is not None:
            check_int(self, "dim", low=1)
        check_fractions(self)
        check_int(self, "split_seed", low=0)


def _open_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError) as err:  # not a .npy file, truncated, or objects (cannot be mapped)
        raise ValueError(f"path: {path}: not a memory-mappable numeric .npy array ({err})") from None


def _open_npz(path: Path, key: str | None) -> np.ndarray:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ValueError(f"path: {path}: not a valid .npz (zip) archive") from None
    with archive:
        members = {name[:-4]: info for info in archive.infolist() if (name := info.filename).endswith(".npy")}
        key = _choose(path, "key", key, sorted(members))
        info = members[key]
    if info.compress_type != zipfile.ZIP_STORED:
        raise ValueError(
            f"key: {path}: array {key!r} is compressed (np.savez_compressed), which cannot be "
            "memory-mapped; save it with np.savez or np.save (.npy)"
        )
    with path.open("rb") as handle:
        handle.seek(info.header_offset)
        fields = _ZIP_LOCAL_HEADER.unpack(handle.read(_ZIP_LOCAL_HEADER.size))
        handle.seek(info.header_offset + _ZIP_LOCAL_HEADER.size + fields[-2] + fields[-1])
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise ValueError(f"key: {path}: array {key!r} has .npy format {version}; re-save it with np.savez")
        offset = handle.tell()
    if dtype.hasobject:
        raise ValueError(f"key: {path}: array {key!r} holds Python objects, not numbers")
    if 0 in shape:
        return np.empty(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def _open_safetensors(path: Path, tensor: str | None) -> tuple[np.ndarray, bool]:
    """(memory-mapped stored array, whether it holds bfloat16 bits)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            names = list(handle.keys())
            tensor = _choose(path, "tensor", tensor, sorted(names))
            view = handle.get_slice(tensor)
            dtype_name, shape = view.get_dtype(), tuple(view.get_shape())
    except SafetensorError as err:
        raise ValueError(f"path: {path}: not a valid .safetensors file ({err})") from None
    if dtype_name not in _SAFETENSORS_FLOATS:
        raise ValueError(
            f"tensor: {path}: {tensor!r} has dtype {dtype_name}; features must be floating point "
            f"({', '.join(_SAFETENSORS_FLOATS)})"
        )
    # byte range from the header (format: u64 little-endian header size, JSON header, data buffer)
    with path.open("rb") as handle:
        (header_size,) = struct.unpack("<Q", handle.read(8))
        begin, _ = json.loads(handle.read(header_size))[tensor]["data_offsets"]
    dtype = _SAFETENSORS_FLOATS[dtype_name]
    if 0 in shape:
        return np.empty(shape, dtype), dtype_name == "BF16"
    array = np.memmap(path, dtype=dtype, mode="r", offset=8 + header_size + begin, shape=shape)
    return array, dtype_name == "BF16"


def _choose(path: Path, option: str, name: str | None, valid: list[str]) -> str:
    if name is None:
        if len(valid) == 1:
            return valid[0]
        raise ValueError(f"{option}: {path} holds {len(valid)} arrays; name one of {valid}")
    if name not in valid:
        raise ValueError(f"{option}: {path} has no array {name!r}; valid: {valid}")
    return name


def check_file(path: Path) -> None:
    """``path`` is a readable regular file; else DatasetNotFoundError saying what it is instead."""
    try:
        mode = path.stat().st_mode
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise DatasetNotFoundError(f"path: {path}: a symbolic link loop, not a file") from None
        if path.is_symlink():
            raise DatasetNotFoundError(f"path: {path}: a dangling symbolic link (to {os.readlink(path)})") from None
        raise DatasetNotFoundError(f"path: {path}: no such file ({err.strerror})") from None
    if stat.S_ISDIR(mode):
        raise DatasetNotFoundError(f"path: {path}: a folder, not a file; name the .npy / .npz / .safetensors "
                                   f"file in it (a folder of images: dataset image_folder)")
    if not stat.S_ISREG(mode):
        raise DatasetNotFoundError(f"path: {path}: not a regular file")


def _release_pages(array: np.ndarray) -> None:
    """Drop the pages of a memory-mapped array from this process (they stay in the page cache): a
    scan of a 20 GB file otherwise keeps every page it touched resident."""
    mapping = getattr(array, "_mmap", None)
    if mapping is None and isinstance(getattr(array, "base", None), np.ndarray):
        mapping = getattr(array.base, "_mmap", None)
    if mapping is not None and hasattr(mapping, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        with contextlib.suppress(OSError, ValueError):
            mapping.madvise(mmap.MADV_DONTNEED)


def _bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    # bfloat16 is the upper half of a float32: shift its 16 bits into place
    return (bits.astype(np.uint32) << 16).view(np.float32)


@register("features_file")
class FeaturesFile(FeatureDistribution):
    Options = FeaturesFileOptions
    source = "a user's features file (.npy / .npz / .safetensors)"

    def __init__(self, options: FeaturesFileOptions) -> None:
        self.options = options
        path = self.path = Path(options.path)
        check_file(path)
        suffix = path.suffix.lower()
        self._bfloat16 = False
        if suffix == ".npy":
            array = _open_npy(path)
        elif suffix == ".npz":
            array = _open_npz(path, options.key)
        else:
            array, self._bfloat16 = _open_safetensors(path, options.tensor)
        if not (self._bfloat16 or np.issubdtype(array.dtype, np.floating)):
            raise ValueError(f"path: {path}: dtype {array.dtype} is not floating point; features must be floats")
        self._array = array
        if array.ndim == 2:
            if options.layout is not None:
                raise ValueError(f"layout: {path} holds a 2-D array {array.shape} (N, d); layout applies to 4-D arrays")
            file_dim, self._grid = array.shape[1], (1, 1)
        elif array.ndim == 4:
            if options.layout is None:
                raise ValueError(
                    f"layout: {path} holds a 4-D array {array.shape}; say whether it is 'nhwc' "
                    "(N, H, W, d) or 'nchw' (N, d, H, W)"
                )
            nhwc = options.layout == "nhwc"
            file_dim = array.shape[3] if nhwc else array.shape[1]
            self._grid = tuple(array.shape[1:3]) if nhwc else tuple(array.shape[2:4])
        else:
            raise ValueError(
                f"path: {path} holds a {array.ndim}-D array {array.shape}; expected (N, d), or (N, H, W, d) "
                "/ (N, d, H, W) with layout"
            )
        if file_dim < 1:
            raise ValueError(f"path: {path}: the feature dimension d is 0 in {array.shape}")
        if file_dim > MAX_DIM:
            raise ValueError(f"path: {path}: d = {file_dim} features per vector in {array.shape} exceeds {MAX_DIM} "
                             f"(the covariance alone would need {file_dim ** 2 * 8 / 2**40:.2f} TiB); if the array "
                             f"is (d, N), save its transpose")
        if options.dim is not None and options.dim != file_dim:
            raise ValueError(f"dim: {options.dim} does not match {path}, whose features have d = {file_dim}")
        self.dim = int(file_dim)
        self.n_rows = int(array.shape[0])
        sizes = split_sizes(self.n_rows, options.test_fraction, options.validation_fraction, what=f"rows of {path}")
        self._check_finite()
        perm = split_permutation(self.n_rows, options.split_seed).numpy()
        n_train, n_validation, n_test = sizes
        self._split_rows = {
            "test": perm[:n_test], "validation": perm[n_test:n_test + n_validation],
            "train": perm[n_test + n_validation:],
        }

    # ------------------------------------------------------------ reading

    def _vectors(self, block: np.ndarray) -> np.ndarray:
        """float32 (m, d) vectors of a block of rows (or of gathered vectors when already 2-D)."""
        if block.ndim == 4 and self.options.layout == "nchw":
            block = np.moveaxis(block, 1, -1)
        block = block.reshape(-1, self.dim)
        if self._bfloat16:
            return _bfloat16_to_float32(block)
        with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf: caught below
            return block.astype(np.float32)

    def _row_chunks(self, rows: np.ndarray | None = None):
        """Blocks of float32 vectors of ``rows`` (all rows in order if None), about CHUNK_BYTES each."""
        row_bytes = max(self._array.itemsize * self.dim * self._grid[0] * self._grid[1], 1)
        step = max(CHUNK_BYTES // row_bytes, 1)
        total = self.n_rows if rows is None else len(rows)
        for start in range(0, total, step):
            stop = min(start + step, total)
            block = self._array[start:stop] if rows is None else self._array[rows[start:stop]]
            yield start, stop, self._vectors(np.asarray(block))

    def _check_finite(self) -> None:
        """Every value finite as float32: one streamed pass, the mapped pages released as it goes."""
        per_row = self._grid[0] * self._grid[1]
        for index, (start, stop, vectors) in enumerate(self._row_chunks()):
            finite = np.isfinite(vectors).all(axis=1).reshape(stop - start, per_row).all(axis=1)
            if not finite.all():
                row = start + int(np.argmin(finite))
                raise ValueError(
                    f"path: {self.path}: row {row} holds NaN or inf (as float32); the first bad row of "
                    f"{self.n_rows}: features must be finite"
                )
            if index % RELEASE_EVERY == RELEASE_EVERY - 1:
                _release_pages(self._array)
        _release_pages(self._array)

    def rows(self, split: str) -> np.ndarray:
        """Indices (along the file's leading axis) of the rows in ``split``, in permutation order."""
        return self._split_rows[check_split(split)]

    def n_vectors(self, split: str) -> int:
        """Number of feature vectors in ``split`` (rows x H x W)."""
        return len(self.rows(split)) * self._grid[0] * self._grid[1]

    def _sample_split(self, n: int, generator: torch.Generator, split: str) -> Tensor:
        rows = self.rows(split)
        if len(rows) == 0:
            raise ValueError(f"split: {split!r} of {self.path} is empty (validation_fraction = 0)")
        per_row = self._grid[0] * self._grid[1]
        draw = torch.randint(len(rows) * per_row, (n,), generator=generator, device=generator.device)
        draw = draw.cpu().numpy()
        row = rows[draw // per_row]
        if self._array.ndim == 2:
            block = self._array[row]
        else:
            h, w = np.divmod(draw % per_row, self._grid[1])
            # nchw: the advanced indices around the channel slice put the draws first: (n, d)
            block = self._array[row, h, w] if self.options.layout == "nhwc" else self._array[row, :, h, w]
        return torch.from_numpy(self._vectors(np.asarray(block))).to(generator.device)

    # ------------------------------------------------------------ moments and pin

    @cached_property
    def _moments(self) -> tuple[Tensor, Tensor]:
        rows = np.sort(self.rows("train"))  # sorted: the chunks read the file front to back
        shift = None
        count, total, outer = 0, np.zeros(self.dim), np.zeros((self.dim, self.dim))
        for _, _, vectors in self._row_chunks(rows):
            x = vectors.astype(np.float64)
            if shift is None:
                shift = x.mean(0)  # centre on a first estimate: no cancellation in E[x x^T] - m m^T
            x -= shift
            count += len(x)
            total += x.sum(0)
            outer += x.T @ x
        centred_mean = total / count
        covariance = (outer - count * np.outer(centred_mean, centred_mean)) / max(count - 1, 1)
        return torch.from_numpy(centred_mean + shift), torch.from_numpy(covariance)

    @property
    def mean(self) -> Tensor:
        """float64 (dim,): the empirical mean of the training split."""
        return self._moments[0].clone()

    @property
    def covariance(self) -> Tensor:
        """float64 (dim, dim): the empirical covariance (n - 1 normalised) of the training split."""
        return self._moments[1].clone()

    def file_sha256(self) -> str:
        """SHA-256 of the file (streamed in chunks), for pinning the data a run used."""
        return sha256_file(self.path)

    def __repr__(self) -> str:
        shape: Any = tuple(self._array.shape)
        return f"FeaturesFile({self.path}, shape={shape}, dim={self.dim}, {self.options})"
