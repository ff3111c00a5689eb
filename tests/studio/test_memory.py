"""studio.memory: the app's malloc settings return freed forward-pass memory to the system (glibc)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from studio import memory

ROOT = Path(__file__).resolve().parents[2]

# Allocation pattern of a forward pass seen by glibc: one big block freed (this raises the dynamic mmap threshold),
# then many multi-MB blocks, all freed but the last one allocated (which pins the heap top, so no automatic trim).
PATTERN = """
import ctypes, sys
sys.path.insert(0, {root!r})
from studio import memory
if {bound}:
    assert memory.bound_malloc()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def rss():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) // 1024
base = rss()
big = libc.malloc(8 << 20); ctypes.memset(big, 1, 8 << 20); libc.free(big)
blocks = []
for _ in range(60):
    p = libc.malloc(3 << 20); ctypes.memset(p, 1, 3 << 20); blocks.append(p)
for p in blocks[:-1]:
    libc.free(p)
print(rss() - base)
"""


def _growth(bound: bool) -> int:
    out = subprocess.run([sys.executable, "-c", PATTERN.format(root=str(ROOT), bound=bound)], capture_output=True,
                         text=True, timeout=60, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_bound_malloc_returns_freed_blocks_to_the_system():
    if not memory._glibc():
        pytest.skip("not glibc")
    unbounded, bounded = _growth(False), _growth(True)
    assert unbounded > 100  # glibc's default keeps ~177 MB of freed blocks resident
    assert bounded < 20, (unbounded, bounded)

