"""scikit-learn's handwritten digits: 1,797 grey 8x8 images, 10 classes (works offline).

Source: UCI "Optical Recognition of Handwritten Digits" (Alpaydin & Kaynak, 1998), shipped with
scikit-learn as ``sklearn.datasets.load_digits``. Pixels are counts 0..16 and are divided by 16,
so images lie in [0, 1]. There is no official split: ``test_fraction`` of the images, chosen by a
permutation seeded with ``split_seed``, form the test set (both sets keep the original order).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ._common import ImageDataset, check_float, check_int, split
from ._registry import register


@dataclass(frozen=True)
class DigitsOptions:
    test_fraction: float = 0.2
    split_seed: int = 0

    def __post_init__(self) -> None:
        check_float(self, "test_fraction", low=0.0, high=1.0, open_low=True, open_high=True)
        check_int(self, "split_seed", low=0)


@register("digits")
class Digits(ImageDataset):
    Options = DigitsOptions
    source = "sklearn.datasets.load_digits (UCI optical digits, Alpaydin & Kaynak 1998)"

    def __init__(self, options: DigitsOptions) -> None:
        from sklearn.datasets import load_digits

        self.options = options
        bunch = load_digits()
        images = torch.from_numpy(bunch.images).to(torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8)
        labels = torch.from_numpy(bunch.target).to(torch.long)
        train, test = split(len(images), options.test_fraction, options.split_seed)
        self._set(images[train], labels[train], images[test], labels[test])
