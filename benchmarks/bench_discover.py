#!/usr/bin/env python
"""Benchmark ``--input-dir`` discovery (rank 0 walks the tree while the other ranks wait).

Builds a healpix tree of ``--npix`` pixel directories, each holding the seven files of a
DESI reduction (coadd, redrock, spectra, rrdetails, qso_mgii, qso_qn, emline; empty), and
times :func:`lbgnet.io.discover.find_coadds` against a bare ``os.walk`` of the same tree
(the least any discovery must do), best of ``--repeat``, in one run.  Results go to stdout
(and to ``doc/benchmarks.rst`` by hand).
"""
import argparse
import os
import tempfile

from benchutil import best_time

from lbgnet.io.discover import find_coadds

PREFIXES = ('coadd', 'redrock', 'spectra', 'rrdetails', 'qso_mgii', 'qso_qn', 'emline')


def make_tree(root, npix):
    """A healpix layout of `npix` pixels with empty files."""
    for pix in range(npix):
        directory = os.path.join(root, 'healpix', 'main', 'dark', str(pix // 100), str(pix))
        os.makedirs(directory)
        for prefix in PREFIXES:
            open(os.path.join(directory, f'{prefix}-main-dark-{pix}.fits'), 'w').close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--npix', type=int, default=5000)
    parser.add_argument('--repeat', type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        make_tree(root, args.npix)
        found = find_coadds(root)
        if len(found) != args.npix:
            raise SystemExit(f'found {len(found)} coadds, expected {args.npix}')
        t_find = best_time(lambda: find_coadds(root), args.repeat)
        t_walk = best_time(lambda: sum(1 for _ in os.walk(root)), args.repeat)
    print(f'{args.npix} pixels x {len(PREFIXES)} files: find_coadds {t_find:.3f} s, '
          f'bare os.walk {t_walk:.3f} s, ratio {t_find / t_walk:.1f}')


if __name__ == '__main__':
    main()
