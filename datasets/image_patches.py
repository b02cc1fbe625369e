"""Random square crops of the natural photographs that scikit-image ships (works offline).

The images are the ones bundled inside the scikit-image wheel (``skimage.data``; those that need
a pooch download are not offered). Crops: ``patches`` patches of ``patch_size`` x ``patch_size``
RGB pixels; each picks a source image with probability proportional to its number of valid crop
positions, (H - p + 1)(W - p + 1), then a position uniformly, so every crop position of every
image is equally likely. Everything is fixed by ``crop_seed``; pixels are uint8 / 255 in [0, 1].
``test_fraction`` of the patches (permutation seeded with ``split_seed``) form the test set, the next
``validation_fraction`` the validation set; train, validation and test patches come from the same
images and may overlap. Labels are the index of the source
image in ``images``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ._common import ImageDataset, check_fractions, check_int, split_indices
from ._registry import register

# RGB photographs stored in skimage/data/ itself (checked on scikit-image 0.26: load without pooch).
BUNDLED_RGB = ("astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry", "retina", "rocket")


@dataclass(frozen=True)
class ImagePatchesOptions:
    patch_size: int = 16
    patches: int = 4096
    images: tuple[str, ...] = ("astronaut", "chelsea", "coffee", "rocket")
    crop_seed: int = 0
    test_fraction: float = 0.1
    validation_fraction: float = 0.1
    split_seed: int = 0

    def __post_init__(self) -> None:
        check_int(self, "patch_size", low=1)
        check_int(self, "patches", low=2)
        if isinstance(self.images, str) or not isinstance(self.images, (list, tuple)):
            raise ValueError(f"images: must be a list of names from {list(BUNDLED_RGB)}, got {self.images!r}")
        object.__setattr__(self, "images", tuple(self.images))
        if not self.images:
            raise ValueError(f"images: must name at least one of {list(BUNDLED_RGB)}")
        for name in self.images:
            if name not in BUNDLED_RGB:
                raise ValueError(f"images: unknown image {name!r}; valid: {list(BUNDLED_RGB)}")
        if len(set(self.images)) != len(self.images):
            raise ValueError(f"images: names repeat: {list(self.images)}")
        check_int(self, "crop_seed", low=0)
        check_fractions(self)
        check_int(self, "split_seed", low=0)


def _load_image(name: str) -> np.ndarray:
    import skimage.data

    image = getattr(skimage.data, name)()
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, (name, image.shape)
    return image


@register("image_patches")
class ImagePatches(ImageDataset):
    Options = ImagePatchesOptions
    source = "random crops of scikit-image's bundled sample photographs (skimage.data)"

    def __init__(self, options: ImagePatchesOptions) -> None:
        self.options = options
        p = options.patch_size
        images = [_load_image(name) for name in options.images]
        for name, image in zip(options.images, images):
            if min(image.shape[:2]) < p:
                raise ValueError(
                    f"patch_size: {p} is larger than image {name!r} ({image.shape[0]}x{image.shape[1]})"
                )
        positions = torch.tensor(
            [(im.shape[0] - p + 1) * (im.shape[1] - p + 1) for im in images], dtype=torch.float64
        )
        g = torch.Generator().manual_seed(options.crop_seed)
        which = torch.multinomial(positions, options.patches, replacement=True, generator=g)
        u = torch.rand(options.patches, 2, generator=g, dtype=torch.float64)
        out = np.empty((options.patches, p, p, 3), dtype=np.uint8)
        for i, (j, (uy, ux)) in enumerate(zip(which.tolist(), u.tolist())):
            height, width = images[j].shape[:2]
            y, x = int(uy * (height - p + 1)), int(ux * (width - p + 1))
            out[i] = images[j][y : y + p, x : x + p]
        patches = torch.from_numpy(out).permute(0, 3, 1, 2).to(torch.float32) / 255.0
        train, validation, test = split_indices(
            options.patches, options.split_seed, options.test_fraction, options.validation_fraction
        )
        self._set(patches[train], which[train], patches[validation], which[validation],
                  patches[test], which[test])
