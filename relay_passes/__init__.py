"""Relax graph passes that rewrite quantized matmuls into LUT kernels, one pass per file.

Installed as ``lutc.relay_passes`` (the name follows the original design; Relay itself is
gone from TVM). The passes arrive with the ``lutc.build`` issue.
"""
