"""Redrock priors: width from the CNN box width, file format readable by redrock.priors.Priors."""
import contextlib
import io

import numpy as np
import pytest
from astropy.table import Table

from lbgnet.io.errors import InputFileError
from lbgnet.io.priors import priors_table, read_priors, write_priors
from lbgnet.priors import prior_width, select_priors
from lbgnet.redrock_rerun import import_rrdesi


def load_redrock_priors(path):
    import_rrdesi()                          # numpy-2 shim for redrock 0.21
    from redrock.priors import Priors
    with contextlib.redirect_stdout(io.StringIO()):
        return Priors(path)


def test_width_is_one_box_each_side(config):
    box = config.grid.dwave * config.grid.nbins / config.nboxes
    nlines = len(config.lines)
    c_lines = np.full((3, nlines), 0.1)
    ilya, iciv = config.lines.index('LYA'), config.lines.index('CIV')
    c_lines[0, ilya] = 0.9
    c_lines[1, iciv] = 0.8
    c_lines[2, :] = np.nan
    c_lines[2, iciv] = 0.3
    width = prior_width(c_lines, config)
    assert width[0] == pytest.approx(2 * box / 1215.67)
    assert width[1] == pytest.approx(2 * box / config.lines.wave_array[iciv])
    assert width[2] == width[1]
    # The base grid has 160 A boxes: Lya prior spans +-0.1316 in z.
    assert width[0] / 2 == pytest.approx(160.0 / 1215.67)
    # no line above the line floor (a hybrid's Z_LBG then comes from its direct head),
    # or no line output at all: the widest top hat, not that of a line below the floor
    weak = np.full((2, nlines), 0.01)
    weak[0, iciv] = 0.04
    weak[1] = np.nan
    widest = 2 * box / config.lines.wave_array.min()
    assert prior_width(weak, config) == pytest.approx([widest, widest])


def catalog_for(config, tid, is_lbg, z):
    cat = Table(dict(TARGETID=tid, IS_LBG=is_lbg, Z_LBG=z))
    for i, name in enumerate(config.lines.names):
        cat[f'C_{name}'] = np.full(len(tid), 0.9 if name == 'LYA' else 0.1)
    return cat


def test_select_priors(config):
    cat = catalog_for(config, np.array([1, 2, 3, 4]), np.array([True, False, True, True]),
                      np.array([3.0, 2.5, np.nan, 4.9]))
    tid, z, sigma = select_priors(cat, config)
    assert tid.tolist() == [1, 4] and z.tolist() == [3.0, 4.9]
    tid, _, _ = select_priors(cat, config, zrange=(1.5, 4.5))
    assert tid.tolist() == [1]
    assert select_priors(cat[:0], config)[0].size == 0


def test_priors_file_read_by_redrock(tmp_path):
    path = str(tmp_path / 'priors_lbg-x.fits')
    write_priors(path, priors_table([11, -7008279, 13], [3.0, 2.5, 4.0], [0.26, 0.2, 0.3]))
    priors = load_redrock_priors(path)
    zgrid = np.linspace(2.0, 4.5, 251)
    chi2 = priors.eval(11, zgrid)
    inside = np.abs(zgrid - 3.0) < 0.13
    assert np.all(chi2[inside] == 0)
    # Outside the top hat of full width SIGMA = 0.26 Redrock's prior is NaN (inf at the edges).
    assert not np.any(np.isfinite(chi2[np.abs(zgrid - 3.0) > 0.14]))
    assert np.any(priors.eval(-7008279, zgrid) == 0)
    with contextlib.redirect_stdout(io.StringIO()):
        assert priors.eval(999, zgrid) == 0.0       # no prior for unknown targets
    back = read_priors(path)
    assert back['TARGETID'].tolist() == [11, -7008279, 13]
    assert back['FUNCTION'].tolist() == ['tophat'] * 3


def test_gaussian_priors(tmp_path):
    path = str(tmp_path / 'p.fits')
    write_priors(path, priors_table([5], [3.0], [0.1], function='gaussian'))
    chi2 = load_redrock_priors(path).eval(5, np.array([3.0, 3.1, 3.2]))
    assert chi2 == pytest.approx([0.0, 1.0, 4.0])


def test_empty_and_invalid(tmp_path):
    path = str(tmp_path / 'empty.fits')
    write_priors(path, priors_table([], [], []))
    assert len(read_priors(path)) == 0
    with pytest.raises(ValueError, match='SIGMA > 0'):
        priors_table([1], [3.0], [0.0])
    with pytest.raises(ValueError, match='prior function'):
        priors_table([1], [3.0], [0.1], function='box')
    (tmp_path / 'bad.fits').write_bytes(b'not fits at all' * 300)
    with pytest.raises(InputFileError, match='bad.fits'):
        read_priors(str(tmp_path / 'bad.fits'))
    # an image HDU of the right name: one line, for priors files and catalogues alike
    import fitsio
    from lbgnet.io.catalog import read_catalog
    for name, reader in (('PRIORS', read_priors), ('LBG_CNN', read_catalog)):
        image = str(tmp_path / f'image-{name}.fits')
        fitsio.write(image, np.zeros((2, 3), np.float32), extname=name, clobber=True)
        with pytest.raises(InputFileError, match=f'HDU {name} is an image'):
            reader(image)


