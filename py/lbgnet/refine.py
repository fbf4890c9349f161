"""
lbgnet.refine
=============

Template refinement of the network's redshift: a χ² scan of a linear template basis over
a redshift grid, on the network's input grid, guided by the network.

The line finder places a line to within one of its boxes (160 Å) plus a regressed
offset; the redshift is then limited by the offsets of a few lines.  Fitting a template to
every pixel uses all the spectral features at once (Redrock's method, on the 8 Å grid),
which makes the redshift several times more precise.  A template fit alone, on faint
spectra, picks wrong redshifts more often than the network does, so the network guides
it: the redshift minimises

    ``χ²(z) − w S(z)``  within  ``|z − Z_LBG| / (1 + Z_LBG) < window``,

where ``S(z)`` (:func:`box_support`) is the sum over the lines of the network's confidence
in the box each line falls in at z.  The box confidences act as a prior and the template
overrules them where the data are clear.  The window (±0.1 by default, which holds 83 % of
the shipped network's wrong redshifts on the validation set) bounds how far it may go, so that a
template that fits a spectrum badly (a contaminant, sky residuals, a real galaxy unlike
the template) cannot move the redshift anywhere.  With ``w = 0`` (and for
networks without box outputs) the basis fit is the χ² minimum in the window; the archetype
stage, when there is one, still weighs its basins by the box confidences (``w_a``), so the
plain χ² minimum also needs no archetype stage.

The basis fits any linear combination of its vectors, also ones no galaxy has, and on
faint spectra it often prefers a redshift where neighbouring interstellar lines line up
with the wrong ones (a few per cent in 1+z away).  An optional *archetype stage* first
picks the basin: a set of simulated LBG spectra (archetypes, each fitted alone with a
free amplitude ≥ 0) gives the evidence of each trial redshift summed over the population
(:func:`archetype_curve`); the minimum of ``−2 ln evidence − w_a S(z)`` in the window
(:func:`basin_centres`, w_a = 1.5, on a coarser grid) is the basin's centre, and the basis
fit above then places ``Z_TPL`` within ``basin`` (0.01 in Δz/(1+z)) of it.  The redshift
keeps the basis fit's precision; the archetypes decide between the aliases.  Where the
basis fit with the network's prior is decisive (the minimum of ``χ² − w S`` in the window
lower by :data:`DEFAULT_ARCH_SKIP` than anywhere in the window outside the basin around
it, :func:`window_margin`) there are no aliases to decide between and the archetype stage
is skipped.

Pure numpy, vectorised over spectra and redshifts (the χ² of all trial redshifts comes
from ``nbasis (nbasis + 1) / 2`` matrix products per block of spectra).

Outputs per spectrum (NaN where not refined):

``Z_TPL``
    The minimum on the grid, refined by a parabola through χ² at the three grid points
    around it.
``ZERR_TPL``
    From the χ² curvature there, ``σ_z = (1 + z) ln 10 · sqrt(2 / χ²'')`` with χ² as a
    function of log10(1 + z) (not rescaled by the reduced χ²); :meth:`Refiner.run`
    calibrates this formal error (:mod:`lbgnet.zerr`).  NaN where χ² is not convex there
    or the minimum is pinned by the edge of the window or basin (the trial redshift just
    outside is lower: :func:`_window_minimum`); :func:`reliable_redshift` then says no.
``DELTACHI2_TPL``
    Lowest χ² farther than ``exclude`` (in Δz/(1+z)) from ``Z_TPL`` anywhere on the grid,
    minus χ²(``Z_TPL``): large when the data single out the redshift; negative when the
    template alone prefers another redshift (the network's prior, or the window, decided).
    Below :data:`MIN_DELTACHI2` (9, as in Redrock) the afterburner sets the ``LBG_FLAG``
    bit ``SMALL_DELTA_CHI2`` (:func:`reliable_redshift`).
"""
import hashlib
import sys
from dataclasses import dataclass, field, replace

import numpy as np

from .config import arm_pixel
from .labels import box_position
from .sim.igm import forest_tau
from .zerr import calibrated_error

#: Defaults (chosen on the validation set, doc/afterburner.rst): weight w of the network's
#: box confidences against χ², half width of the search window and of the DELTACHI2
#: exclusion zone (Δz/(1+z)), grid step in log10(1+z), basis vectors used.
DEFAULT_PRIOR_WEIGHT = 3.0
DEFAULT_WINDOW = 0.1
DEFAULT_EXCLUDE = 0.01
DEFAULT_DLOGZ = 2e-4
DEFAULT_NBASIS = 5
#: Archetype stage (chosen on the validation set, doc/afterburner.rst): weight of the
#: network's box confidences against −2 ln of the archetype likelihood, half width of the
#: basin (Δz/(1+z)) around its choice within which the basis fit places ``Z_TPL``, and the
#: trial-redshift step (log10(1+z)) of the archetype scan.
DEFAULT_ARCH_WEIGHT = 1.5
DEFAULT_BASIN = 0.01
DEFAULT_ARCH_DLOGZ = 4e-4
#: The archetype stage is skipped where the basis fit with the network's prior (the prior
#: alone can reach it where χ² is flat) is decisive: where the minimum
#: of ``χ² − w S`` in the window lies at least this much below that of every trial redshift
#: of the window farther than the basin from it (:func:`window_margin`).  Chosen on the
#: validation set, where it skips 69 % of the selected spectra and changes one ``Z_TPL`` of
#: 1,444 (doc/afterburner.rst); 0: never skip.
DEFAULT_ARCH_SKIP = 25.0
#: ``DELTACHI2_TPL`` below which an IS_LBG redshift is flagged ``SMALL_DELTA_CHI2``: the
#: value Redrock uses for its own ZWARN bit of that name (``redrock.constants.min_deltachi2``),
#: a 3σ preference over any redshift farther than the exclusion zone.
MIN_DELTACHI2 = 9.0
#: Catalogue keys added by :func:`refine_redshifts`.
REFINE_KEYS = ('Z_TPL', 'ZERR_TPL', 'DELTACHI2_TPL')
#: Relative ridge added to the normal equations (masked or degenerate basis vectors);
#: 1e-8 biased χ² by up to 1.35 for the shipped basis with one arm valid.
RIDGE = 1e-12
#: Smallest pivot of the elimination, relative to its diagonal entry, below which
#: :func:`chi2_scan` solves that spectrum and redshift by least squares instead: the basis
#: restricted to the valid bins is then nearly degenerate (the shipped basis with only the
#: z arm valid: condition numbers to 1e17, χ² wrong by up to 31 from the normal equations).
PIVOT_TOL = 1e-7
#: A second difference of χ² over three trial redshifts below this fraction of the
#: largest absolute χ² there (or of 1) is rounding, not curvature: χ² is then flat (e.g. fewer
#: valid bins than basis vectors, fitted exactly at every redshift) and ZERR_TPL NaN.
FLAT_CHI2_TOL = 1e-9
#: Relative singular-value cut of that least-squares solution (as ``numpy.linalg.lstsq``'s
#: ``rcond``): directions of the basis weaker than this carry no fit.
LSTSQ_RCOND = 1e-12


