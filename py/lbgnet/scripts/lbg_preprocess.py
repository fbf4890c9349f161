"""
lbgnet.scripts.lbg_preprocess
=============================

``desi_lbg_preprocess``: grid DESI coadds into the network input and save it as
``.npz`` (X, TARGETID, EMPTY, WAVE), or run on a built-in example.
"""
import argparse
import os
import tempfile
import traceback

import numpy as np
from desiutil.log import get_logger

from ..config import ConfigError, load_config
from ..example import example_spectra
from ..io import InputFileError, minimal_fibermap, write_coadd
from ..io.atomic import atomic_path, raise_if_terminated
from ..io.catalog import OutputFileError, check_not_an_input, check_outdir
from ..io.discover import expand_coadds
from ..preprocess import load_coadd_grid


def parse(options=None):
    """Parse the command line of ``desi_lbg_preprocess``."""
    parser = argparse.ArgumentParser(description='Grid DESI coadd spectra into the lbgnet input '
                                     '(normalised flux and S/N on the 800-bin grid).')
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument('--coadd', nargs='+', help='coadd FITS file(s) or glob pattern(s)')
    src.add_argument('--example', action='store_true',
                     help='write a small example coadd to a temporary directory and grid it')
    parser.add_argument('--output', help='output .npz (one input file only) [no output]')
    parser.add_argument('--config', default='lbgnet-base.yaml',
                        help='configuration (grid) [%(default)s]')
    parser.add_argument('--seed', type=int, help='seed of the example [0]')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing --output')
    args = parser.parse_args(options)
    if args.output is not None and not args.output:
        parser.error('--output must name a file')
    if args.output and args.coadd and len(args.coadd) > 1:
        parser.error('--output needs exactly one --coadd file')
    if args.overwrite and not args.output:
        parser.error('--overwrite replaces an existing --output: give --output')
    if args.seed is not None and not args.example:
        parser.error('--seed draws the --example spectra: it does not apply to --coadd')
    args.seed = 0 if args.seed is None else args.seed
    if args.seed < 0:
        parser.error(f'--seed must be >= 0, got {args.seed}')
    return args


def check_output(path, overwrite, inputs=()):
    """Check before any work that `path` can be written; create its directory.

    Raises
    ------
    lbgnet.io.catalog.OutputFileError
        If `path` is a directory or names one (a trailing ``/``), is one of the `inputs`,
        exists without `overwrite`, or its directory cannot be created or written to.
    """
    if os.path.isdir(path):
        raise OutputFileError(path, 'is a directory')
    if path.endswith(os.sep):
        raise OutputFileError(path, 'names a directory (ends with /), not a file')
    check_not_an_input(path, inputs)
    if os.path.lexists(path) and not overwrite:
        raise OutputFileError(path, 'exists; use --overwrite to replace it')
    check_outdir(os.path.dirname(os.path.abspath(path)))


def summarise(path, X, info):
    """Log a one-paragraph summary of one gridded file."""
    log = get_logger()
    nspec = X.shape[0]
    log.info('%s: %d spectra, bands %s, %d empty', path, nspec, ''.join(info.bands),
             int(info.empty.sum()))
    filled = info.nvalid_bins > 0
    if filled.any():            # the spectra with data (an empty one would count as 0)
        per_bin = np.abs(X[filled, :, 1]).sum(1) / info.nvalid_bins[filled]
        log.info('%s: valid bins per spectrum %d-%d, median |S/N| per valid bin %.2f (of '
                 'the %d spectra with data)', path, info.nvalid_bins.min(),
                 info.nvalid_bins.max(), np.median(per_bin), int(filled.sum()))


def npz_extras(info, path, config):
    """What ``--output`` saves beside the network input: the rebinned flux and ivar
    (float32; channel 0 of ``X`` is normalised), the arms and which have data, and the
    provenance (input file, lbgnet version, configuration), as plain arrays (no pickle)."""
    from .. import __version__
    nspec, nbins = info.empty.shape[0], config.grid.nbins
    def grid(values):
        return (np.zeros((nspec, nbins), np.float32) if values is None
                else np.asarray(values, dtype=np.float32))
    return dict(FLUX=grid(info.flux), IVAR=grid(info.ivar),
                BANDS=np.asarray(list(info.bands), dtype=str),
                BAND_VALID=np.asarray(info.band_valid, dtype=bool),
                SOURCE=np.asarray(os.path.abspath(path)), LBGNET=np.asarray(str(__version__)),
                CONFIG=np.asarray(str(config.source)))


def main(args=None, comm=None):
    """Run ``desi_lbg_preprocess``; return 0 when every file succeeded, else 1."""
    if not isinstance(args, argparse.Namespace):
        args = parse(args)
    log = get_logger()
    paths, unmatched = expand_coadds(args.coadd or ())
    for pattern in unmatched:           # reported, as the afterburner does; the rest are run
        log.error('%s: matched no coadd file', pattern)
    if args.output and args.coadd and len(paths) != 1:
        log.error('--output needs exactly one coadd file; --coadd %s gives %d',
                  ' '.join(args.coadd), len(paths))
        return 1
    try:
        config = load_config(args.config)
        if args.output:
            check_output(args.output, args.overwrite, paths)
    except (ConfigError, OutputFileError) as err:
        log.error('%s%s', '--output ' if isinstance(err, OutputFileError) else '', err)
        return 1
    with tempfile.TemporaryDirectory() as tmpdir:
        nfail = len(unmatched)
        if args.example:
            wave, flux, ivar, _ = example_spectra(config, 8, np.random.default_rng(args.seed))
            nspec = flux['b'].shape[0]
            paths = [os.path.join(tmpdir, 'coadd-example.fits')]
            write_coadd(paths[0], wave, flux, ivar, minimal_fibermap(np.arange(nspec) + 1000))
            log.info('wrote example coadd %s', paths[0])
        for path in paths:
            try:
                X, info = load_coadd_grid(path, config)
            except InputFileError as err:
                log.error('%s', err)
                nfail += 1
                continue
            except Exception as err:   # noqa: BLE001 -- one bad file must not stop the others
                raise_if_terminated()
                log.error('%s: unexpected %s: %s\n%s', path, type(err).__name__, err,
                          traceback.format_exc())
                nfail += 1
                continue
            summarise(path, X, info)
            if args.output:
                # native int64 whatever the FIBERMAP's byte order (torch refuses others)
                tid = np.asarray(info.targetid if info.targetid is not None
                                 else np.full(X.shape[0], -1), dtype=np.int64)
                if info.targetid is None:
                    log.warning('%s: no FIBERMAP, so no TARGETIDs: written as -1 (rows in '
                                'file order)', path)
                # through a file handle: np.savez would add ".npz" to a name without it,
                # and the rename of the temporary file would then miss it
                try:
                    with atomic_path(args.output) as tmp, open(tmp, 'wb') as fh:
                        np.savez(fh, X=X, TARGETID=tid, EMPTY=info.empty,
                                 WAVE=config.grid.centers, **npz_extras(info, path, config))
                except OSError as err:
                    log.error('%s: cannot write (%s)', args.output, err.strerror or err)
                    nfail += 1
                    continue
                log.info('wrote %s', args.output)
    return 1 if nfail else 0
