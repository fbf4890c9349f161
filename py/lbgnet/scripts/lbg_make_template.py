"""
lbgnet.scripts.lbg_make_template
================================

``desi_lbg_make_template``: build the Redrock LBG template (``rrtemplate-GALAXY-LBG-v*.fits``)
from noiseless simulated rest-frame LBG spectra (:mod:`lbgnet.template`), or with
``--archetypes`` the LBG archetypes of the template refinement
(``rrarchetype-GALAXY-LBG-v*.fits``: the simulated spectra themselves, one per row,
``RRMETHOD = ARCHETYPE``; :func:`lbgnet.refine.archetype_curve`).
"""
import argparse
import os
import re

import numpy as np
from desiutil.log import get_logger

from .. import __version__
from ..io.atomic import remove_leftovers
from ..io.catalog import (IS_A_DIRECTORY, OutputFileError, check_outdir, missing_directories,
                          remove_empty)
from ..io.errors import InputFileError
from ..io.fitsutil import FITS_INT_LIMIT, cfitsio_name_problem
from ..io.rrtemplate import IGM_MODELS, check_coverage, template_filename, write_rr_template
from ..memory import physical_memory
from ..template import (NORM_WINDOW, pca_basis, reconstruction_error, redshift_grid,
                        rest_frame_spectra)

#: Allowed template versions: they become part of the file name.
VERSION_PATTERN = re.compile(r'[0-9A-Za-z._-]+')


#: Bounds on the number of trial redshifts of a template (the default has 1,743).
MIN_REDSHIFTS, MAX_REDSHIFTS = 2, 100000

def parse(options=None):
    """Parse the command line of ``desi_lbg_make_template``."""
    parser = argparse.ArgumentParser(description='Make a Redrock PCA template of LBGs from '
                                     'noiseless simulated rest-frame spectra.')
    parser.add_argument('--outdir', required=True, help='output directory')
    parser.add_argument('--version', default='0.2', help='template VERSION [%(default)s: the shipped one]')
    parser.add_argument('--nspec', type=int, default=2000, help='simulated LBGs [%(default)s]')
    parser.add_argument('--nbasis', type=int, default=10, help='basis vectors [%(default)s]')
    parser.add_argument('--seed', type=int, default=20231,
                        help='random seed in [0, 2**63 - 1] [%(default)s]')
    parser.add_argument('--wave-range', type=float, nargs=2, default=(600.0, 3800.0),
                        metavar=('MIN', 'MAX'), help='rest wavelengths, Å [%(default)s]')
    parser.add_argument('--dwave', type=float, default=0.2, help='rest pixel, Å [%(default)s]')
    parser.add_argument('--z-range', type=float, nargs=2, default=(1.6, 4.8),
                        metavar=('ZMIN', 'ZMAX'), help='redshifts Redrock scans [%(default)s]')
    parser.add_argument('--dlogz', type=float, default=2e-4,
                        help='redshift step in log10(1+z), for 2 to 100,000 trial redshifts '
                        '[%(default)s]')
    parser.add_argument('--igm', default='Inoue14', choices=IGM_MODELS,
                        help='IGM model Redrock applies (RRIGM) [%(default)s]')
    parser.add_argument('--sim-config', default='lbgnet-sim.yaml',
                        help='simulator configuration whose LBGs the PCA is made of [%(default)s]')
    parser.add_argument('--lbg-composite', help='Shapley et al. (2003) composite (optional)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing template file')
    parser.add_argument('--archetypes', action='store_true',
                        help='write the --nspec spectra themselves as archetypes '
                        '(rrarchetype-GALAXY-LBG-vVERSION.fits, for the template refinement; '
                        'not a Redrock template) instead of their PCA')
    args = parser.parse_args(options)
    if args.archetypes and args.nspec < 1:
        parser.error('need --nspec >= 1')
    if not args.archetypes and (args.nbasis < 1 or args.nspec < args.nbasis):
        parser.error('need --nspec >= --nbasis >= 1')
    if not 0 <= args.seed < FITS_INT_LIMIT:       # SEED: a 64-bit FITS integer card
        parser.error(f'--seed must be in [0, 2**63 - 1] (the SEED header card is a 64-bit '
                     f'integer), got {args.seed}')
    if not VERSION_PATTERN.fullmatch(args.version):
        parser.error(f'--version must be letters, digits, ".", "_" or "-" (it goes into the '
                     f'file name), got {args.version!r}')
    zmin, zmax = args.z_range
    wmin, wmax = args.wave_range
    numbers = (zmin, zmax, wmin, wmax, args.dwave, args.dlogz)
    if not (np.all(np.isfinite(numbers)) and 0 <= zmin < zmax and 0 < wmin < wmax
            and args.dwave > 0 and args.dlogz > 0):
        parser.error('invalid --z-range/--wave-range/--dwave/--dlogz (finite, increasing '
                     'ranges, positive steps)')
    # as many as lbgnet.template.redshift_grid makes (np.arange: the top end excluded)
    span = np.log10(1 + zmax) - np.log10(1 + zmin)
    nz = np.ceil(span / args.dlogz) if span / args.dlogz < 1e15 else np.inf
    if not MIN_REDSHIFTS <= nz <= MAX_REDSHIFTS:
        parser.error(f'--dlogz {args.dlogz:g} gives {nz:.0f} trial redshifts over '
                     f'--z-range {zmin:g} {zmax:g}; Redrock scans them all for every spectrum: '
                     f'keep it between {MIN_REDSHIFTS} and {MAX_REDSHIFTS:,}')
    if not np.isfinite((wmax - wmin) / args.dwave):
        parser.error(f'--dwave {args.dwave:g} is too small for --wave-range {wmin:g} {wmax:g}')
    lo, hi = NORM_WINDOW
    if not (wmin <= lo and wmax >= hi and args.dwave <= hi - lo):
        parser.error(f'--wave-range must contain the {lo:g}-{hi:g} Å normalisation window and '
                     f'--dwave must be at most {hi - lo:g} Å so that pixels fall in it, got '
                     f'--wave-range {wmin:g} {wmax:g} --dwave {args.dwave:g}')
    # the length of rest_grid's np.arange, computed as numpy does, without building it
    npix = int(np.ceil((wmax + args.dwave / 2 - wmin) / args.dwave))
    need = MATRIX_COPIES * 8 * npix * args.nspec
    if need > physical_memory():       # it was killed by the kernel, without a word
        parser.error(f'--nspec {args.nspec} spectra of {npix} rest-frame pixels (--wave-range '
                     f'/ --dwave) need about {need / 2**30:.0f} GiB, more than this machine\'s '
                     f'{physical_memory() / 2**30:.0f} GiB: increase --dwave or reduce --nspec')
    if not args.archetypes and args.nbasis > npix:
        parser.error(f'--nbasis {args.nbasis} exceeds the {npix} rest-frame pixels of '
                     '--wave-range / --dwave')
    return args


