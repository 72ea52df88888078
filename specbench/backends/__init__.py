"""The backend registry.

Backends are looked up lazily by name ("module:Class"), so running the `torch`
backend never imports JAX and running `jax` never imports transformers' models.
"""

from __future__ import annotations

import importlib

from specbench.backends.base import Backend, GenerationResult, SamplingConfig
from specbench.errors import SpecbenchError

BACKENDS: dict[str, str] = {
    "torch": "specbench.backends.torch_backend:TorchBackend",
    "hf": "specbench.backends.hf_backend:HFBackend",
    "hf-assisted": "specbench.backends.hf_backend:HFAssistedBackend",
    "jax": "specbench.backends.jax_backend:JaxBackend",
}


def backend_class(name: str) -> type[Backend]:
    """The class registered under `name`; a clear error for unknown names."""
    if name not in BACKENDS:
        raise SpecbenchError(f"unknown backend {name!r}; known backends: {', '.join(BACKENDS)}")
    module_name, class_name = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def load_backend(name: str, **kwargs) -> Backend:
    """Instantiate backend `name` with a target (and optional draft) checkpoint."""
    return backend_class(name)(**kwargs)


__all__ = ["BACKENDS", "Backend", "GenerationResult", "SamplingConfig", "backend_class", "load_backend"]
