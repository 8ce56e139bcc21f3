"""Give the memory of freed images back to the system (glibc), so a burst of big images is not kept.

Pillow allocates an image in 16 MB blocks. glibc serves an allocation that large with its own mapping
and unmaps it on free, but after the first such free it raises its threshold ("dynamic mmap
threshold") and serves later ones from the heaps of the threads that decode; those heaps keep freed
memory for reuse, so a server that once decoded a few 64-megapixel images in parallel stays gigabytes
larger. A fixed threshold turns the adjustment off: big blocks are always mapped and always returned.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1 << 20


def return_big_blocks_to_the_os() -> bool:
    """Fix glibc's mmap threshold at 1 MB; False where the C library is not glibc (nothing changes)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) != 1:
        log.debug("mallopt(M_MMAP_THRESHOLD) was refused; freed image memory may be kept")
        return False
    return True
