"""
lbgnet
======

Find Lyman Break Galaxies in DESI spectra and measure their redshifts with a
QuasarNET-style convolutional line finder.
"""
from ._version import __version__

__all__ = ['__version__']
