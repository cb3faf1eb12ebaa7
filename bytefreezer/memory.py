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

import os

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
