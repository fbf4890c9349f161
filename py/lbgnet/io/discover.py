"""
lbgnet.io.discover
==================

Find the input files of an afterburner run and name its outputs.

Inputs are either explicit coadd paths / glob patterns or a directory holding a DESI
spectroscopic reduction layout::

    healpix/{survey}/{program}/{pixgroup}/{pix}/coadd-{survey}-{program}-{pix}.fits
    tiles/cumulative/{tile}/{night}/coadd-{petal}-{tile}-thru{night}.fits

(and the other ``tiles/<group>/{tile}/{...}/coadd-{petal}-{tile}-{...}.fits`` groupings).
The Redrock file of a coadd is the same name with the ``coadd`` prefix replaced by
``redrock`` in the same directory, as :func:`desispec.io.util.replace_prefix` does.
Outputs go beside each input, or under an output directory: flat for explicit coadds,
mirroring the input tree for an input directory.
"""
import glob
import os
import re
from dataclasses import dataclass

from .errors import InputFileError

#: Output file prefixes.
CATALOG_PREFIX = 'lbg_cnn'
PRIORS_PREFIX = 'priors_lbg'
#: Prefix of the gridded network input ``desi_lbg_preprocess --outdir`` writes per coadd.
INPUT_PREFIX = 'lbg_input'

_HEALPIX_NAME = re.compile(r'^(?:[a-z_]+)-(?P<SURVEY>[a-z][a-z0-9]*)-(?P<PROGRAM>[a-z][a-z0-9]*)-'
                           r'(?P<HPXPIXEL>\d+)\.fits(?:\.gz)?$')
_TILE_NAME = re.compile(r'^(?:[a-z_]+)-(?P<PETAL>\d)-(?P<TILEID>\d+)-'
                        r'(?P<SPGRP>thru|exp|)(?P<NIGHT>\d+)\.fits(?:\.gz)?$')
_COADD_NAME = re.compile(r'^coadd-.*\.fits(?:\.gz)?$')
#: A temporary of desispec's writers (``desispec.io.util.get_tempfilename``), left by an
#: interrupted write: ``coadd-X_tmp<pid>.fits``.
_DESISPEC_TEMPORARY = re.compile(r'_tmp\d+\.fits(?:\.gz|\.fz)?$')


@dataclass(frozen=True)
class FileJob:
    """One coadd to process and where its products go.

    Attributes
    ----------
    coadd, redrock : str
        Input files.
    output : str
        Output catalogue (``lbg_cnn-*.fits``).
    priors : str
        Output Redrock priors file (``priors_lbg-*.fits``).
    size : int
        Size of the coadd in bytes (0 when missing), the weight for :func:`split_work`.
    """

    coadd: str
    redrock: str
    output: str
    priors: str
    size: int = 0


def uncompressed_name(path):
    """`path` without a trailing ``.gz``: a file and its gzipped copy hold the same data."""
    return path[:-3] if path.endswith('.gz') else path


def replace_prefix(path, old, new):
    """Replace the leading `old` of the file name in `path` by `new`.

    Parameters
    ----------
    path : str
    old, new : str
        Prefixes, e.g. ``'coadd'`` and ``'redrock'``.

    Returns
    -------
    str

    Raises
    ------
    InputFileError
        If the file name does not start with `old`.
    """
    head, tail = os.path.split(str(path))
    if not tail.startswith(old):
        raise InputFileError(path, f'file name does not start with "{old}", cannot derive '
                             f'the "{new}" file name (give it explicitly)')
    return os.path.join(head, new + tail[len(old):])


def redrock_path(coadd):
    """Redrock file of `coadd`: ``coadd-X.fits`` → ``redrock-X.fits`` in the same directory."""
    return replace_prefix(coadd, 'coadd', 'redrock')


