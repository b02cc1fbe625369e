"""vqbench methods: the registry of vector quantizers.

    import methods
    methods.available()                       # ['ema', 'exact_ot', 'simvq', ...]
    q = methods.build("wasserstein", dim=8, codebook_size=1024, gamma=0.5)
    out = q(z)                                # z: (..., 8)
    out.quantized, out.indices, out.loss, out.losses

Adding a quantizer: one file ``methods/<name>.py`` with a frozen options dataclass and a
``Quantizer`` subclass decorated with ``@methods.register("<name>")``, imported below (or
published by another package through the ``vqbench.methods`` entry-point group, scanned on the
first ``available()`` / ``get()``). ``methods.testing.run_conformance(name_or_class)`` runs the
conformance suite on one quantizer.
"""
from methods._base import QuantizerOutput, Quantizer, Tunable, VQOptions
from methods._usage import CodeUsage, code_usage
from methods._core import nearest_code, nearest_code_faiss, nearest_code_torch
from methods._registry import (
    display_order,
    ENTRY_POINT_GROUP,
    METHODS,
    MethodSpec,
    PluginError,
    PluginWarning,
    available,
    build,
    get,
    make_options,
    plugin_errors,
    register,
    reload_entry_points,
    unregister,
)

# Built-in methods register themselves on import; one module per method. The import order is the
# display order of reports: baselines, dead-code strategies, reparametrisations, distribution matching,
# then multi-codebook and lookup-free quantizers.
from methods import vanilla  # noqa: E402,F401
from methods import ema  # noqa: E402,F401
from methods import online  # noqa: E402,F401
from methods import kmeans_ema  # noqa: E402,F401
from methods import simvq  # noqa: E402,F401
from methods import rotation_trick  # noqa: E402,F401
from methods import fsq  # noqa: E402,F401
from methods import sinkhorn  # noqa: E402,F401
from methods import wasserstein  # noqa: E402,F401
from methods import wasserstein_density  # noqa: E402,F401
from methods import sliced_wasserstein  # noqa: E402,F401
from methods import mmd  # noqa: E402,F401
from methods import exact_ot  # noqa: E402,F401
from methods import residual  # noqa: E402,F401
from methods import grouped  # noqa: E402,F401
from methods import cosine  # noqa: E402,F401
from methods import lfq  # noqa: E402,F401
from methods import bsq  # noqa: E402,F401
from methods import ibq  # noqa: E402,F401

__all__ = [
    "CodeUsage",
    "ENTRY_POINT_GROUP",
    "METHODS",
    "MethodSpec",
    "PluginError",
    "PluginWarning",
    "Quantizer",
    "QuantizerOutput",
    "Tunable",
    "VQOptions",
    "available",
    "build",
    "code_usage",
    "get",
    "make_options",
    "nearest_code",
    "nearest_code_faiss",
    "nearest_code_torch",
    "plugin_errors",
    "register",
    "reload_entry_points",
    "unregister",
]