@dataclass(frozen=True)
class RefineTemplate:
    """A rest-frame template basis and the mean IGM applied at each trial redshift.

    Attributes
    ----------
    wave : numpy.ndarray
        Rest wavelengths (Å), uniform step, shape (nwave,).
    basis : numpy.ndarray
        Basis vectors (f_λ), shape (nbasis, nwave).
    igm : dict or None
        ``tau_a``, ``tau_b``, ``lyman_series`` (:func:`lbgnet.sim.igm.forest_tau`); the
        mean forest transmission multiplies the basis below Lyα.  None: no IGM.
    """

    wave: np.ndarray
    basis: np.ndarray
    igm: dict = None


def redshift_grid(zmin, zmax, dlogz=DEFAULT_DLOGZ):
    """Trial redshifts uniform in log10(1 + z) from `zmin` to `zmax`, shape (nz,)."""
    if not -1 < zmin < zmax:
        raise ValueError(f'need -1 < zmin < zmax, got {zmin}, {zmax}')
    x = np.arange(np.log10(1 + zmin), np.log10(1 + zmax) + 0.5 * dlogz, dlogz)
    return 10.0 ** x - 1.0


def binned_basis(template, edges, zs):
    """The basis averaged over each observed bin at each trial redshift, with IGM.

    Parameters
    ----------
    template : RefineTemplate
    edges : numpy.ndarray
        Observed bin edges (Å), shape (nbins + 1,).
    zs : numpy.ndarray
        Trial redshifts, shape (nz,).

    Returns
    -------
    numpy.ndarray
        Shape (nz, nbasis, nbins): bin means of the redshifted basis (zero outside the
        template's coverage) times the mean IGM transmission at the bin centre.
    """
    binner = _BasisBinner(template, edges, zs)
    return np.stack([binner.row(k) for k in range(binner.nrows)], axis=1)


class _BasisBinner:
    """What :func:`binned_basis` shares between basis rows: where each redshifted bin edge
    falls on the template's cumulative grid, the bin widths and the IGM transmission.

    Each row costs one gather and one multiplication per output element, so that binning
    many rows (the archetypes) one at a time costs little more than binning them together.
    """

    def __init__(self, template, edges, zs):
        wave = np.asarray(template.wave, dtype=np.float64)
        step = wave[1] - wave[0]
        self.step = step
        self.basis = np.atleast_2d(np.asarray(template.basis, dtype=np.float64))
        self.nrows = self.basis.shape[0]
        # cumulative integral of the basis sampled at the pixel boundaries `cwave`
        cwave = np.concatenate([[wave[0] - 0.5 * step], wave + 0.5 * step])
        edges = np.asarray(edges, dtype=np.float64)
        rest = edges[None, :] / (1.0 + np.asarray(zs, dtype=np.float64))[:, None]
        # linear interpolation in the cumulative integral, constant beyond its ends (as
        # numpy.interp): index of the boundary at or below each edge and the fraction
        # towards the next one, clipped to [0, 1]
        self.index = np.clip(np.searchsorted(cwave, rest, side='right') - 1, 0, cwave.size - 2)
        self.frac = np.clip((rest - cwave[self.index]) / step, 0.0, 1.0)
        self.width = np.diff(rest, axis=1)
        self.igm = None
        if template.igm is not None:
            centres = 0.5 * (edges[1:] + edges[:-1])
            self.igm = np.exp(-forest_tau(centres, np.asarray(zs), np.ones(len(zs)),
                                          template.igm))

    def row(self, k):
        """Basis row `k` binned, shape (nz, nbins), float64."""
        cum = np.concatenate([[0.0], np.cumsum(self.basis[k]) * self.step])
        lo = cum[self.index]
        at = lo + self.frac * (cum[self.index + 1] - lo)
        out = np.diff(at, axis=1) / self.width
        if self.igm is not None:
            out *= self.igm
        return out


def binned_archetypes(archetypes, edges, zs):
    """Each archetype averaged over each observed bin at each trial redshift, with IGM.

    Parameters
    ----------
    archetypes : RefineTemplate
        One spectrum per row of ``basis``.
    edges, zs : numpy.ndarray
        As :func:`binned_basis`.

    Returns
    -------
    numpy.ndarray
        Shape (narch, nz, nbins), float32, filled one archetype at a time, so that building
        it needs little more memory than it takes (270 MB for 100 archetypes on the shipped
        grid).
    """
    binner = _BasisBinner(archetypes, edges, zs)
    out = np.empty((binner.nrows, len(zs), len(edges) - 1), dtype=np.float32)
    for k in range(binner.nrows):
        out[k] = binner.row(k)
    return out


class _Shared:
    """One entry of :data:`_SHARED`: a binned array, the digest of its inputs and, for the
    basis, its :func:`basis_products` once formed."""

    def __init__(self, key, array):
        self.key = key
        self.array = array
        self.products = None


#: The binned basis and binned archetypes last built in this process, by kind
#: (:func:`shared_binning`).
_SHARED = {}


def _binning_key(kind, template, edges, zs):
    """Digest of everything :func:`shared_binning` bins from."""
    digest = hashlib.blake2b(kind.encode(), digest_size=20)
    for values in (template.wave, template.basis, edges, zs):
        values = np.ascontiguousarray(values, dtype=np.float64)
        digest.update(repr(values.shape).encode())
        digest.update(values.data)
    # every digit of every value, also of numpy arrays in the IGM law (whose repr would
    # round to 8 digits and elide long arrays)
    with np.printoptions(threshold=sys.maxsize, floatmode='unique'):
        digest.update(repr(template.igm).encode())
    return digest.hexdigest()


def shared_binning(kind, template, edges, zs):
    """:func:`binned_basis` (`kind` 'basis') or :func:`binned_archetypes` ('archetypes'),
    shared by the refiners that one process builds from the same inputs.

    Binning the shipped archetypes (270 MB) and forming the basis products (170 MB,
    :func:`shared_products`) take one to five seconds, most of it the first touch of that
    memory.  A process that builds the refinement again (an evaluation of several models
    with the same template, the afterburner called from Python file by file) reuses the
    last array of each kind built from the same template, bin edges and trial redshifts.
    The key is a digest of all of them (wavelengths, basis, IGM law), so different inputs
    never get a stale array; the array is read-only.  :func:`clear_shared` releases the
    memory.

    Parameters
    ----------
    kind : {'basis', 'archetypes'}
    template : RefineTemplate
    edges, zs : numpy.ndarray
        As :func:`binned_basis`.

    Returns
    -------
    numpy.ndarray
        Read-only.
    """
    build = {'basis': binned_basis, 'archetypes': binned_archetypes}[kind]
    key = _binning_key(kind, template, edges, zs)
    entry = _SHARED.get(kind)
    if entry is None or entry.key != key:
        _SHARED.pop(kind, None)           # the old arrays go before the new ones are made
        array = build(template, edges, zs)
        array.flags.writeable = False
        entry = _SHARED[kind] = _Shared(key, array)
    return entry.array


def shared_products(tbasis):
    """:func:`basis_products` of `tbasis`, formed once for the basis that
    :func:`shared_binning` shares (read-only) and every time for any other."""
    entry = _SHARED.get('basis')
    if entry is None or entry.array is not tbasis:
        return basis_products(tbasis)
    if entry.products is None:
        entry.products = basis_products(tbasis)
        entry.products.flags.writeable = False
    return entry.products


