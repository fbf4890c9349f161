"""
lbgnet.memory
=============

The machine's physical memory, for the commands that check up front that a job fits
rather than be killed by the kernel without a word half-way through.
"""
import os


def physical_memory():
    """Bytes of physical memory of this machine (inf when unknown)."""
    try:
        return os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
    except (ValueError, OSError, AttributeError):
        return float('inf')
