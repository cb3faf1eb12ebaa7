"""The memory pool Arrow allocates from in bytefreezer's processes.

pyarrow's wheels allocate from mimalloc unless told otherwise. mimalloc gives freed pages back
to the kernel within milliseconds and faults them in again as transparent huge pages, each
zeroed whole at its first touch: posting 64 MB to `bytefreezer up`, 16.6% of the process's CPU
time went to the kernel clearing pages for it (perf: ``clear_page_erms`` under
``mi_page_free_list_extend``). Arrow's jemalloc pool keeps freed memory for reuse a while
longer: the same run spent under 1% there, and its CPU time fell 12-19% (1.43 CPU-s against
1.77, means of four runs a side; 1.74 against 1.98 in eight more a side, on a busier machine).
Peak RSS on a 2 GiB input fell too (piper 549 → 498 MB, packer 634 → 545 MB).

Arrow reads its default pool from ``ARROW_DEFAULT_MEMORY_POOL`` once, when pyarrow loads;
``pyarrow.set_memory_pool`` would only reach allocations made through pyarrow's own calls, not
those Arrow's readers and writers make inside (measured: half the page clearing remained). So
the choice is made in the environment, before pyarrow is imported.
"""

from __future__ import annotations

import os
import sys

ARROW_POOL = "jemalloc"
ARROW_POOL_VARIABLE = "ARROW_DEFAULT_MEMORY_POOL"


def prefer_arrow_pool() -> bool:
    """Have Arrow allocate from ``ARROW_POOL`` in this process and the processes it starts,
    unless the operator chose a pool in ``ARROW_DEFAULT_MEMORY_POOL``. Whether the choice is
    in effect: ``False`` when pyarrow was already loaded (too late) or on Windows, where
    pyarrow is built without jemalloc."""
    if sys.platform == "win32":
        return False
    os.environ.setdefault(ARROW_POOL_VARIABLE, ARROW_POOL)
    return "pyarrow" not in sys.modules


def arrow_pool() -> str:
    """The backend name of the pool Arrow allocates from (``jemalloc``, ``mimalloc``, ``system``)."""
    import pyarrow as pa

    return str(pa.default_memory_pool().backend_name)