#: Float64 (nspec, npix) arrays that building a template holds at once (the spectra,
#: LAPACK's copy of them in the SVD and its right singular vectors), for the memory check.
MATRIX_COPIES = 3


def rest_grid(args):
    """Rest-frame wavelengths of the template (Å): --wave-range in steps of --dwave."""
    return np.arange(args.wave_range[0], args.wave_range[1] + args.dwave / 2, args.dwave)


def composite_comment(args):
    """The header comment naming the LBG composite the spectra were drawn with."""
    return ('LBG composite: '
            f'{os.path.basename(args.lbg_composite) if args.lbg_composite else "none"}')


def simulator_card(simcfg, templates):
    """``SIMCSHA``: a digest of the simulator's configuration `simcfg` (as loaded, with its
    base files), of the LBG composite of `templates` (None without) and of the code's
    :data:`lbgnet.sim.mock.SIMULATOR_VERSION`, which set the spectra; a file name alone
    does not tell two configurations of one name apart."""
    import hashlib
    import json
    from ..sim.mock import SIMULATOR_VERSION, array_digest
    content = {'config': simcfg}
    if SIMULATOR_VERSION != 1:          # the code that simulated them (as SIMHASH)
        content['simulator_version'] = SIMULATOR_VERSION
    if templates is not None and templates.lbg_composite is not None:
        content['lbg_composite'] = array_digest(*templates.lbg_composite)
    text = json.dumps(content, sort_keys=True, default=repr)
    return ('SIMCSHA', hashlib.sha256(text.encode('utf-8')).hexdigest()[:16],
            'simulator config and composite digest')


