"""Which TFLite interpreter runs the model.

Tried in order: ``ai_edge_litert`` (LiteRT, the maintained successor of tflite-runtime, with
wheels for current Python and numpy 2), ``tflite_runtime`` (last release 2.14: Python <= 3.11 and
numpy < 2 only), then ``tensorflow.lite`` (a full TensorFlow, never needed on a device).
``CRACK_EDGE_INTERPRETER`` (one of the names in ``PACKAGES``) forces one package.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field

from edge.errors import UserError, first_line

PACKAGES = ("ai_edge_litert", "tflite_runtime", "tensorflow")
# package -> (module to import, attribute path of the Interpreter class in it). TensorFlow's
# ``tf.lite`` is an API alias: importing the module ``tensorflow.lite`` gives the source package
# instead, which has no ``Interpreter``, so it is reached as an attribute of ``tensorflow``.
_MODULES = {
    "ai_edge_litert": ("ai_edge_litert.interpreter", "Interpreter"),
    "tflite_runtime": ("tflite_runtime.interpreter", "Interpreter"),
    "tensorflow": ("tensorflow", "lite.Interpreter"),
}
ENV_VAR = "CRACK_EDGE_INTERPRETER"
# Kernel sets the interpreter can run a model with, and the OpResolverType member of each:
# XNNPACK (the default delegate, what the device uses), TFLite's built-in optimised kernels
# without it, and the reference kernels (plain C++, slow; the numerical yardstick).
KERNEL_SETS = {
    "xnnpack": "AUTO",
    "builtin": "BUILTIN_WITHOUT_DEFAULT_DELEGATES",
    "reference": "BUILTIN_REF",
}
DEFAULT_KERNELS = "xnnpack"


@dataclass(frozen=True)
class InterpreterBackend:
    package: str  # which entry of PACKAGES was imported
    version: str
    interpreter_class: type
    failures: dict[str, str] = field(default_factory=dict)  # packages tried first and why they failed

    def create(self, model_path: str, threads: int, kernels: str = DEFAULT_KERNELS):
        """An interpreter for ``model_path`` running ``kernels`` (a key of KERNEL_SETS)."""
        if kernels not in KERNEL_SETS:
            raise UserError(f"unknown kernel set {kernels!r}; choose from {', '.join(KERNEL_SETS)}")
        if kernels == DEFAULT_KERNELS:  # every interpreter package's default: no argument needed
            return self.interpreter_class(model_path=model_path, num_threads=threads)
        resolvers = getattr(sys.modules[self.interpreter_class.__module__], "OpResolverType", None)
        if resolvers is None:
            raise UserError(f"{self.package} {self.version} cannot choose kernels ({kernels})")
        return self.interpreter_class(model_path=model_path, num_threads=threads,
                                      experimental_op_resolver_type=resolvers[KERNEL_SETS[kernels]])

    def describe(self) -> str:
        text = f"{self.package} {self.version}"
        if self.failures:
            text += " (unavailable: " + "; ".join(f"{k}: {v}" for k, v in self.failures.items()) + ")"
        return text


def find_interpreter(order: tuple[str, ...] | None = None) -> InterpreterBackend:
    """Import the first usable interpreter package; UserError listing every failure if none works."""
    forced = os.environ.get(ENV_VAR)
    if order is None:
        order = (forced,) if forced else PACKAGES
    failures: dict[str, str] = {}
    for package in order:
        if package not in _MODULES:
            raise UserError(f"unknown interpreter package {package!r}; choose from {', '.join(PACKAGES)}")
        try:
            module_name, attribute = _MODULES[package]
            interpreter_class = importlib.import_module(module_name)
            for name in attribute.split("."):
                interpreter_class = getattr(interpreter_class, name)
        except Exception as exc:  # ImportError, or e.g. a numpy ABI error raised while importing
            failures[package] = first_line(exc)
            continue
        return InterpreterBackend(package, _version_of(package), interpreter_class, failures)
    tried = "; ".join(f"{k}: {v}" for k, v in failures.items())
    from edge.health import interpreter_install_advice

    raise UserError(f"no TFLite interpreter could be imported ({tried}); {interpreter_install_advice()}")


def _version_of(package: str) -> str:
    from importlib import metadata

    distribution = {"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime"}.get(package, package)
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        if package == "tensorflow":
            for name in ("tensorflow-cpu", "tensorflow"):
                try:
                    return metadata.version(name)
                except metadata.PackageNotFoundError:
                    pass
        return "unknown"


def default_thread_count() -> int:
    """Interpreter threads when none are given, for every command: see edge.health.default_threads."""
    from edge.health import default_threads

    return default_threads()
