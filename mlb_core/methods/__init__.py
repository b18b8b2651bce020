"""Methods: every method is a function from grid tokens (and stage-one scores where it needs
them) to a stage-two visual sequence. Importing this package registers them all
(docs/architecture.md, "Adding a method")."""

from mlb_core.methods import baselines, mlb  # noqa: F401  (each registers its methods)
from mlb_core.methods.registry import METHOD_INFO, METHODS, Method, MethodInput, get_method, register

__all__ = ["METHODS", "METHOD_INFO", "Method", "MethodInput", "get_method", "register"]
