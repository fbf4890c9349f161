#!/usr/bin/env python
"""Time ``desi_lbg_mock`` writing 10,000 spectra (coadd + redrock + truth files).

Usage: ``python benchmarks/bench_mock.py [--nspec 10000] [--no-resolution] [--keep DIR]``

Runs the command's ``main`` in-process into a temporary directory (removed at the
end unless ``--keep`` is given) and reports wall time, spectra/s and bytes written.
"""
import argparse
import glob
import json
import os
import shutil
import tempfile
import time

from desiutil.log import get_logger

from lbgnet.scripts.lbg_mock import main as mock_main

from benchutil import write_json


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--nspec', type=int, default=10000)
    parser.add_argument('--seed', type=int, default=1)
    parser.add_argument('--no-resolution', action='store_true')
    parser.add_argument('--keep', help='write into this directory and keep the files')
    parser.add_argument('--output', help='write the numbers as JSON')
    args = parser.parse_args()
    log = get_logger()
    outdir = args.keep or tempfile.mkdtemp(prefix='bench_mock_')
    options = ['--outdir', outdir, '--nspec', str(args.nspec), '--seed', str(args.seed),
               '--overwrite']
    if args.no_resolution:
        options.append('--no-resolution')
    load = os.getloadavg()[0]
    start = time.time()
    status = mock_main(options)
    wall = time.time() - start
    files = glob.glob(os.path.join(outdir, '*.fits'))
    res = dict(nspec=args.nspec, resolution=not args.no_resolution, status=status,
               wall_s=wall, spectra_per_s=args.nspec / wall, nfiles=len(files),
               bytes=sum(os.path.getsize(f) for f in files), cpus=os.cpu_count(),
               load_average_1min=load)
    if not args.keep:
        shutil.rmtree(outdir)
    write_json(args.output, res)
    log.info('%s', json.dumps(res))


if __name__ == '__main__':
    main()
