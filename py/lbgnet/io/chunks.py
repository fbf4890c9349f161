"""
lbgnet.io.chunks
================

Read a DESI coadd a block of spectra at a time, so that the afterburner's memory does
not grow with the file: only the FIBERMAP and the wavelength arrays are read whole.
Each block is a :class:`lbgnet.io.CoaddData` with the same sanitising as
:func:`lbgnet.io.read_coadd` (non-finite flux/ivar or negative ivar → ivar = 0).
"""
from .coadd import CoaddLayout, read_block, read_layout
from .fitsutil import open_fits

__all__ = ['CoaddLayout', 'iter_coadd_chunks', 'read_layout']


def iter_coadd_chunks(path, chunk_size):
    """Yield the spectra of a coadd in blocks of at most `chunk_size` rows.

    Parameters
    ----------
    path : str
    chunk_size : int
        Spectra per block (>= 1).

    Yields
    ------
    layout : CoaddLayout
        Same object for every block.
    start : int
        Index of the block's first spectrum.
    block : lbgnet.io.CoaddData
        Rows ``start:start+n``; its ``fibermap`` is the matching FIBERMAP slice.
        A file with zero spectra yields one empty block.

    Raises
    ------
    InputFileError
        As :func:`read_layout`, or when an HDU cannot be read (truncated data).
    ValueError
        When `chunk_size` is not a whole number >= 1.
    """
    path = str(path)
    if isinstance(chunk_size, bool) or int(chunk_size) != chunk_size or chunk_size < 1:
        raise ValueError(f'chunk_size must be a whole number >= 1, not {chunk_size!r}')
    with open_fits(path) as fx:
        layout = read_layout(fx, path)
        for start in range(0, max(layout.nspec, 1), int(chunk_size)):
            stop = min(start + int(chunk_size), layout.nspec)
            yield layout, start, read_block(fx, layout, start, stop)
