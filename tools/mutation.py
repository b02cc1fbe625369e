"""Mutation check of the quantizers' losses and updates: do a method's tests notice a wrong loss?

Each mutant is one targeted source edit of one method (a sign flip of a loss term, a removed or
moved stop-gradient, swapped weights, an EMA update that skips a term), declared below as
(method, file, the exact text, its replacement, what it breaks). For each, the repository is
copied to a temporary folder, the edit applied there (the working tree is never touched), and the
method's tests run against it: the tests whose id names the method in tests/test_methods_*.py
(and tests/test_vqp_adapters.py for the vector-quantize-pytorch adapters, whose plugin copy is put
first on the path).
A mutant is killed when at least one test fails; one that survives is a defect of the suite
unless it is listed in ``EQUIVALENT`` with the reason it cannot change any result.

    python -m tools.mutation                 # every method with mutants -> reports/mutation.md
    python -m tools.mutation ibq bsq         # a subset: its rows of reports/mutation.md replaced
    python -m tools.mutation --what "sign flip"   # only the mutants whose description contains the text
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "reports" / "mutation.md"
COPIED = ("methods", "tests", "registry.py", "pyproject.toml", "benchmark", "datasets", "plugins")
TEST_FILES = ("tests/test_methods_conformance.py", "tests/test_methods_field.py", "tests/test_methods_official.py",
              "tests/test_methods_reference.py", "tests/test_methods_extra.py", "tests/test_methods_protocol.py",
              "tests/test_methods_mechanism.py", "tests/test_vqp_adapters.py")


ADAPTERS = "plugins/vqbench_vqp/vqbench_vqp/adapters.py"  # the vector-quantize-pytorch adapters (a plugin)


@dataclass(frozen=True)
class Mutant:
    method: str
    path: str
    old: str
    new: str
    what: str


MUTANTS = (
    Mutant("vanilla", "methods/vanilla.py", 'return {"commitment": self.options.beta, "codebook": self.options.codebook_weight}',
           'return {"commitment": -self.options.beta, "codebook": self.options.codebook_weight}', "commitment sign flip"),
    Mutant("vanilla", "methods/vanilla.py", 'return {"commitment": self.options.beta, "codebook": self.options.codebook_weight}',
           'return {"commitment": self.options.beta, "codebook": -self.options.codebook_weight}', "codebook sign flip"),
    Mutant("vanilla", "methods/vanilla.py", 'return {"commitment": self.options.beta, "codebook": self.options.codebook_weight}',
           'return {"commitment": self.options.codebook_weight, "codebook": self.options.beta}', "swapped weights"),
    Mutant("vanilla", "methods/vanilla.py", "return commitment_and_codebook(features, codes, self.options.reduction)",
           "return {k: v for k, v in commitment_and_codebook(features.detach(), codes, self.options.reduction).items()}",
           "stop-gradient on z in both terms (commitment removed)"),
    Mutant("ema", "methods/ema.py", "self.embed_sum.mul_(decay).add_(sums, alpha=1 - decay)",
           "self.embed_sum.mul_(decay)", "EMA update skips the feature sums"),
    Mutant("ema", "methods/ema.py", "self.cluster_size.mul_(decay).add_(counts, alpha=1 - decay)",
           "self.cluster_size.mul_(decay)", "EMA update skips the counts"),
    Mutant("ema", "methods/ema.py", 'losses = {"commitment": (features - codes).pow(2).mean()}',
           'losses = {"commitment": -(features - codes).pow(2).mean()}', "commitment sign flip"),
    Mutant("ema", "methods/ema.py", "self.embed_sum.mul_(decay).add_(sums, alpha=1 - decay)",
           "self.embed_sum.mul_(1 - decay).add_(sums, alpha=decay)", "swapped decay weights"),
    Mutant("ibq", "methods/ibq.py", '{"soft": 1.0, "commitment": 1.0, "codebook": self.options.beta}',
           '{"soft": -1.0, "commitment": 1.0, "codebook": self.options.beta}', "soft-term sign flip"),
    Mutant("ibq", "methods/ibq.py", '{"soft": 1.0, "commitment": 1.0, "codebook": self.options.beta}',
           '{"soft": 1.0, "commitment": -1.0, "codebook": self.options.beta}', "commitment sign flip"),
    Mutant("ibq", "methods/ibq.py", '{"soft": 1.0, "commitment": 1.0, "codebook": self.options.beta}',
           '{"soft": 1.0, "commitment": 1.0, "codebook": -self.options.beta}', "codebook sign flip"),
    Mutant("ibq", "methods/ibq.py", '{"soft": 1.0, "commitment": 1.0, "codebook": self.options.beta}',
           '{"soft": 1.0, "commitment": self.options.beta, "codebook": 1.0}', "swapped weights"),
    Mutant("ibq", "methods/ibq.py", '"soft": F.mse_loss(quantized, features),', '"soft": F.mse_loss(codes, features),',
           "soft term moved onto the hard code (vanilla VQ)"),
    Mutant("ibq", "methods/ibq.py", '"codebook": F.mse_loss(codes, features.detach()),',
           '"codebook": F.mse_loss(codes.detach(), features),', "codebook stop-gradient moved"),
    Mutant("ibq", "methods/ibq.py",
           "quantized = codes + _SoftPath.apply(features, codebook, indices, self.options.temperature, self.options.logits)",
           "quantized = codes + (features - features.detach())", "soft path removed (straight-through)"),
    Mutant("ibq", "methods/ibq.py", "grad_logits = g.mm(columns).mul_(p).addcmul_(p, r, value=-1.0)",
           "grad_logits = g.mm(columns).mul_(p)", "softmax Jacobian without its mean term (s * a, not s * (a - r))"),
    Mutant("ibq", "methods/ibq.py", "grad_codebook.addcmul_(accumulated[-1][:, None], weights, value=-1.0)",
           "pass", "codebook gradient without the logits' squared-norm bias"),
    Mutant("ibq", "methods/ibq.py", "for block in _row_blocks(features.shape[0], size):",
           "for block in _row_blocks(features.shape[0], size)[:1]:", "backward over the first row block only"),
    Mutant("bsq", "methods/bsq.py", '"per_sample_entropy": scale * self.options.gamma0,',
           '"per_sample_entropy": -scale * self.options.gamma0,', "per-sample entropy sign flip"),
    Mutant("bsq", "methods/bsq.py", '"codebook_entropy": -scale * self.options.gamma}',
           '"codebook_entropy": scale * self.options.gamma}', "codebook entropy sign flip"),
    Mutant("bsq", "methods/bsq.py", 'return {"commitment": self.options.beta,', 'return {"commitment": -self.options.beta,',
           "commitment sign flip"),
    Mutant("bsq", "methods/bsq.py", '"per_sample_entropy": scale * self.options.gamma0, "codebook_entropy": -scale * self.options.gamma}',
           '"per_sample_entropy": scale * self.options.gamma, "codebook_entropy": -scale * self.options.gamma0}',
           "swapped gamma0 / gamma"),
    Mutant("bsq", "methods/bsq.py", "straight_through(unit / self.dim**0.5, codes)", "straight_through(unit, codes)",
           "straight-through without the 1/sqrt(d) scale"),
    Mutant("bsq", "methods/bsq.py", "p = torch.sigmoid(4 * self.options.inv_temperature * unit / self.dim**0.5)",
           "p = torch.sigmoid(4 * self.options.inv_temperature * unit.detach() / self.dim**0.5)",
           "stop-gradient added on the entropy's probabilities"),
    Mutant("simvq", "methods/simvq.py", 'return {"commitment": self.options.beta, "codebook": self.options.codebook_weight}',
           'return {"commitment": -self.options.beta, "codebook": self.options.codebook_weight}', "commitment sign flip"),
    Mutant("simvq", "methods/simvq.py", 'return {"commitment": self.options.beta, "codebook": self.options.codebook_weight}',
           'return {"commitment": self.options.beta, "codebook": -self.options.codebook_weight}', "codebook sign flip"),
    Mutant("simvq", "methods/simvq.py", 'return {"commitment": self.options.beta, "codebook": self.options.codebook_weight}',
           'return {"commitment": self.options.codebook_weight, "codebook": self.options.beta}', "swapped weights"),
    Mutant("simvq", "methods/simvq.py", 'self.register_buffer("basis", basis)', "self.basis = nn.Parameter(basis)",
           "frozen basis trained (its stop-gradient removed)"),
    Mutant("simvq", "methods/simvq.py", "return self.projection(self.basis)",
           "return self.basis + self.projection.bias", "codebook = basis + b: the linear map W dropped"),
    Mutant("wasserstein", "methods/_matching.py", "self.distribution_term: self.options.gamma,",
           "self.distribution_term: -self.options.gamma,", "distribution term sign flip"),
    Mutant("wasserstein", "methods/_matching.py", "self.distribution_loss(features.detach(), codebook)",
           "self.distribution_loss(features, codebook)", "stop-gradient on z removed from the distribution term"),
    Mutant("wasserstein", "methods/_matching.py", "self.distribution_loss(features.detach(), codebook)",
           "self.distribution_loss(features.detach(), codebook.detach())", "distribution term detached from the codebook"),
    Mutant("sliced_wasserstein", "methods/_matching.py", "self.distribution_term: self.options.gamma,",
           "self.distribution_term: -self.options.gamma,", "distribution term sign flip"),
    Mutant("sliced_wasserstein", "methods/_matching.py", "self.distribution_loss(features.detach(), codebook)",
           "self.distribution_loss(features, codebook)", "stop-gradient on z removed from the distribution term"),
    Mutant("sliced_wasserstein", "methods/_matching.py", "self.distribution_loss(features.detach(), codebook)",
           "self.distribution_loss(features.detach(), codebook.detach())", "distribution term detached from the codebook"),
    Mutant("exact_ot", "methods/_matching.py", "self.distribution_term: self.options.gamma,",
           "self.distribution_term: -self.options.gamma,", "distribution term sign flip"),
    Mutant("exact_ot", "methods/_matching.py", "self.distribution_loss(features.detach(), codebook)",
           "self.distribution_loss(features, codebook)", "stop-gradient on z removed from the distribution term"),
    Mutant("exact_ot", "methods/_matching.py", "self.distribution_loss(features.detach(), codebook)",
           "self.distribution_loss(features.detach(), codebook.detach())", "distribution term detached from the codebook"),
    Mutant("wasserstein", "methods/_matching.py", '"commitment": self.options.beta,\n            "codebook": self.options.codebook_weight,',
           '"commitment": self.options.codebook_weight,\n            "codebook": self.options.beta,', "swapped VQ weights"),
    Mutant("wasserstein", "methods/wasserstein.py", "distance = w2 if squared else (w2 + 1e-10).sqrt()",
           "distance = (w2 + 1e-10).sqrt() if squared else w2", "W and W^2 swapped"),
    Mutant("wasserstein", "methods/wasserstein.py", "feature_cov, code_cov = feature_cov / scale**2, code_cov / scale**2",
           "feature_cov, code_cov = feature_cov / scale**2, code_cov", "normalisation skips the codebook covariance"),
    Mutant("wasserstein", "methods/wasserstein.py", "self.queue.push(self.batch_features(features))", "pass",
           "queue never updated"),
    Mutant("sliced_wasserstein", "methods/sliced_wasserstein.py", "projected_codes = directions @ codebook.t()",
           "projected_codes = directions @ codebook.detach().t()", "stop-gradient on the projected codes"),
    Mutant("sliced_wasserstein", "methods/sliced_wasserstein.py",
           "wasserstein_1d_squared(projected_features.t(), projected_codes.t()).mean()",
           "wasserstein_1d_squared(projected_codes.t(), projected_features.t()).mean() * 0 + "
           "wasserstein_1d_squared(projected_features.t()[:, :1], projected_codes.t()[:, :1]).mean()",
           "one projection of P used"),
    Mutant("exact_ot", "methods/exact_ot.py", "costs = ot.dist(features.to(codes.dtype), codes)",
           "costs = ot.dist(features.to(codes.dtype), codes).sqrt()", "W1 cost (Euclidean, not squared)"),
    Mutant("exact_ot", "methods/exact_ot.py", "return ot.emd2(a, b, costs)",
           "return (costs.min(dim=1).values * a).sum()", "nearest-code cost instead of the transport plan"),
    Mutant("online", "methods/online.py", "self.usage.mul_(decay).add_(counts / total, alpha=1 - decay)",
           "self.usage.mul_(decay)", "usage EMA skips the counts"),
    Mutant("online", "methods/online.py", "self.usage.mul_(decay).add_(counts / total, alpha=1 - decay)",
           "self.usage.mul_(1 - decay).add_(counts / total, alpha=decay)", "swapped usage decay weights"),
    Mutant("online", "methods/online.py", "self.embedding.mul_(1 - pull).add_(pull * nearest_features)",
           "self.embedding.mul_(1 + pull).add_(-pull * nearest_features)", "pull sign flip (codes pushed away)"),
    Mutant("online", "methods/online.py", "torch.exp(-self.options.sharpness * self.codebook_size",
           "torch.exp(-self.options.sharpness * 0 * self.codebook_size", "pull ignores usage (every code pulled)"),
    Mutant("online", "methods/online.py", "losses = commitment_and_codebook(features, codes, self.options.reduction)",
           "losses = {k: -v for k, v in commitment_and_codebook(features, codes, self.options.reduction).items()}",
           "VQ terms sign flip"),
    Mutant("kmeans_ema", "methods/kmeans_ema.py", 'losses = {"commitment": (features - codes).pow(2).mean()}',
           'losses = {"commitment": -(features - codes).pow(2).mean()}', "commitment sign flip"),
    Mutant("kmeans_ema", "methods/kmeans_ema.py", "self.ema_update(features.detach(), indices)", "pass",
           "EMA update skipped"),
    Mutant("kmeans_ema", "methods/kmeans_ema.py",
           "centroids[filled] = sums[filled] / counts[filled, None].to(sums.dtype)", "pass",
           "Lloyd step skips the centroid update (sampled init only)"),
    Mutant("kmeans_ema", "methods/kmeans_ema.py", "self.unused_steps.add_(1).masked_fill_(counts > 0, 0)",
           "self.unused_steps.add_(1)", "dead-code counter not reset by use"),
    Mutant("kmeans_ema", "methods/kmeans_ema.py", "self.embedding[dead] = fresh", "pass",
           "dead code reset skips the code"),
    Mutant("kmeans_ema", "methods/kmeans_ema.py", "self.kmeans_initialise(features.detach())", "pass",
           "k-means initialisation skipped"),
    Mutant("cosine", "methods/cosine.py", 'return {"commitment": self.options.beta, "codebook": self.options.codebook_weight}',
           'return {"commitment": -self.options.beta, "codebook": self.options.codebook_weight}', "commitment sign flip"),
    Mutant("cosine", "methods/cosine.py", 'return {"commitment": self.options.beta, "codebook": self.options.codebook_weight}',
           'return {"commitment": self.options.beta, "codebook": -self.options.codebook_weight}', "codebook sign flip"),
    Mutant("cosine", "methods/cosine.py", 'return {"commitment": self.options.beta, "codebook": self.options.codebook_weight}',
           'return {"commitment": self.options.codebook_weight, "codebook": self.options.beta}', "swapped weights"),
    Mutant("residual", "methods/residual.py", 'return {"commitment": self.options.beta, "codebook": self.options.codebook_weight}',
           'return {"commitment": -self.options.beta, "codebook": self.options.codebook_weight}', "commitment sign flip"),
    Mutant("residual", "methods/residual.py", 'return {"commitment": self.options.beta, "codebook": self.options.codebook_weight}',
           'return {"commitment": self.options.beta, "codebook": -self.options.codebook_weight}', "codebook sign flip"),
    Mutant("residual", "methods/residual.py", 'return {"commitment": self.options.beta, "codebook": self.options.codebook_weight}',
           'return {"commitment": self.options.codebook_weight, "codebook": self.options.beta}', "swapped weights"),
    Mutant("grouped", "methods/grouped.py", 'return {"commitment": self.options.beta, "codebook": self.options.codebook_weight}',
           'return {"commitment": -self.options.beta, "codebook": self.options.codebook_weight}', "commitment sign flip"),
    Mutant("grouped", "methods/grouped.py", 'return {"commitment": self.options.beta, "codebook": self.options.codebook_weight}',
           'return {"commitment": self.options.beta, "codebook": -self.options.codebook_weight}', "codebook sign flip"),
    Mutant("grouped", "methods/grouped.py", 'return {"commitment": self.options.beta, "codebook": self.options.codebook_weight}',
           'return {"commitment": self.options.codebook_weight, "codebook": self.options.beta}', "swapped weights"),
    Mutant("cosine", "methods/cosine.py", "losses = commitment_and_codebook(unit, codes)",
           "losses = commitment_and_codebook(unit.detach(), codes)", "stop-gradient on z in both terms (commitment removed)"),
    Mutant("cosine", "methods/cosine.py", "return F.normalize(self.project_in(features), dim=-1)",
           "return self.project_in(features)", "features not normalised onto the sphere"),
    Mutant("residual", "methods/residual.py", "residual = residual - codes.detach() * used",
           "residual = residual + codes.detach() * used", "residual sign flip (levels add the code)"),
    Mutant("residual", "methods/residual.py",
           "codebook_term = codebook_term + ((residual.detach() - codes).pow(2) * used).sum() / count",
           "codebook_term = codebook_term + ((residual - codes.detach()).pow(2) * used).sum() / count",
           "codebook stop-gradient moved onto the codes"),
    Mutant("grouped", "methods/grouped.py", "losses = commitment_and_codebook(features, codes)",
           "losses = commitment_and_codebook(features.detach(), codes)", "stop-gradient on z in both terms (commitment removed)"),
    Mutant("lfq", "methods/lfq.py", '"per_sample_entropy": self.options.entropy_weight,',
           '"per_sample_entropy": -self.options.entropy_weight,', "per-sample entropy sign flip"),
    Mutant("lfq", "methods/lfq.py", '"codebook_entropy": -self.options.entropy_weight * self.options.diversity_gamma,',
           '"codebook_entropy": self.options.entropy_weight * self.options.diversity_gamma,', "codebook entropy sign flip"),
    Mutant("lfq", "methods/lfq.py", '"commitment": (features - codes).pow(2).mean(),',
           '"commitment": -(features - codes).pow(2).mean(),', "commitment sign flip"),
    Mutant("lfq", "methods/lfq.py", "straight_through(features, codes), indices",
           "codes, indices", "straight-through removed (no gradient to z through q)"),
    Mutant("rotation_trick", "methods/rotation_trick.py", "- 2 * r * (features * r).sum(dim=1, keepdim=True)",
           "+ 2 * r * (features * r).sum(dim=1, keepdim=True)", "reflection sign flip in the rotation"),
    Mutant("rotation_trick", "methods/rotation_trick.py", ") * (e_norm / z_norm.clamp(min=_TINY))",
           ")", "rotation without the norm ratio rescaling"),
    Mutant("rotation_trick", "methods/rotation_trick.py", "quantized = codes.detach().to(features.dtype) + (rotated - rotated.detach())",
           "quantized = codes.detach().to(features.dtype) + (features - features.detach())", "rotation removed (straight-through)"),
    Mutant("mmd", "methods/_matching.py", "self.distribution_term: self.options.gamma,",
           "self.distribution_term: -self.options.gamma,", "distribution term sign flip"),
    Mutant("mmd", "methods/mmd.py", "return (xx * scale).exp().mean() + (yy * scale).exp().mean() - 2 * (xy * scale).exp().mean()",
           "return (xx * scale).exp().mean() - (yy * scale).exp().mean() - 2 * (xy * scale).exp().mean()",
           "codebook self-similarity sign flip"),
    Mutant("mmd", "methods/mmd.py", "return (xx * scale).exp().mean() + (yy * scale).exp().mean() - 2 * (xy * scale).exp().mean()",
           "return (xx * scale).exp().mean() + (yy * scale).exp().mean() - (xy * scale).exp().mean()",
           "cross term weight 1 instead of 2"),
    Mutant("wasserstein_density", "methods/_matching.py", "self.distribution_term: self.options.gamma,",
           "self.distribution_term: -self.options.gamma,", "distribution term sign flip"),
    Mutant("wasserstein_density", "methods/wasserstein_density.py", "target_cov = self.covariance_scale * cov",
           "target_cov = cov", "target covariance not scaled (plain Wasserstein VQ)"),
    Mutant("wasserstein_density", "methods/wasserstein_density.py", "codebook = codebook / scale.to(codebook.dtype)",
           "codebook = codebook", "normalisation skips the codebook"),
    Mutant("sinkhorn", "methods/sinkhorn.py", "losses = commitment_and_codebook(features, codes, self.options.reduction)",
           "losses = {k: -v for k, v in commitment_and_codebook(features, codes, self.options.reduction).items()}",
           "VQ terms sign flip"),
    Mutant("sinkhorn", "methods/sinkhorn.py", "if self.training and features.shape[0] > 0:",
           "if False:", "training assignment by nearest code (the OT plan unused: vanilla VQ)"),
    Mutant("fsq", "methods/fsq.py", 'losses = {"commitment": (scaled - codes).pow(2).mean()}',
           'losses = {"commitment": -(scaled - codes).pow(2).mean()}', "commitment sign flip"),
    Mutant("fsq", "methods/fsq.py", "straight_through(scaled, codes), indices",
           "straight_through(features, codes), indices", "straight-through skips the bound's Jacobian"),
    Mutant("fsq", "methods/fsq.py", "return torch.tanh(features + self.shifts.to(dtype))",
           "return torch.tanh(features)", "half-level shift dropped (even L loses a level)"),
    # the vector-quantize-pytorch adapters: the peer computes the loss parts, the adapter weights them
    Mutant("vqp_vector_quantize", ADAPTERS, 'return {"commitment": self.options.commitment_weight}',
           'return {"commitment": -self.options.commitment_weight}', "commitment sign flip"),
    Mutant("vqp_vector_quantize", ADAPTERS, "decay=options.decay, commitment_weight=options.commitment_weight)",
           "decay=options.decay)", "commitment weight not handed to the peer"),
    Mutant("vqp_residual", ADAPTERS, 'return {"commitment": 1.0}', 'return {"commitment": -1.0}',
           "commitment sign flip"),
    Mutant("vqp_residual", ADAPTERS, 'return quantized[0], indices[0], {"commitment": losses.sum()}',
           'return quantized[0], indices[0], {"commitment": losses.flatten()[0]}', "first level's loss only"),
    Mutant("vqp_lfq", ADAPTERS, '"codebook_entropy": -w * self.options.diversity_gamma',
           '"codebook_entropy": w * self.options.diversity_gamma', "codebook-entropy sign flip (rewards collapse)"),
    Mutant("vqp_lfq", ADAPTERS, 'return {"per_sample_entropy": w,', 'return {"per_sample_entropy": -w,',
           "per-sample entropy sign flip"),
    Mutant("vqp_lfq", ADAPTERS, "commitment_loss_weight=options.commitment_weight,", "",
           "commitment weight not handed to the peer"),
    Mutant("vqp_simvq", ADAPTERS, 'return {"vq": self.options.commitment_weight}',
           'return {"vq": -self.options.commitment_weight}', "loss sign flip"),
    Mutant("vqp_simvq", ADAPTERS,
           "codebook_size=codebook_size, input_to_quantize_commit_loss_weight=options.input_to_quantize_weight)",
           "codebook_size=codebook_size)", "input-to-quantize weight not handed to the peer"),
)

# (method, what) -> why the mutant cannot change any result.
EQUIVALENT: dict[tuple[str, str], str] = {}


def run_mutant(mutant: Mutant) -> bool:
    """True when the method's tests fail on the mutated copy (the mutant is killed)."""
    source = (ROOT / mutant.path).read_text()
    if source.count(mutant.old) != 1:
        raise ValueError(f"mutant {mutant.method}/{mutant.what!r}: its text occurs {source.count(mutant.old)} times "
                         f"in {mutant.path} (must be once: update the mutant with the code)")
    with tempfile.TemporaryDirectory(prefix="vq-mutant-") as tmp:
        for name in COPIED:
            src = ROOT / name
            if src.is_dir():
                shutil.copytree(src, Path(tmp) / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
            elif src.exists():
                shutil.copy2(src, Path(tmp) / name)
        (Path(tmp) / mutant.path).write_text(source.replace(mutant.old, mutant.new))
        files = [f for f in TEST_FILES if (Path(tmp) / f).exists()]
        # the plugin's copy first on the path: the installed (editable) plugin points at the working tree
        plugin = str(Path(tmp) / Path(ADAPTERS).parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (plugin, os.environ.get("PYTHONPATH")) if p)}
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-k", mutant.method, *files],
            cwd=tmp, capture_output=True, text=True, env=env,
        )
    if result.returncode not in (0, 1):
        raise RuntimeError(f"mutant {mutant.method}/{mutant.what!r}: pytest exited {result.returncode}\n{result.stdout[-2000:]}")
    return result.returncode == 1


