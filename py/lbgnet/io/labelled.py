"""
lbgnet.io.labelled
==================

Labelled spectra for training: the per-arm spectra of coadd files with their truth
(``truth-*.fits`` beside each ``coadd-*.fits``), kept in memory so that
:class:`lbgnet.labelled.FileBatches` can augment and grid them afresh every epoch.
"""
import glob
import os
from dataclasses import dataclass

import numpy as np
from desiutil.log import get_logger

from .errors import InputFileError

#: Truth columns used in training (``RMAG`` may be NaN for real spectra).
LABEL_COLUMNS = ('TARGETID', 'CLASS', 'Z_TRUE', 'RMAG')


@dataclass
class LabelledSpectra:
    """Per-arm spectra of labelled objects.

    Attributes
    ----------
    bands : tuple of str
    waves : dict
        band -> wavelengths (nwave,), Å; the same for every file.
    fluxes, ivars : dict
        band -> (nspec, nwave) float32; ``<BAND>_MASK`` pixels have ivar = 0.
    truth : astropy.table.Table
        :data:`LABEL_COLUMNS` per spectrum, in the order of the arrays.
    files : list of str
        The coadd files read.
    truth_files : list of str
        Their truth files.
    """

    bands: tuple
    waves: dict
    fluxes: dict
    ivars: dict
    truth: object
    files: list
    truth_files: list

    def __len__(self):
        return len(self.truth)

    @property
    def nbytes(self):
        """Memory held by the flux and ivar arrays (bytes)."""
        return sum(a.nbytes for d in (self.fluxes, self.ivars) for a in d.values())


def find_labelled(directory, what='labelled'):
    """Coadd and truth files of a directory, paired by name (``coadd-X`` ↔ ``truth-X``).

    Parameters
    ----------
    directory : str
    what : str, optional
        Word naming the set in the error message.

    Raises
    ------
    InputFileError
        When the directory does not exist or has no ``coadd-*.fits`` file.
    """
    if not os.path.isdir(directory):
        raise InputFileError(directory, f'no such directory (of {what} files)')
    coadds = sorted(glob.glob(os.path.join(glob.escape(directory), 'coadd-*.fits')))
    truths = [os.path.join(directory, 'truth-' + os.path.basename(c)[len('coadd-'):])
              for c in coadds]
    if not coadds:
        raise InputFileError(directory, f'no coadd-*.fits {what} files')
    return coadds, truths


#: Upper end of the redshifts accepted for LBG and target-class labels (z > 10 is no
#: object DESI's 3600–9824 Å can classify; such a value is a corrupt label).
MAX_LABEL_Z = 10.0