def clear_shared():
    """Forget the arrays :func:`shared_binning` and :func:`shared_products` keep: their
    memory is freed once no refiner uses them."""
    _SHARED.clear()


def bin_light_edges(config):
    """Wavelength limits (Å) of the light each grid bin collects, shape (nbins + 1,).

    The rebinning (:mod:`lbgnet.preprocess`) puts a pixel in the bin that holds its
    centre, so bin k, ``[e_k, e_k+1)``, sums pixels whose light spans
    ``[e_k − p/2, e_k+1 − p/2)`` for pixels of width p (0.8 Å for DESI).  A template
    averaged over ``[e_k, e_k+1)`` instead would sit half a pixel too red and bias the
    fitted redshift by about +p/(2λ) ≈ 7e-5 in Δz/(1+z).

    Parameters
    ----------
    config : lbgnet.config.Config
        Grid and ``instrument`` sections.
    """
    return config.grid.edges - 0.5 * arm_pixel(config)


def chi2_scan(flux, ivar, tbasis, block=128, products=None):
    """χ² of the best linear combination of the basis at every trial redshift.

    Parameters
    ----------
    flux, ivar : numpy.ndarray
        Rebinned flux and inverse variance, shape (nspec, nbins); ivar = 0 masks a bin.
    tbasis : numpy.ndarray
        From :func:`binned_basis`, shape (nz, nbasis, nbins).
    block : int, optional
        Spectra per block (memory ~ block × nz × (nbasis (nbasis + 1) / 2 + 2 nbasis + 3)
        × 8 bytes).
    products : numpy.ndarray, optional
        :func:`basis_products` of `tbasis`, when the caller keeps them between calls
        (:class:`Refiner` does); None: formed here.

    Notes
    -----
    χ² = f·W·f − bᵀ A⁻¹ b with A = Tᵀ W T and b = Tᵀ W f at each trial redshift; the
    quadratic form comes from a symmetric elimination vectorised over spectra and
    redshifts (:func:`_quadratic_form`), without forming the coefficients.  A comes from
    the products of basis pairs (:func:`basis_products`), formed once and shared by all
    blocks: forming them per block instead was measured 10 % slower.  Where the
    elimination loses precision (a pivot below :data:`PIVOT_TOL` of its diagonal entry:
    the valid bins leave the basis nearly degenerate, as with only the z arm), χ² comes
    from a singular-value decomposition of W^½ T instead (:func:`_chi2_lstsq`).

    Returns
    -------
    numpy.ndarray
        Shape (nspec, nz).
    """
    flux = np.asarray(flux, dtype=np.float64)
    ivar = np.asarray(ivar, dtype=np.float64)
    nz, nbasis, nbins = tbasis.shape
    pairs = basis_pairs(nbasis)
    if products is None:
        products = basis_products(tbasis)
    flat = tbasis.reshape(nz * nbasis, nbins).T
    out = np.empty((flux.shape[0], nz))
    for start in range(0, flux.shape[0], block):
        w = ivar[start:start + block]
        wf = w * flux[start:start + block]
        amat = {pair: w @ prod for pair, prod in zip(pairs, products)}
        bvec = (wf @ flat).reshape(w.shape[0], nz, nbasis)
        quad, worst = _quadratic_form(amat, [np.ascontiguousarray(bvec[..., k])
                                             for k in range(nbasis)])
        out[start:start + block] = (wf * flux[start:start + block]).sum(axis=1)[:, None] - quad
        spec, iz = np.nonzero(worst < PIVOT_TOL)
        if len(spec):
            out[start + spec, iz] = _chi2_lstsq(flux[start + spec], ivar[start + spec],
                                                tbasis, iz)
    return out


def _chi2_lstsq(flux, ivar, tbasis, iz, chunk=1024):
    """χ² of the least-squares fit of the basis at trial redshifts `iz`, one per row.

    Parameters
    ----------
    flux, ivar : numpy.ndarray
        Shape (npair, nbins), float64.
    tbasis : numpy.ndarray
        Shape (nz, nbasis, nbins).
    iz : numpy.ndarray of int
        Trial redshift of each row, shape (npair,).
    chunk : int, optional
        Rows per decomposition batch (memory ~ chunk × nbins × nbasis × 16 bytes).

    Returns
    -------
    numpy.ndarray
        Shape (npair,): ``|y|² − |U_rᵀ y|²`` with y = W^½ f and U_r the left singular
        vectors of W^½ T above :data:`LSTSQ_RCOND` of the largest.
    """
    out = np.empty(len(iz))
    for start in range(0, len(iz), chunk):
        sw = np.sqrt(ivar[start:start + chunk])
        y = sw * flux[start:start + chunk]
        design = np.swapaxes(tbasis[iz[start:start + chunk]], 1, 2) * sw[:, :, None]
        u, sval, _ = np.linalg.svd(design, full_matrices=False)
        keep = sval > LSTSQ_RCOND * sval[:, :1]
        proj = np.einsum('pbk,pb->pk', u, y) * keep
        out[start:start + chunk] = (y * y).sum(axis=1) - (proj * proj).sum(axis=1)
    return out


def basis_pairs(nbasis):
    """The (k, m) pairs, k ≤ m, of :func:`basis_products`, in its order."""
    return [(k, m) for k in range(nbasis) for m in range(k, nbasis)]


