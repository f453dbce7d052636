"""``CompiledModel`` called from several threads: no crash, every result equal to a lone call's.

TVM's Relax VM segfaulted within a few dozen concurrent calls (issue 10), so the calls run in a
subprocess: a crash fails this test instead of killing the test run.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import threading, warnings
    import numpy as np
    import lutc
    from lutc import zoo

    warnings.simplefilter("ignore")
    model = lutc.build(zoo.single_matmul_nbits(256, 128, bits=2, block_size=32), target="x86")
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((1, s, 256)).astype(np.float32) for s in (1, 3, 5, 8)]
    want = [model(A=x) for x in xs]
    wrong = []

    def work(i):
        for j in range(150):
            k = (i + j) % len(xs)  # different shapes at once: the VM's registers and staged inputs
            if not np.array_equal(model(A=xs[k]), want[k]):
                wrong.append((i, j))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("wrong", len(wrong))
    """
)


def test_concurrent_calls_from_four_threads_match_single_calls():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "wrong 0"
