"""
lbgnet.scripts.lbg_zcatalog
===========================

``desi_lbg_zcatalog``: stack the per-file ``lbg_cnn-*.fits`` catalogues of an afterburner
run into one clustering catalogue (HDU ``LBG_ZCAT``), every row of every file, with
location columns, the best row of each target (``ZCAT_PRIMARY``) and the ``GOOD_LBG``
quality selection
(:mod:`lbgnet.zcatalog`).
"""
import argparse
import os

from desiutil.log import get_logger

from .. import __version__
from ..bitmask import LBGWarnMask
from ..evaluate import LBG_CLASS
from ..io.atomic import remove_leftovers
from ..io.catalog import (IS_A_DIRECTORY, OutputFileError, check_not_an_input, check_writable,
                          provenance_header, read_catalog, write_catalog)
from ..io.discover import (CATALOG_PREFIX, check_input_dir, expand_coadds, file_metadata,
                           uncompressed_name, walk_files)
from ..io.errors import InputFileError
from ..io.targetid import unique_targetids
from ..progress import Progress
from ..zcatalog import (CONSISTENT_KEYS, CatalogColumns, add_location, bad_bits,
                        bit_meaning_problems, code_revision, column_kind_problems,
                        describe_difference, describe_revisions, differing_keys,
                        missing_columns, shared_keys, spectra_key, stack_catalogs,
                        usable_location)
from ..zerr import CALIBRATION_CARDS


#: Spectra groupings of a DESI production (``SPGRP``; ``unknown`` for file names that
#: name none).  Coadds of different groupings combine the same exposures.
SPGRPS = ('healpix', 'cumulative', 'pernight', 'perexp', 'unknown')


def parse(options=None):
    """Parse the command line of ``desi_lbg_zcatalog``."""
    parser = argparse.ArgumentParser(description='Stack lbg_cnn-*.fits afterburner catalogues '
                                     'into one LBG redshift catalogue for clustering.')
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument('--input-dir', dest='input_dir',
                     help='directory searched recursively for lbg_cnn-*.fits (the afterburner '
                     '--outdir, or the reduction tree when outputs sit beside the coadds)')
    src.add_argument('--catalogs', nargs='+', help='catalogue files or glob patterns')
    parser.add_argument('--output', required=True, help='output FITS file')
    parser.add_argument('--allow-mixed', action='store_true',
                        help='stack catalogues made with different models, thresholds, rerun '
                        'or refinement settings; columns only some have (e.g. *_NEW of '
                        '--rerun-redrock) are filled with NaN / 0 / blank elsewhere')
    parser.add_argument('--spgrp', choices=SPGRPS,
                        help='stack only the catalogues of this spectra grouping (SPGRP); '
                        'required when the inputs hold several, whose coadds share exposures')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing --output')
    return parser.parse_args(options)


def find_catalogs(args):
    """Catalogue files to stack, sorted (raises InputFileError when there are none)."""
    if args.input_dir is not None:
        check_input_dir(args.input_dir)
        files = sorted(walk_files(args.input_dir, lambda f: f.startswith(CATALOG_PREFIX + '-')
                                  and f.endswith(('.fits', '.fits.gz'))))
        where = args.input_dir
    else:
        files, unmatched = expand_coadds(args.catalogs)
        if unmatched:                # a typo would silently drop part of the catalogue
            raise InputFileError(unmatched[0], 'matched no catalogue file')
        where = ' '.join(args.catalogs)
    if not files:
        raise InputFileError(where, f'no {CATALOG_PREFIX}-*.fits catalogue found')
    return files


