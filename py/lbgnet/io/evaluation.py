"""
lbgnet.io.evaluation
====================

Files of the evaluation command: afterburner catalogues read back as predictions, and the
JSON metrics file.
"""
import json
import os

import numpy as np

from .atomic import atomic_path
from .errors import InputFileError
from .fitsutil import extnames, open_fits, read_table
from .targetid import as_targetids, unique_targetids
from ..postprocess import best_line

#: Columns an afterburner catalogue must have to be evaluated.
CATALOG_COLUMNS = ('TARGETID', 'C_LBG', 'IS_LBG', 'Z_LBG')
#: ``LBG_FLAG`` bits (:class:`lbgnet.bitmask.LBGWarnMask`) of rows left out of the metrics:
#: no valid pixel, dead fibre / bad COADD_FIBERSTATUS, Redrock row absent from the coadd.
EXCLUDED_FLAGS = ('NODATA', 'NOT_SCIENCE', 'NOT_IN_COADD')


def read_prediction_catalog(path, line_names, extname='LBG_CNN'):
    """Read the predictions of an afterburner catalogue.

    Parameters
    ----------
    path : str
        ``lbg_cnn-*.fits`` file.
    line_names : sequence of str
        Lines whose ``C_<LINE>`` / ``Z_<LINE>`` columns give the single-best-line redshift.
    extname : str, optional
        Catalogue HDU ['LBG_CNN'].

    Returns
    -------
    dict of numpy.ndarray
        ``TARGETID``, ``C_LBG``, ``IS_LBG``, ``Z_LBG``, ``Z_BESTLINE`` (redshift of the line
        with the highest ``C_<LINE>``; ``Z_LBG`` when no line column is present),
        ``Z_TPL``, ``DELTACHI2_TPL``, ``ZERR_LBG`` and ``ZERR_TPL`` when the catalogue
        has them, ``LBG_FLAG`` (int64) when it has it, and
        ``GOOD``: False for rows whose ``LBG_FLAG`` has one of :data:`EXCLUDED_FLAGS`
        (all True without an ``LBG_FLAG`` column).

    Raises
    ------
    InputFileError
        Missing/unreadable file, no such HDU, or a required column missing.
    """
    path = str(path)
    with open_fits(path) as fx:
        check_catalog_hdu(fx, path, extname)
        table = read_table(fx, extname, path)
    missing = [c for c in CATALOG_COLUMNS if c not in table.colnames]
    if missing:
        raise InputFileError(path, f'{extname} lacks column(s) {", ".join(missing)}')
    out = {c: np.asarray(table[c]) for c in CATALOG_COLUMNS}
    out['IS_LBG'] = out['IS_LBG'].astype(bool)
    for col in ('Z_TPL', 'DELTACHI2_TPL', 'ZERR_LBG', 'ZERR_TPL'):
        if col in table.colnames:
            out[col] = np.asarray(table[col], dtype=np.float64)
    names = [n for n in line_names if f'C_{n}' in table.colnames and f'Z_{n}' in table.colnames]
    if names:
        c_lines = np.stack([np.asarray(table[f'C_{n}'], dtype=np.float64) for n in names], axis=1)
        z_lines = np.stack([np.asarray(table[f'Z_{n}'], dtype=np.float64) for n in names], axis=1)
        # the most confident line with a redshift, as lbgnet.postprocess picks it (a line
        # whose offset was NaN has no redshift: a more confident one gave Z_BESTLINE NaN)
        zbest = best_line(c_lines, z_lines)[1]
        # A direct network writes its line columns as NaN: its best-line redshift is Z_LBG,
        # as in lbgnet.predict (argmax over NaN picked the first line's NaN redshift).
        out['Z_BESTLINE'] = np.where(np.isfinite(c_lines).any(axis=1), zbest, out['Z_LBG'])
    else:
        out['Z_BESTLINE'] = out['Z_LBG'].copy()
    out['GOOD'] = np.ones(len(table), dtype=bool)
    if 'LBG_FLAG' in table.colnames:
        out['LBG_FLAG'] = np.asarray(table['LBG_FLAG']).astype(np.int64)
        out['GOOD'] = is_evaluated(out['LBG_FLAG'])
    return out