def expand_coadds(patterns):
    """Expand coadd paths and glob patterns, keeping order and dropping duplicates.

    Parameters
    ----------
    patterns : sequence of str
        Paths or shell patterns.  A literal path (no ``*?[``, or an existing file whatever
        its characters) is kept even when it does not exist, so that it is reported as a
        failed file later.

    Returns
    -------
    paths : list of str
    unmatched : list of str
        Patterns that matched no file.
    """
    paths, unmatched, seen = [], [], set()
    for pattern in patterns:
        if glob.has_magic(pattern) and not os.path.exists(pattern):   # run[1]/coadd.fits
            found = sorted(glob.glob(pattern))
            if not found:
                unmatched.append(pattern)
        else:
            found = [pattern]
        for path in found:
            key = os.path.realpath(path)        # one file reached through a link is one file
            if key not in seen:
                seen.add(key)
                paths.append(path)
    return paths, unmatched


def walk_files(top, match=None, unreadable=None, prefer=None):
    """Files below `top`, following symlinked directories, each real file listed once.

    Symlinked directories are followed (``os.walk`` would skip them), with two guards:
    a directory whose real path was already walked is not walked again (symlink loops,
    two links to one directory), a link to a directory inside the tree itself is not
    followed, so such files keep the names of their real place in the tree, and a link
    to a directory that holds the tree (``top -> ../..``) is not followed either: it would
    walk the trees beside `top` (another production's files).  Hidden directories
    (``.snapshots``, ``.git``, a copy set aside as ``.old``) are not walked: their files
    are old copies of the tree's.  Likewise a
    file symlink to a file inside the tree is left out (the file is listed under its
    real name, beside its companions); a file reached under several other names (links
    from outside the tree, hard links) is listed once: under the first name for which
    `prefer` is true, else the first that is not a link, else the first.

    Parameters
    ----------
    top : str
        Directory to walk.
    match : callable, optional
        ``match(name)`` is true for the file names to keep (e.g. ``regex.match``); all
        files when omitted.
    unreadable : list, optional
        Receives ``(directory, reason)`` for each directory that could not be listed
        (permission denied, I/O error), and the walk goes on; None: the first such
        directory raises.
    prefer : callable, optional
        ``prefer(path)``: true for the names to keep among those of one file (e.g. the one
        whose Redrock file lies beside it).

    Returns
    -------
    list of str
        Paths starting with `top`, in walk order: per directory its files sorted, then
        its subdirectories sorted.

    Raises
    ------
    InputFileError
        A directory that cannot be listed, when `unreadable` is None: a tree read in part
        would silently leave out its files.

    Examples
    --------
    >>> walk_files(outdir, lambda name: name.startswith('lbg_cnn-'))  # doctest: +SKIP
    """
    top_real = os.path.realpath(top)
    walked, listed, found = set(), {}, []

    def onerror(err):
        reason = f'cannot list this directory ({err.strerror or err})'
        if unreadable is None:
            raise InputFileError(err.filename or top, reason)
        unreadable.append((err.filename or top, reason))

    for root, dirs, files in os.walk(top, followlinks=True, onerror=onerror):
        real = os.path.realpath(root)
        if real in walked:
            dirs[:] = []
            continue
        walked.add(real)
        dirs[:] = [d for d in sorted(dirs) if not d.startswith('.')
                   and not _links_inside(os.path.join(root, d), top_real)
                   and not _links_above(os.path.join(root, d), top_real)]
        for name in sorted(files):
            if match is not None and not match(name):
                continue                  # only the kept names cost a stat
            path = os.path.join(root, name)
            if _links_inside(path, top_real) and os.path.exists(path) and \
                    (match is None or match(os.path.basename(os.path.realpath(path)))):
                continue                  # listed where it is
            try:
                stat = os.stat(path)
            except OSError:               # a dangling link: reported when it is read
                key = ('path', os.path.realpath(path))
            else:
                key = (stat.st_dev, stat.st_ino)
            listed.setdefault(key, []).append(path)
            if len(listed[key]) == 1:
                found.append(key)

    def rank(path):
        return (not (prefer is None or prefer(path)), os.path.islink(path))
    return [min(listed[key], key=rank) if len(listed[key]) > 1 else listed[key][0]
            for key in found]


def _links_inside(path, top_real):
    """True when `path` is a symlink to a place at or below the real path `top_real`."""
    if not os.path.islink(path):
        return False
    real = os.path.realpath(path)
    return real == top_real or real.startswith(top_real.rstrip(os.sep) + os.sep)