def test_zrange_keeps_overlapping_top_hats(config):
    # A prior is kept when its top hat (not only its centre) overlaps zrange; the width is
    # that of each row's best line.
    zmin, zmax = 1.5, 4.5
    tid = np.arange(8) + 1
    cat = catalog_for(config, tid, np.ones(8, bool), np.zeros(8))
    iciv = config.lines.index('CIV')
    civ_best = np.array([0, 0, 0, 0, 0, 0, 1, 1], dtype=bool)
    for name in config.lines.names:
        cat[f'C_{name}'][civ_best] = 0.95 if name == 'CIV' else 0.1
    c_lines = np.column_stack([cat[f'C_{n}'] for n in config.lines.names])
    half = prior_width(c_lines, config) / 2
    assert half[0] == pytest.approx(160.0 / 1215.67)
    assert half[6] == pytest.approx(160.0 / config.lines.wave_array[iciv]) and half[6] < half[0]
    eps = 0.01
    cat['Z_LBG'] = [zmax + half[0] - eps,      # centre above zmax, lower edge inside: kept
                    zmax + half[1] + eps,      # whole top hat above zmax: dropped
                    zmin - half[2] + eps,      # centre below zmin, upper edge inside: kept
                    zmin - half[3] - eps,      # whole top hat below zmin: dropped
                    3.0,                       # well inside: kept
                    zmax - eps,                # centre inside: kept
                    zmax + half[6] - eps,      # CIV width: kept
                    zmax + half[6] + eps]      # would overlap with the Lya width, not with CIV's
    assert cat['Z_LBG'][7] - half[0] < zmax
    tid_in, z_in, sigma_in = select_priors(cat, config, zrange=(zmin, zmax))
    assert tid_in.tolist() == [1, 3, 5, 6, 7]
    np.testing.assert_array_equal(z_in, np.asarray(cat['Z_LBG'])[[0, 2, 4, 5, 6]])
    np.testing.assert_allclose(sigma_in, 2 * half[[0, 2, 4, 5, 6]])


def test_priors_in_a_gap_between_templates_are_dropped(config):
    """With several rerun templates, a prior must overlap one template's own grid: one that
    falls in the gap between two grids left Redrock without a finite chi2 (and failed the
    whole file)."""
    tid = np.arange(3) + 1
    cat = catalog_for(config, tid, np.ones(3, bool), np.zeros(3))
    cat['Z_LBG'] = [3.2, 4.1, 4.7]
    ranges = [(3.0, 3.5), (4.6, 4.8)]
    kept, _, _ = select_priors(cat, config, ranges)
    assert kept.tolist() == [1, 3]
    kept, _, _ = select_priors(cat, config, (3.0, 4.8))         # one range: the union
    assert kept.tolist() == [1, 2, 3]


def test_width_comes_from_a_line_z_lbg_was_made_from(config):
    """Lyα, SiII 1260 and CII agree at z = 3 (Z_LBG); CIV, more confident, says 3.5 and is
    outvoted: the window is Lyα's ±0.132, not CIV's ±0.103 (Z_LBG's lines are bluer)."""
    nlines = len(config.lines)
    idx = [config.lines.index(n) for n in ('LYA', 'SIII1260', 'CII')]
    iciv = config.lines.index('CIV')
    c_lines = np.full((1, nlines), 0.01)
    z_lines = np.full((1, nlines), 2.0)
    c_lines[0, idx], z_lines[0, idx] = 0.6, 3.0
    c_lines[0, iciv], z_lines[0, iciv] = 0.9, 3.5
    box = config.grid.dwave * config.grid.nbins / config.nboxes
    assert prior_width(c_lines, config, z_lines)[0] == pytest.approx(2 * box / 1215.67)
    assert prior_width(c_lines, config)[0] == pytest.approx(2 * box / config.lines.wave_array[iciv])
    cat = catalog_for(config, np.array([5]), np.array([True]), np.array([3.0]))
    for i, name in enumerate(config.lines.names):
        cat[f'C_{name}'], cat[f'Z_{name}'] = c_lines[:, i], z_lines[:, i]
    assert select_priors(cat, config)[2][0] == pytest.approx(2 * box / 1215.67)
    # a line below line_floor never made Z_LBG: when it alone agrees, the most confident
    # line gives the window
    faint = np.full((1, nlines), 0.01)
    faint[0, iciv] = 0.9
    faint[0, idx[0]] = 0.02                          # Lyα agrees with Z_LBG, under the floor
    far = np.full((1, nlines), 2.0)
    far[0, idx[0]] = 3.0
    assert prior_width(faint, config, far)[0] == pytest.approx(
        2 * box / config.lines.wave_array[iciv])


def test_priors_columns_are_described(tmp_path):
    """The PRIORS columns carry descriptions (TTYPEn comments), as the catalogues' do;
    they had cfitsio's 'label for field N'."""
    from astropy.io import fits
    from lbgnet.io.priors import PRIOR_COLUMNS, priors_table, write_priors
    path = str(tmp_path / 'priors.fits')
    write_priors(path, priors_table([1, 2], [2.5, 3.0], [0.01, 0.02]))
    header = fits.getheader(path, 'PRIORS')
    assert [header.comments[f'TTYPE{i}'] for i in range(1, 5)] == list(PRIOR_COLUMNS.values())
