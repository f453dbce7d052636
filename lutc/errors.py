"""Errors lutc raises for bad input: each names what is wrong and, where it can, the fix."""

from __future__ import annotations


class LutcError(Exception):
    """Base of lutc's own errors."""


class ModelError(LutcError, ValueError):
    """The ONNX model cannot be compiled: corrupt, too old, or using unsupported ops."""


class InputError(LutcError, ValueError):
    """A call got inputs of the wrong name, shape or dtype."""


class CompileError(LutcError, RuntimeError):
    """TVM failed while compiling an imported model: a lutc or TVM limitation, not bad input."""


class LoadError(LutcError, OSError):
    """An exported model cannot be loaded: a missing, damaged or foreign library or sidecar."""


class TargetError(LutcError, RuntimeError):
    """Code built for a target this machine cannot run: another architecture, CPU features it
    lacks, or a GPU it does not have (run it on such a device, over TVM's RPC)."""