def _links_above(path, top_real):
    """True when `path` is a symlink to a directory that holds the real path `top_real`."""
    if not os.path.islink(path):
        return False
    real = os.path.realpath(path).rstrip(os.sep) + os.sep
    return top_real.startswith(real)


def check_input_dir(input_dir):
    """Raise :class:`InputFileError` unless `input_dir` is a directory (saying whether it
    is missing or is something else, e.g. a file)."""
    if not os.path.isdir(input_dir):
        raise InputFileError(input_dir, 'not a directory' if os.path.exists(input_dir)
                             else 'input directory does not exist')


def find_coadds(input_dir, unreadable=None):
    """All ``coadd-*.fits`` files below `input_dir` (a reduction layout), in walk order.

    Symlinked subdirectories are followed (see :func:`walk_files`).  Temporaries of
    desispec's writers (``coadd-X_tmp<pid>.fits``, left by an interrupted write) are
    skipped with a warning naming them, and so is ``coadd-X.fits.gz`` beside
    ``coadd-X.fits`` (one coadd stored twice, e.g. by ``gzip -k``: processed twice, its
    targets would be counted twice in a clustering catalogue).

    Parameters
    ----------
    input_dir : str
        E.g. ``$DESI_SPECTRO_REDUX/$SPECPROD``, or its ``healpix/`` or ``tiles/`` part,
        or any directory below those.
    unreadable : list, optional
        Receives ``(directory, reason)`` for each directory that could not be listed
        (:func:`walk_files`); None: such a directory raises.

    Returns
    -------
    list of str
        In :func:`walk_files` order (per directory its files sorted, then its
        subdirectories); a file with several names is placed where its first name was
        met, under the name kept.

    Raises
    ------
    InputFileError
        If `input_dir` is not a directory.
    """
    from desiutil.log import get_logger
    check_input_dir(input_dir)
    def paired(path):
        try:
            return os.path.exists(redrock_path(path))
        except InputFileError:
            return False
    found = walk_files(input_dir, _COADD_NAME.match, unreadable, prefer=paired)
    temporary = [path for path in found if _DESISPEC_TEMPORARY.search(os.path.basename(path))]
    if temporary:
        get_logger().warning('%d coadd temporar%s of an interrupted desispec write skipped: %s',
                             len(temporary), 'y' if len(temporary) == 1 else 'ies',
                             ', '.join(temporary))
    names = set(found)
    pairs = [(path[:-3], path) for path in found if path.endswith('.gz') and path[:-3] in names]
    # keep the copy whose Redrock file is beside it (the plain one when both or neither)
    twice = [gz if paired(plain) or not paired(gz) else plain for plain, gz in pairs]
    if twice:
        get_logger().warning('%d coadd%s stored twice, compressed and not: skipped %s',
                             len(twice), '' if len(twice) == 1 else 's', ', '.join(twice))
    skip = set(temporary) | set(twice)
    return [path for path in found if path not in skip]


def output_paths(coadd, root=None, outdir=None):
    """Catalogue and priors file names for one coadd.

    Parameters
    ----------
    coadd : str
    root : str, optional
        Top of the input tree; with `outdir`, the coadd's directory relative to `root`
        is recreated under `outdir`.  Without it, the outputs go into `outdir` itself.
    outdir : str, optional
        Output directory; outputs go beside the coadd when omitted.

    Returns
    -------
    output, priors : str
    """
    head, tail = os.path.split(coadd)
    if outdir is not None:
        rel = os.path.relpath(os.path.abspath(head), os.path.abspath(root or head))
        head = os.path.normpath(os.path.join(outdir, rel))
    base = tail[len('coadd'):] if tail.startswith('coadd') else '-' + tail
    return (os.path.join(head, CATALOG_PREFIX + base), os.path.join(head, PRIORS_PREFIX + base))


