"""
lbgnet.priors
=============

Redrock redshift priors from the CNN output (pure numpy).

The CNN places each line in one of ``nboxes`` boxes of equal width in wavelength on
the *linear* input grid, ``W = dwave * nbins / nboxes`` Å (160 Å for the base
configuration), and regresses the position inside the box.  A line of rest
wavelength λ_l found at redshift z can only be wrong by about one box when the box is
right and the offset wrong, i.e. by ``Δz_l = W / λ_l`` in redshift (independent of z,
unlike the log-grid boxes of QuasarNET whose width scales as 1+z).  The prior of a
target is a top hat centred on Z_LBG with full width ``SIGMA = 2 W / λ_best`` (±one box
of the most confident of the lines Z_LBG was made from), so Redrock searches
``|z - Z_LBG| < W / λ_best``; without a line above the post-processing ``line_floor`` the
widest, that of the bluest line.
"""
import numpy as np

#: Prior function written into the PRIORS file.
PRIOR_FUNCTION = 'tophat'


def prior_width(c_lines, config, z_lines=None):
    """Top-hat full width (in z) of the Redrock prior, per spectrum.

    Parameters
    ----------
    c_lines : numpy.ndarray
        Line confidences, shape (nspec, nlines), NaN allowed.
    config : lbgnet.config.Config
        Grid, nboxes and line list.
    z_lines : numpy.ndarray, optional
        Line redshifts, shape (nspec, nlines).  With them the best line is the most
        confident of the lines Z_LBG was averaged from
        (:func:`lbgnet.postprocess.line_members`, the rule of
        :func:`lbgnet.postprocess.combine_lines`): a confident line outvoted by the others
        did not make Z_LBG, and a bluer line's wider window is the one Z_LBG needs.
        Without them, the most confident line.

    Returns
    -------
    numpy.ndarray
        ``2 * box_width / λ_rest[best line]``, shape (nspec,).  Rows without a line
        above the post-processing ``line_floor`` — no finite confidence (direct networks
        have no line outputs), or a hybrid whose Z_LBG then comes from its direct head —
        get the widest top hat, that of the first (bluest) line.

    Examples
    --------
    For Lyα as best line on the base grid: 2 × 160 / 1215.67 = 0.263.
    """
    from .postprocess import line_members, postprocess_options
    opts = postprocess_options(config)
    c_lines = np.asarray(c_lines, dtype=np.float64)
    finite = np.where(np.isfinite(c_lines), c_lines, -np.inf)
    best = np.argmax(finite, axis=1)
    if z_lines is not None:
        member = line_members(c_lines, np.asarray(z_lines, dtype=np.float64),
                              opts['agree_tol'], opts['line_floor'])[0]
        best = np.where(member.any(axis=1),
                        np.argmax(np.where(member, finite, -np.inf), axis=1), best)
    noline = finite.max(axis=1, initial=-np.inf) < opts['line_floor']
    best = np.where(noline, np.argmin(config.lines.wave_array), best)
    return 2.0 * config.box_width / config.lines.wave_array[best]


def select_priors(catalog, config, zrange=None):
    """TARGETID, Z and SIGMA of the catalogue rows that get a prior (IS_LBG, finite Z_LBG).

    Parameters
    ----------
    catalog : astropy.table.Table
        Afterburner catalogue (TARGETID, IS_LBG, Z_LBG, C_<LINE>, and Z_<LINE> to take
        the best line among those Z_LBG was made from, :func:`prior_width`).
    config : lbgnet.config.Config
    zrange : tuple of float or sequence of them, optional
        Keep only priors whose top hat overlaps ``[zmin, zmax]``, or one of several such
        ranges (e.g. the redshift grids of the Redrock templates used in a rerun).

    Returns
    -------
    targetid : numpy.ndarray of int64
    z, sigma : numpy.ndarray of float64
    """
    c_lines = np.column_stack([np.asarray(catalog[f'C_{n}'], dtype=np.float64)
                               for n in config.lines.names]) if len(catalog) else \
        np.zeros((0, len(config.lines)))
    z = np.asarray(catalog['Z_LBG'], dtype=np.float64)
    keep = np.asarray(catalog['IS_LBG'], dtype=bool) & np.isfinite(z)
    z_names = [f'Z_{n}' for n in config.lines.names]
    z_lines = (np.column_stack([np.asarray(catalog[n], dtype=np.float64) for n in z_names])
               if len(catalog) and all(n in catalog.colnames for n in z_names) else None)
    sigma = prior_width(c_lines, config, z_lines) if len(catalog) else np.zeros(0)
    if zrange is not None:
        ranges = np.atleast_2d(np.asarray(zrange, dtype=np.float64))
        keep &= np.any((z[:, None] + sigma[:, None] / 2 > ranges[None, :, 0])
                       & (z[:, None] - sigma[:, None] / 2 < ranges[None, :, 1]), axis=1)
    return (np.asarray(catalog['TARGETID'], dtype=np.int64)[keep], z[keep], sigma[keep])
