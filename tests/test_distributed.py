"""Distributed training: 2 ranks with half of every batch train as one process on the whole batch.

For every registered method (and a few options that reach more of the methods' batch state), a
tiny model (a linear encoder, the quantizer, the loss ``out.loss + ||q - x||^2``) takes ``STEPS``
SGD steps on batches of ``BATCH`` rows, once in this process on the whole batches, and once on
``WORLD`` gloo ranks on the loopback (``torch.multiprocessing`` spawn, started once for the whole
module), rank r taking the r-th slice of each batch, the model wrapped in
``DistributedDataParallel`` (``broadcast_buffers=False``: each rank keeps its own buffers, so
only the quantizers' own synchronisation keeps them equal). Every rank's codebook and encoder
must equal the single process's to ``TOLERANCE`` (a wrapped peer declared not
``ddp_equivalent`` must still differ: the declaration is checked both ways). A method whose ``rank_synchronised`` flag is
False declares that it needs no synchronisation (its docstring says why) and is held to the same
test; one with the ``sync_ranks`` option is also run with it off, which must drift (so the test
can see what the synchronisation fixes). Figures: ``python -m tests.test_distributed``.
"""
from __future__ import annotations

import datetime
import functools
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import methods

WORLD, STEPS, BATCH, DIM, K, LR = 2, 20, 64, 4, 16, 0.05
TOLERANCE = 1e-5
# A run without synchronisation must fail the tolerance.
DRIFT = TOLERANCE
DTYPE = torch.float64


@dataclass(frozen=True)
class Case:
    method: str
    options: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.method + "".join(f"[{k}={v}]" for k, v in sorted(self.options.items()))


# Options that reach batch state the defaults leave idle: dead-code restarts, the queue's
# evictions, batch statistics, the deferred pull, subsamples of the gathered batch, dropout draws.
EXTRA_CASES = (
    Case("kmeans_ema", {"dead_after": 2}),
    Case("wasserstein", {"queue_size": 100}),
    Case("wasserstein", {"statistics": "batch"}),
    Case("online", {"pull": "after_step"}),
    Case("mmd", {"max_samples": 24}),
    Case("exact_ot", {"max_samples": 24}),
    Case("residual", {"quantizer_dropout": 0.5}),
)
# Synchronising methods whose default options keep no batch state (so they cannot drift there).
IDLE_AT_DEFAULTS = {"residual": "quantizer_dropout 0: no draws"}


def all_cases() -> list[Case]:
    return [Case(name) for name in methods.available()] + list(EXTRA_CASES)


def has_sync_option(case: Case) -> bool:
    return "sync_ranks" in methods.get(case.method).option_names()


def drift_cases() -> list[Case]:
    return [case for case in all_cases() if methods.get(case.method).rank_synchronised and has_sync_option(case)
            and (case.options or case.method not in IDLE_AT_DEFAULTS)]


class Model(nn.Module):
    """A linear encoder (near the identity) in front of the quantizer; the decoder is the identity."""

    def __init__(self, case: Case, **options):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        size = 2**DIM if methods.get(case.method).codebook_size_rule == "binary" else K
        self.quantizer = methods.build(case.method, dim=DIM, codebook_size=size, generator=generator,
                                       **case.options, **options)
        self.encoder = nn.Linear(DIM, DIM)
        with torch.no_grad():
            self.encoder.weight.copy_(torch.eye(DIM) + 0.1 * torch.randn(DIM, DIM, generator=generator))
            self.encoder.bias.zero_()
        self.to(DTYPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.quantizer(self.encoder(x))
        return out.loss + (out.quantized - x).pow(2).mean()


def batches() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(BATCH, DIM, generator=generator) * 1.5 + 0.3).to(DTYPE) for _ in range(STEPS)]


