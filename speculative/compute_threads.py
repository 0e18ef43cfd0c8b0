"""Give back a thread's OpenMP workers once it has stopped running llama.cpp.

llama.cpp's CPU backend, built with OpenMP (libgomp, as on Linux), keeps a team of
worker threads for every thread that has run a decode, for as long as that thread
lives. libgomp counts every such worker, and once there are more than CPUs it stops
letting its workers spin between the many barriers of a decode and puts them to
sleep instead: every decode then pays wake-ups. One decode run elsewhere (a probe
at load on a worker thread, the speed measurement of ``weights: fastest``, an
embeddings request, an idle model's executor) was enough: on 2 cores the executor's
16-sequence decodes then took 1.3-1.5x as long, for as long as that thread lived
(AMD EPYC VM, smollm2 Q8_0, 2026-12-06; the threads held by the anyio pool live on).

So a thread that is done decoding for now calls ``release``; the next decode on
that thread starts a new team (a thread start, ~0.1 ms). Where llama.cpp has no
OpenMP (another build, another OS), this does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import os

OMP_PAUSE_SOFT = 1


@functools.cache
def _libgomp() -> ctypes.CDLL | None:
    """libgomp as llama.cpp loaded it (asked after a decode, so loaded by then if at all);
    None where it is not loaded (RTLD_NOLOAD does not load it)."""
    try:
        return ctypes.CDLL("libgomp.so.1", mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    except (OSError, AttributeError):
        return None


def release() -> None:
    """Free the calling thread's OpenMP team (``omp_pause_resource_all``: the calling
    thread's pool only, and only outside a parallel region)."""
    gomp = _libgomp()
    if gomp is not None:
        gomp.omp_pause_resource_all(OMP_PAUSE_SOFT)