def read_all(files, allow_mixed=False, spgrp=None):
    """Read the catalogues, add location columns; return tables and the shared header values.

    Every catalogue is read before an error is raised, so that one run names every
    unreadable file and every file without a :data:`lbgnet.zcatalog.REQUIRED_COLUMNS`
    column (each logged on one line).

    Parameters
    ----------
    files : list of str
    allow_mixed : bool, optional
        Stack catalogues made with different settings (logged).
    spgrp : str, optional
        Keep only catalogues of this spectra grouping (:data:`SPGRPS`); without it the
        catalogues must all have one grouping.

    Returns
    -------
    tables : list of lbgnet.zcatalog.CatalogColumns
    common : dict
        Header values (:func:`lbgnet.zcatalog.shared_keys`) that all catalogues share;
        keywords whose values differ, or that no catalogue has, are left out; and
        ``INLBGGIT``, the lbgnet revision that wrote them (``'mixed'``, with a warning,
        when they differ; None when none records it:
        :func:`lbgnet.zcatalog.describe_revisions`).
    used : list of str
        The files of `tables`.
    spgrp : str or None
        Their spectra grouping (one, lower case); `spgrp` when no catalogue was read.
    mixed : list of str
        The :data:`lbgnet.zcatalog.CONSISTENT_KEYS` whose values differ between the
        catalogues (stacked with `allow_mixed`), in that order.

    Raises
    ------
    InputFileError
        Catalogues are unreadable (several: each is logged, then one error counts them),
        a model, threshold, rerun, refinement or error-calibration setting differs from
        the first catalogue's (unless `allow_mixed`), two catalogues were made from one
        coadd (header ``INCOADD``: a retried file written elsewhere) or from one coadd's
        spectra by their location (:func:`lbgnet.zcatalog.spectra_key`), or they hold several
        spectra groupings and `spgrp` is not given (healpix and tile coadds of one
        production combine the same exposures: a target would count them twice in
        ``ZCAT_NSPEC``), or none of `spgrp`.
    """
    log = get_logger()
    named = [str(file_metadata(f).get('SPGRP', 'unknown')) for f in files]
    left_out = [g for g in named if spgrp is not None and g not in (spgrp, 'unknown')]
    if spgrp is not None:         # files named for another grouping are not even read
        files = [f for f, g in zip(files, named) if g in (spgrp, 'unknown')]
    tables, common, errors, mismatch, used, groups = [], None, [], None, [], []
    made_from, twice, uncalibrated, same_spectra, overlap = {}, [], set(), {}, []
    mixed, shared, other_targets, revisions, unknown = set(), {}, {}, {}, 0
    progress = Progress(len(files), unit='catalogues read', min_interval=10.0)
    for path in progress.iterate(files):
        try:
            table, header = read_catalog(path)
        except InputFileError as err:
            errors.append(err)
            continue
        missing = missing_columns(table)
        if missing:
            errors.append(InputFileError(path, f'not an lbgnet catalogue: no '
                                         f'{", ".join(missing)} column'))
            continue
        problems = column_kind_problems(table)
        if problems:
            errors.append(InputFileError(path, f'not an lbgnet catalogue: '
                                         f'{"; ".join(problems)}'))
            continue
        problems = bit_meaning_problems(header)
        if problems:        # GOOD_LBG and ZCAT_PRIMARY test this lbgnet's bits
            errors.append(InputFileError(path, f'LBG_FLAG bits of another meaning '
                                         f'({"; ".join(problems)}): stack it with the lbgnet '
                                         'that wrote it'))
            continue
        # int64 for all (uint64 beside int64 would stack as float64); one row per target,
        # as Redrock writes them (a repeated row counted twice in ZCAT_NSPEC, GOOD_LBG)
        try:
            table['TARGETID'] = unique_targetids(table['TARGETID'], path)
        except InputFileError as err:
            errors.append(err)
            continue
        location = dict(file_metadata(path))
        for key in ('NIGHT', 'EXPID', 'HPXPIXEL'):   # the grouping's value, from the name
            if key in location:
                location['SPGRPVAL'] = location[key]
                break
        if header.get('FAPRGRM'):        # a tile's fiberassign program, unless PROGRAM says
            location['PROGRAM'] = str(header['FAPRGRM']).strip().lower()
        location = usable_location(location)      # a header value it cannot use does
        location.update(usable_location(header))   # not replace the file name's
        group = str(location.get('SPGRP') or 'unknown').strip().lower()
        if spgrp is not None and group != spgrp:
            left_out.append(group)
            continue
        coadd, key = header.get('INCOADD'), spectra_key(location, group)
        # a coadd and its compressed copy are one coadd (plain and .gz catalogues of it)
        same = uncompressed_name(coadd) if coadd else None
        if same and same in made_from:       # a retried file written under another name
            twice.append(InputFileError(path, f'made from the coadd {coadd}, as '
                                        f'{made_from[same]}: its spectra would be counted '
                                        'twice'))
        elif key in same_spectra:     # e.g. two cumulative coadds of a tile (the later one
            overlap.append(InputFileError(   # holds the exposures of the earlier)
                path, f'holds the spectra of {same_spectra[key]} ({describe_key(key)}): '
                'they would be counted twice'))
        if same:
            made_from.setdefault(same, path)
        if key is not None:
            same_spectra.setdefault(key, path)
        # plain arrays: an astropy Table per file costs ~100 KB of objects whatever its rows
        tables.append(CatalogColumns.from_table(add_location(table, location), shared))
        used.append(path)
        uncalibrated.update(card for _, card in CALIBRATION_CARDS if header.get(card) is False)
        revision = code_revision(header)
        if revision is None:
            unknown += 1
        else:
            revisions[revision] = revisions.get(revision, 0) + 1
        groups.append(group)
        # a network pretrained on another class writes its selection as IS_LBG too
        target = str(header.get('LBGTARG') or LBG_CLASS).strip().upper()
        if target != LBG_CLASS:
            other_targets[target] = other_targets.get(target, 0) + 1
        values, absent = shared_keys(header)
        if common is None:
            common, absent_all, first = values, absent, (values, absent, path)
            continue
        diff = differing_keys(values, first[0])
        mixed.update(diff)
        if diff and not allow_mixed:       # raised after the reading: unreadable files first
            mismatch = mismatch or InputFileError(
                path, describe_difference(diff, (values, absent), first)
                + '; use --allow-mixed to stack anyway')
        elif diff:
            log.warning('%s: %s; stacked anyway (--allow-mixed): the columns those settings '
                        'affect mix values of different meaning', path,
                        describe_difference(diff, (values, absent), first))
        differ = set(differing_keys(values, common, keys=tuple(common)))
        common = {k: v for k, v in common.items() if k in values and k not in differ}
        absent_all &= absent
    if errors and mismatch is not None:
        log.error('%s', mismatch)
    if len(errors) == 1 and len(files) == 1:
        raise errors[0]
    if errors:
        for err in errors:
            log.error('%s', err)
        raise InputFileError(f'{len(errors)} of {len(files)} catalogues',
                             'refused (listed above); nothing is stacked until they are '
                             'mended or left out')
    check_one_grouping(groups, spgrp, named)
    raise_listed(twice, 'made from a coadd another catalogue was made from (listed above): '
                 'remove one of each pair, with its priors_lbg-* file')
    raise_listed(overlap, 'made from a coadd whose spectra another catalogue holds (listed '
                 'above; a cumulative tile coadd holds the exposures of the earlier ones): '
                 'keep one of each')
    if mismatch is not None:
        raise mismatch
    if left_out:
        log.info('--spgrp %s: %d of %d catalogues stacked (left out: %s)', spgrp, len(used),
                 len(named), ', '.join(f'{g if g != "unknown" else "no grouping named"} '
                                       f'{left_out.count(g)}' for g in sorted(set(left_out))))
    for target, count in sorted(other_targets.items()):
        log.warning('%d of the stacked catalogues were made by a network that selects %s, '
                    'not LBGs (header LBGTARG): their IS_LBG and GOOD_LBG rows are its %s '
                    'candidates', count, target, target)
    for key, card in CALIBRATION_CARDS:
        if card in uncalibrated:
            log.warning('%s of the stacked catalogues is uncalibrated (header %s = F: the '
                        'model\'s training could not fit it): the raw error, several times too '
                        'small', key, card)
    # keywords no input has (only implied) are not written as if they had been recorded
    common = {k: v for k, v in (common or {}).items() if k not in absent_all}
    common['INLBGGIT'], warning = describe_revisions(revisions, unknown)
    if warning:
        log.warning('%s', warning)
    return (tables, common, used, groups[0] if groups else spgrp,
            [k for k in CONSISTENT_KEYS if k in mixed])