def train(model: Model, wrapped: nn.Module, shard: slice) -> dict[str, torch.Tensor]:
    optimizer = torch.optim.SGD([p for p in wrapped.parameters() if p.requires_grad], lr=LR)
    model.train()
    for x in batches():
        optimizer.zero_grad()
        wrapped(x[shard]).backward()
        optimizer.step()
    model.eval()  # applies a deferred pull
    with torch.no_grad():  # U and perplexity of the last batch: over every rank's shard, as one process counts them
        usage = model.quantizer.code_usage(model.quantizer(model.encoder(x[shard])).indices)
    return {"codebook": model.quantizer.codebook.detach().clone(), "encoder": model.encoder.weight.detach().clone(),
            "bias": model.encoder.bias.detach().clone(),
            "usage": torch.tensor([usage.overall_utilization, usage.joint_perplexity, *usage.perplexity],
                                  dtype=torch.float64)}


@functools.lru_cache(maxsize=None)
def _single_process(case_key: str) -> dict[str, torch.Tensor]:
    case = next(case for case in all_cases() if case.key == case_key)
    model = Model(case)
    return train(model, model, slice(None))


def single_process(case: Case) -> dict[str, torch.Tensor]:
    """The codebook and encoder after training in this process on the whole batches."""
    return _single_process(case.key)


def _rank_main(rank: int, port: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=120))
    try:
        results = {}
        shard = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
        for case in all_cases():
            runs = [("synchronised", {})]
            if has_sync_option(case):
                runs.append(("unsynchronised", {"sync_ranks": False}))
            for label, options in runs:
                model = Model(case, **options)
                wrapped = nn.parallel.DistributedDataParallel(model, broadcast_buffers=False)
                for key, value in train(model, wrapped, shard).items():
                    results[f"{case.key}|{label}|{key}"] = value
        torch.save(results, Path(folder) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_ranks(folder: Path) -> list[dict[str, torch.Tensor]]:
    mp.spawn(_rank_main, args=(free_port(), str(folder)), nprocs=WORLD, join=True)
    return [torch.load(folder / f"rank{rank}.pt", weights_only=True) for rank in range(WORLD)]


def max_difference(ranks: list[dict[str, torch.Tensor]], case: Case, label: str, reference: dict) -> float:
    return max(float((rank[f"{case.key}|{label}|{key}"] - value).abs().max())
               for rank in ranks for key, value in reference.items())


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict[str, torch.Tensor]]:
    return run_ranks(tmp_path_factory.mktemp("ranks"))


@pytest.mark.parametrize("case", all_cases(), ids=lambda case: case.key)
def test_ranks_train_as_one_process(ranks, case: Case) -> None:
    difference = max_difference(ranks, case, "synchronised", single_process(case))
    if methods.get(case.method).ddp_equivalent:
        assert difference < TOLERANCE
    else:  # a peer's declared defect (its docstring says which): it must still be there
        assert difference > DRIFT


@pytest.mark.parametrize("case", drift_cases(), ids=lambda case: case.key)
def test_ranks_drift_without_sync_ranks(ranks, case: Case) -> None:
    assert max_difference(ranks, case, "unsynchronised", single_process(case)) > DRIFT


@pytest.mark.parametrize("name", methods.available())
def test_the_flag_matches_the_option_and_the_docstring(name: str) -> None:
    spec = methods.get(name)
    docs = " ".join(sys.modules[cls.__module__].__doc__ or "" for cls in spec.cls.__mro__
                    if issubclass(cls, methods.Quantizer) and cls is not methods.Quantizer)
    assert "Distributed training" in docs, "the docstring says what the method synchronises, or why it needs nothing"
    if not spec.rank_synchronised:
        assert "sync_ranks" not in spec.option_names()


def main() -> None:
    """Print, per case, the largest codebook / encoder difference of the ranks from one process."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        ranks = run_ranks(Path(folder))
    print(f"{'case':48s} {'sync_ranks off':>15s} {'sync_ranks on':>15s}")
    for case in all_cases():
        reference = single_process(case)
        off = f"{max_difference(ranks, case, 'unsynchronised', reference):.2e}" if has_sync_option(case) else "-"
        print(f"{case.key:48s} {off:>15s} {max_difference(ranks, case, 'synchronised', reference):15.2e}")


if __name__ == "__main__":
    main()
