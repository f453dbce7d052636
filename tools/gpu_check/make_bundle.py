#!/usr/bin/env python3
"""Write a GPU check bundle: lutc's CUDA kernels as CUDA C, their launches, and test arrays.

    .venv/bin/python tools/gpu_check/make_bundle.py OUT_DIR [--arch sm_90] [--quick]

The code is :mod:`lutc.bench.gpu_bundle` (tests import it from there); this script runs it.
"""

from lutc.bench.gpu_bundle import main

if __name__ == "__main__":
    main()