def catalog_thresholds(path, extname='LBG_CNN'):
    """The selection an afterburner catalogue was made with.

    Returns
    -------
    c_thresh, n_thresh : float or None, int or None
        Header keywords ``CTHRESH`` and ``NTHRESH`` (None where absent).
    """
    with open_fits(str(path)) as fx:
        header = fx[extname].read_header()
    c_thresh, n_thresh = header.get('CTHRESH'), header.get('NTHRESH')
    return (None if c_thresh is None else float(c_thresh),
            None if n_thresh is None else int(n_thresh))


def catalog_model(path, extname='LBG_CNN'):
    """The network an afterburner catalogue was made with, from its header.

    Returns
    -------
    sha256, model, engine : str or None
        Header keywords ``LBGMSHA`` (SHA-256 of the weights file, the model card's
        ``weights_sha256``), ``LBGMODEL`` (its path) and ``LBGENGIN`` (the forward pass,
        ``numpy`` or ``keras``; catalogues written before it have none); None where
        absent.
    """
    with open_fits(str(path)) as fx:
        header = fx[extname].read_header()
    sha, model, engine = (header.get(key) for key in ('LBGMSHA', 'LBGMODEL', 'LBGENGIN'))
    return (None if sha is None else str(sha).strip().lower(),
            None if model is None else str(model),
            None if engine is None else str(engine).strip())


def check_catalog_hdu(fx, path, extname='LBG_CNN'):
    """Raise :class:`InputFileError` unless the open FITS file `fx` (named `path`) has the
    catalogue HDU `extname` (a stacked catalogue of ``desi_lbg_zcatalog`` named as such)."""
    names = extnames(fx)
    if extname not in names:
        if 'LBG_ZCAT' in names:           # desi_lbg_zcatalog's stack
            raise InputFileError(path, 'a stacked catalogue of desi_lbg_zcatalog (LBG_ZCAT '
                                 'HDU): evaluate the lbg_cnn-* catalogues it was made from')
        raise InputFileError(path, f'no {extname} HDU: not an lbgnet afterburner catalogue')


def catalog_coadd(path, extname='LBG_CNN'):
    """The coadd an afterburner catalogue was made from.

    Parameters
    ----------
    path : str
        ``lbg_cnn-*.fits`` file.
    extname : str, optional
        Catalogue HDU ['LBG_CNN'].

    Returns
    -------
    str or None
        The path of header ``INCOADD`` (absolute), as recorded, or with its escaped
        non-ASCII characters (:func:`lbgnet.io.catalog.printable_ascii`) decoded when
        that names an existing file and the recorded one does not; None without
        ``INCOADD``.

    Raises
    ------
    InputFileError
        An unreadable file, or one without the catalogue HDU.
    """
    from .catalog import printable_ascii
    path = str(path)
    with open_fits(path) as fx:
        check_catalog_hdu(fx, path, extname)
        coadd = fx[extname].read_header().get('INCOADD')
    if coadd is None:
        return None
    coadd = str(coadd).strip()
    if not os.path.isfile(coadd) and '\\' in coadd:
        try:
            decoded = coadd.encode('ascii').decode('unicode_escape')
        except (UnicodeDecodeError, UnicodeEncodeError):
            return coadd
        if printable_ascii(decoded) == coadd and os.path.isfile(decoded):
            return decoded
    return coadd


def catalog_refinement(path, extname='LBG_CNN'):
    """The template refinement an afterburner catalogue was made with, from its header.

    Returns
    -------
    dict or None
        None for a catalogue made with ``--no-refine``; else ``template`` (file name),
        ``prior_weight``, ``window``, ``step``, ``noise`` ('pipeline' for catalogues written
        before ``REFNOISE``), ``archetypes`` (file name, None without) and ``arch_skip``
        (None without archetypes; 0, never skipped, for catalogues written before
        ``REFASKP``), as ``desi_lbg_evaluate`` records them for coadd input (None where a
        keyword is absent).
    """
    with open_fits(str(path)) as fx:
        header = fx[extname].read_header()
    if not header.get('REFINE', False):
        return None
    arch = header.get('REFARCH', 'none')
    has_arch = str(arch).lower() != 'none'
    template = header.get('REFTEMPL')
    return {'template': None if template is None else os.path.basename(str(template)),
            'prior_weight': header.get('REFWGT'), 'window': header.get('REFWIN'),
            'step': header.get('REFSTEP'), 'noise': header.get('REFNOISE', 'pipeline'),
            'archetypes': os.path.basename(str(arch)) if has_arch else None,
            'arch_skip': header.get('REFASKP', 0.0) if has_arch else None}