def input_array_paths(coadds, outdir):
    """Names of the gridded inputs ``desi_lbg_preprocess --outdir`` writes, flat into
    `outdir`: ``coadd-X.fits`` (or ``.fits.gz``) → ``lbg_input-X.npz``; another name
    ``NAME.fits`` → ``lbg_input-NAME.npz``.

    Returns
    -------
    list of str
        One per coadd, same order.

    Raises
    ------
    ValueError
        If two coadds would write the same file (one name in two directories, or a
        plain and a gzipped copy).
    """
    out, owners = [], {}
    for coadd in coadds:
        tail = os.path.basename(coadd)
        stem = re.sub(r'\.fits(?:\.gz|\.fz)?$', '', tail)
        base = stem[len('coadd'):] if stem.startswith('coadd-') else '-' + stem
        path = os.path.join(outdir, INPUT_PREFIX + base + '.npz')
        if path in owners:
            raise ValueError(f'{coadd} and {owners[path]} would both write {path} (coadds '
                             'write flat into --outdir: run these two separately)')
        owners[path] = coadd
        out.append(path)
    return out


def plan_jobs(coadds, root=None, outdir=None):
    """One :class:`FileJob` per coadd, outputs beside it or under `outdir`.

    Parameters
    ----------
    coadds : sequence of str
    root : str, optional
        Top of the input tree (``--input-dir``): with `outdir`, the tree below it is
        mirrored under `outdir`.  When omitted, the outputs go flat into `outdir`, named
        after the coadds, so that adding or removing a coadd never moves the outputs of
        the others.
    outdir : str, optional
        Output directory; outputs go beside each coadd when omitted.

    Returns
    -------
    list of FileJob

    Raises
    ------
    ValueError
        If a coadd is not below `root` (with `outdir`) or two coadds would write the
        same output file (e.g. two coadds of one name, flat into `outdir`).
    """
    jobs, owners = [], {}
    for coadd in coadds:
        if outdir is not None and root is not None:
            rel = os.path.relpath(os.path.abspath(coadd), os.path.abspath(root))
            if rel == os.pardir or rel.startswith(os.pardir + os.sep):
                raise ValueError(f'{coadd} is not below the input directory {root}')
        output, priors = output_paths(coadd, root, outdir)
        # a plain and a gzipped copy of one catalogue hold the same spectra: one key
        key = uncompressed_name(os.path.realpath(output))
        if key in owners:
            other, other_output = owners[key]
            if other_output.endswith('.gz') != output.endswith('.gz'):
                raise ValueError(f'{coadd} and {other} would write the same catalogue, plain '
                                 f'and gzipped ({output} and {other_output}: '
                                 'desi_lbg_zcatalog refuses the pair): give one of them')
            hint = ('' if outdir is None or root is not None else
                    f' (listed coadds write flat into {outdir}: run these two separately, or '
                    'give their top directory as the input directory to mirror its tree)')
            raise ValueError(f'{coadd} and {other} would both write {output}{hint}')
        owners[key] = (coadd, output)
        try:
            rrfile = redrock_path(coadd)
        except InputFileError:
            rrfile = ''
        size = os.path.getsize(coadd) if os.path.isfile(coadd) else 0
        jobs.append(FileJob(coadd, rrfile, output, priors, size))
    return jobs


def file_metadata(path):
    """SURVEY/PROGRAM/HPXPIXEL or PETAL/TILEID/NIGHT parsed from a DESI file name.

    Parameters
    ----------
    path : str
        E.g. ``.../coadd-main-dark-10016.fits`` or ``lbg_cnn-3-80605-thru20201219.fits``.

    Returns
    -------
    dict
        Upper-case keys with int (HPXPIXEL, PETAL, TILEID, NIGHT) or str values; empty
        when the name follows neither pattern.  SPGRP is ``'healpix'``, ``'cumulative'``
        (thru), ``'perexp'`` or ``'pernight'``.
    """
    name = os.path.basename(str(path))
    match = _HEALPIX_NAME.match(name)
    if match:
        return dict(SURVEY=match['SURVEY'], PROGRAM=match['PROGRAM'],
                    HPXPIXEL=int(match['HPXPIXEL']), SPGRP='healpix')
    match = _TILE_NAME.match(name)
    if match:
        spgrp = {'thru': 'cumulative', 'exp': 'perexp', '': 'pernight'}[match['SPGRP']]
        out = dict(PETAL=int(match['PETAL']), TILEID=int(match['TILEID']), SPGRP=spgrp)
        out['EXPID' if spgrp == 'perexp' else 'NIGHT'] = int(match['NIGHT'])
        return out
    return {}