def write_archetypes(path, wave, flux, redshifts, args, sim_card):
    """Write the simulated spectra as archetypes, with the header card `sim_card`
    (:func:`simulator_card`); return 0, or 1 on a write error."""
    log = get_logger()
    comments = [f'{args.nspec} noiseless simulated LBG spectra as archetypes (lbgnet {__version__})',
                'rest frame, no IGM, no instrumental broadening, unit mean flux in '
                f'{NORM_WINDOW[0]:g}-{NORM_WINDOW[1]:g} A',
                f'simulator {os.path.basename(args.sim_config)}, seed {args.seed}',
                composite_comment(args),
                'not a Redrock template: each row is fitted alone (lbgnet.refine)']
    cards = [('NSPEC', args.nspec, 'simulated spectra'), ('SEED', args.seed, 'random seed'),
             sim_card]
    try:
        write_rr_template(path, wave, flux.astype(np.float32), redshifts, igm=args.igm,
                          version=args.version, comments=comments, cards=cards,
                          method='ARCHETYPE')
    except (ValueError, OSError) as err:
        log.error('%s: cannot write (%s)', path, getattr(err, 'strerror', None) or err)
        return 1
    log.info('%s: %d archetypes on %d rest pixels', path, args.nspec, wave.size)
    return 0


def main(args=None, comm=None):
    """Run ``desi_lbg_make_template``; return 0 on success, 1 on a clear error."""
    if not isinstance(args, argparse.Namespace):
        args = parse(args)
    log = get_logger()
    method = 'ARCHETYPE' if args.archetypes else 'PCA'
    path = os.path.join(args.outdir, template_filename('GALAXY', 'LBG', args.version, method))
    if os.path.isdir(path):
        log.error('%s: %s', path, IS_A_DIRECTORY)
        return 1
    if os.path.exists(path) and not args.overwrite:
        log.error('%s: exists (use --overwrite)', path)
        return 1
    problem = cfitsio_name_problem(path)   # a name cfitsio would misread: now, not after
    if problem:                            # the work (--outdir itself is checked in _make)
        log.error('%s: %s', path, problem)
        return 1
    created = missing_directories([path])
    try:
        status = _make(args, log, method, path)
    except BaseException:             # stopped (SIGTERM, Ctrl-C): no empty --outdir left
        remove_empty(created)
        raise
    if status:                        # nothing written (a full disk...): no empty --outdir
        remove_empty(created)
    return status


def _make(args, log, method, path):
    """The work of :func:`main` once the output name is checked; its exit status."""
    from ..io.templates import load_templates
    from ..sim import load_sim_config
    try:
        wave, redshifts = rest_grid(args), redshift_grid(*args.z_range, args.dlogz)
        try:
            check_coverage(wave, redshifts)
        except ValueError as err:
            raise ValueError(f'{err}: see --wave-range, --dwave and --z-range') from None
        simcfg = load_sim_config(args.sim_config)
        templates = load_templates(lbg_composite=args.lbg_composite) if args.lbg_composite else None
        check_outdir(args.outdir)            # before the work: creates --outdir if needed
        remove_leftovers([path])             # of a run killed outright (kill -9)
        log.info('simulating %d noiseless LBG spectra of %d rest-frame pixels', args.nspec,
                 wave.size)
        sim_card = simulator_card(simcfg, templates)
        flux, _ = rest_frame_spectra(args.nspec, wave, np.random.default_rng(args.seed), simcfg,
                                     templates)
    except OutputFileError as err:
        log.error('--outdir %s', err)
        return 1
    except (ValueError, InputFileError) as err:
        log.error('%s', err)
        return 1
    if args.archetypes:
        return write_archetypes(path, wave, flux, redshifts, args, sim_card)
    log.info('PCA of the %d spectra (%d basis vectors)', args.nspec, args.nbasis)
    try:
        basis, explained = pca_basis(flux, args.nbasis)
    except ValueError as err:
        log.error('%s', err)
        return 1
    resid = reconstruction_error(flux, basis)
    comments = [f'PCA of {args.nspec} noiseless simulated LBG spectra (lbgnet {__version__})',
                'rest frame, no IGM (Redrock applies RRIGM), no instrumental broadening',
                f'simulator {os.path.basename(args.sim_config)}, seed {args.seed}',
                composite_comment(args)]
    cards = [('NSPEC', args.nspec, 'simulated spectra'), ('SEED', args.seed, 'random seed'),
             sim_card,
             ('EXPLVAR', float(explained[-1]), 'fraction of power in the basis'),
             ('RESIDMED', float(np.median(resid)), 'median relative rms residual')]
    try:
        write_rr_template(path, wave, basis.astype(np.float32), redshifts, igm=args.igm,
                          version=args.version, comments=comments, cards=cards)
    except (ValueError, OSError) as err:
        log.error('%s: cannot write (%s)', path, getattr(err, 'strerror', None) or err)
        return 1
    log.info('%s: %d basis vectors (%.4f of the power; median residual %.2e), %d redshifts '
             '%.2f-%.2f', path, args.nbasis, explained[-1], np.median(resid), redshifts.size,
             redshifts[0], redshifts[-1])
    return 0
