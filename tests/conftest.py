"""Shared pytest fixtures: tiny DESI coadds written with desispec, reference-data paths."""
import os

import numpy as np
import pytest

from lbgnet.config import load_config
from lbgnet.example import example_spectra
from lbgnet.io import minimal_fibermap, write_coadd

REFERENCE = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'reference'))
REAL_COADD = os.path.join(REFERENCE, 'desi-coadd', 'coadd-sv1-dark-80605-25fibres.fits')


def reference_file(*parts):
    """Path of a ../shared/reference file, or skip the test (printing why) when it is absent."""
    path = os.path.join(REFERENCE, *parts)
    if not os.path.exists(path):
        pytest.skip(f'reference file {path} not available (../shared/reference is absent)')
    return path


@pytest.fixture(scope='session')
def config():
    """The default (base) configuration."""
    return load_config()


@pytest.fixture
def tiny_coadd(tmp_path, config):
    """A 6-spectrum, three-arm coadd written by desispec.io.write_spectra; returns (path, arrays)."""
    rng = np.random.default_rng(42)
    wave, flux, ivar, z = example_spectra(config, 6, rng)
    mask = {b: np.zeros(flux[b].shape, dtype=np.int32) for b in wave}
    path = str(tmp_path / 'coadd-test.fits')
    fibermap = minimal_fibermap(np.arange(6) + 100)
    write_coadd(path, wave, flux, ivar, fibermap, mask=mask)
    return path, dict(wave=wave, flux=flux, ivar=ivar, mask=mask, z=z, targetid=np.arange(6) + 100)