def check_labels(truth, path, target='LBG', config=None):
    """Normalise and check the CLASS, Z_TRUE and RMAG labels of a truth table, in place.

    CLASS is stripped and upper-cased and must be one of
    :data:`lbgnet.sim.population.CLASSES`; Z_TRUE must be numeric, > −1 where finite,
    and every LBG and every object of the `target` class (the one a network is trained
    to find) needs one in (0, :data:`MAX_LABEL_Z`) (a STAR target only a finite one:
    stars have z = v_r / c).  RMAG must be numeric (NaN where unknown; stored as
    float64).  Each column must hold one value per row.

    Parameters
    ----------
    truth : astropy.table.Table
    path : str
        The truth file, for the messages.
    target : str, optional
        Class the network is trained to find.
    config : lbgnet.config.Config, optional
        The network's configuration: when given, objects of its target class with none of
        its lines on its grid (:func:`lbgnet.targets.lines_off_grid`) are counted in a
        warning: they are trained as "no line here", a negative, as the simulator's own
        such objects are (a QSO finder's QSOs at z < 1); in hand-labelled data they are
        more often a wrong label.

    Raises
    ------
    InputFileError
        Naming `path` and the offending values.
    """
    from ..sim.population import CLASSES
    for name in ('CLASS', 'Z_TRUE', 'RMAG'):
        if name in truth.colnames and np.ndim(truth[name]) != 1:
            raise InputFileError(path, f'{name} must hold one value per row, not shape '
                                 f'{tuple(np.shape(truth[name])[1:])}')
    column = np.asarray(truth['CLASS'])
    if column.dtype.kind not in 'US':
        raise InputFileError(path, f'CLASS must hold class names ({", ".join(CLASSES)}), '
                             f'not {column.dtype} values')
    if column.dtype.kind == 'S':
        column = np.char.decode(column, 'ascii')
    classes = np.char.upper(np.char.strip(column))
    unknown = sorted(set(classes.tolist()) - set(CLASSES))
    if unknown:
        raise InputFileError(path, f'unknown CLASS value(s) {", ".join(map(repr, unknown[:5]))}'
                             f'{" ..." if len(unknown) > 5 else ""}; known: {", ".join(CLASSES)}')
    truth['CLASS'] = classes
    z = np.asarray(truth['Z_TRUE'])
    if z.dtype.kind not in 'fiu':
        raise InputFileError(path, f'Z_TRUE must be numeric, not {z.dtype}')
    z = z.astype(np.float64)
    for name in sorted({'LBG', str(target).upper()}):
        bad = (classes == name) & ~np.isfinite(z)
        if np.any(bad):
            raise InputFileError(path, f'{int(bad.sum())} {name}(s) without a finite Z_TRUE')
        if name == 'STAR':           # a star target: z = v_r / c, about 0 and often < 0
            continue
        # a stand-in value (-1, 0) or a corrupt one would be trained as "no line in the grid"
        bad = (classes == name) & ~((z > 0) & (z < MAX_LABEL_Z))
        if np.any(bad):
            raise InputFileError(path, f'{int(bad.sum())} {name}(s) with Z_TRUE outside '
                                 f'(0, {MAX_LABEL_Z:g}), e.g. {z[bad][0]:g}')
    impossible = np.isfinite(z) & (z <= -1)
    if np.any(impossible):
        raise InputFileError(path, f'{int(impossible.sum())} Z_TRUE value(s) <= -1, '
                             f'e.g. {z[impossible][0]:g}')
    if 'RMAG' in truth.colnames:
        rmag = np.asarray(truth['RMAG'])
        if rmag.dtype.kind not in 'fiu':
            raise InputFileError(path, f'RMAG must be numeric (NaN where unknown), not '
                                 f'{rmag.dtype}')
        truth['RMAG'] = rmag.astype(np.float64)
    if config is not None:
        from ..targets import lines_off_grid, target_class
        name = target_class(config)
        off = (classes == name) & lines_off_grid(z, config)
        if np.any(off):
            # the simulator trains such objects (a QSO finder's QSOs at z < 1, say) the
            # same way; in hand-labelled data they are more often a mislabel: say so
            get_logger().warning(f'{path}: {int(off.sum())} {name}(s) with none of the '
                                 f'network\'s lines on its grid, e.g. Z_TRUE {z[off][0]:g}: '
                                 f'they are trained (and scored) as having no line')


