"""Quality of generated images without a download: a classifier trained in the suite gives the feature space.

FID needs the Inception network (a download, and meaningless on 8x8 digits). Instead a small conv
classifier is trained here on the image dataset's own labels (digits: the ten digit classes;
image_patches: the source photograph) and its penultimate activations (``FEATURES`` = 64 units)
are the feature space. It is trained once per dataset (seed 0, the same for every trial, so every
method and seed is measured in the same space) and memoised like the k-means reference
(:mod:`benchmark.experiments.cache`). The metrics are *domain-feature proxies*, not FID:

- ``frechet_classifier``: the Frechet distance between Gaussians fitted to the features of the
  generated and of the held-out images, ||mu_g - mu_r||^2 + tr(S_g + S_r - 2 (S_g S_r)^1/2), with
  unbiased (N - 1) covariances as FID uses (Heusel et al. 2017, arXiv:1706.08500); the square
  root is the exact symmetric one (``benchmark.experiments.metrics.gaussian_w2_squared``);
- ``knn_precision`` / ``knn_recall``: improved precision and recall of Kynkaanniemi et al. 2019
  (arXiv:1904.06991) with k = ``KNN_K`` (3): the real manifold is the union of balls around
  every held-out feature with radius its distance to its k-th nearest held-out neighbour;
  precision = share of generated features inside it, recall = share of held-out features inside
  the generated manifold built the same way.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from benchmark.experiments import metrics
from benchmark.experiments.cache import cached_training, tensor_digest

FEATURES = 64
KNN_K = 3
CLASSIFIER_STEPS = 600
CLASSIFIER_BATCH = 128
CLASSIFIER_LR = 2e-3
CLASSIFIER_SEED = 0


class Classifier(nn.Module):
    """(B, C, H, W) -> logits; ``features`` gives the penultimate ``FEATURES`` activations."""

    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(),
            nn.Linear(256, FEATURES), nn.ReLU(),
        )
        self.head = nn.Linear(FEATURES, classes)

    def features(self, images: Tensor) -> Tensor:
        return self.body(images)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.body(images))


def train_classifier(model: Classifier, images: Tensor, labels: Tensor, steps: int, seed: int) -> None:
    device = next(model.parameters()).device
    images, labels = images.to(device), labels.to(device)
    draw = torch.Generator(device=device).manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=CLASSIFIER_LR)
    model.train()
    for _ in range(steps):
        pick = torch.randint(0, images.shape[0], (min(CLASSIFIER_BATCH, images.shape[0]),), generator=draw,
                             device=device)
        loss = nn.functional.cross_entropy(model(images[pick]), labels[pick])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()


def dataset_classifier(
    name: str, options: Mapping[str, Any], dataset: Any, device: torch.device, cache_dir: str | Path | None,
    steps: int | None = None,
) -> tuple[Classifier, bool]:
    """The feature classifier of an image dataset (trained on its training split for ``steps``,
    default ``CLASSIFIER_STEPS``) and whether it came from the cache."""
    steps = CLASSIFIER_STEPS if steps is None else steps
    labels = dataset.train_labels.long()
    classes = int(labels.max()) + 1
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(CLASSIFIER_SEED)
        model = Classifier(dataset.channels, classes).to(device)
    key = (name, tuple(sorted((k, repr(v)) for k, v in dict(options).items())),
           tensor_digest(dataset.train, labels), steps, CLASSIFIER_BATCH, CLASSIFIER_LR, CLASSIFIER_SEED)
    hit = cached_training(model, "classifier", key,
                          lambda m: train_classifier(m, dataset.train, labels, steps, CLASSIFIER_SEED), cache_dir)
    model.eval()
    return model, hit


@torch.no_grad()
def features_of(model: Classifier, images: Tensor, batch: int = 512) -> Tensor:
    device = next(model.parameters()).device
    return torch.cat([model.features(images[i : i + batch].to(device)).double().cpu()
                      for i in range(0, images.shape[0], batch)])


def _two_d(x: Tensor | np.ndarray, name: str, at_least: int) -> np.ndarray:
    a = np.asarray(torch.as_tensor(x).detach().cpu().double().numpy())
    if a.ndim != 2:
        raise ValueError(f"{name}: expected shape (N, d), got {a.shape}")
    if a.shape[0] < at_least:
        raise ValueError(f"{name}: needs at least {at_least} rows, got {a.shape[0]}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: contains NaN or inf")
    return a


def frechet_distance(generated: Tensor | np.ndarray, real: Tensor | np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (N, d) (unbiased covariances)."""
    a, b = _two_d(generated, "generated", 2), _two_d(real, "real", 2)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"real: feature dim {b.shape[1]} differs from generated dim {a.shape[1]}")
    return metrics.gaussian_w2_squared(a.mean(0), np.cov(a, rowvar=False).reshape(a.shape[1], -1),
                                       b.mean(0), np.cov(b, rowvar=False).reshape(b.shape[1], -1))


def knn_precision_recall(generated: Tensor | np.ndarray, real: Tensor | np.ndarray,
                         k: int = KNN_K) -> tuple[float, float]:
    """Improved precision and recall (k-NN manifolds, module docstring)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k: must be an integer >= 1, got {k!r}")
    a = torch.from_numpy(_two_d(generated, "generated", k + 1))
    b = torch.from_numpy(_two_d(real, "real", k + 1))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"real: feature dim {b.shape[1]} differs from generated dim {a.shape[1]}")

    def radii(x: Tensor) -> Tensor:  # distance to the k-th nearest other point
        return torch.cdist(x, x).kthvalue(k + 1, dim=1).values

    cross = torch.cdist(a, b)  # (generated, real)
    precision = (cross <= radii(b)[None, :]).any(dim=1).double().mean()
    recall = (cross.T <= radii(a)[None, :]).any(dim=1).double().mean()
    return float(precision), float(recall)
