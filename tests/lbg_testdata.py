"""Test data for the afterburner tests: a tiny model, small coadds and Redrock files.

The model is built (not trained) from a tiny configuration with a fixed seed: the
afterburner tests check plumbing, order, flags and files, not the science.
"""
import numpy as np
import fitsio
from astropy.table import Table

from lbgnet.config import config_from_dict, read_yaml_config
from lbgnet.example import example_spectra
from lbgnet.io import minimal_fibermap, write_coadd

TINY_MODEL = dict(channels=['flux', 'snr'], conv_layers=2, filters=[4, 4], kernel_size=[5, 5],
                  strides=4, padding='same', dropout=0.0, dense_units=8, offset_margin=0.1,
                  snr_softening=5.0)

#: A tiny network trained for 2 epochs on the simulator (training-script tests).
TRAIN_YAML = """
base: lbgnet-base.yaml
name: tiny
model: {channels: [flux, snr], conv_layers: 2, filters: 8, kernel_size: 5, strides: 4,
        padding: same, dropout: 0.0, dense_units: 16, offset_margin: 0.1, snr_softening: 5.0}
loss: {gamma: 1.0, pos_weight: balanced}
training: {simulation: lbgnet-mock.yaml, ntrain: 256, nval: 120, epochs: 2, batch_size: 128,
           learning_rate: 1.0e-3, patience: 2, monitor: val_score, seed: 5}
"""


def tiny_config():
    """Base configuration + a two-layer, 4-filter network."""
    data = read_yaml_config('lbgnet-base.yaml')
    data['model'] = dict(TINY_MODEL)
    data['name'] = 'lbgnet-tiny-test'
    return config_from_dict(data, source='lbgnet-tiny-test')


def save_tiny_model(path, seed=3, c_thresh=None, postprocess=None, metadata=None):
    """Build the tiny network with seeded random weights and save it; return the weights path.

    `postprocess`: options to set in the configuration's ``postprocess`` section (e.g. the
    error calibration); `metadata`: more entries of the model card's metadata."""
    import keras
    from lbgnet.io.modelfile import save_model
    from lbgnet.model import build_model
    cfg = tiny_config()
    if c_thresh is not None or postprocess:
        data = cfg.to_dict()
        if c_thresh is not None:
            data['selection']['c_thresh'] = c_thresh
        data['postprocess'] = {**(data.get('postprocess') or {}), **(postprocess or {})}
        cfg = config_from_dict(data, source=cfg.source)
    keras.utils.set_random_seed(seed)
    model = build_model(cfg)
    return save_model(path, model, cfg, metadata={'purpose': 'afterburner tests',
                                                  **(metadata or {})})[0]


def gaussian_resolution(nspec, nwave, sigma_pix=1.0, ndiag=11):
    """DESI RESOLUTION data for a Gaussian LSF, shape (nspec, ndiag, nwave)."""
    off = np.arange(ndiag // 2, -(ndiag // 2) - 1, -1)
    kern = np.exp(-0.5 * (off / sigma_pix) ** 2)
    kern /= kern.sum()
    return np.broadcast_to(kern[None, :, None], (nspec, ndiag, nwave)).astype(np.float32).copy()


def write_test_coadd(path, nspec, seed=0, targetid=None, bands='brz', full=False, edit=None):
    """Write a coadd of `nspec` example spectra; return (targetid, z).

    Parameters
    ----------
    bands : str
        Cameras to keep.
    full : bool
        Add RESOLUTION, EXP_FIBERMAP and SCORES (what rrdesi needs).
    edit : callable, optional
        ``edit(flux, ivar)`` modifies the per-band dicts before writing.
    """
    from lbgnet.config import load_config
    rng = np.random.default_rng(seed)
    wave, flux, ivar, z = example_spectra(load_config(), nspec, rng)
    wave = {b: wave[b] for b in bands}
    flux = {b: flux[b] for b in bands}
    ivar = {b: ivar[b] for b in bands}
    if edit is not None:
        edit(flux, ivar)
    targetid = np.arange(nspec) + 1000 if targetid is None else np.asarray(targetid)
    fm = minimal_fibermap(targetid, ra=np.linspace(10, 11, nspec), dec=np.linspace(-1, 1, nspec))
    fm['DESI_TARGET'] = np.arange(nspec, dtype=np.int64)
    fm['SV1_DESI_TARGET'] = np.arange(nspec, dtype=np.int64) * 2
    extra = {}
    if full:
        fm['TILEID'] = np.ones(nspec, dtype=np.int32)
        fm['COADD_NUMEXP'] = np.ones(nspec, dtype=np.int16)
        efm = Table()
        efm['TARGETID'] = targetid
        efm['TILEID'] = np.ones(nspec, dtype=np.int32)
        efm['EXPID'] = np.ones(nspec, dtype=np.int32)
        scores = Table()
        scores['TARGETID'] = targetid
        scores['TSNR2_LRG'] = np.ones(nspec, dtype=np.float32)
        extra = dict(resolution={b: gaussian_resolution(nspec, wave[b].size) for b in wave},
                     exp_fibermap=efm, scores=scores)
    write_coadd(str(path), wave, flux, ivar, fm, meta={'SURVEY': 'main', 'PROGRAM': 'dark'}, **extra)
    return targetid, z


def write_test_redrock(path, targetid, z=None, spectype='GALAXY'):
    """Write a minimal Redrock file (REDSHIFTS + FIBERMAP) for `targetid`, file order kept."""
    targetid = np.asarray(targetid, dtype=np.int64)
    n = targetid.size
    z = np.linspace(0.1, 3.0, n) if z is None else np.asarray(z)
    data = np.zeros(n, dtype=[('TARGETID', 'i8'), ('Z', 'f8'), ('ZERR', 'f8'), ('ZWARN', 'i8'),
                              ('CHI2', 'f8'), ('COEFF', 'f8', (10,)), ('SPECTYPE', 'S6'),
                              ('SUBTYPE', 'S20'), ('DELTACHI2', 'f8')])
    data['TARGETID'] = targetid
    data['Z'] = z
    data['ZERR'] = 1e-4
    data['ZWARN'] = np.arange(n) % 3
    data['DELTACHI2'] = np.arange(n) * 10.0
    data['SPECTYPE'] = spectype
    fm = np.zeros(n, dtype=[('TARGETID', 'i8'), ('TARGET_RA', 'f8'), ('TARGET_DEC', 'f8')])
    fm['TARGETID'] = targetid
    with fitsio.FITS(str(path), 'rw', clobber=True) as fx:
        fx.write(data, extname='REDSHIFTS')
        fx.write(fm, extname='FIBERMAP')
    return str(path)


def run_logged(main, caplog, *options):
    """Run a command's ``main(options)`` with INFO logs captured; return (exit code, log text)."""
    import logging
    caplog.clear()
    with caplog.at_level(logging.INFO):
        rc = main(list(options))
    return rc, caplog.text