def raise_listed(errors, problem):
    """Log each of `errors` (one line each), then raise one :class:`InputFileError` that
    counts them; nothing when there are none."""
    if errors:
        log = get_logger()
        for err in errors:
            log.error('%s', err)
        raise InputFileError(f'{len(errors)} catalogue(s)', problem)


def describe_key(key):
    """Words for a :func:`lbgnet.zcatalog.spectra_key`."""
    if key[0] == 'healpix':
        return f'healpix {key[1]}/{key[2]} pixel {key[3]}'
    text = f'{key[0]} coadd of tile {key[1]} petal {key[2]}'
    return text + (f' ({"night" if key[0] == "pernight" else "EXPID"} {key[3]})'
                   if len(key) > 3 else '')


def check_one_grouping(groups, spgrp=None, named=()):
    """Raise :class:`InputFileError` unless `groups` (the SPGRP of each catalogue read)
    hold one spectra grouping, or none is left of the requested `spgrp` (`named`: the
    groupings the file names say, for the message)."""
    counts = {g: groups.count(g) for g in sorted(set(groups))}
    if spgrp is not None and not groups:
        found = ', '.join(f'{g} {list(named).count(g)}' for g in sorted(set(named)))
        raise InputFileError('--spgrp', f'no catalogue of spectra grouping {spgrp} (found: '
                             f'{found or "none"})')
    if len(counts) > 1:
        text = ', '.join(f'{g} {n}' for g, n in counts.items())
        raise InputFileError(f'{len(groups)} catalogues', f'several spectra groupings (SPGRP '
                             f'{text}) whose coadds share exposures: stacking them would count '
                             "a target's spectra more than once; choose one with --spgrp")



