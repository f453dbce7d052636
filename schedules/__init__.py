"""TensorIR schedule rules for the LUT kernels, one rule per file, per target family.

Installed as ``lutc.schedules``. The x86, ARM and CUDA rules arrive with the kernel issues.
"""
