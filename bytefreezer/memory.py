"""The memory pool Arrow allocates from in bytefreezer's processes.

pyarrow's wheels allocate from mimalloc unless told otherwise. In a bytefreezer process mimalloc
keeps taking fresh memory as transparent huge pages, each zeroed whole by the kernel at its
first touch: posting 64 MB to `bytefreezer up`, 16.6-18% of the process's CPU time was the
kernel's ``clear_page_erms`` under ``mi_page_free_list_extend`` (perf), and never purging
(``MIMALLOC_PURGE_DELAY=-1``) left it at 18%.

Arrow's other two pools were measured on the same runs:

* jemalloc took the page clearing away (under 1%), but taking the rows of a table with text
  columns (``Table.take``, which split and packer's partition sort use; its output buffers grow
  as it goes) took 36 ms where mimalloc took 17, and split ran at 1.0-1.3M rows/s against
  2.8-3.3M (1.35-3.1M on "system", between runs on a noisy machine);
* the C library's ``malloc`` ("system"), whose thresholds the workers already set to keep freed
  memory (``keep_freed_memory``), cleared pages for 0.4% of the CPU, took the same rows in
  13 ms, and used the same CPU as jemalloc end to end (1.97 against 2.01 CPU-s, means of eight
  runs). Peak RSS on a 2 GiB input: piper 475 MB and packer 552 MB, against 549 and 634 with
  mimalloc.

So "system" it is. Arrow reads its default pool from ``ARROW_DEFAULT_MEMORY_POOL`` once, when
pyarrow loads; ``pyarrow.set_memory_pool`` would only reach allocations made through pyarrow's
own calls, not those its readers and writers make inside (tried: half the page clearing
remained). So the choice is made in the environment, before pyarrow is imported.
"""

from __future__ import annotations

import ctypes
import os
import platform

ARROW_POOL = "system"
ARROW_POOL_VARIABLE = "ARROW_DEFAULT_MEMORY_POOL"


def prefer_arrow_pool() -> None:
    """Have Arrow allocate from ``ARROW_POOL`` in this process and the processes it starts,
    unless the operator chose a pool in ``ARROW_DEFAULT_MEMORY_POOL``. Call it before anything
    imports pyarrow: a process that has loaded it keeps the pool it started with."""
    os.environ.setdefault(ARROW_POOL_VARIABLE, ARROW_POOL)


def arrow_pool() -> str:
    """The backend name of the pool Arrow allocates from (``system``, ``mimalloc``, ``jemalloc``)."""
    import pyarrow as pa

    return str(pa.default_memory_pool().backend_name)


# glibc gives large freed blocks back to the kernel at once, and adapts its thresholds as it
# goes: a worker's cycles page-faulted their working set back in every time (about 20,000
# faults and 40 ms of a 0.31 s piper cycle over 64 MB; 700 per 64 MB once a run is long), and
# a receiver's requests did too (HEC: 1,510 faults and 54 ms of CPU a 2,500-event request,
# 697 and 49 ms with these thresholds; ``orjson.dumps`` of a short text took 3.5 µs where its
# results were kept, 0.25 µs with them). A settled worker, and every server from its start
# (``run_services``, the proxy), keeps blocks up to MALLOC_MMAP_THRESHOLD in its heaps and up
# to MALLOC_TRIM_THRESHOLD free at the top of each (measured: RSS between cycles +30-40 MB).
MALLOC_MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest on 64-bit
MALLOC_TRIM_THRESHOLD = 64 * 1024 * 1024
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's malloc.h


def keep_freed_memory() -> bool:
    """Fix glibc's mmap and trim thresholds (see ``MALLOC_MMAP_THRESHOLD``); ``False``
    where the C library is not glibc or refuses."""
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD)
    )