def main(args=None, comm=None):
    """Run ``desi_lbg_zcatalog``; return 0 on success, 1 on a clear input/output error."""
    if not isinstance(args, argparse.Namespace):
        args = parse(args)
    log = get_logger()
    if not args.output.strip():
        log.error('--output: empty file name')
        return 1
    if os.path.isdir(args.output):
        log.error('%s: %s', args.output, IS_A_DIRECTORY)
        return 1
    if os.path.basename(args.output).startswith(CATALOG_PREFIX + '-'):
        log.error('%s: named like an afterburner catalogue (%s-*): a later run over its '
                  'directory would stack it as an input; choose another name', args.output,
                  CATALOG_PREFIX)
        return 1
    try:            # before reading thousands of catalogues: the output can be written
        files = find_catalogs(args)
        check_not_an_input(args.output, files)          # which --overwrite would not mend
        if os.path.exists(args.output) and not args.overwrite:
            raise OutputFileError(args.output, 'exists (use --overwrite)')
        check_writable(args.output, create=False)
        remove_leftovers([args.output])         # of a run killed outright (kill -9)
        tables, common, files, spgrp, mixed = read_all(files, args.allow_mixed, args.spgrp)
        zcat = stack_catalogs(tables, args.allow_mixed, files, consume=True)
    except (InputFileError, OutputFileError, ValueError) as err:
        log.error('%s', err)
        return 1
    cards = [('NINPUT', len(files), 'stacked catalogues'),
             ('SPGRP', spgrp, 'spectra grouping of the stacked catalogues'),
             ('INPUTDIR', os.path.abspath(args.input_dir) if args.input_dir else None, 'searched'),
             ('GOODBITS', bad_bits(), 'LBG_FLAG bits (mask) that veto GOOD_LBG')]
    # --allow-mixed: the settings that differ are said (their keywords are left out)
    cards += [('MIXED', bool(mixed), 'inputs differ in settings (--allow-mixed)'),
              ('MIXKEYS', ' '.join(mixed) or None, 'keywords that differ between inputs')]
    bit_comments = {key: comment for key, _, comment in LBGWarnMask().header_cards()}
    bit_comments['INLBGGIT'] = 'lbgnet revision of the inputs (LBGGIT), or mixed'
    cards += [(k, v, bit_comments.get(k, 'common to all inputs')) for k, v in common.items()
              if v is not None]
    header = provenance_header(cards, dependencies={'lbgnet': __version__})
    try:
        write_catalog(args.output, zcat, header, extname='LBG_ZCAT')
    except OutputFileError as err:
        log.error('%s', err)
        return 1
    log.info('%s: %d rows of %d targets (%d GOOD_LBG rows, %d GOOD_LBG & ZCAT_PRIMARY) from '
             '%d catalogue(s)', args.output, len(zcat), int(zcat['ZCAT_PRIMARY'].sum()),
             int(zcat['GOOD_LBG'].sum()), int((zcat['GOOD_LBG'] & zcat['ZCAT_PRIMARY']).sum()),
             len(files))
    return 0