def find_rows(reference, targetid, path):
    """Index of each `targetid` in `reference` (both int arrays), and whether it is there.

    Returns
    -------
    index : numpy.ndarray of int
        Position in `reference` (meaningless where not `found`).
    found : numpy.ndarray of bool

    Raises
    ------
    InputFileError
        When `reference` (read from `path`) has duplicated TARGETIDs, or either is not an
        integer array (:func:`as_targetids`).
    """
    reference = as_targetids(reference, path)
    targetid = as_targetids(targetid, path)
    order = np.argsort(reference, kind='stable')
    ref_sorted = reference[order]
    if ref_sorted.size and np.any(ref_sorted[1:] == ref_sorted[:-1]):
        raise InputFileError(path, 'duplicated TARGETIDs')
    if not ref_sorted.size:                     # e.g. a truth table without rows
        return np.zeros(targetid.size, dtype=np.intp), np.zeros(targetid.size, bool)
    pos = np.clip(np.searchsorted(ref_sorted, targetid), 0, ref_sorted.size - 1)
    return order[pos], ref_sorted[pos] == targetid


def match_rows(reference, targetid, path, what='the predictions'):
    """Index of each `targetid` in `reference` (both int arrays); error if one is missing.

    Raises
    ------
    InputFileError
        When a TARGETID is absent from `reference` (the message says they are those of
        `what`) or `reference` has duplicates.
    """
    index, found = find_rows(reference, targetid, path)
    if not np.all(found):
        nmiss = int(found.size - np.count_nonzero(found))
        raise InputFileError(path, f'{nmiss} TARGETID(s) of {what} are not in this file')
    return index


def read_coadd_for_evaluation(path, config, noise=None):
    """Grid a mock coadd and tell which spectra are usable for evaluation.

    Parameters
    ----------
    path : str
        Coadd file with a FIBERMAP.
    config : lbgnet.config.Config
    noise : lbgnet.noise.NoiseModel, optional
        Also grid the ivar under this noise model (``info.noise_ivar``, for the refinement).

    Returns
    -------
    X : numpy.ndarray
        Network input, shape (nspec, nbins, 2).
    targetid : numpy.ndarray
        Shape (nspec,).
    good : numpy.ndarray of bool
        Shape (nspec,): no NODATA or NOT_SCIENCE bit in `flags` (:func:`is_evaluated`): at
        least one valid pixel, ``OBJTYPE == 'TGT'`` and no ``COADD_FIBERSTATUS`` bit for
        which desispec's zcatalog flags a spectrum bad.  Dead fibres carry no information
        about the object; production flags them (LBG_FLAG), so metrics leave them out.
    info : lbgnet.preprocess.GridInfo
        With the rebinned flux and ivar (for the template refinement).
    flags : numpy.ndarray of int32
        The ``LBG_FLAG`` bits known from the spectra (:func:`lbgnet.catalog.spectrum_flags`).

    Raises
    ------
    InputFileError
        Unreadable coadd, no FIBERMAP (no TARGETID to match the truth) or duplicated
        TARGETIDs.
    """
    from ..catalog import spectrum_flags
    from ..preprocess import coadd_to_grid
    from .coadd import read_coadd
    coadd = read_coadd(path, read_fibermap=True, read_extra=False, grid=config.grid)
    targetid = unique_targetids(coadd.require_targetid(), path)
    X, info = coadd_to_grid(coadd, config.grid, noise)
    flags = spectrum_flags(info, coadd.fibermap, config.grid.nbins)
    return X, targetid, is_evaluated(flags), info, flags


def is_evaluated(flags):
    """Rows the metrics keep: no :data:`EXCLUDED_FLAGS` bit in their ``LBG_FLAG``.

    The one rule for coadd input (flags from the spectra and FIBERMAP) and catalogue
    input (the afterburner's flags), so that both evaluate the same spectra.
    """
    from ..bitmask import LBGWarnMask
    return (np.asarray(flags).astype(np.int64) & LBGWarnMask().mask('|'.join(EXCLUDED_FLAGS))) == 0


def jsonable(obj):
    """Nested dicts of numpy values -> lists and Python numbers, NaN -> None (strict JSON)."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def write_json(path, obj):
    """Write `obj` as indented strict JSON (NaN not allowed), atomically."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, 'w') as fx:
            json.dump(obj, fx, indent=1, allow_nan=False)
            fx.write('\n')
    return path