def previous_rows() -> list[tuple[str, str, str]]:
    """(method, mutant, result) rows of the last report (kept for the methods a subset run skips)."""
    if not REPORT.exists():
        return []
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in REPORT.read_text().splitlines()]
    return [tuple(c) for c in cells if len(c) == 3 and c[0] not in ("method", "---")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("methods", nargs="*", help="methods to check (default: every method with mutants)")
    parser.add_argument("--what", default="", help="only the mutants whose description contains this text")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if (not args.methods or m.method in args.methods) and args.what in m.what]
    redone = {(m.method, m.what) for m in chosen}
    partial = bool(args.methods or args.what)
    rows, survivors = [row for row in previous_rows() if partial and row[:2] not in redone], 0
    for mutant in chosen:
        killed = run_mutant(mutant)
        equivalent = EQUIVALENT.get((mutant.method, mutant.what))
        status = "killed" if killed else (f"equivalent: {equivalent}" if equivalent else "SURVIVED")
        survivors += not killed and not equivalent
        rows.append((mutant.method, mutant.what, status))
        print(f"{mutant.method:10s} {mutant.what:55s} {status}", flush=True)
    order = {(m.method, m.what): i for i, m in enumerate(MUTANTS)}
    rows = [row for row in rows if row[:2] in order]  # a mutant since removed leaves the report
    rows.sort(key=lambda row: order[row[:2]])
    scores = {}
    for method, _, status in rows:
        made, killed = scores.get(method, (0, 0))
        scores[method] = (made + 1, killed + (status == "killed"))
    lines = ["# Mutation check of the quantizers' losses and updates", "",
             "Generated by `make mutation` (`python -m tools.mutation`): each mutant is one edit of a method's "
             "loss or update, run against the method's tests; killed = at least one test failed.", "",
             "| method | killed / made |", "|---|---|"]
    lines += [f"| {method} | {killed} / {made} |" for method, (made, killed) in scores.items()]
    lines += ["", "| method | mutant | result |", "|---|---|---|"]
    lines += [f"| {method} | {what} | {status} |" for method, what, status in rows]
    REPORT.write_text("\n".join(lines) + "\n")
    return 1 if survivors else 0


if __name__ == "__main__":
    raise SystemExit(main())