def read_labelled_spectra(coadds, truths, target='LBG', config=None):
    """Read labelled coadds into memory, per arm, with their truth.

    Spectra that are not science spectra (NOT_SCIENCE: dead fibres, ``OBJTYPE != 'TGT'``,
    :func:`lbgnet.catalog.not_science`), without a valid pixel (the production pixel
    rule, :func:`lbgnet.preprocess.usable_pixels`; with `config`, on its grid: the
    spectra production flags NODATA) or without
    a row in their truth file (unlabelled; a warning gives their number) are left out.  A
    truth file whose content does not match its coadd's ``TRUTHSUM`` (mock files) is
    refused, and so is a coadd with duplicated TARGETIDs (as in validation and evaluation).

    Parameters
    ----------
    coadds, truths : sequence of str
        Coadd files and their truth files (``TRUTH`` HDU with :data:`LABEL_COLUMNS`,
        :func:`lbgnet.io.mock.read_truth`; labels checked by :func:`check_labels`).
    target : str, optional
        Class the network is trained to find (its objects need a redshift).
    config : lbgnet.config.Config, optional
        The network's configuration (grid and lines, passed to :func:`check_labels`).

    Returns
    -------
    LabelledSpectra

    Raises
    ------
    InputFileError
        Unreadable files, bad labels, no labelled spectrum at all, or a coadd whose bands
        or wavelengths differ from the first file's.
    """
    from astropy.table import Table, vstack
    from ..catalog import not_science
    from ..preprocess import usable_pixels
    from .coadd import read_coadd
    from .evaluation import find_rows
    from .mock import check_truth_matches, read_truth
    from .targetid import unique_targetids
    log = get_logger()
    bands = waves = None
    fluxes, ivars, tables = {}, {}, []
    for coadd_path, truth_path in zip(coadds, truths):
        coadd = read_coadd(coadd_path, read_fibermap=True, read_extra=False)
        targetid = unique_targetids(coadd.require_targetid(), coadd_path)
        if bands is None:
            bands, waves = coadd.bands, coadd.wave
            fluxes, ivars = {b: [] for b in bands}, {b: [] for b in bands}
        elif coadd.bands != bands or any(not np.array_equal(coadd.wave[b], waves[b])
                                         for b in bands):
            raise InputFileError(coadd_path, f'bands or wavelengths differ from those of '
                                 f'{os.path.basename(coadds[0])}: labelled files must share '
                                 'one wavelength layout')
        truth = read_truth(truth_path)
        # the labels first: CLASS is normalised before the TRUTHSUM comparison
        check_labels(truth, truth_path, target, config)
        check_truth_matches(coadd_path, truth_path, truth)
        absent = ~np.isin(unique_targetids(truth['TARGETID'], truth_path), targetid)
        if np.any(absent):
            log.warning('%s: %d of its %d rows have no spectrum in %s: not used', truth_path,
                        int(absent.sum()), len(truth), os.path.basename(coadd_path))
        good = np.zeros(coadd.nspec, dtype=bool)
        for band in bands:
            ivar = coadd.ivar[band]
            if coadd.mask[band] is not None:
                ivar[coadd.mask[band] != 0] = 0.0
            usable = usable_pixels(coadd.flux[band], ivar)
            if config is not None:
                index = config.grid.bin_index(waves[band])
                usable &= ((index >= 0) & (index < config.grid.nbins))[None, :]
            good |= np.any(usable, axis=1)
        good &= ~not_science(coadd.fibermap, len(good))    # the evaluation's rule
        rows, found = find_rows(np.asarray(truth['TARGETID']), np.asarray(targetid), truth_path)
        if np.any(good & ~found):
            log.warning('%s: %d of its %d usable spectra have no row in %s: left out '
                        '(unlabelled)', coadd_path, int(np.sum(good & ~found)), int(good.sum()),
                        os.path.basename(truth_path))
        good &= found
        labels = {c: truth[c][rows[good]] for c in LABEL_COLUMNS}
        # the coadd's own ids, int64: truth files may store them as int64 or uint64, which
        # vstack would merge into float64 (neighbouring DESI TARGETIDs made equal)
        labels['TARGETID'] = np.asarray(targetid, dtype=np.int64)[good]
        tables.append(Table(labels))
        for band in bands:
            fluxes[band].append(np.asarray(coadd.flux[band][good], dtype=np.float32))
            ivars[band].append(np.asarray(coadd.ivar[band][good], dtype=np.float32))
        log.debug('%s: %d of %d spectra used', coadd_path, int(good.sum()), coadd.nspec)
    if bands is None:
        raise InputFileError(', '.join(truths) or '(none)', 'no labelled coadd files given')
    out = LabelledSpectra(bands, {b: np.asarray(waves[b], dtype=np.float64) for b in bands},
                          {b: np.concatenate(fluxes[b]) for b in bands},
                          {b: np.concatenate(ivars[b]) for b in bands},
                          vstack(tables), [str(c) for c in coadds], [str(t) for t in truths])
    if len(out) == 0:
        raise InputFileError(coadds[0], 'no usable labelled spectrum (all dead, empty or '
                             'without a truth row)')
    return out
