"""
lbgnet.sim.igm
==============

Intergalactic (and Lyman-limit) transmission of high-redshift sources, in closed form.

* Mean Lyα-forest optical depth τ_eff(z) = a (1+z)^b with a = 0.0018, b = 3.92
  (Faucher-Giguère et al. 2008, ApJ 681, 831), evaluated at the absorber redshift
  z_abs = λ_obs/λ_Lyα − 1 for λ_obs < λ_Lyα (1+z_src).
* Lyβ, Lyγ, Lyδ forests add τ_j = r_j τ_eff(λ_obs/λ_j − 1) below λ_j (1+z_src), with
  the ratios r_j of the Madau (1995, ApJ 441, 18) coefficients.
* Line-of-sight scatter: τ is multiplied by the per-object IGM_SCALE (lognormal).
* Forest structure: at node k of a fixed ln λ grid the transmission is u_k^A with u_k
  uniform in (0, 1) and A = e^τ − 1, so that its mean is exactly e^{−τ}; between nodes
  it is interpolated linearly.  Two node spacings (forest-line and large scales) share τ.
  The u_k are read from a fixed table of hashed uniforms at an offset given by the
  object's IGM_SEED: the same object rendered on any grid (any DESI arm, the 8 Å
  grid, the normalisation grid) sees the same forest.
* Below the Lyman limit (911.75 Å rest) the transmission is multiplied by
  exp(−τ_LL (λ_rest/911.75)^3); τ_LL = inf gives exactly zero flux (LBGs).
"""
import functools

import numpy as np

LYA = 1215.67
LYMAN_LIMIT = 911.75
#: Reference wavelength (Å) of the node grids; fixed so nodes do not depend on the grid.
NODE_WAVE0 = 3000.0

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
#: Size (a power of two) and seed of the fixed table of uniforms the forest nodes read.
TABLE_SIZE = 1 << 20
TABLE_SEED = 0x5851F42D4C957F2D


def tau_eff(z, tau_a, tau_b):
    """Mean Lyα-forest effective optical depth τ_eff = a (1+z)^b at absorber redshift z."""
    return tau_a * (1.0 + np.asarray(z)) ** tau_b


