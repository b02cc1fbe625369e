"""Quantizer metrics: one definition shared by every experiment (``fit`` and ``vqvae``).

All metrics judge a codebook ``(K, d)`` on evaluated ``features (N, d)`` with nearest-code
assignment (the papers' definition, whatever assignment a method uses while training). The
assignment always goes through the shared fast search ``methods._core.nearest_code`` (faiss on
CPU); nothing here builds an ``N x K`` tensor.

- quantization error  E = mean_n ||z_n - c_{i(n)}||^2 (squared L2 summed over dims)
- utilization         U = |{k : count_k >= 1}| / K
- perplexity          exp(-sum_k p_k log p_k), p = usage histogram / N (max K)
- dead codes          K - |{k : count_k >= 1}|
- gaussian_w2_sq      the *squared* 2-Wasserstein distance W2^2 between N(mean_z, cov_z) and
                      N(mean_c, cov_c), closed form (Olkin-Pukelsheim / Bures):
                      ||mu_z - mu_c||^2 + tr(S_z + S_c - 2 (S_z^1/2 S_c S_z^1/2)^1/2).
                      Statistics are empirical, population (1/N) covariances: the features of the
                      evaluated sample, the codebook as K equally weighted points.
- kmeans error        held-out E of faiss k-means (Lloyd run to convergence, seeded) with the
                      same K, trained on a separate training sample and evaluated on the same
                      evaluated features; ``error_vs_kmeans = E / kmeans_error`` (1.0 = the
                      practical optimum; below 1 is possible, k-means is not a bound).

- bits_per_token      log2 K (sum_l log2 K_l for a multi-codebook quantizer)

Multi-codebook quantizers (``code_structure`` residual / grouped: L levels of K_l codes, indices
(N, L)) are judged through their own interface, :func:`evaluate_levels`: the quantizer's
``search`` gives the indices, ``indices_to_codes`` the quantized vectors, ``code_usage`` the
usage (``methods._usage``):

- E                   mean_n ||search_space(z_n) - indices_to_codes(search(z_n))||^2
- utilization         overall: sum_l |used at level l| / sum_l K_l; per level
                      ``utilization_level_<l>`` = |used at level l| / K_l
- perplexity          of the joint index tuple (at most min(N, prod_l K_l)); per level
                      ``perplexity_level_<l>`` (at most K_l)
- dead codes          sum_l K_l - sum_l |used at level l|
- gaussian_w2_sq      the implied codebook is every index tuple with equal weight (prod_l K_l
                      points, never built): the levels are independent uniform draws, so its mean
                      and covariance are exact sums over levels (residual: sum_l mean_l,
                      sum_l cov_l) or their concatenation (grouped: means concatenated,
                      covariance block-diagonal). NaN for another structure.
- kmeans_error        NaN. k-means with prod_l K_l codes is infeasible (2^32 codes at 4 levels of
                      256), and k-means with as many *bits* (K = 2^bits_per_token) is the same
                      infeasible reference; any smaller K is not a comparable reference (it has
                      fewer bits). ``error_vs_kmeans`` is NaN too.

k-means training size: k-means overfits with few points per code (64 per code gives a held-out
error worse than online SGD), so it trains on ``KMEANS_POINTS_PER_CODE`` (256) points per code at
every K (no total cap: a cap would weaken the reference as K grows); faiss's own subsampling cap
(``max_points_per_centroid``) is raised to match so it uses all of them. With fewer training
points than codes k-means is undefined and ``kmeans_error`` is NaN.

k-means iterations: Lloyd runs in blocks of ``KMEANS_NITER`` (25) iterations, each block started
from the last one's centroids, until a block lowers the training objective by less than
``KMEANS_TOLERANCE`` (1e-4) relative, at most ``KMEANS_MAX_NITER`` (1,000) iterations: 25
iterations stopped 0.7% above the converged error at d = 2, K = 256 (uniform square).
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark.experiments.cache import compute_once
from methods._usage import perplexity  # the one definition (also per level of multi-codebook usage)

KMEANS_POINTS_PER_CODE = 256
# The k-means reference is a yardstick of the data distribution, not part of a method: in ``fit`` its
# training sample and its initialisation use this seed for every run seed, so one reference per
# (distribution, K) serves every method and seed (memoised), and the spread of E / k-means over seeds
# is the methods' own. (A VQ-VAE's reference trains on that run's latents, so it varies with the run.)
KMEANS_REFERENCE_SEED = 0
KMEANS_NITER = 25
KMEANS_MAX_NITER = 1000
KMEANS_TOLERANCE = 1e-4


def _nearest_code(features: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    from methods._core import nearest_code  # the one shared search (faiss on CPU)

    return nearest_code(features, codebook)


def _as_2d(features: torch.Tensor | np.ndarray, name: str = "features") -> torch.Tensor:
    x = torch.as_tensor(features).detach()
    if x.ndim != 2:
        raise ValueError(f"{name}: expected shape (N, d), got {tuple(x.shape)}")
    if x.shape[0] < 1:
        raise ValueError(f"{name}: empty (N = 0)")
    return x.float()


def kmeans_train_size(codebook_size: int) -> int:
    """Number of training points the k-means reference wants for ``codebook_size`` codes: a fixed
    number per code at every K."""
    return KMEANS_POINTS_PER_CODE * codebook_size


# --------------------------------------------------------------------------- assignment-based
def quantization_error(
    features: torch.Tensor, codebook: torch.Tensor, indices: torch.Tensor | None = None
) -> float:
    """E = mean_n ||features_n - codebook[indices_n]||^2; ``indices`` default to the nearest codes.

    features (N, d), codebook (K, d), indices (N,) long.
    """
    features = _as_2d(features)
    codebook = _as_2d(codebook, "codebook")
    if indices is None:
        indices = _nearest_code(features, codebook)
    indices = torch.as_tensor(indices, device=codebook.device).long()
    diff = features.double() - codebook.double()[indices].to(features.device)
    return float(diff.pow(2).sum(dim=1).mean())


def code_counts(indices: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """Usage histogram (K,) int64 via bincount (no N x K one-hot)."""
    indices = torch.as_tensor(indices).reshape(-1).long()
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= codebook_size):
        raise ValueError(f"indices: values must lie in [0, {codebook_size})")
    return torch.bincount(indices.cpu(), minlength=codebook_size)


def utilization(counts: torch.Tensor) -> float:
    """Fraction of codes used at least once."""
    counts = torch.as_tensor(counts)
    return float((counts > 0).sum()) / counts.numel()


def dead_codes(counts: torch.Tensor) -> int:
    """Number of codes never used."""
    counts = torch.as_tensor(counts)
    return int((counts == 0).sum())


# --------------------------------------------------------------------------- Gaussian W2
def gaussian_stats(x: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and population covariance (d, d) of x (N, d), float64 numpy."""
    a = _as_2d(x).cpu().double().numpy()
    mean = a.mean(axis=0)
    centred = a - mean
    return mean, centred.T @ centred / a.shape[0]


