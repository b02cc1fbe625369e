"""Every fast path of the nearest-code search returns the indices of a plain brute-force reference.

Reference: squared distances from explicit differences in float64, ``((z - c)^2).sum(-1)``, and
``argmin`` (first minimum). Not ``torch.cdist``: for more than 25 rows it switches to the
``||z||^2 + ||c||^2 - 2 z.c`` matmul form, whose rounding differs between identical codes, so even
float64 cdist does not send exact ties to the lowest index.

Fast paths: faiss (CPU float32, what ``nearest_code`` dispatches to), the chunked torch matmul
(several chunk sizes, including ones that do not divide N and one-row chunks), float64 (torch path).
Timings live in ``benchmark.perf.bench``; the last test only runs its ``--quick`` mode as a smoke test.
"""
from __future__ import annotations

import functools
import json

import faiss
import pytest
import torch

import methods._core as core
from methods._core import lowest_duplicate_index, nearest_code, nearest_code_faiss, nearest_code_torch

EPS32 = torch.finfo(torch.float32).eps


def reference_distances(features: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """(N, K) squared distances, float64, from explicit differences (the same arithmetic per code)."""
    codebook = codebook.double()[None, :, :]
    return torch.cat([(block.double()[:, None, :] - codebook).pow(2).sum(dim=-1)
                      for block in features.split(128)]) if features.shape[0] else features.new_zeros(0, codebook.shape[1], dtype=torch.float64)


def reference_indices(features: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    return reference_distances(features, codebook).argmin(dim=1)


def faiss_sequential(features: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """faiss' one-pair-at-a-time path (its default below 128,000 query floats), which our calls skip."""
    with core._FAISS_THRESHOLD_LOCK:
        saved = faiss.cvar.distance_compute_blas_threshold
        faiss.cvar.distance_compute_blas_threshold = 1 << 30
        try:
            distances, indices = faiss.knn(features.contiguous().numpy(), codebook.contiguous().numpy(), 1)
        finally:
            faiss.cvar.distance_compute_blas_threshold = saved
    return torch.from_numpy(indices[:, 0])


FAST_PATHS = {
    "faiss": nearest_code_faiss,
    "faiss_sequential": faiss_sequential,
    "dispatch": nearest_code,
    "torch_default_chunk": lambda z, c: nearest_code_torch(z, c),
    "torch_chunk_1": lambda z, c: nearest_code_torch(z, c, chunk_size=1),
    "torch_chunk_64": lambda z, c: nearest_code_torch(z, c, chunk_size=64),
    "torch_chunk_97": lambda z, c: nearest_code_torch(z, c, chunk_size=97),
    "float64": lambda z, c: nearest_code(z.double(), c.double()),
    "float64_chunk_13": lambda z, c: nearest_code_torch(z.double(), c.double(), chunk_size=13),
}


def codebook_with_duplicates(k: int, dim: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A codebook where codes are repeated at higher indices, and features whose nearest code is
    always one of the repeated ones: (codebook (K, d), features (N, d))."""
    codebook = torch.randn(k, dim, generator=generator)
    low = max(1, k // 3)  # originals in [0, low), copies in [low, K)
    originals = torch.randint(0, low, (min(max(1, k // 2), k - low),), generator=generator)
    copies = torch.randperm(k - low, generator=generator)[: originals.shape[0]] + low
    codebook[copies] = codebook[originals]
    # features near (but not at) repeated codes: the nearest distance is an exact tie between copies
    picks = originals[torch.randint(0, originals.shape[0], (203,), generator=generator)]
    features = codebook[picks] + 1e-2 * torch.randn(203, dim, generator=generator)
    return codebook, features


@functools.lru_cache(maxsize=None)
def tie_case(dim: int, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(codebook, features, reference indices, rows whose minimum is an exact tie)."""
    codebook, features = codebook_with_duplicates(k, dim, torch.Generator().manual_seed(1000 * dim + k))
    distances = reference_distances(features, codebook)
    tied = (distances == distances.min(dim=1, keepdim=True).values).sum(dim=1) > 1
    return codebook, features, distances.argmin(dim=1), tied


@functools.lru_cache(maxsize=None)
def random_case(n: int, k: int, dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(n + k + dim)
    codebook = torch.randn(k, dim, generator=generator)
    features = 1.5 * torch.randn(n, dim, generator=generator) + 0.3
    return codebook, features, reference_indices(features, codebook)


@pytest.mark.parametrize("path", sorted(FAST_PATHS))
@pytest.mark.parametrize("dim", [1, 3, 8, 64])
@pytest.mark.parametrize("k", [2, 17, 1025])
def test_exact_ties_go_to_the_lowest_index(path: str, dim: int, k: int) -> None:
    codebook, features, expected, tied = tie_case(dim, k)
    got = FAST_PATHS[path](features, codebook)
    # rows whose reference minimum is shared by identical codes are exact ties: whenever a path picks
    # that code, it must be its lowest copy. At d = 1 another code can also lie within float32
    # rounding of a tied one (the norm expansion of BLAS paths), so every other row is checked by distance.
    exact = tied & (codebook[got] == codebook[expected]).all(dim=1)
    assert exact.sum() >= tied.sum() // 2
    assert torch.equal(got[exact], expected[exact])
    assert_same_or_within_rounding(features[~exact], codebook, got[~exact], expected[~exact])


@pytest.mark.parametrize("path", sorted(FAST_PATHS))
@pytest.mark.parametrize("n", [1, 5, 19, 20, 21, 257])
def test_all_codes_identical_give_index_zero(path: str, n: int) -> None:
    # faiss uses a direct SIMD loop below 20 queries and BLAS from 20 on: both are covered
    generator = torch.Generator().manual_seed(n)
    codebook = torch.randn(1, 8, generator=generator).repeat(37, 1)
    features = torch.randn(n, 8, generator=generator)
    assert torch.equal(FAST_PATHS[path](features, codebook), torch.zeros(n, dtype=torch.long))


def assert_same_or_within_rounding(features, codebook, got, expected) -> None:
    """Where a float32 path picks another code than the float64 reference, both codes must be at the
    same distance up to float32 rounding.

    The fast paths compute ||c||^2 - 2 z.c (+ ||z||^2) in float32: each of these terms carries a
    relative rounding error of a few EPS32 (a length-d dot product about d EPS32 in the worst case),
    so two codes whose exact distances differ by less than about (d + 2) EPS32 (||z||^2 + ||c||^2)
    may come out in either order. A genuine search error would be off by far more.
    """
    differ = got != expected
    if not differ.any():
        return
    z, d = features[differ].double(), features.shape[1]
    c_got, c_ref = codebook[got[differ]].double(), codebook[expected[differ]].double()
    dist_got = (z - c_got).pow(2).sum(dim=1)
    dist_ref = (z - c_ref).pow(2).sum(dim=1)
    scale = z.pow(2).sum(dim=1) + c_got.pow(2).sum(dim=1) + c_ref.pow(2).sum(dim=1)
    assert (dist_got >= dist_ref).all()  # the reference is the exact minimum
    assert (dist_got - dist_ref <= 2 * (d + 2) * EPS32 * scale).all()


@pytest.mark.parametrize("path", sorted(FAST_PATHS))
@pytest.mark.parametrize(("n", "k", "dim"), [(1500, 2048, 8), (300, 700, 64), (4097, 65, 2), (513, 1500, 16)])
def test_random_data_matches_the_float64_reference(path: str, n: int, k: int, dim: int) -> None:
    codebook, features, expected = random_case(n, k, dim)
    got = FAST_PATHS[path](features, codebook)
    assert got.dtype == torch.long and got.shape == (n,)
    if path.startswith("float64"):
        # float64 search of float32 data: exact up to float64 rounding, i.e. identical here
        assert torch.equal(got, expected)
    else:
        assert (got == expected).float().mean() > 0.99
        assert_same_or_within_rounding(features, codebook, got, expected)


@pytest.mark.parametrize("path", sorted(FAST_PATHS))
def test_single_code_and_empty_input(path: str) -> None:
    generator = torch.Generator().manual_seed(7)
    features = torch.randn(50, 4, generator=generator)
    assert torch.equal(FAST_PATHS[path](features, torch.randn(1, 4, generator=generator)),
                       torch.zeros(50, dtype=torch.long))
    empty = FAST_PATHS[path](features[:0], torch.randn(5, 4, generator=generator))
    assert empty.shape == (0,) and empty.dtype == torch.long


def test_non_contiguous_inputs_are_searched_correctly() -> None:
    generator = torch.Generator().manual_seed(8)
    features = torch.randn(8, 300, generator=generator).t()  # (300, 8), non-contiguous
    codebook = torch.randn(16, 100, generator=generator).t()[:, :8][::2]  # (50, 8), strided
    expected = reference_indices(features, codebook)
    for path in ("faiss", "dispatch", "torch_chunk_97"):
        got = FAST_PATHS[path](features, codebook)
        assert_same_or_within_rounding(features, codebook, got, expected)


def test_faiss_path_splits_large_inputs_into_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core, "FAISS_ROWS_PER_CALL", 100)
    generator = torch.Generator().manual_seed(9)
    codebook, _ = codebook_with_duplicates(300, 8, generator)
    features = torch.randn(1234, 8, generator=generator)
    expected = reference_indices(features, codebook)
    assert_same_or_within_rounding(features, codebook, nearest_code_faiss(features, codebook), expected)


def test_faiss_search_restores_the_global_blas_threshold() -> None:
    saved = faiss.cvar.distance_compute_blas_threshold
    nearest_code_faiss(torch.randn(10, 8), torch.randn(20, 8))
    assert faiss.cvar.distance_compute_blas_threshold == saved


def test_lowest_duplicate_index() -> None:
    codebook = torch.randn(10, 3, generator=torch.Generator().manual_seed(10))
    codebook[5] = codebook[2]
    codebook[7] = codebook[2]
    codebook[8] = 0.0
    codebook[9] = -0.0  # same distances as +0.0: the same code
    expected = torch.tensor([0, 1, 2, 3, 4, 2, 6, 2, 8, 8])
    for dtype in (torch.float16, torch.float32, torch.float64):
        assert torch.equal(lowest_duplicate_index(codebook.to(dtype)), expected)
    assert lowest_duplicate_index(torch.randn(100, 4)) is None


def test_lowest_duplicate_index_is_remembered_only_for_an_equal_codebook() -> None:
    codebook = torch.randn(50, 3, generator=torch.Generator().manual_seed(11))
    assert lowest_duplicate_index(codebook) is None
    codebook[4] = codebook[1]  # changed in place: same tensor, same address, new answer
    assert lowest_duplicate_index(codebook)[4] == 1
    codebook[4] += 1.0
    assert lowest_duplicate_index(codebook) is None
    other = codebook.clone()
    other[9] = other[0]
    for _ in range(2):  # alternating codebooks each get their own answer
        assert lowest_duplicate_index(codebook) is None and lowest_duplicate_index(other)[9] == 0


def test_perf_quick_smoke(tmp_path) -> None:
    from benchmark.perf import bench as perf

    report = perf.main(["--quick", "--out", str(tmp_path), "--sections", "search,memory,batch,step,ot"])
    data = json.loads((tmp_path / "perf.json").read_text())
    markdown = (tmp_path / "perf.md").read_text()
    assert data["environment"]["device"] == "cpu"
    assert data["environment"]["torch_threads"] >= 1
    sections = {row["section"] for row in data["measurements"]}
    assert sections == {"search", "search_memory", "search_batch", "training_step", "exact_ot", "sliced_wasserstein",
                        "sinkhorn"}
    assert {row["name"] for row in data["measurements"] if row["section"] == "sinkhorn"} == {
        "ours", "pot_sinkhorn", "pot_sinkhorn_log"}
    assert "| 64 | 32 |" in markdown and "ours / POT log" in markdown
    assert "`python -m benchmark perf --quick --out" in markdown and "OMP_WAIT_POLICY=" in markdown
    assert {row["name"] for row in data["measurements"] if row["section"] == "search_batch"} == {
        "ours", "faiss_flat_l2", "torch_chunked"}
    assert "## Search at training-batch sizes" in markdown
    names = {row["name"] for row in data["measurements"] if row["section"] == "search"}
    assert {"ours", "faiss_flat_l2", "torch_chunked", "torch_cdist", "vqp_eval"} <= names
    import methods

    stepped = {row["name"] for row in data["measurements"] if row["section"] == "training_step"}
    assert stepped == set(methods.available())
    for row in data["measurements"]:
        if row["status"] == "ok":
            assert row["median_s"] > 0 and len(row["seconds"]) >= 1
    assert "## Nearest-code search" in markdown and "| vanilla |" in markdown
    assert report["summary"]["targets"]["max_ours_over_faiss"] is not None
    # the binary methods are stepped at K = 2^d only, every pair of ours and the peer side by side
    binary_k = 2 ** data["sizes"]["step_dim"]
    lfq = {row["params"]["codebook_size"]: row["status"] for row in data["measurements"]
           if row["section"] == "training_step" and row["name"] == "lfq"}
    assert lfq[binary_k] == "ok" and set(lfq.values()) <= {"ok", "skipped"}
    pairs = {(p["ours"], p["peer"]) for p in report["summary"]["training_step_vs_peer"] if p["codebook_size"] == binary_k}
    assert pairs == set(perf.PEER_PAIRS)
    assert "### Ours / peer" in markdown and "| residual | vqp_residual |" in markdown
    # --merge with no section re-renders the same measurements
    rerendered = perf.main(["--quick", "--out", str(tmp_path), "--merge", "--sections", ""])
    assert rerendered["measurements"] == data["measurements"]
    assert (tmp_path / "perf.md").read_text() == markdown
    with pytest.raises(SystemExit, match="--quick"):  # quick sizes never merge into a full report
        perf.main(["--out", str(tmp_path), "--merge", "--sections", "ot"])


def test_perf_merge_replaces_a_rerun_section_whole() -> None:
    """A section re-run at other sizes replaces all of its old rows and sizes; other sections stay."""
    from dataclasses import asdict

    from benchmark.perf import bench as perf

    def row(section, name, **params):
        return asdict(perf.Measurement(section, name, params, seconds=[1.0], median_s=1.0))

    old = {"sizes": asdict(perf.FULL), "measurements": [
        row("search", "ours", dim=8, codebook_size=1024),
        row("training_step", "vanilla", dim=8, codebook_size=16384, batch=8192),
        row("training_step", "vanilla", dim=8, codebook_size=64, batch=8192)]}
    new = [perf.Measurement("training_step", "vanilla", {"dim": 8, "codebook_size": 64, "batch": 256})]
    rows, sizes, replaced = perf.merge_runs(old, new, perf.QUICK, {"step"})
    assert replaced == 2 and [(r.section, r.params.get("batch")) for r in rows] == [("search", None), ("training_step", 256)]
    assert sizes.step_ks == perf.QUICK.step_ks and sizes.step_batch == perf.QUICK.step_batch
    assert sizes.search_ks == perf.FULL.search_ks and sizes.repeats == perf.FULL.repeats


@pytest.mark.parametrize("shape", [(5, 301), (64, 4096)])  # the second is split over threads
def test_keyed_sort_is_torch_stable_sort_ties_and_signed_zeros_included(shape) -> None:
    from methods._core import sort_rows_values, sort_rows_with_order

    generator = torch.Generator().manual_seed(11)
    x = torch.randn(*shape, generator=generator)
    x[:, 7] = x[:, 3]  # ties keep their column order
    x[:, 9], x[:, 10], x[:, 11] = -0.0, 0.0, -0.0  # signed zeros tie
    x[:, 12] = float("inf")
    x[:, 13] = -float("inf")
    x[:, 14] = 1e-45  # a subnormal
    values, order = sort_rows_with_order(x)
    reference_values, reference_order = torch.sort(x, dim=1, stable=True)
    assert torch.equal(order, reference_order)
    assert torch.equal(values, reference_values)
    assert torch.equal(sort_rows_values(x), reference_values)
    assert torch.equal(sort_rows_values(x.double()), reference_values.double())
    strided = x.t().t()[:, ::2]
    assert torch.equal(sort_rows_with_order(strided)[1], torch.sort(strided, dim=1, stable=True).indices)


def _wasserstein_1d_by_sorting(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Plain reference: gather both sorted quantile functions on the merged grid, autograd through sort."""
    n, m = a.shape[0], b.shape[0]
    a_sorted, b_sorted = torch.sort(a.t(), dim=1).values, torch.sort(b.t(), dim=1).values
    steps = [torch.arange(1, count + 1, dtype=torch.float64) / count for count in (n, m)]
    levels = torch.unique(torch.cat(steps))
    widths = torch.diff(levels, prepend=levels.new_zeros(1))
    middles = levels - widths / 2
    rank_a = (middles * n).floor().long().clamp(max=n - 1)
    rank_b = (middles * m).floor().long().clamp(max=m - 1)
    diff = a_sorted[:, rank_a] - b_sorted[:, rank_b]
    return (diff.pow(2) * widths).sum(dim=1)


@pytest.mark.parametrize("n,m", [(40, 40), (37, 11), (11, 37), (8, 100), (64, 256), (256, 64), (3, 1)])
def test_wasserstein_1d_value_and_gradients_match_autograd_through_sort(n, m) -> None:
    from methods._core import wasserstein_1d_squared

    generator = torch.Generator().manual_seed(n * 1000 + m)
    a = torch.randn(n, 6, generator=generator, dtype=torch.float64).requires_grad_()
    b = (torch.randn(m, 6, generator=generator, dtype=torch.float64) * 2 + 1).requires_grad_()
    weights = torch.randn(6, generator=generator, dtype=torch.float64)
    ours = wasserstein_1d_squared(a, b)
    reference = _wasserstein_1d_by_sorting(a, b)
    assert torch.allclose(ours, reference, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad((ours * weights).sum(), (a, b))
    reference_grads = torch.autograd.grad((reference * weights).sum(), (a, b))
    for got, expected in zip(grads, reference_grads):
        assert torch.allclose(got, expected, rtol=1e-10, atol=1e-12)
    # float32 with a detached side: the training path of sliced_wasserstein
    a32, b32 = a.detach().float(), b.detach().float().requires_grad_()
    ours32 = wasserstein_1d_squared(a32, b32)
    assert torch.allclose(ours32.double(), reference.detach(), rtol=1e-5)
    (grad_b32,) = torch.autograd.grad((ours32 * weights.float()).sum(), b32)
    assert torch.allclose(grad_b32.double(), reference_grads[1], rtol=1e-4, atol=1e-6)


def test_wasserstein_1d_rejects_mismatched_projections() -> None:
    from methods._core import wasserstein_1d_squared

    with pytest.raises(ValueError, match="a, b"):
        wasserstein_1d_squared(torch.zeros(4, 3), torch.zeros(5, 2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [1, 2, 5, 64])
def test_mmd_median_bandwidth_is_torch_lower_median(n: int, dtype: torch.dtype) -> None:
    from methods.mmd import median_bandwidth_squared, squared_distances

    generator = torch.Generator().manual_seed(n)
    x = torch.randn(n, 3, generator=generator, dtype=dtype)
    y = torch.randn(n + 1, 3, generator=generator, dtype=dtype)
    xx, yy, xy = squared_distances(x, x), squared_distances(y, y), squared_distances(x, y)
    upper_x, upper_y = torch.triu_indices(n, n, 1), torch.triu_indices(n + 1, n + 1, 1)
    pooled = torch.cat([xx[upper_x[0], upper_x[1]], yy[upper_y[0], upper_y[1]], xy.reshape(-1)])
    assert torch.equal(median_bandwidth_squared(xx, yy, xy), pooled.median())


def _sort_in_child(queue) -> None:
    from methods._core import sort_rows_values

    torch.set_num_threads(2)
    queue.put(bool(torch.equal(sort_rows_values(torch.arange(8192.0).flip(0).reshape(8, 1024)),
                               torch.arange(8192.0).flip(0).reshape(8, 1024).sort(dim=1).values)))


def test_threaded_sort_works_in_a_forked_child() -> None:
    # the thread pool of the parent does not survive fork: the child must build its own, not hang
    import multiprocessing

    from methods._core import sort_rows_values

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        sort_rows_values(torch.randn(64, 4096))  # the parent's pool exists
    finally:
        torch.set_num_threads(threads)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_sort_in_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0 and queue.get(timeout=5) is True


def test_row_hashes_separate_codes_that_differ_by_a_few_ulps() -> None:
    # EMA codebooks hold codes a few ULPs apart; a linear hash of the bits collided on such pairs
    # (seen: bit deltas (0, 0, -1, 0, 1, 1, 0, -1)), sending every search to the slow exact fallback
    generator = torch.Generator().manual_seed(12)
    base = torch.randn(1, 8, generator=generator).view(torch.int32)
    deltas = torch.randint(-2, 3, (3000, 8), generator=generator, dtype=torch.int32)
    deltas[0] = torch.tensor([0, 0, -1, 0, 1, 1, 0, -1], dtype=torch.int32)
    rows = (base + deltas).view(torch.float32)
    distinct = torch.unique(deltas, dim=0).shape[0]
    assert torch.unique(core._row_hashes(rows)).shape[0] == distinct
    # with exact copies mixed in, every code maps to its lowest copy, as a brute-force reference
    codebook = torch.cat([rows, rows[:500]])
    canonical = lowest_duplicate_index(codebook)
    equal = (codebook[:, None, :] == codebook[None, :, :]).all(dim=2)
    assert torch.equal(canonical, equal.int().argmax(dim=1))