def hash_uniform(seed, node):
    """Uniform deviates in (0, 1) from a counter-based hash (splitmix64) of (seed, node).

    Parameters
    ----------
    seed, node : numpy.ndarray
        Broadcastable integer arrays (object seed, node index).

    Returns
    -------
    numpy.ndarray
        float64 in the open interval (0, 1), same shape as the broadcast inputs.
    """
    x = np.asarray(seed).astype(np.uint64) * _GOLDEN + np.asarray(node).astype(np.int64).astype(np.uint64)
    x = x + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * _MIX1
    x = (x ^ (x >> np.uint64(27))) * _MIX2
    x = x ^ (x >> np.uint64(31))
    return ((x >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0 ** -53


@functools.lru_cache(maxsize=1)
def _log_uniform_table():
    """ln u for a fixed table of TABLE_SIZE hashed uniforms (built once, read-only)."""
    table = np.log(hash_uniform(np.uint64(TABLE_SEED), np.arange(TABLE_SIZE))).astype(np.float32)
    table.flags.writeable = False
    return table


def _node_positions(lnw, dlnl):
    """Node index (int64) and fractional position (float32) of each grid pixel."""
    pos = (lnw - np.log(NODE_WAVE0)) * (1.0 / dlnl)
    k = np.floor(pos)
    return k.astype(np.int64), (pos - k).astype(np.float32)


def _node_transmission(node, frac, offset, tau):
    """Mean-preserving fluctuating transmission at flattened forest pixels.

    Node k of an object reads entry (k + offset) mod TABLE_SIZE of the fixed table of
    ln u; the transmission at the node is exp(A ln u) = u^A with A = e^τ − 1 (mean
    e^{−τ}), and it is interpolated linearly between nodes.
    """
    table = _log_uniform_table()
    idx = (node + offset) & (TABLE_SIZE - 1)
    expo = np.expm1(tau)
    t0 = np.exp(expo * table[idx])
    t1 = np.exp(expo * table[(idx + 1) & (TABLE_SIZE - 1)])
    return t0 + frac * (t1 - t0)


def forest_tau(wave, z, scale, igmcfg):
    """Mean optical depth of the Lyman-series forests (no fluctuations).

    Parameters
    ----------
    wave : numpy.ndarray
        Observed wavelengths (Å), shape (nwave,) or broadcastable with z[:, None].
    z, scale : numpy.ndarray
        Source redshift and IGM_SCALE, shape (nspec,).
    igmcfg : dict
        The ``simulation.igm`` configuration section.

    Returns
    -------
    numpy.ndarray
        τ, shape (nspec, nwave), float64; zero redward of Lyα.
    """
    wave = np.asarray(wave, dtype=np.float64)
    zp1 = (1.0 + np.asarray(z, dtype=np.float64))[:, None]
    a, b = float(igmcfg['tau_a']), float(igmcfg['tau_b'])
    tau = np.where(wave < LYA * zp1, a * (wave / LYA) ** b, 0.0)
    for rest, ratio in igmcfg['lyman_series'].values():
        tau = tau + np.where(wave < rest * zp1, ratio * a * (wave / rest) ** b, 0.0)
    return tau * np.asarray(scale, dtype=np.float64)[:, None]


def _forest_pixels(wave, zp1):
    """Flattened (row, column) indices of the pixels blueward of Lyα of each object."""
    counts = np.searchsorted(wave, LYA * zp1)
    rows = np.repeat(np.arange(zp1.size), counts)
    starts = np.cumsum(counts) - counts
    cols = np.arange(rows.size) - np.repeat(starts, counts)
    return rows, cols


def transmission(wave, z, scale, seed, tau_ll, igmcfg):
    """IGM × Lyman-limit transmission of a batch of sources.

    Parameters
    ----------
    wave : numpy.ndarray
        Observed wavelengths (Å), shape (nwave,), increasing.
    z : numpy.ndarray
        Source (systemic) redshifts, shape (nspec,).
    scale : numpy.ndarray
        Line-of-sight optical-depth factor IGM_SCALE, shape (nspec,).
    seed : numpy.ndarray
        Per-object integer IGM_SEED, shape (nspec,).
    tau_ll : numpy.ndarray
        Lyman-limit optical depth at 911.75 Å rest, shape (nspec,); ``inf`` = black.
    igmcfg : dict
        The ``simulation.igm`` configuration section.

    Returns
    -------
    numpy.ndarray
        Transmission in [0, 1], shape (nspec, nwave), float32 (1 redward of Lyα).

    Notes
    -----
    Only pixels blueward of Lyα are computed.  The optical-depth laws depend on the
    observed wavelength only, so they are evaluated once per grid pixel and gathered.
    """
    wave = np.asarray(wave, dtype=np.float64)
    zp1 = 1.0 + np.asarray(z, dtype=np.float64)
    trans = np.ones((zp1.size, wave.size), dtype=np.float32)
    rows, cols = _forest_pixels(wave, zp1)
    if rows.size == 0:
        return trans
    a, b = float(igmcfg['tau_a']), float(igmcfg['tau_b'])
    tau = (a * (wave / LYA) ** b).astype(np.float32)[cols]
    for rest, ratio in igmcfg['lyman_series'].values():
        tau_j = (ratio * a * (wave / rest) ** b).astype(np.float32)[cols]
        tau += np.where(cols < np.searchsorted(wave, rest * zp1)[rows], tau_j, np.float32(0.0))
    tau *= np.asarray(scale, dtype=np.float32)[rows]
    fc = np.float32(igmcfg['coarse_fraction'])
    lnw = np.log(wave)
    seed = np.asarray(seed).astype(np.uint64)
    out = None
    for dlnl, offset, share in (
            (float(igmcfg['fine_dlnl']), seed & np.uint64(TABLE_SIZE - 1), np.float32(1.0) - fc),
            (float(igmcfg['coarse_dlnl']), (seed >> np.uint64(32)) & np.uint64(TABLE_SIZE - 1), fc)):
        node, frac = _node_positions(lnw, dlnl)
        t = _node_transmission(node[cols], frac[cols], offset.astype(np.int64)[rows], share * tau)
        out = t if out is None else out * t
    nll = np.searchsorted(wave, LYMAN_LIMIT * zp1)[rows]
    below = cols < nll
    if np.any(below):
        rest = wave[cols[below]] / zp1[rows[below]]
        llb = np.asarray(tau_ll, dtype=np.float64)[rows[below]]
        with np.errstate(invalid='ignore'):
            t_ll = np.where(np.isinf(llb), 0.0, np.exp(-np.where(np.isinf(llb), 0.0, llb)
                                                       * (rest / LYMAN_LIMIT) ** 3))
        out[below] *= t_ll.astype(np.float32)
    trans.reshape(-1)[rows * wave.size + cols] = out
    return trans
