#!/usr/bin/env python
"""Benchmark ``desi_lbg_zcatalog``: reading a production's catalogues and stacking them.

Writes ``--ncat`` copies of one afterburner catalogue (``--catalog``; without it the
built-in example's is made, about 30 s) as the catalogues of distinct healpix pixels
(distinct TARGETIDs, INCOADD and HPXPIXEL), then in one run:

* times :func:`lbgnet.io.catalog.read_catalog` per file on every catalogue, as shipped
  (fitsio, the header vouched for by its CHECKSUM) and through astropy's reader (the
  path of a header edited after writing, and the reader of earlier lbgnet versions);
* runs ``desi_lbg_zcatalog`` over them once per reader, each in a fresh process, and
  reports its wall time and peak resident memory;
* with ``--baseline DIR`` (the ``py/`` directory of another lbgnet checkout, e.g. a
  ``git worktree`` of an earlier commit), runs that version's ``desi_lbg_zcatalog`` too,
  in the same way, and checks that it stacks the same data.

Results go to stdout (and to ``doc/benchmarks.rst`` by hand).
"""
import argparse
import glob
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from astropy.io import fits

from lbgnet.io.catalog import read_catalog, write_catalog

from benchutil import run_child

#: Run in a fresh process: desi_lbg_zcatalog with the chosen reader; prints JSON.
CHILD = r'''
import json, sys, time
from benchutil import peak_kb
import lbgnet.io.catalog as catalog_io
from lbgnet.scripts.lbg_zcatalog import main
if sys.argv[1] == 'astropy':                 # every table through astropy's reader
    catalog_io._read_table = lambda fx, extname, path: catalog_io._read_table_astropy(path, extname)
t0 = time.perf_counter()
rc = main(['--catalogs', sys.argv[2], '--output', sys.argv[3]])
print(json.dumps(dict(rc=rc, wall=time.perf_counter() - t0,
                      peak_mb=peak_kb() / 1024)))
'''

#: Primary-header keywords the writer makes itself.
STRUCTURAL = ('SIMPLE', 'BITPIX', 'NAXIS', 'EXTEND', 'CHECKSUM', 'DATASUM')


def example_catalog(workdir):
    """Run the built-in example; return one of its catalogues."""
    outdir = os.path.join(workdir, 'example')
    command = os.path.join(os.path.dirname(sys.executable), 'desi_lbg_afterburner')
    subprocess.run([command, '--example', '--outdir', outdir], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
    return sorted(glob.glob(os.path.join(outdir, 'out', 'lbg_cnn-*.fits')))[0]


def write_copies(source, directory, ncat):
    """`ncat` catalogues of distinct pixels made from `source`."""
    table, primary = read_catalog(source)
    tid = np.asarray(table['TARGETID'], dtype=np.int64)
    os.makedirs(directory)
    for pix in range(ncat):
        header = fits.Header([(k, v) for k, v in primary.items() if k not in STRUCTURAL])
        header['HPXPIXEL'] = header['SPGRPVAL'] = pix
        header['INCOADD'] = f'/production/healpix/coadd-main-dark-{pix}.fits'
        header['SURVEY'], header['PROGRAM'] = 'main', 'dark'
        table['TARGETID'] = tid + (pix + 1) * 10 ** 7
        write_catalog(os.path.join(directory, f'lbg_cnn-main-dark-{pix}.fits'), table, header)


def per_file(files, reader):
    """Mean seconds per file of `reader` over `files` (a second pass: files cached)."""
    for path in files:
        reader(path)
    t0 = time.perf_counter()
    for path in files:
        reader(path)
    return (time.perf_counter() - t0) / len(files)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--catalog', help='afterburner catalogue to copy [the example\'s]')
    parser.add_argument('--ncat', type=int, default=1600)
    parser.add_argument('--baseline', help="another lbgnet's py/ directory, run the same way")
    args = parser.parse_args()
    import lbgnet.io.catalog as catalog_io
    with tempfile.TemporaryDirectory() as workdir:
        source = args.catalog or example_catalog(workdir)
        catdir = os.path.join(workdir, 'cats')
        write_copies(source, catdir, args.ncat)
        files = sorted(glob.glob(os.path.join(catdir, '*.fits')))
        fast = per_file(files, read_catalog)
        shipped = catalog_io._read_table
        catalog_io._read_table = (lambda fx, extname, path:
                                  catalog_io._read_table_astropy(path, extname))
        try:
            slow = per_file(files, read_catalog)
        finally:
            catalog_io._read_table = shipped
        nrows = len(read_catalog(files[0])[0])
        print(f'{len(files)} catalogues of {nrows} rows: read_catalog {fast * 1e3:.1f} ms a '
              f'file (fitsio), {slow * 1e3:.1f} ms through astropy, ratio {slow / fast:.2f}')
        runs = {}
        versions = [('fitsio', 'fitsio', None), ('astropy', 'astropy', None)]
        if args.baseline:
            versions.append(('baseline, fitsio', 'fitsio', os.path.abspath(args.baseline)))
        for label, reader, pythonpath in versions:
            out = os.path.join(workdir, f'zcat-{len(runs)}.fits')
            runs[label] = run_child(CHILD, reader, os.path.join(catdir, '*.fits'), out,
                                    env={'PYTHONPATH': pythonpath} if pythonpath else None)
            runs[label]['output'] = out
            if runs[label]['rc'] != 0 or not os.path.exists(out):
                raise SystemExit(f'desi_lbg_zcatalog ({label}) returned {runs[label]["rc"]}, '
                                 f'{out} {"written" if os.path.exists(out) else "missing"}')
        with fits.open(runs['fitsio']['output']) as first:
            data = first['LBG_ZCAT'].data.tobytes()
            for label, run in runs.items():
                with fits.open(run['output']) as other:
                    run['same'] = other['LBG_ZCAT'].data.tobytes() == data
        for label, run in runs.items():
            print(f'desi_lbg_zcatalog, {label}: {run["wall"]:.1f} s, peak '
                  f'{run["peak_mb"]:.0f} MB; stacked data '
                  f'{"identical" if run["same"] else "DIFFERENT"}')
        for label, run in runs.items():
            if label != 'fitsio':
                print(f'{label} / fitsio: wall {run["wall"] / runs["fitsio"]["wall"]:.2f}, '
                      f'peak {run["peak_mb"] / runs["fitsio"]["peak_mb"]:.2f}')
        if not all(run['same'] for run in runs.values()):
            raise SystemExit('the runs stacked different data')

if __name__ == '__main__':
    main()
