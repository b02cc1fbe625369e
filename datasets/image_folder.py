"""Images from a folder of PNG / JPEG / WebP files (decoded with Pillow), e.g. a user's own photos.

Every file under ``root`` (recursively, sorted by relative path) whose suffix is .png, .jpg, .jpeg
or .webp (any case) is an image; other files are not read. Each is decoded, turned upright by its
EXIF orientation (``ImageOps.exif_transpose``), converted to 8-bit RGB (:func:`to_rgb`: alpha is
dropped, grey and palette images expanded, CMYK / YCbCr converted by Pillow; 16-bit grey
(``I;16*``, and ``I`` within 0..65535) scaled by 255 / 65535, never clipped; float ``F`` images and
``I`` values outside 0..65535, whose range a file does not state, are refused), resized so its shorter side is ``size`` and
center-cropped to ``size`` x ``size`` (``ImageOps.fit``, bicubic), as torchvision's
``Resize(size) + CenterCrop(size)`` does. Pixels are uint8 / 255 in [0, 1], (N, 3, size, size).

A file that cannot be decoded is never skipped: every unreadable file is listed, with Pillow's
reason, in one ValueError. A missing root is a DatasetNotFoundError; so is a folder without image
files.

Split by file: one permutation seeded with ``split_seed``; its first ``test_fraction`` of the files
form ``test``, the next ``validation_fraction`` ``validation``, the rest ``train`` (each keeps the
sorted order). Labels: the index of the file's folder (relative to ``root``, sorted, ``root``
itself included as ".") in ``classes``; with one subfolder per class this is torchvision
``ImageFolder``'s labelling. ``files[split]`` lists the files of each split and ``manifest()``
their SHA-256s (streamed), for pinning the data a run used.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from ._common import (
    SPLITS, DatasetNotFoundError, ImageDataset, check_fractions, check_int, check_root, sha256_file,
    split_indices,
)
from ._registry import register

SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass(frozen=True)
class ImageFolderOptions:
    root: str | None = None  # the folder holding the image files (searched recursively)
    size: int = 32  # output height = width, in pixels
    validation_fraction: float = 0.1
    test_fraction: float = 0.1
    split_seed: int = 0

    def __post_init__(self) -> None:
        check_root(self)
        check_int(self, "size", low=1)
        check_fractions(self)
        check_int(self, "split_seed", low=0)


def image_files(root: Path) -> list[Path]:
    """The image files under ``root``, sorted by path relative to it."""
    return sorted(
        (p for p in root.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file()),
        key=lambda p: p.relative_to(root).as_posix(),
    )


SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")  # Pillow's 16-bit grey (16-bit PNGs decode to these)
REFUSED_MODES = ("F",)  # float pixels: no stated range to map to 0..255


def to_rgb(image: Image.Image, path: Path) -> Image.Image:
    """8-bit RGB of any mode Pillow decodes, converted faithfully or refused (ValueError naming the file).

    ``Image.convert("RGB")`` clips 16-bit grey at 255 (a PNG with values 0..62930 comes out 99%
    white): 16-bit values v become round(v * 255 / 65535) instead."""
    mode = image.mode
    if mode in REFUSED_MODES:
        raise ValueError(f"{path}: mode {mode} (float pixels) has no stated range; save it as 8- or 16-bit")
    if mode in SIXTEEN_BIT_MODES or mode == "I":
        values = np.asarray(image).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(f"{path}: mode {mode} with values in [{values.min()}, {values.max()}], outside the "
                             f"16-bit range 0..65535; save it as 8- or 16-bit")
        grey = ((values * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    try:
        return image.convert("RGB")
    except ValueError as err:
        raise ValueError(f"{path}: mode {mode} cannot be converted to RGB ({err})") from None


def decode(path: Path, size: int) -> np.ndarray:
    """uint8 (3, size, size): upright, RGB (:func:`to_rgb`), shorter side resized to ``size``, center-cropped."""
    with Image.open(path) as image:
        image.load()
        image = to_rgb(ImageOps.exif_transpose(image), path)
    image = ImageOps.fit(image, (size, size), method=Image.Resampling.BICUBIC, centering=(0.5, 0.5))
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)


@register("image_folder")
class ImageFolder(ImageDataset):
    Options = ImageFolderOptions
    source = "a user's folder of PNG / JPEG / WebP images"

    def __init__(self, options: ImageFolderOptions) -> None:
        self.options = options
        root = self.root = Path(options.root)
        if not root.is_dir():
            raise DatasetNotFoundError(f"root: {root}: no such folder")
        paths = image_files(root)
        if not paths:
            raise DatasetNotFoundError(
                f"root: {root} holds no image file (searched recursively for {', '.join(SUFFIXES)})"
            )
        images, failures = [], []
        for path in paths:
            try:
                images.append(decode(path, options.size))
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
                failures.append(f"{path}: {type(err).__name__}: {err}")
        if failures:
            raise ValueError(
                f"root: {len(failures)} of {len(paths)} image files in {root} cannot be read "
                "(fix or remove them):\n  " + "\n  ".join(failures)
            )
        folders = [p.parent.relative_to(root).as_posix() for p in paths]
        self.classes = tuple(sorted(set(folders)))
        labels = torch.tensor([self.classes.index(f) for f in folders], dtype=torch.long)
        pixels = torch.from_numpy(np.stack(images)).to(torch.float32) / 255.0
        train, validation, test = split_indices(
            len(paths), options.split_seed, options.test_fraction, options.validation_fraction,
            what=f"image files in {root}",
        )
        self.files = {
            split: tuple(paths[i] for i in index.tolist())
            for split, index in zip(SPLITS, (train, validation, test))
        }
        self._set(pixels[train], labels[train], pixels[validation], labels[validation],
                  pixels[test], labels[test])

    def manifest(self) -> list[dict[str, str | int]]:
        """One entry per file: its path relative to ``root``, split, label and SHA-256 (streamed)."""
        return [
            {"file": path.relative_to(self.root).as_posix(), "split": split,
             "label": self.classes.index(path.parent.relative_to(self.root).as_posix()),
             "sha256": sha256_file(path)}
            for split in SPLITS for path in self.files[split]
        ]
