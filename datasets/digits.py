"""scikit-learn's handwritten digits: 1,797 grey 8x8 images, 10 classes (works offline).

Source: UCI "Optical Recognition of Handwritten Digits" (Alpaydin & Kaynak, 1998), shipped with
scikit-learn as ``sklearn.datasets.load_digits``. Pixels are counts 0..16 and are divided by 16,
so images lie in [0, 1]. There is no official split: ``test_fraction`` of the images, chosen by a
permutation seeded with ``split_seed``, form the test set, the next ``validation_fraction`` of that
permutation the validation set, the rest ``train`` (all three keep the original order).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ._common import ImageDataset, check_fractions, check_int, split_indices
from ._registry import register


@dataclass(frozen=True)
class DigitsOptions:
    test_fraction: float = 0.2
    validation_fraction: float = 0.1
    split_seed: int = 0

    def __post_init__(self) -> None:
        check_fractions(self)
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
        train, validation, test = split_indices(
            len(images), options.split_seed, options.test_fraction, options.validation_fraction
        )
        self._set(images[train], labels[train], images[validation], labels[validation],
                  images[test], labels[test])