def sqrtm_psd(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric PSD matrix (symmetrised, eigenvalues clamped at 0, never
    complex, unlike a general ``sqrtm``): ``methods._core.symmetric_sqrt`` in float64."""
    from methods._core import symmetric_sqrt

    return symmetric_sqrt(torch.as_tensor(np.asarray(matrix, dtype=np.float64))).numpy()


def gaussian_w2_squared(
    mean1: np.ndarray, cov1: np.ndarray, mean2: np.ndarray, cov2: np.ndarray
) -> float:
    """Squared 2-Wasserstein distance between N(mean1, cov1) and N(mean2, cov2) (closed form).

    The same closed form the Wasserstein quantizers optimise (``methods._core.gaussian_w2_squared``),
    in float64 with the eigenvalue floor at 0: the exact value, no gradient needed.
    """
    from methods._core import gaussian_w2_squared

    mean1, mean2 = np.asarray(mean1, np.float64), np.asarray(mean2, np.float64)
    cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    if mean1.shape != mean2.shape or cov1.shape != cov2.shape or cov1.shape != mean1.shape * 2:
        raise ValueError(
            f"gaussian_w2_squared: shapes do not match: means {mean1.shape}, {mean2.shape}; "
            f"covariances {cov1.shape}, {cov2.shape}"
        )
    tensors = [torch.from_numpy(a) for a in (mean1, cov1, mean2, cov2)]
    return float(gaussian_w2_squared(*tensors, eigenvalue_floor=0.0))


# --------------------------------------------------------------------------- k-means reference
def kmeans_codebook(
    train_features: torch.Tensor | np.ndarray,
    codebook_size: int,
    *,
    seed: int = 0,
    niter: int = KMEANS_MAX_NITER,
    cache_dir: str | Path | None = None,
) -> torch.Tensor | None:
    """faiss k-means centroids (K, d) trained on all of ``train_features`` (None if N < K), Lloyd
    run to convergence (module docstring) or at most ``niter`` iterations.

    With ``cache_dir``, the centroids are memoised there under a hash of the training points'
    bytes, K, the seed and the Lloyd settings: the trials of a sweep that share their data and seed
    (every method of one setting) fit the reference once, also when two of them miss it at the same
    time (:func:`benchmark.experiments.cache.compute_once`: a file lock, an atomic rename).
    """
    x = np.ascontiguousarray(_as_2d(train_features, "train_features").cpu().numpy(), np.float32)
    n, d = x.shape
    if n < codebook_size:
        return None
    if cache_dir is None:
        return torch.from_numpy(_lloyd(x, codebook_size, seed, niter))
    key = hashlib.sha256(x.tobytes())
    key.update(repr((x.shape, codebook_size, int(seed), niter, KMEANS_NITER, KMEANS_TOLERANCE)).encode())
    centroids, _ = compute_once(
        Path(cache_dir) / f"kmeans-{key.hexdigest()[:32]}.npy",
        np.load,
        lambda: _lloyd(x, codebook_size, seed, niter),
        lambda value, path: np.save(path, value),
    )
    return torch.from_numpy(centroids)


def _lloyd(x: np.ndarray, codebook_size: int, seed: int, niter: int) -> np.ndarray:
    """Lloyd's k-means (faiss) in blocks of KMEANS_NITER iterations until converged."""
    import faiss

    n, d = x.shape
    centroids, done, previous = None, 0, math.inf
    while done < niter:
        block = min(KMEANS_NITER, niter - done)
        km = faiss.Kmeans(
            d,
            codebook_size,
            niter=block,
            seed=int(seed) % (2**31),
            verbose=False,
            max_points_per_centroid=max(1, -(-n // codebook_size)),  # use every training point
        )
        km.train(x, init_centroids=centroids)
        centroids, done = np.array(km.centroids, dtype=np.float32).reshape(codebook_size, d), done + block
        objective = float(km.obj[-1])
        if previous - objective <= KMEANS_TOLERANCE * abs(objective):
            break
        previous = objective
    return centroids


def kmeans_error(
    train_features: torch.Tensor | np.ndarray,
    eval_features: torch.Tensor | np.ndarray,
    codebook_size: int,
    *,
    seed: int = 0,
    niter: int = KMEANS_MAX_NITER,
    cache_dir: str | Path | None = None,
) -> float:
    """Held-out Lloyd error: k-means fitted on ``train_features``, E measured on ``eval_features``.

    NaN when there are fewer training points than codes.
    """
    centroids = kmeans_codebook(train_features, codebook_size, seed=seed, niter=niter, cache_dir=cache_dir)
    if centroids is None:
        return float("nan")
    return quantization_error(_as_2d(eval_features, "eval_features").cpu(), centroids)


# --------------------------------------------------------------------------- the record
def _codebook_of(quantizer_or_codebook: Any) -> torch.Tensor:
    if isinstance(quantizer_or_codebook, (torch.Tensor, np.ndarray)):
        return _as_2d(quantizer_or_codebook, "codebook")
    codebook = getattr(quantizer_or_codebook, "codebook", None)
    if codebook is None:
        raise TypeError(
            "evaluate: expected a codebook (K, d) or a quantizer with a .codebook, got "
            f"{type(quantizer_or_codebook).__name__}"
        )
    with torch.no_grad():
        return _as_2d(codebook, "codebook")


def _implied_codebook_stats(quantizer: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """Mean (d,) and population covariance (d, d) of the implied codebook of a multi-codebook
    quantizer: all prod_l K_l index tuples, equally weighted (module docstring); None when its
    ``code_structure`` is neither residual nor grouped."""
    with torch.no_grad():
        levels = [_as_2d(level, "codebook").cpu() for level in quantizer.codebook.detach()]
    stats = [gaussian_stats(level) for level in levels]
    if quantizer.code_structure == "residual":  # q = sum_l e^l_{k_l}, k_l independent uniform
        return sum(m for m, _ in stats), sum(c for _, c in stats)
    if quantizer.code_structure == "grouped":  # q = [e^1_{k_1}, ..., e^G_{k_G}]
        import scipy.linalg

        return np.concatenate([m for m, _ in stats]), scipy.linalg.block_diag(*(c for _, c in stats))
    return None


def evaluate_levels(
    quantizer: Any, features: torch.Tensor, *, device: torch.device | str = "cpu", chunk: int = 65536
) -> dict[str, float]:
    """The metric record of a multi-codebook quantizer on raw ``features (N, d)`` (module docstring).

    The single-codebook record plus ``utilization_level_<l>`` and ``perplexity_level_<l>`` for each level l;
    the search runs on ``device`` in chunks of ``chunk`` rows.
    """
    features = _as_2d(features)
    if features.shape[1] != quantizer.dim:
        raise ValueError(f"dim: features have dim {features.shape[1]} but the quantizer has dim {quantizer.dim}")
    indices, spaces, errors = [], [], []
    with torch.no_grad():
        for start in range(0, features.shape[0], chunk):
            z = features[start : start + chunk].to(device)
            index = quantizer.search(z)
            space = quantizer.search_space(z)
            errors.append((space.double() - quantizer.indices_to_codes(index).double()).pow(2).sum(dim=1).cpu())
            indices.append(quantizer.level_indices(index).cpu())
            spaces.append(space.float().cpu())
    usage = quantizer.code_usage(torch.cat(indices))
    stats = _implied_codebook_stats(quantizer)
    w2_squared = float("nan") if stats is None else gaussian_w2_squared(*gaussian_stats(torch.cat(spaces)), *stats)
    record = {
        "quantization_error": float(torch.cat(errors).mean()),
        "utilization": float(usage.overall_utilization),
        "perplexity": float(usage.joint_perplexity),
        "dead_codes": float(sum(quantizer.level_codebook_sizes) - sum(int((c > 0).sum()) for c in usage.counts)),
        "gaussian_w2_sq": w2_squared,
        "kmeans_error": float("nan"),
        "error_vs_kmeans": float("nan"),
        "bits_per_token": float(quantizer.bits_per_token),
    }
    for level, (u, p) in enumerate(zip(usage.utilization, usage.perplexity)):
        record[f"utilization_level_{level}"] = float(u)
        record[f"perplexity_level_{level}"] = float(p)
    return record


def evaluate(
    quantizer_or_codebook: Any,
    features: torch.Tensor,
    *,
    kmeans_features: torch.Tensor | None = None,
    seed: int = 0,
    kmeans_niter: int = KMEANS_MAX_NITER,
    kmeans_cache: str | Path | None = None,
) -> dict[str, float]:
    """The full metric record (floats; its keys: ``benchmark.metric_registry``) of a codebook on ``features (N, d)``.

    A single codebook (K, d) only: a multi-codebook quantizer is judged by :func:`evaluate_levels`.

    ``kmeans_features``: the training sample of the k-means reference (see the module docstring
    for its size); None skips k-means (kmeans_error and error_vs_kmeans are NaN).
    """
    if getattr(quantizer_or_codebook, "code_structure", "single") != "single":
        return evaluate_levels(quantizer_or_codebook, features)
    codebook = _codebook_of(quantizer_or_codebook).cpu()
    features = _as_2d(features).cpu()
    if features.shape[1] != codebook.shape[1]:
        raise ValueError(
            f"dim: features have dim {features.shape[1]} but the codebook has dim {codebook.shape[1]}"
        )
    k = codebook.shape[0]
    indices = _nearest_code(features, codebook)
    counts = code_counts(indices, k)
    error = quantization_error(features, codebook, indices)
    w2_squared = gaussian_w2_squared(*gaussian_stats(features), *gaussian_stats(codebook))
    if kmeans_features is None:
        km_error = float("nan")
    else:
        km_error = kmeans_error(kmeans_features, features, k, seed=seed, niter=kmeans_niter, cache_dir=kmeans_cache)
    return {
        "quantization_error": error,
        "utilization": utilization(counts),
        "perplexity": perplexity(counts),
        "dead_codes": float(dead_codes(counts)),
        "gaussian_w2_sq": w2_squared,
        "kmeans_error": km_error,
        "error_vs_kmeans": error / km_error if km_error > 0 else float("nan"),
        "bits_per_token": math.log2(k),
    }