def basis_products(tbasis):
    """Products of pairs of binned basis vectors, the matrices behind :func:`chi2_scan`.

    Parameters
    ----------
    tbasis : numpy.ndarray
        From :func:`binned_basis`, shape (nz, nbasis, nbins).

    Returns
    -------
    numpy.ndarray
        Shape (npairs, nbins, nz), float64, for the pairs of :func:`basis_pairs`
        (nbasis (nbasis + 1) / 2 of them: 170 MB for the shipped refinement).
    """
    nz, nbasis, nbins = tbasis.shape
    out = np.empty((nbasis * (nbasis + 1) // 2, nbins, nz))
    for p, (k, m) in enumerate(basis_pairs(nbasis)):
        np.multiply(tbasis[:, k].T, tbasis[:, m].T, out=out[p])
    return out


def _quadratic_form(amat, bvec):
    """``bᵀ A⁻¹ b`` for many symmetric positive semi-definite systems at once.

    Symmetric Gaussian elimination (A = L D Lᵀ, no pivoting) gives ``Σ_i y_i² / D_i``
    with ``y = L⁻¹ b``.  A relative ridge :data:`RIDGE` on the diagonal (plus 1e-300) keeps
    the pivots positive when basis vectors are masked or degenerate, as a solve of the
    ridged system would.

    Parameters
    ----------
    amat : dict
        ``amat[k, m]`` for k ≤ m: the upper triangle of A, arrays of one shape; consumed
        (overwritten).
    bvec : list of numpy.ndarray
        ``b_k``, same shape; consumed.

    Returns
    -------
    quad : numpy.ndarray
        Of that shape.
    worst : numpy.ndarray
        Of that shape: the smallest pivot relative to its (ridged) diagonal entry, 1 for
        a basis vector that is zero on the valid bins (its pivot and b are exactly 0 and
        it drops out); near 0 where the elimination lost precision.
    """
    n = len(bvec)
    diag = []
    for k in range(n):
        amat[k, k] *= 1.0 + RIDGE
        amat[k, k] += 1e-300
        diag.append(amat[k, k].copy())
    quad = np.zeros_like(bvec[0])
    worst = np.ones_like(quad)
    tmp = np.empty_like(quad)
    for i in range(n):
        piv = amat[i, i]
        np.minimum(worst, np.where(diag[i] > 1e-290, piv / diag[i], 1.0), out=worst)
        np.divide(bvec[i], piv, out=tmp)
        quad += tmp * bvec[i]
        for j in range(i + 1, n):
            factor = amat[i, j] / piv
            np.multiply(factor, bvec[i], out=tmp)
            bvec[j] -= tmp
            for m in range(j, n):
                np.multiply(factor, amat[i, m], out=tmp)
                amat[j, m] -= tmp
    return quad, worst


#: Upper end of the flat prior on an archetype's amplitude: its mean flux at rest
#: 1420–1480 Å (:data:`lbgnet.template.NORM_WINDOW`, where the archetypes are 1), in
#: 1e-17 erg/s/cm²/Å — r ≈ 16 for an LBG, far brighter than any.
ARCH_AMPLITUDE_MAX = 1e3
_AMPLITUDE_CURVATURE = 2.0 * np.pi / ARCH_AMPLITUDE_MAX ** 2


def archetype_curve(flux, ivar, abasis):
    """−2 ln of the likelihood of each spectrum at each trial redshift, summed over archetypes.

    Each archetype k is fitted alone with a free amplitude a ≥ 0; with a flat prior on a,
    the likelihood integrated over it is approximated by ``exp(−χ²_k / 2) · sqrt(2π / A_k)``
    (χ²_k at the best amplitude, A_k the curvature Σ w T_k²: the Laplace approximation,
    which leaves out the factor Φ(b_k / sqrt(A_k)) of the truncation at a = 0, between 1/2
    and 1 for the archetypes that fit), and the archetypes are equally likely a priori.
    The flat prior is bounded by :data:`ARCH_AMPLITUDE_MAX`: the width sqrt(2π / A_k)
    becomes sqrt(2π / (A_k + 2π / a_max²)), which is the same for any archetype the data
    constrain and stays finite for one that puts no flux on the valid bins (A_k → 0, e.g.
    only bins below its Lyman limit valid), which an unbounded prior credits without limit.
    Unlike the best fit of a linear basis, whose coefficients may combine into spectra no
    galaxy has, the sum only credits a redshift where real-looking galaxies fit, and weighs
    how many of them do (a Bayes evidence over the population).

    Parameters
    ----------
    flux, ivar : numpy.ndarray
        Rebinned spectra, shape (nspec, nbins); ivar = 0 masks a bin (no NaN).
    abasis : numpy.ndarray
        Binned archetypes, archetype first (:func:`binned_basis` transposed), shape
        (narch, nz, nbins); float32 is enough.

    Returns
    -------
    numpy.ndarray
        Shape (nspec, nz), float64; defined up to a constant per spectrum.
    """
    wf, w, dd = _evidence_inputs(flux, ivar)
    narch, nz, _ = abasis.shape
    top = np.full((wf.shape[0], nz), -np.inf)
    total = np.zeros((wf.shape[0], nz))
    for k in range(narch):                      # running log-sum-exp over the archetypes
        x = _log_evidence(wf, w, dd[:, None], abasis[k])
        new = np.maximum(top, x)
        total = total * np.exp(top - new) + np.exp(x - new)
        top = new
    return -2.0 * (top + np.log(total))


def archetype_curve_windows(flux, ivar, abasis, lo, hi):
    """:func:`archetype_curve` of each spectrum at the trial redshifts of its own window only.

    The spectra must be sorted so that `lo` and `hi` never decrease (by first-guess
    redshift): the spectra whose window holds a trial redshift are then one run of rows,
    and each trial redshift costs one (run × bins) by (bins × archetypes) product — no
    work outside the windows.  Equal to :func:`archetype_curve` there, up to the rounding
    of the float32 products.

    Parameters
    ----------
    flux, ivar : numpy.ndarray
        Rebinned spectra, shape (nspec, nbins).
    abasis : numpy.ndarray
        As :func:`archetype_curve`, shape (narch, nz, nbins).
    lo, hi : numpy.ndarray of int
        Each spectrum's trial redshifts ``[lo, hi)``, non-decreasing, shape (nspec,).

    Returns
    -------
    numpy.ndarray
        Shape (nspec, nz), float64; inf outside each spectrum's ``[lo, hi)``.
    """
    lo, hi = np.asarray(lo), np.asarray(hi)
    if np.any(np.diff(lo) < 0) or np.any(np.diff(hi) < 0):
        raise ValueError('archetype_curve_windows needs the spectra sorted so that lo and hi '
                         'never decrease')
    wf, w, dd = _evidence_inputs(flux, ivar)
    nz = abasis.shape[1]
    curve = np.full((wf.shape[0], nz), np.inf)
    trial = np.arange(nz)
    first = np.searchsorted(hi, trial, 'right')        # rows whose window ends at or before
    last = np.searchsorted(lo, trial, 'right')         # rows whose window starts at or before
    for j in np.flatnonzero(last > first):
        r0, r1 = first[j], last[j]
        x = _log_evidence(wf[r0:r1], w[r0:r1], dd[r0:r1, None], abasis[:, j])
        top = x.max(axis=1)
        curve[r0:r1, j] = -2.0 * (top + np.log(np.exp(x - top[:, None]).sum(axis=1)))
    return curve


def _evidence_inputs(flux, ivar):
    """``w f`` and ``w`` in float32 (the products with the archetypes) and ``Σ w f²``."""
    flux = np.asarray(flux, dtype=np.float64)
    ivar = np.asarray(ivar, dtype=np.float64)
    return (ivar * flux).astype(np.float32), ivar.astype(np.float32), (ivar * flux * flux).sum(axis=1)


def _log_evidence(wf, w, dd, templates):
    """ln of each template's likelihood with its amplitude integrated over (Laplace; up to a
    constant per spectrum, :func:`archetype_curve`): spectra (rows of `wf`, `w`; `dd` their
    ``Σ w f²`` as a column) against `templates` (ntemplate, nbins), shape (nrows, ntemplate)."""
    b = (wf @ templates.T).astype(np.float64)
    a = (w @ (templates * templates).T).astype(np.float64)
    fitted = np.where(b > 0, b * b / np.maximum(a, 1e-300), 0.0)
    return -0.5 * (dd - fitted) - 0.5 * np.log(a + _AMPLITUDE_CURVATURE)


def basin_centres(curve, zs, z_start, window=DEFAULT_WINDOW, support=None,
                  prior_weight=DEFAULT_ARCH_WEIGHT):
    """The redshift each spectrum's archetype curve prefers within its window.

    Parameters
    ----------
    curve : numpy.ndarray
        :func:`archetype_curve`, shape (nspec, nz).
    zs : numpy.ndarray
        Its trial redshifts, uniform in log10(1 + z), shape (nz,).
    z_start : numpy.ndarray
        The network's redshifts, shape (nspec,); NaN: none.
    window : float, optional
        Half width of the search window around `z_start`, Δz/(1+z).
    support : numpy.ndarray, optional
        :func:`box_support` on `zs`, shape (nspec, nz); None: no prior.
    prior_weight : float, optional

    Returns
    -------
    numpy.ndarray
        Shape (nspec,): the minimum of ``curve − prior_weight · support`` in the window,
        refined by a parabola through `curve`; NaN where `z_start` is NaN or the window
        holds no trial redshift.
    """
    z_start = np.asarray(z_start, dtype=np.float64)
    zs = np.asarray(zs, dtype=np.float64)
    ok = np.isfinite(z_start)
    z0 = np.where(ok, z_start, 0.0)[:, None]
    inwin = (_offset(zs, z0) < window) & ok[:, None]
    prior = 0.0 if support is None else prior_weight * np.asarray(support)
    _, centre, _ = _window_minimum(curve, zs, inwin, prior)
    return np.where(inwin.any(axis=1), centre, np.nan)


def window_margin(chi2, zs, z_start, window=DEFAULT_WINDOW, basin=DEFAULT_BASIN, prior=0.0):
    """How decisively the basis fit, with the network's prior, picks its basin in each window.

    Parameters
    ----------
    chi2 : numpy.ndarray
        :func:`chi2_scan`, shape (nspec, nz).
    zs : numpy.ndarray
        Its trial redshifts, shape (nz,).
    z_start : numpy.ndarray
        The network's redshifts, shape (nspec,) (finite).
    window, basin : float, optional
        Half widths in Δz/(1+z) of the search window and of the basin.
    prior : float or numpy.ndarray, optional
        ``w S`` (:func:`box_support` times the prior weight), shape (nspec, nz).

    Returns
    -------
    numpy.ndarray
        Shape (nspec,): the lowest ``χ² − prior`` over the trial redshifts of the window
        farther than `basin` from the window's minimum, minus that minimum; inf where the
        window holds no such redshift, NaN where it holds none at all.
    """
    zs = np.asarray(zs, dtype=np.float64)
    z0 = np.asarray(z_start, dtype=np.float64)[:, None]
    inwin = _offset(zs, z0) < window
    obj = np.where(inwin, chi2 - prior, np.inf)
    ibest = np.argmin(obj, axis=1)
    best = obj[np.arange(obj.shape[0]), ibest]
    zb = zs[ibest][:, None]
    far = _offset(zs, zb) > basin
    with np.errstate(invalid='ignore'):              # inf − inf for an empty window
        margin = np.where(far, obj, np.inf).min(axis=1) - best
    return np.where(inwin.any(axis=1), margin, np.nan)


def _offset(zs, zc):
    """``|z − zc| / (1 + zc)`` of each trial redshift from each row's `zc` (shape (nspec, 1)),
    shape (nspec, nz)."""
    return np.abs(zs[None, :] - zc) / (1.0 + zc)


def _weighted(flux, ivar):
    """Flux and ivar with non-finite or non-positive pixels set to carry no weight (0 * NaN
    would poison every χ²), and the mask of the valid ones."""
    flux, ivar = np.asarray(flux), np.asarray(ivar)
    valid = np.isfinite(flux) & np.isfinite(ivar) & (ivar > 0)
    return np.where(valid, flux, 0.0), np.where(valid, ivar, 0.0), valid


def _window_minimum(curve, zs, allowed, prior=0.0):
    """Minimum of ``curve − prior`` over the `allowed` trial redshifts of each row.

    Returns
    -------
    ibest : numpy.ndarray of int
        Grid index of the minimum, shape (nspec,).
    z : numpy.ndarray
        Its redshift refined by a parabola through `curve` at the three grid points
        around it (:func:`_parabola`).
    curvature : numpy.ndarray
        ``curve''`` there: NaN where `curve` is not convex at it, it is at an end of the
        grid, or it is pinned by the edge of the allowed set (the grid point just outside
        has a lower ``curve`` and a lower ``curve − prior``: the minimum lies outside, e.g.
        an alias just beyond the window; the prior alone does not pin).  A point the prior
        chose on a convex slope of `curve` inside the set keeps its curvature.
    """
    score = np.broadcast_to(curve - prior, curve.shape)
    ibest = np.argmin(np.where(allowed, score, np.inf), axis=1)
    if zs.size < 3:                            # no parabola through three points
        return ibest, zs[ibest], np.full(ibest.shape, np.nan)
    dlogz = np.log10(1 + zs[1]) - np.log10(1 + zs[0])
    shift, curv = _parabola(curve, ibest, dlogz)
    rows = np.arange(curve.shape[0])
    best = score[rows, ibest]
    pinned = np.zeros(ibest.shape, dtype=bool)
    for step in (-1, 1):
        nbr = np.clip(ibest + step, 0, zs.size - 1)
        pinned |= ((nbr != ibest) & ~allowed[rows, nbr] & (score[rows, nbr] < best)
                   & (curve[rows, nbr] < curve[rows, ibest]))
    return ibest, 10.0 ** (np.log10(1 + zs[ibest]) + shift) - 1.0, np.where(pinned, np.nan, curv)


def _parabola(chi2, ibest, dlogz):
    """Sub-grid minimum (offset in log10(1+z)) and curvature at `ibest` of each row.

    The offset is that of the vertex of the parabola through the three grid points around
    `ibest`, at most half a step: the vertex of a grid minimum lies within half a step of
    it, and where the prior placed `ibest` on a slope of χ² the redshift moves at most half
    a step towards the χ² minimum (never out of the set it was chosen from by more).  The
    curvature is NaN where χ² is not convex there (a second difference within rounding,
    :data:`FLAT_CHI2_TOL`, is flat, not convex) or `ibest` is at an end of the grid.
    """
    nz = chi2.shape[1]
    inner = (ibest > 0) & (ibest < nz - 1)
    i = np.clip(ibest, 1, nz - 2)
    rows = np.arange(chi2.shape[0])
    lo, mid, hi = chi2[rows, i - 1], chi2[rows, i], chi2[rows, i + 1]
    second = hi - 2 * mid + lo
    scale = np.maximum(np.maximum(np.abs(lo), np.abs(mid)), np.maximum(np.abs(hi), 1.0))
    curv = second / dlogz ** 2
    ok = inner & (second > FLAT_CHI2_TOL * scale)
    safe = np.where(ok, curv, 1.0)
    shift = np.where(ok, -0.5 * (hi - lo) / dlogz / safe, 0.0)
    return np.clip(shift, -0.5 * dlogz, 0.5 * dlogz), np.where(ok, curv, np.nan)


def line_boxes(config, zs):
    """Box of each line at each trial redshift.

    Parameters
    ----------
    config : lbgnet.config.Config
        Grid, lines and boxes of the network.
    zs : numpy.ndarray
        Shape (nz,).

    Returns
    -------
    numpy.ndarray of int
        Shape (nz, nlines); −1 where the line falls outside the grid.
    """
    pos = box_position(config.lines.wave_array[None, :] * (1.0 + np.asarray(zs))[:, None], config)
    inside = (pos >= 0) & (pos < config.nboxes)
    return np.where(inside, np.floor(np.where(inside, pos, 0.0)), -1).astype(np.int64)


def box_support(conf, boxes):
    """The network's support for each trial redshift.

    Parameters
    ----------
    conf : numpy.ndarray
        Box confidences, shape (nspec, nlines, nboxes).
    boxes : numpy.ndarray of int
        :func:`line_boxes`, shape (nz, nlines).

    Returns
    -------
    numpy.ndarray
        ``S`` (nspec, nz): sum over the lines on the grid of the confidence of the box the
        line falls in.
    """
    conf = np.asarray(conf, dtype=np.float64)
    nspec, nlines, nboxes = conf.shape
    # a zero box after each line's boxes takes the trial redshifts where the line is off
    # the grid: one gather per line instead of a masked read-modify-write (3x faster)
    padded = np.zeros((nspec, nlines, nboxes + 1))
    padded[..., :nboxes] = conf
    padded = padded.reshape(nspec, -1)
    index = np.where(boxes >= 0, boxes, nboxes) + (nboxes + 1) * np.arange(boxes.shape[1])
    support = np.zeros((nspec, boxes.shape[0]))
    for line in range(boxes.shape[1]):
        support += np.take(padded, index[:, line], axis=1)
    return support


def refine_redshifts(flux, ivar, z_start, tbasis, zs, window=DEFAULT_WINDOW,
                     exclude=DEFAULT_EXCLUDE, support=None, prior_weight=DEFAULT_PRIOR_WEIGHT,
                     centre=None, basin=DEFAULT_BASIN, products=None, chi2=None):
    """Template-refined redshifts guided by the network (module docstring).

    Parameters
    ----------
    flux, ivar : numpy.ndarray
        Rebinned spectra, shape (nspec, nbins); bins with ivar ≤ 0 or a non-finite flux
        or ivar carry no weight.
    z_start : numpy.ndarray
        The network's redshift (``Z_LBG``), shape (nspec,); NaN: not refined.
    tbasis : numpy.ndarray
        :func:`binned_basis` on `zs`, shape (nz, nbasis, nbins).
    zs : numpy.ndarray
        Trial redshifts, uniform in log10(1 + z), shape (nz,).
    window, exclude : float, optional
        Half widths in Δz/(1+z) of the search window around `z_start` and of the zone
        around the result left out of DELTACHI2.
    support : numpy.ndarray, optional
        :func:`box_support` of the spectra, shape (nspec, nz); None: no prior.
    prior_weight : float, optional
        Weight w of `support` against χ² (0: no prior).
    centre : numpy.ndarray, optional
        The archetype stage's redshifts (:func:`basin_centres`), shape (nspec,): the
        search is further restricted to ``|z − centre| / (1 + centre) < basin`` (where
        that leaves a trial redshift in the window; NaN: no restriction).  None: none.
    basin : float, optional
        Half width of that restriction, Δz/(1+z).
    products : numpy.ndarray, optional
        :func:`basis_products` of `tbasis` (see :func:`chi2_scan`).
    chi2 : numpy.ndarray, optional
        :func:`chi2_scan` of these spectra, shape (nspec, nz), when the caller has it.

    Returns
    -------
    dict of numpy.ndarray
        ``Z_TPL``, ``ZERR_TPL``, ``DELTACHI2_TPL``, shape (nspec,) (see the module
        docstring); NaN for spectra not refined, with a non-finite first guess, without
        valid bins or without a trial redshift in their window.
    """
    z_start = np.asarray(z_start, dtype=np.float64)
    nspec = z_start.shape[0]
    out = {key: np.full(nspec, np.nan) for key in REFINE_KEYS}
    flux, ivar, valid = _weighted(flux, ivar)
    todo = np.flatnonzero(np.isfinite(z_start) & valid.any(axis=1))
    if todo.size == 0:
        return out
    if chi2 is None:
        chi2 = chi2_scan(flux[todo], ivar[todo], tbasis, products=products)
    else:
        chi2 = np.asarray(chi2)[todo]
    zs = np.asarray(zs, dtype=np.float64)
    z0 = z_start[todo][:, None]
    inwin = _offset(zs, z0) < window
    if centre is not None:
        zc = np.asarray(centre, dtype=np.float64)[todo][:, None]
        near = inwin & (_offset(zs, zc) < basin)
        inwin = np.where(near.any(axis=1)[:, None], near, inwin)
    prior = 0.0 if support is None else prior_weight * np.asarray(support)[todo]
    ibest, zbest, curv = _window_minimum(chi2, zs, inwin, prior)
    has = inwin.any(axis=1)
    rows = np.arange(todo.size)
    zerr = (1 + zbest) * np.log(10) * np.sqrt(2.0 / curv)
    far = _offset(zs, zbest[:, None]) > exclude
    other = np.where(far, chi2, np.inf).min(axis=1)
    dchi2 = np.where(np.isfinite(other), other - chi2[rows, ibest], np.nan)
    for key, value in zip(REFINE_KEYS, (zbest, zerr, dchi2)):
        out[key][todo] = np.where(has, value, np.nan)
    return out


def reliable_redshift(is_lbg, deltachi2, zerr=None, min_deltachi2=MIN_DELTACHI2):
    """IS_LBG targets whose refined redshift the data single out.

    Parameters
    ----------
    is_lbg : array_like of bool
        Shape (nspec,).
    deltachi2 : array_like
        ``DELTACHI2_TPL`` (NaN where not refined), shape (nspec,).
    zerr : array_like, optional
        ``ZERR_TPL``, shape (nspec,): NaN where χ² is not convex at ``Z_TPL`` (e.g. the
        network's prior alone placed it) or an edge of the search pins it, which then
        counts as not singled out whatever ``DELTACHI2_TPL`` says; None: not checked.
    min_deltachi2 : float, optional
        [:data:`MIN_DELTACHI2`]

    Returns
    -------
    numpy.ndarray of bool
        ``is_lbg & (deltachi2 >= min_deltachi2)`` (and a finite `zerr`): NaN (not
        refined) counts as not reliable.
    """
    deltachi2 = np.asarray(deltachi2, dtype=np.float64)
    with np.errstate(invalid='ignore'):
        out = np.asarray(is_lbg, dtype=bool) & (deltachi2 >= min_deltachi2)
    if zerr is not None:
        out &= np.isfinite(np.asarray(zerr, dtype=np.float64))
    return out


def template_from_basis(wave, basis, nbasis=DEFAULT_NBASIS, igm=None):
    """A :class:`RefineTemplate` from a (Redrock) basis on any increasing rest grid.

    Parameters
    ----------
    wave : numpy.ndarray
        Rest wavelengths (Å), increasing, shape (nwave,).
    basis : numpy.ndarray
        Shape (ntemplates, nwave); the first `nbasis` rows are kept.
    nbasis : int, optional
    igm : dict, optional
        Mean-IGM law (see :class:`RefineTemplate`).

    Returns
    -------
    RefineTemplate
        On a uniform grid with the smallest step of `wave` (linear interpolation when
        `wave` is not uniform, e.g. a log-λ template).

    Raises
    ------
    ValueError
        Wavelengths not increasing or not matching the basis, or a non-finite value
        (one NaN would make every χ², hence every ``DELTACHI2_TPL``, NaN).
    """
    wave = np.asarray(wave, dtype=np.float64)
    basis = np.atleast_2d(np.asarray(basis, dtype=np.float64))[:nbasis]
    if wave.ndim != 1 or basis.shape[1] != wave.size or np.any(np.diff(wave) <= 0):
        raise ValueError(f'template wavelengths must increase and match the basis: '
                         f'{wave.shape} vs {basis.shape}')
    if not (np.all(np.isfinite(wave)) and np.all(np.isfinite(basis))):
        raise ValueError(f'{np.count_nonzero(~np.isfinite(basis))} non-finite basis values, '
                         f'{np.count_nonzero(~np.isfinite(wave))} non-finite wavelengths')
    step = np.diff(wave)
    if not np.allclose(step, step[0], rtol=1e-6):
        uniform = np.arange(wave[0], wave[-1], step.min())
        basis = np.stack([np.interp(uniform, wave, b) for b in basis])
        wave = uniform
    return RefineTemplate(wave, basis, igm)


@dataclass
class Refiner:
    """Template refinement set up once per run (trial redshifts and binned basis).

    Attributes
    ----------
    zs : numpy.ndarray
        Trial redshifts, uniform in log10(1 + z), shape (nz,).
    tbasis : numpy.ndarray
        :func:`binned_basis` on `zs`, shape (nz, nbasis, nbins).
    boxes : numpy.ndarray of int
        :func:`line_boxes` on `zs` for the network's configuration, shape (nz, nlines).
    prior_weight, window, exclude : float
        See :func:`refine_redshifts`.
    source : str
        Where the template came from (for catalogue headers).
    sha256 : str
        SHA-256 of the template file ('' when not from a file).
    zerr_scale, zerr_floor : float
        Calibration of ``ZERR_TPL`` (:func:`lbgnet.zerr.calibrated_error`); the defaults
        leave the formal error.
    noise : lbgnet.noise.NoiseModel or None
        Weight the χ² by this calibrated noise model instead of the pipeline ivar (the
        callers grid it with :func:`lbgnet.preprocess.coadd_to_grid`); None: pipeline ivar.
    archetypes : numpy.ndarray or None
        Binned archetypes (:func:`binned_basis` on `azs`, archetype first, float32),
        shape (narch, naz, nbins): the archetype stage (:func:`archetype_curve`,
        :func:`basin_centres`) picks the basin in which the basis fit places ``Z_TPL``;
        None: no archetype stage.
    azs : numpy.ndarray or None
        Trial redshifts of the archetype stage, shape (naz,).
    aboxes : numpy.ndarray or None
        :func:`line_boxes` on `azs`.
    arch_weight, basin : float
        See :func:`basin_centres` (``prior_weight``) and :func:`refine_redshifts`.
    arch_skip : float
        The archetype stage is skipped for spectra whose :func:`window_margin` is at least
        this; 0 (the default of a Refiner made directly): never skipped.  :meth:`build`,
        :meth:`with_archetypes` and :func:`lbgnet.afterburner.load_refiner` default to
        :data:`DEFAULT_ARCH_SKIP`.
    arch_source, arch_sha256 : str
        Where the archetypes came from and the file's SHA-256 ('' without archetypes).
    """

    zs: np.ndarray
    tbasis: np.ndarray
    boxes: np.ndarray
    prior_weight: float = DEFAULT_PRIOR_WEIGHT
    window: float = DEFAULT_WINDOW
    exclude: float = DEFAULT_EXCLUDE
    source: str = ''
    sha256: str = ''
    zerr_scale: float = 1.0
    zerr_floor: float = 0.0
    noise: object = None
    archetypes: np.ndarray = None
    azs: np.ndarray = None
    aboxes: np.ndarray = None
    arch_weight: float = DEFAULT_ARCH_WEIGHT
    basin: float = DEFAULT_BASIN
    arch_skip: float = 0.0
    arch_source: str = ''
    arch_sha256: str = ''
    _products: np.ndarray = field(default=None, init=False, repr=False, compare=False)

    @property
    def products(self):
        """:func:`basis_products` of `tbasis`, formed at the first use and kept (170 MB for
        the shipped refinement), so that each chunk's :func:`chi2_scan` does not form them
        again; shared with the other refiners of this process that share `tbasis`
        (:func:`shared_products`)."""
        if self._products is None:
            self._products = shared_products(self.tbasis)
        return self._products

    @property
    def dlogz(self):
        """Step of the trial redshifts in log10(1+z)."""
        if self.zs.size < 2:
            return 0.0
        return float(np.round(np.log10(1 + self.zs[1]) - np.log10(1 + self.zs[0]), 10))

    @classmethod
    def build(cls, template, config, zrange, prior_weight=DEFAULT_PRIOR_WEIGHT,
              window=DEFAULT_WINDOW, exclude=DEFAULT_EXCLUDE, dlogz=DEFAULT_DLOGZ, source='',
              sha256='', zerr_scale=1.0, zerr_floor=0.0, archetypes=None,
              arch_weight=DEFAULT_ARCH_WEIGHT, basin=DEFAULT_BASIN, arch_dlogz=DEFAULT_ARCH_DLOGZ,
              arch_source='', arch_sha256='', arch_skip=DEFAULT_ARCH_SKIP):
        """Trial redshifts covering `zrange` widened by the window, where the template
        covers the whole grid.

        Parameters
        ----------
        template : RefineTemplate
        config : lbgnet.config.Config
            The network's configuration (grid, lines, boxes).
        zrange : (float, float)
            Redshifts the first guesses can take (the model's LBG range).
        prior_weight, window, exclude, dlogz : float, optional
        source, sha256 : str, optional
        zerr_scale, zerr_floor : float, optional
            Calibration of ``ZERR_TPL``.
        archetypes : RefineTemplate, optional
            Archetypes (one spectrum per row of ``basis``) for the archetype stage; they
            must cover the grid wherever the template does.
        arch_weight, basin, arch_dlogz, arch_skip : float, optional
        arch_source, arch_sha256 : str, optional

        Raises
        ------
        ValueError
            If the template covers the grid at none of those redshifts, the archetypes
            not wherever it does, or an option is out of range.
        """
        if not 0 < window < 1 or not 0 < exclude < 1 or not 0 <= prior_weight < np.inf:
            raise ValueError(f'need window ({window}) and exclude ({exclude}) in (0, 1) and '
                             f'prior_weight ({prior_weight}) >= 0 and finite')
        if not zerr_scale > 0 or not zerr_floor >= 0:
            raise ValueError(f'need zerr_scale ({zerr_scale}) > 0 and zerr_floor '
                             f'({zerr_floor}) >= 0')
        edges = bin_light_edges(config)
        zmin = max((1 + zrange[0]) * (1 - window) - 1, edges[-1] / template.wave[-1] - 1)
        zmax = min((1 + zrange[1]) * (1 + window) - 1, edges[0] / template.wave[0] - 1)
        if not zmin < zmax:
            raise ValueError(f'the template ({template.wave[0]:.0f}-{template.wave[-1]:.0f} A rest) '
                             f'does not cover the grid for z in {zrange[0]:.2f}-{zrange[1]:.2f}')
        zs = redshift_grid(zmin, zmax, dlogz)
        refiner = cls(zs, shared_binning('basis', template, edges, zs), line_boxes(config, zs),
                      float(prior_weight), float(window), float(exclude), str(source),
                      str(sha256), float(zerr_scale), float(zerr_floor))
        if archetypes is None:
            return refiner
        return refiner.with_archetypes(archetypes, config, arch_weight, basin, arch_dlogz,
                                       arch_source, arch_sha256, arch_skip)

    def with_archetypes(self, archetypes, config, arch_weight=DEFAULT_ARCH_WEIGHT,
                        basin=DEFAULT_BASIN, arch_dlogz=DEFAULT_ARCH_DLOGZ, source='',
                        sha256='', skip=DEFAULT_ARCH_SKIP):
        """This refiner with an archetype stage over its redshift range.

        Parameters
        ----------
        archetypes : RefineTemplate
            One spectrum per row of ``basis``, each finite with a positive mean; they must
            cover the grid at every trial redshift.
        config : lbgnet.config.Config
            The network's configuration (grid, lines, boxes).
        arch_weight, basin, arch_dlogz : float, optional
        source, sha256 : str, optional
            Where the archetypes came from.
        skip : float, optional
            :attr:`arch_skip` (0: never skip the archetype stage).

        Returns
        -------
        Refiner

        Raises
        ------
        ValueError
            Options out of range, archetypes that are not finite spectra with a positive
            mean, or that do not cover the grid.

        Notes
        -----
        The binned archetypes (:func:`binned_archetypes`, float32, 270 MB for 100
        archetypes on the shipped grid) are shared with the other refiners of this process
        built from the same archetypes and grid (:func:`shared_binning`).
        """
        if not 0 < basin < 1 or arch_weight < 0 or not arch_dlogz > 0 or not skip >= 0:
            raise ValueError(f'need basin ({basin}) in (0, 1), arch_weight ({arch_weight}) '
                             f'>= 0, arch_dlogz ({arch_dlogz}) > 0 and skip ({skip}) >= 0')
        rows = np.asarray(archetypes.basis)
        if not np.all(np.isfinite(rows)) or not np.all(rows.mean(axis=1) > 0):
            raise ValueError('the archetypes must be finite spectra with a positive mean flux')
        edges = bin_light_edges(config)
        zmin, zmax = self.zs[0], self.zs[-1]
        # the grid's last point may pass the template's coverage by up to one step
        tol = 10.0 ** max(self.dlogz, 0.0) * (1 + 1e-9)
        if (archetypes.wave[0] > edges[0] / (1 + zmax) * tol
                or archetypes.wave[-1] < edges[-1] / (1 + zmin) / tol):
            raise ValueError(f'the archetypes ({archetypes.wave[0]:.0f}-'
                             f'{archetypes.wave[-1]:.0f} A rest) do not cover the grid for z '
                             f'in {zmin:.2f}-{zmax:.2f}')
        azs = redshift_grid(zmin, zmax, arch_dlogz)
        binned = shared_binning('archetypes', archetypes, edges, azs)
        return replace(self, archetypes=binned, azs=azs, aboxes=line_boxes(config, azs),
                       arch_weight=float(arch_weight), basin=float(basin),
                       arch_skip=float(skip), arch_source=str(source), arch_sha256=str(sha256))

    def basin_centres(self, flux, ivar, z_start, conf=None):
        """The archetype stage: :func:`basin_centres` of each spectrum (NaN where not refined).

        The spectra are sorted by `z_start` and :func:`archetype_curve_windows` scores each
        only at the trial redshifts of its window (and one beyond each end, for the
        parabola through the minimum); spectra whose window holds no trial redshift stay
        NaN.  The result does not depend on that, except for the rounding of the float32
        products (at most a few 1e-6 in the centres of mock LBGs; on a flat curve, noise
        alone, the rounding can move the minimum further).

        Parameters
        ----------
        flux, ivar, z_start, conf
            As :meth:`run`.

        Returns
        -------
        numpy.ndarray
            Shape (nspec,).
        """
        z_start = np.asarray(z_start, dtype=np.float64)
        centre = np.full(z_start.shape, np.nan)
        rows = np.flatnonzero(np.isfinite(z_start))
        rows = rows[np.argsort(z_start[rows], kind='stable')]
        if rows.size == 0:
            return centre
        lx = np.log10(1 + self.azs)
        lo = np.searchsorted(lx, np.log10((1 + z_start[rows]) * (1 - self.window)), 'left')
        hi = np.searchsorted(lx, np.log10((1 + z_start[rows]) * (1 + self.window)), 'right')
        inside = hi > lo                        # windows off the grid stay NaN
        rows, lo, hi = rows[inside], lo[inside], hi[inside]
        if rows.size == 0:
            return centre
        z0 = z_start[rows]
        lo, hi = np.maximum(lo - 1, 0), np.minimum(hi + 1, lx.size)
        fl, iv, _ = _weighted(np.asarray(flux)[rows], np.asarray(ivar)[rows])
        curve = archetype_curve_windows(fl, iv, self.archetypes, lo, hi)
        asupport = None
        if conf is not None and self.arch_weight > 0:
            asupport = box_support(np.asarray(conf)[rows], self.aboxes)
        centre[rows] = basin_centres(curve, self.azs, z0, self.window, asupport,
                                     self.arch_weight)
        return centre

    def run(self, flux, ivar, z_start, conf=None):
        """:func:`refine_redshifts` with this set-up, ``ZERR_TPL`` calibrated; with
        archetypes, the search is restricted to the basin the archetype stage picks, for
        the spectra where the basis fit with the prior is not decisive (:attr:`arch_skip`).

        Parameters
        ----------
        flux, ivar, z_start : numpy.ndarray
            As :func:`refine_redshifts`.
        conf : numpy.ndarray, optional
            The network's box confidences (nspec, nlines, nboxes); None (networks without
            boxes): no prior.
        """
        z_start = np.asarray(z_start, dtype=np.float64)
        out = {key: np.full(z_start.shape[0], np.nan) for key in REFINE_KEYS}
        flux, ivar, valid = _weighted(flux, ivar)
        todo = np.flatnonzero(np.isfinite(z_start) & valid.any(axis=1))
        if todo.size == 0:
            return out
        flux, ivar, z0 = flux[todo], ivar[todo], z_start[todo]
        # a NaN confidence would win every argmin it reaches: it gives no support instead
        conf = None if conf is None else np.nan_to_num(np.asarray(conf)[todo], nan=0.0)
        chi2 = chi2_scan(flux, ivar, self.tbasis, products=self.products)
        support = None
        if conf is not None and self.prior_weight > 0:
            support = box_support(conf, self.boxes)
        centre = None
        if self.archetypes is not None:
            centre = np.full(todo.size, np.nan)
            ambiguous = np.ones(todo.size, dtype=bool)
            if self.arch_skip > 0:
                prior = 0.0 if support is None else self.prior_weight * support
                margin = window_margin(chi2, self.zs, z0, self.window, self.basin, prior)
                # NaN margin: no trial redshift in the window, nothing to refine
                ambiguous = ~(margin >= self.arch_skip) & ~np.isnan(margin)
            if ambiguous.any():
                centre[ambiguous] = self.basin_centres(
                    flux[ambiguous], ivar[ambiguous], z0[ambiguous],
                    None if conf is None else conf[ambiguous])
        part = refine_redshifts(flux, ivar, z0, self.tbasis, self.zs, self.window,
                                self.exclude, support, self.prior_weight, centre, self.basin,
                                chi2=chi2)
        part['ZERR_TPL'] = calibrated_error(part['ZERR_TPL'], part['Z_TPL'], self.zerr_scale,
                                            self.zerr_floor)
        for key in REFINE_KEYS:
            out[key][todo] = part[key]
        return out
