"""
lbgnet.template
===============

A Redrock template for LBGs: a PCA of noiseless, rest-frame simulated LBG spectra
(:mod:`lbgnet.sim`), without intergalactic absorption — Redrock applies its own IGM
model at each trial redshift (the template's ``RRIGM`` keyword).

Recipe (``desi_lbg_make_template``):

1. draw ``n`` LBGs from the simulator (all its parameters: Lyα EW from absorption to
   strong emission, UV slope, ISM line strengths and velocities, nebular lines);
2. render them at z = 0 on a fine linear rest grid, with IGM_SCALE = 0 (no forest; the
   intrinsic zero flux below the 911.75 Å Lyman limit is kept) and no instrumental
   broadening (Redrock convolves with each spectrum's resolution matrix);
3. scale each spectrum to unit mean flux in a line-free continuum window;
4. keep the first ``nbasis`` right singular vectors of the (uncentred) spectra: the first
   is the mean shape, the next ones its main variations.
"""
import numpy as np

#: Rest-frame window (Å) used to normalise each spectrum (free of the 16 lines).
NORM_WINDOW = (1420.0, 1480.0)


def rest_frame_spectra(n, wave, rng, simcfg, templates=None):
    """Noiseless rest-frame spectra of `n` simulated LBGs, without IGM.

    Parameters
    ----------
    n : int
    wave : numpy.ndarray
        Rest wavelengths (Å), increasing, shape (nwave,).
    rng : numpy.random.Generator
    simcfg : dict
        Simulator configuration (:func:`lbgnet.sim.population.load_sim_config`).
    templates : lbgnet.io.templates.SimTemplates, optional
        With the LBG composite, its fine features are imprinted (see :mod:`lbgnet.sim.lbg`).

    Returns
    -------
    flux : numpy.ndarray
        Shape (n, nwave), scaled to unit mean in :data:`NORM_WINDOW`.
    truth : astropy.table.Table
        The drawn parameters (Z_TRUE set to 0, IGM_SCALE to 0).

    Raises
    ------
    ValueError
        If `wave` has no pixel in :data:`NORM_WINDOW`, or a spectrum has no flux there.
    """
    from .sim import draw_population, render_spectra
    truth = draw_population(simcfg, n, rng, classes=['LBG'])
    truth['Z_TRUE'] = 0.0
    truth['IGM_SCALE'] = 0.0
    flux = render_spectra(truth, wave, templates=templates, simcfg=simcfg).astype(np.float64)
    window = (wave >= NORM_WINDOW[0]) & (wave <= NORM_WINDOW[1])
    if not window.any():
        raise ValueError(f'the rest grid ({wave[0]:g}-{wave[-1]:g} Å, {wave.size} pixels) has no '
                         f'pixel in the normalisation window {NORM_WINDOW} Å')
    norm = flux[:, window].mean(axis=1)
    if not np.all(norm > 0):
        raise ValueError(f'{int(np.sum(norm <= 0))} spectra have no flux in {NORM_WINDOW} Å')
    return flux / norm[:, None], truth


def pca_basis(flux, nbasis):
    """First `nbasis` right singular vectors of `flux` and the variance they explain.

    Parameters
    ----------
    flux : numpy.ndarray
        Shape (n, nwave), n >= nbasis.
    nbasis : int

    Returns
    -------
    basis : numpy.ndarray
        Shape (nbasis, nwave), orthonormal rows; the first is made positive on average.
    explained : numpy.ndarray
        Cumulative fraction of the summed squared flux captured, shape (nbasis,).
    """
    if not 1 <= nbasis <= min(flux.shape):
        raise ValueError(f'nbasis={nbasis} must be between 1 and {min(flux.shape)}')
    _, sval, vt = np.linalg.svd(flux, full_matrices=False)
    basis = vt[:nbasis].copy()
    if basis[0].sum() < 0:
        basis[0] *= -1
    power = sval ** 2
    return basis, np.cumsum(power[:nbasis]) / power.sum()


def redshift_grid(zmin, zmax, dlog):
    """Redshifts uniform in log10(1+z) from `zmin` to `zmax` (inclusive of `zmin`)."""
    return 10 ** np.arange(np.log10(1 + zmin), np.log10(1 + zmax), dlog) - 1


def reconstruction_error(flux, basis):
    """Relative rms residual of each spectrum projected on `basis`, shape (n,)."""
    model = (flux @ basis.T) @ basis
    return np.sqrt(np.mean((flux - model) ** 2, axis=1)) / np.sqrt(np.mean(flux ** 2, axis=1))
