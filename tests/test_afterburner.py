"""desi_lbg_afterburner end to end on small files: order, columns, and every reliability case."""
import os

import fitsio
import numpy as np
import pytest
from astropy.io import fits

from lbg_testdata import run_logged, save_tiny_model, write_test_coadd, write_test_redrock

from lbgnet.afterburner import load_refiner
from lbgnet.network import ENGINES, load_network
from lbgnet.bitmask import LBGWarnMask
from lbgnet.io.catalog import file_sha256, read_catalog
from lbgnet.io.modelfile import sha256sum
from lbgnet.io.priors import read_priors
from lbgnet.model import predict_boxes
from lbgnet.postprocess import postprocess, postprocess_options
from lbgnet.preprocess import load_coadd_grid
from lbgnet.refine import DEFAULT_PRIOR_WEIGHT, DEFAULT_WINDOW
from lbgnet.scripts.lbg_afterburner import main, parse
from lbgnet.zerr import calibrated_error

MASK = LBGWarnMask()


@pytest.fixture(scope='module')
def model_path(tmp_path_factory):
    from lbgnet.afterburner import default_archetype_path
    calib = {'refine_noise': 'calibrated', 'refine_archetypes': file_sha256(default_archetype_path())}
    return save_tiny_model(str(tmp_path_factory.mktemp('model') / 'tiny.weights.h5'),
                           postprocess={'zerr_scale': 3.0, 'zerr_floor': 2e-4,
                                        'zerr_tpl_scale': 1.7, 'zerr_tpl_floor': 1e-4},
                           metadata={'error_calibration': calib})


def make_pair(directory, name='main-dark-100', nspec=12, rr_order=None, **kwargs):
    coadd = os.path.join(directory, f'coadd-{name}.fits')
    tid, z = write_test_coadd(coadd, nspec, **kwargs)
    order = np.random.default_rng(5).permutation(nspec) if rr_order is None else rr_order
    write_test_redrock(os.path.join(directory, f'redrock-{name}.fits'), np.asarray(tid)[order])
    return coadd, os.path.join(directory, f'lbg_cnn-{name}.fits')


def run(caplog, *options):
    return run_logged(main, caplog, *options)


def test_catalogue_matches_direct_prediction(tmp_path, model_path, caplog):
    coadd, output = make_pair(str(tmp_path), nspec=15)
    rc, _ = run(caplog, '--coadd', coadd, '--model', model_path, '--chunk-size', '4')
    assert rc == 0
    cat, hdr = read_catalog(output)
    rr = fits.getdata(coadd.replace('coadd-', 'redrock-'), 'REDSHIFTS')
    assert cat['TARGETID'].tolist() == rr['TARGETID'].tolist()
    assert np.array_equal(cat['Z_RR'], rr['Z']) and np.array_equal(cat['DELTACHI2_RR'], rr['DELTACHI2'])
    # Same numbers as running the pieces by hand on the whole file, in coadd order.
    net = load_network(model_path, engine='keras')     # the Keras model, as reference
    X, info = load_coadd_grid(coadd, net.config)
    res = postprocess(*predict_boxes(net.model, X), net.config)
    pos = np.searchsorted(info.targetid, cat['TARGETID'])
    assert np.allclose(cat['C_LBG'], res['C_LBG'][pos], atol=1e-6)
    assert np.allclose(cat['Z_LBG'], res['Z_LBG'][pos], atol=1e-6)
    assert np.array_equal(cat['IS_LBG'], res['IS_LBG'][pos])
    # ZERR_LBG: postprocess's formal error with the model's calibration, recorded in the header
    opts = postprocess_options(net.config)
    assert hdr['ZERRSCL'] == opts['zerr_scale'] and hdr['ZERRFLR'] == opts['zerr_floor']
    assert np.allclose(cat['ZERR_LBG'], calibrated_error(res['ZERR_LBG'], res['Z_LBG'],
                                                         opts['zerr_scale'], opts['zerr_floor'])[pos],
                       rtol=1e-5)
    assert np.allclose(cat['C_LYA'], res['C_LINES'][pos, net.config.lines.index('LYA')], atol=1e-6)
    fm = fits.getdata(coadd, 'FIBERMAP')
    assert np.array_equal(cat['TARGET_RA'], fm['TARGET_RA'][pos])
    assert np.array_equal(cat['SV1_DESI_TARGET'], fm['SV1_DESI_TARGET'][pos])
    for name in net.config.lines.names:
        assert f'C_{name}' in cat.colnames and f'Z_{name}' in cat.colnames
    assert np.all(cat['LBG_FLAG'] & ~(MASK.Z_OUT_OF_RANGE | MASK.SMALL_DELTA_CHI2) == 0)
    assert hdr['LBGMSHA'] == sha256sum(model_path) and hdr['CTHRESH'] == net.config.selection.c_thresh
    assert hdr['INCOADD'] == os.path.abspath(coadd) and hdr['HPXPIXEL'] == 100
    assert hdr['SURVEY'] == 'main' and hdr['PROGRAM'] == 'dark'
    priors = read_priors(output.replace('lbg_cnn-', 'priors_lbg-'))
    assert priors['TARGETID'].tolist() == cat['TARGETID'][cat['IS_LBG']].tolist()
    assert np.allclose(priors['Z'], cat['Z_LBG'][cat['IS_LBG']])
    # template refinement: exactly the selected targets, as the refiner run by hand
    assert hdr['REFINE'] and hdr['REFWIN'] == DEFAULT_WINDOW and hdr['REFWGT'] == DEFAULT_PRIOR_WEIGHT
    assert np.array_equal(np.isfinite(cat['Z_TPL']), np.asarray(cat['IS_LBG']))
    refiner = load_refiner(hdr['REFTEMPL'], net.config, net.zrange, archetypes=hdr['REFARCH'])
    assert hdr['REFTSHA'] == file_sha256(hdr['REFTEMPL'])
    # by default the shipped archetypes pick the basin (recorded with their SHA-256)
    from lbgnet.afterburner import default_archetype_path
    assert hdr['REFARCH'] == default_archetype_path() and hdr['REFASHA'] == file_sha256(hdr['REFARCH'])
    assert (hdr['REFAWGT'], hdr['REFABAS']) == (refiner.arch_weight, refiner.basin) == (1.5, 0.01)
    assert hdr['REFASKP'] == refiner.arch_skip == 25.0
    assert (hdr['ZTPLSCL'], hdr['ZTPLFLR']) == (opts['zerr_tpl_scale'], opts['zerr_tpl_floor'])
    assert (refiner.zerr_scale, refiner.zerr_floor) == (opts['zerr_tpl_scale'], opts['zerr_tpl_floor'])
    conf, offset = predict_boxes(net.model, X)
    # the rebinned spectrum from the raw arrays (not from the reader's GridInfo under test)
    from lbgnet.preprocess import rebin_arms
    raw = {b: [np.asarray(fits.getdata(coadd, f'{b.upper()}_{k}'), dtype=np.float64)   # native order
               for k in ('WAVELENGTH', 'FLUX', 'IVAR', 'MASK')] for b in 'brz'}
    flux, ivar, _ = rebin_arms([raw[b][0] for b in 'brz'], [raw[b][1] for b in 'brz'],
                               [np.where(raw[b][3] == 0, raw[b][2], 0) for b in 'brz'], net.config.grid)
    np.testing.assert_allclose(info.flux, flux, rtol=1e-6, atol=1e-9)   # float32 reads
    np.testing.assert_allclose(info.ivar, ivar, rtol=1e-6)
    # by default χ² is weighted by the calibrated noise model's grid ivar
    from lbgnet.noise import load_noise_model
    from lbgnet.preprocess import grid_noise_ivar
    assert hdr['REFNOISE'] == 'calibrated'
    ivar = grid_noise_ivar(list('brz'), [raw[b][0] for b in 'brz'], [raw[b][1] for b in 'brz'],
                           [raw[b][2] for b in 'brz'], net.config.grid, load_noise_model(),
                           [raw[b][3] for b in 'brz'])
    assert np.all(ivar <= info.ivar * (1 + 1e-6))          # the model adds variance
    by_hand = refiner.run(flux, ivar, np.where(res['IS_LBG'], res['Z_LBG'], np.nan), conf)
    for col in ('Z_TPL', 'ZERR_TPL', 'DELTACHI2_TPL'):
        assert np.allclose(cat[col], by_hand[col][pos], equal_nan=True, rtol=1e-6)
    # SMALL_DELTA_CHI2: exactly the IS_LBG rows whose DELTACHI2_TPL is below the header's 9
    assert hdr['MINDCHI2'] == 9.0
    small = np.asarray(cat['IS_LBG']) & ~(np.nan_to_num(cat['DELTACHI2_TPL'], nan=-1) >= 9.0)
    assert np.array_equal((cat['LBG_FLAG'] & MASK.SMALL_DELTA_CHI2) != 0, small)
    assert hdr['REFSTEP'] == pytest.approx(2e-4)
    # a coarser trial grid (--refine-step): recorded, same rows refined, redshifts close
    coarse = str(tmp_path / 'coarse.fits')
    rc, text = run(caplog, '--coadd', coadd, '--model', model_path, '--output', coarse,
                   '--priors', coarse.replace('.fits', '-priors.fits'), '--refine-step', '4e-4')
    assert rc == 0 and 'only approximately so' in text and '--refine-step' in text
    assert 'only approximately so' not in run(caplog, '--coadd', coadd, '--model', model_path,
                                              '--output', str(tmp_path / 'default.fits'),
                                              '--priors', str(tmp_path / 'default-p.fits'))[1]
    cat4, hdr4 = read_catalog(coarse)
    assert hdr4['REFSTEP'] == pytest.approx(4e-4)
    assert np.array_equal(np.isfinite(cat4['Z_TPL']), np.isfinite(cat['Z_TPL']))
    assert not np.array_equal(cat4['Z_TPL'], cat['Z_TPL'], equal_nan=True)
    with pytest.raises(SystemExit):
        parse(['--coadd', coadd, '--refine-step', '0'])
    # a threshold that selects half: only those are refined
    cut = float(np.median(cat['C_LBG']))
    assert run(caplog, '--coadd', coadd, '--model', model_path, '--c-thresh', str(cut),
               '--overwrite')[0] == 0
    half = read_catalog(output)[0]
    assert half['IS_LBG'].any() and not half['IS_LBG'].all()
    assert np.array_equal(np.isfinite(half['Z_TPL']), np.asarray(half['IS_LBG']))


def test_tile_program_from_the_fibermap_header(tmp_path, model_path, caplog):
    """A tile coadd may carry SURVEY and its fiberassign program (FAPRGRM) in the FIBERMAP
    header only: the catalogue keeps them and desi_lbg_zcatalog takes the program from
    FAPRGRM (before, FAPRGRM was dropped and every tile row got PROGRAM 'unknown')."""
    from lbgnet.scripts.lbg_zcatalog import main as zcat_main
    coadd, output = make_pair(str(tmp_path), name='3-1000-thru20210101', nspec=6)
    with fits.open(coadd, mode='update') as hdul:
        for key in ('SURVEY', 'PROGRAM'):
            hdul[0].header.remove(key, ignore_missing=True)
        hdul['FIBERMAP'].header.update(SURVEY='main', FAPRGRM='dark', TILEID=1000)
    rc, _ = run(caplog, '--coadd', coadd, '--model', model_path, '--no-refine')
    assert rc == 0
    _, hdr = read_catalog(output)
    assert (hdr['SURVEY'], hdr['FAPRGRM'], hdr['TILEID'], hdr['PETAL']) == ('main', 'dark', 1000, 3)
    assert 'PROGRAM' not in hdr
    zcat_path = str(tmp_path / 'zcat.fits')
    assert zcat_main(['--catalogs', output, '--output', zcat_path]) == 0
    zcat, _ = read_catalog(zcat_path, extname='LBG_ZCAT')
    assert set(zcat['PROGRAM']) == {'dark'} and set(zcat['SURVEY']) == {'main'}


def test_no_refine(tmp_path, model_path, caplog):
    coadd, output = make_pair(str(tmp_path), nspec=6)
    assert run(caplog, '--coadd', coadd, '--model', model_path, '--no-refine',
               '--c-thresh', '0.0')[0] == 0
    cat, hdr = read_catalog(output)
    assert not hdr['REFINE'] and 'REFTEMPL' not in hdr and cat['IS_LBG'].all()
    assert 'MINDCHI2' not in hdr and not np.any(cat['LBG_FLAG'] & MASK.SMALL_DELTA_CHI2)
    for col in ('Z_TPL', 'ZERR_TPL', 'DELTACHI2_TPL'):
        assert np.isnan(cat[col]).all()


def test_bad_refine_template_fails_before_any_work(tmp_path, model_path, caplog):
    coadd, output = make_pair(str(tmp_path), nspec=4)
    bad = tmp_path / 'rrtemplate-bad.fits'
    bad.write_text('not a FITS file')
    rc, text = run(caplog, '--coadd', coadd, '--model', model_path, '--refine-template', str(bad))
    assert rc == 1 and str(bad) in text and not os.path.exists(output)


def test_thresholds_and_outdir(tmp_path, model_path, caplog):
    coadd, _ = make_pair(str(tmp_path / 'in'), nspec=8)
    out = str(tmp_path / 'out' / 'cat.fits')
    assert run(caplog, '--coadd', coadd, '--model', model_path, '--output', out,
               '--c-thresh', '0.0', '--n-thresh', '2')[0] == 0
    cat, hdr = read_catalog(out)
    assert hdr['CTHRESH'] == 0.0 and hdr['NTHRESH'] == 2 and np.all(cat['IS_LBG'])
    assert os.path.exists(str(tmp_path / 'out' / 'priors_lbg-main-dark-100.fits'))


def test_skip_existing_unless_overwrite(tmp_path, model_path, caplog):
    coadd, output = make_pair(str(tmp_path))
    rc, text = run(caplog, '--coadd', coadd, '--model', model_path)
    assert rc == 0 and '1 file done' in text
    mtime = os.stat(output).st_mtime_ns
    rc, text = run(caplog, '--coadd', coadd, '--model', model_path)
    assert rc == 0 and '0 files done' in text and '1 skipped' in text and os.stat(output).st_mtime_ns == mtime
    assert run(caplog, '--coadd', coadd, '--model', model_path, '--overwrite')[0] == 0
    assert os.stat(output).st_mtime_ns != mtime
    # outputs of another network, or of other settings, are not this run's: the file
    # fails (a new model over an old tree, or a rerun adding options, changed nothing and
    # reported success), and --overwrite redoes it
    mtime = os.stat(output).st_mtime_ns
    other = save_tiny_model(str(tmp_path / 'other' / 'tiny.weights.h5'), seed=5)
    rc, text = run(caplog, '--coadd', coadd, '--model', other)
    assert rc == 1 and '0 skipped, 1 failed' in text and os.stat(output).st_mtime_ns == mtime
    assert f'{output}: exists, made with other settings (LBGMSHA = ' in text
    assert 'remove it and its priors file to redo this file (--overwrite redoes every file' in text \
        and 'older lbgnet' not in text
    rc, text = run(caplog, '--coadd', coadd, '--model', model_path, '--c-thresh', '0.25')
    assert rc == 1 and 'CTHRESH = ' in text and '0.25 in this run' in text
    # the same weights with another description (line agreement, redshift range): other
    # Z_LBG and LBG_FLAG, so other settings too (only the weights were fingerprinted)
    import json
    import shutil
    from lbgnet.io.modelfile import model_paths
    for key, edit in (('LBGCSHA', lambda d: d['config'].setdefault('postprocess', {}).update(
            agree_tol=0.05)), ('LBGZMIN', lambda d: d['metadata'].update(z_range=[2.0, 4.0]))):
        weights, card = model_paths(model_path)
        edited = tmp_path / key
        edited.mkdir()
        shutil.copy(weights, edited / os.path.basename(weights))
        description = json.loads(open(card).read())
        edit(description)
        (edited / os.path.basename(card)).write_text(json.dumps(description))
        rc, text = run(caplog, '--coadd', coadd, '--model',
                       str(edited / os.path.basename(weights)))
        assert rc == 1 and f'{key} = ' in text and os.stat(output).st_mtime_ns == mtime, text
    rc, text = run(caplog, '--coadd', coadd, '--model', model_path, '--no-refine')
    assert rc == 1 and 'REFINE = True here, False in this run' in text and 'REFTSHA' not in text
    rc, text = run(caplog, '--coadd', coadd, '--model', model_path)
    assert rc == 0 and '1 skipped' in text and os.stat(output).st_mtime_ns == mtime
    # with nothing left to do a bad --model is still one error (status 1), not a success
    rc, text = run(caplog, '--coadd', coadd, '--model', str(tmp_path / 'nothere.weights.h5'))
    assert rc == 1 and 'nothere' in text and 'skipped' not in text
    # ... and so are the other options (a resubmitted job with a typo reported success)
    rc, text = run(caplog, '--coadd', coadd, '--model', model_path, '--n-thresh', '99')
    assert rc == 1 and '--n-thresh 99 exceeds the' in text
    rc, text = run(caplog, '--coadd', coadd, '--model', model_path, '--refine-template',
                   str(tmp_path / 'nothere-template.fits'))
    assert rc == 1 and 'nothere-template.fits' in text
    # a resumed run with every output there loads neither TensorFlow nor the model (it took
    # 8 s and 1 GB per rank to report the skips)
    import subprocess
    import sys
    code = ('import sys\nfrom lbgnet.scripts.lbg_afterburner import main\n'
            f'assert main({["--coadd", coadd, "--model", model_path]!r}) == 0\n'
            'print(sorted(m for m in sys.modules if m.split(".")[0] in ("keras", "tensorflow")))')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == '[]'


def test_resumed_run_splits_only_the_files_left(tmp_path, model_path, caplog):
    """Files already done are left out before the split, so every rank gets work."""
    from lbgnet.parallel import split_work
    from lbgnet.scripts.lbg_afterburner import setup
    pairs = [make_pair(str(tmp_path), name=f'main-dark-{k}', nspec=4) for k in range(4)]
    outs = [out for _, out in pairs]
    # a file is done when both outputs exist
    assert run(caplog, '--coadd', pairs[1][0], pairs[3][0], '--model', model_path)[0] == 0
    mtimes = [os.stat(outs[k]).st_mtime_ns for k in (1, 3)]
    state = setup(parse(['--coadd', str(tmp_path / 'coadd-*.fits'), '--model', model_path]))
    assert [j.output for j in state['jobs']] == [outs[0], outs[2]]
    assert len(state['skipped']) == 2
    assert all(len(split_work(state['jobs'], 2, r, [j.size for j in state['jobs']])) == 1
               for r in range(2))
    rc, text = run(caplog, '--coadd', str(tmp_path / 'coadd-*.fits'), '--model', model_path)
    assert rc == 0 and '2 files done' in text and '2 skipped' in text
    assert [os.stat(outs[k]).st_mtime_ns for k in (1, 3)] == mtimes
    # an existing pair whose catalogue is not one (damaged since) is not counted as done
    open(outs[1], 'w').write('damaged')
    rc, text = run(caplog, '--coadd', str(tmp_path / 'coadd-*.fits'), '--model', model_path)
    assert rc == 1 and '3 skipped, 1 failed' in text
    assert 'the existing output is not a readable catalogue; remove it and its priors' in text


def test_existing_outputs_of_another_coadd_are_not_kept(tmp_path, model_path, caplog):
    """A pair of explicit --output/--priors names made from another coadd fails (a wrapper
    reusing fixed names got the first coadd's catalogue for every file); a tree read at
    another path (another mount, a moved tree: same coadd names) is kept, with a warning."""
    import shutil
    coadd0, _ = make_pair(str(tmp_path / 'a'), name='main-dark-0', nspec=4)
    coadd1, _ = make_pair(str(tmp_path / 'a'), name='main-dark-1', nspec=4)
    out, priors = str(tmp_path / 'lbg.fits'), str(tmp_path / 'priors.fits')
    fixed = ['--model', model_path, '--output', out, '--priors', priors]
    assert run(caplog, '--coadd', coadd0, *fixed)[0] == 0
    rc, text = run(caplog, '--coadd', coadd1, *fixed)
    assert rc == 1 and f'{out}: exists, made from {coadd0}, not from {coadd1}' in text
    assert run(caplog, '--coadd', coadd1, *fixed, '--overwrite')[0] == 0
    assert read_catalog(out)[1]['INCOADD'] == os.path.abspath(coadd1)
    # a catalogue whose --priors name was reused for another coadd since: the pair is not
    # complete (the other coadd's priors were kept as this coadd's)
    out0, priors0 = str(tmp_path / 'lbg0.fits'), str(tmp_path / 'priors0.fits')
    assert run(caplog, '--coadd', coadd0, '--model', model_path, '--output', out0,
               '--priors', priors0)[0] == 0
    rc, text = run(caplog, '--coadd', coadd0, '--model', model_path, '--output', out0,
                   '--priors', priors)
    assert rc == 1 and (f'{priors}: exists, made from {os.path.abspath(coadd1)}, not with the '
                        f'catalogue {out0} (INCOADD, INREDROC') in text
    assert 'differ); remove both to redo this file' in text
    assert run(caplog, '--coadd', coadd0, '--model', model_path, '--output', out0,
               '--priors', priors0)[0] == 0                    # its own pair is kept
    # the same tree at another path, outputs in one --outdir
    outdir = str(tmp_path / 'out')
    assert run(caplog, '--input-dir', str(tmp_path / 'a'), '--model', model_path,
               '--outdir', outdir)[0] == 0
    rc, text = run(caplog, '--input-dir', str(tmp_path / 'a'), '--model', model_path,
                   '--outdir', outdir)             # the same tree again: kept, no warning
    assert rc == 0 and '2 skipped' in text and 'another path' not in text
    shutil.copytree(str(tmp_path / 'a'), str(tmp_path / 'b'))
    rc, text = run(caplog, '--input-dir', str(tmp_path / 'b'), '--model', model_path,
                   '--outdir', outdir)
    assert rc == 0 and '2 skipped' in text
    assert ('2 of the 2 existing catalogues kept were made from a coadd of the same name at '
            'another path') in text


def test_existing_outputs_of_an_earlier_version_of_the_inputs_are_not_kept(tmp_path, model_path,
                                                                           caplog):
    """A coadd rewritten in place (re-reduced, or a cumulative tile coadd with new
    exposures) or a new Redrock file: the outputs made from the earlier version fail
    naming it (they were kept, with the old rows, as done); the same files again are kept."""
    coadd, output = make_pair(str(tmp_path), nspec=6, seed=1)
    common = ['--coadd', coadd, '--model', model_path, '--no-refine']
    assert run(caplog, *common)[0] == 0
    header = read_catalog(output)[0].meta
    assert len(header['INCOSUM']) == len(header['INRRSUM']) == 16
    rc, text = run(caplog, *common)
    assert rc == 0 and '1 skipped' in text
    make_pair(str(tmp_path), nspec=6, seed=2)     # remade, same shapes (only DATASUMs differ)
    rc, text = run(caplog, *common)
    assert rc == 1 and f'{output}: exists, made from another version of the coadd {coadd}' in text
    make_pair(str(tmp_path), nspec=8, seed=2)                # both files remade, 8 spectra
    rc, text = run(caplog, *common)
    assert rc == 1 and f'{output}: exists, made from another version of the coadd {coadd}' in text
    assert 'to redo this file (--overwrite redoes every' in text and len(read_catalog(output)[0]) == 6
    assert run(caplog, *common, '--overwrite')[0] == 0 and len(read_catalog(output)[0]) == 8
    write_test_redrock(coadd.replace('coadd-', 'redrock-'), read_catalog(output)[0]['TARGETID'],
                       z=np.full(8, 1.5))                 # a new Redrock run only
    rc, text = run(caplog, *common)
    assert rc == 1 and 'made from another version of the Redrock file' in text


def test_unwritable_outdir_fails_once_before_the_model(tmp_path, model_path, caplog,
                                                       monkeypatch):
    """An --outdir that cannot be written is one error for the run, found before TensorFlow
    and the model are loaded (it was one error per file, after every rank had loaded them),
    and nothing is created."""
    make_pair(str(tmp_path / 'in' / 'a'))
    make_pair(str(tmp_path / 'in' / 'b'))
    real = os.access
    monkeypatch.setattr(os, 'access', lambda path, mode: (
        False if os.path.abspath(path) == str(tmp_path) else real(path, mode)))
    rc, text = run(caplog, '--input-dir', str(tmp_path / 'in'), '--outdir',
                   str(tmp_path / 'out' / 'deep'), '--model', model_path)
    assert rc == 1 and f'--outdir {tmp_path / "out" / "deep"}: output directory {tmp_path} is not writable' in text
    assert text.count('not writable') == 1 and 'model loaded' not in text
    assert not (tmp_path / 'out').exists()
    # a finished run's read-only tree: nothing to write, so nothing to refuse
    monkeypatch.undo()
    common = ['--input-dir', str(tmp_path / 'in'), '--outdir', str(tmp_path / 'done'),
              '--model', model_path]
    assert run(caplog, *common)[0] == 0
    monkeypatch.setattr(os, 'access', lambda path, mode: (
        False if os.path.abspath(path) == str(tmp_path / 'done') else real(path, mode)))
    rc, text = run(caplog, *common)
    assert rc == 0 and '2 skipped' in text


def test_uncalibrated_errors_are_flagged_and_warned(tmp_path, caplog):
    """A model whose training could not calibrate ZERR_LBG (too few right redshifts on a
    small validation set): the run warns, the header says ZERRCAL = F (it looked calibrated,
    ZERRSCL 1.0), and desi_lbg_zcatalog warns too; a calibrated model writes ZERRCAL = T."""
    from lbgnet.scripts.lbg_zcatalog import main as zcatalog
    cal = {'ZERR_LBG': {'fit': None, 'reason': '1 right redshifts, need at least 40'},
           'ZERR_TPL': {'fit': {'scale': 1.5, 'floor': 2e-4}}}
    model = save_tiny_model(str(tmp_path / 'raw.weights.h5'), metadata={'error_calibration': cal})
    coadd, output = make_pair(str(tmp_path / 'in'), nspec=5)
    rc, text = run(caplog, '--coadd', coadd, '--model', model)
    assert rc == 0 and 'its training left ZERR_LBG uncalibrated (1 right redshifts' in text
    assert 'ZERR_TPL uncalibrated' not in text
    header = read_catalog(output)[0].meta
    assert header['ZERRCAL'] is False and header['ZTPLCAL'] is True
    caplog.clear()
    assert zcatalog(['--input-dir', str(tmp_path / 'in'), '--output',
                     str(tmp_path / 'zcat.fits')]) == 0
    assert 'ZERR_LBG of the stacked catalogues is uncalibrated (header ZERRCAL = F' in caplog.text
    zheader = read_catalog(str(tmp_path / 'zcat.fits'), extname='LBG_ZCAT')[0].meta
    assert zheader['ZERRCAL'] is False and zheader['ZTPLCAL'] is True
    cal['ZERR_LBG']['fit'] = {'scale': 4.0, 'floor': 0.0}
    model = save_tiny_model(str(tmp_path / 'cal.weights.h5'), metadata={'error_calibration': cal})
    rc, text = run(caplog, '--coadd', coadd, '--model', model, '--no-refine', '--overwrite')
    assert rc == 0 and 'training left' not in text
    header = read_catalog(output)[0].meta
    assert header['ZERRCAL'] is True and 'ZTPLCAL' not in header


def test_launcher_without_mpi_is_refused(tmp_path, model_path, caplog, monkeypatch):
    """Under mpiexec/srun without --mpi every process would run every file (twice the
    cost, two summaries, with --rerun-redrock N times rrdesi): refused on every process,
    as desi_lbg_mock does (it was a warning)."""
    from lbgnet.parallel import launcher_size
    assert launcher_size({}) == 1 and launcher_size({'PMI_SIZE': '4'}) == 4
    assert launcher_size({'OMPI_COMM_WORLD_SIZE': 'x', 'SLURM_STEP_NUM_TASKS': '3'}) == 3
    assert launcher_size({'SLURM_NTASKS': '64'}) == 1          # an allocation, not a launch
    coadd, output = make_pair(str(tmp_path), nspec=4)
    monkeypatch.setenv('PMI_SIZE', '2')
    rc, text = run(caplog, '--coadd', coadd, '--model', model_path)
    assert rc == 1 and 'one of 2 MPI processes but without --mpi' in text
    assert 'add --mpi' in text and not os.path.exists(output)
    monkeypatch.setenv('PMI_RANK', '1')             # the other processes stay quiet
    rc, text = run(caplog, '--coadd', coadd, '--model', model_path)
    assert rc == 1 and 'without --mpi' not in text and not os.path.exists(output)
    monkeypatch.delenv('PMI_RANK')
    monkeypatch.setenv('PMI_SIZE', '1')
    rc, text = run(caplog, '--coadd', coadd, '--model', model_path, '--overwrite')
    assert rc == 0 and 'without --mpi' not in text


def test_missing_coadd_of_any_name_is_reported_as_missing(tmp_path, model_path, caplog):
    rc, text = run(caplog, '--coadd', str(tmp_path / 'nothere.fits'), '--model', model_path)
    assert rc == 1 and 'nothere.fits: no such file' in text and 'Traceback' not in text


@pytest.mark.parametrize('missing', ['coadd', 'redrock'])
def test_missing_input(tmp_path, model_path, caplog, missing):
    coadd, output = make_pair(str(tmp_path))
    os.remove(coadd if missing == 'coadd' else coadd.replace('coadd-', 'redrock-'))
    rc, text = run(caplog, '--coadd', coadd, '--model', model_path)
    assert rc == 1 and not os.path.exists(output)
    assert f'{missing}-main-dark-100.fits: no such file' in text and 'Traceback' not in text


def test_outputs_never_overwrite_inputs(tmp_path, model_path, caplog):
    coadd, _ = make_pair(str(tmp_path), nspec=4)
    redrock = coadd.replace('coadd-', 'redrock-')
    before = open(coadd, 'rb').read()
    for opts in (['--output', coadd], ['--priors', redrock],
                 ['--output', str(tmp_path / 'x.fits'), '--priors', str(tmp_path / 'x.fits')]):
        rc, text = run(caplog, '--coadd', coadd, '--model', model_path, '--overwrite', *opts)
        assert rc == 1 and 'Traceback' not in text
        assert 'refusing to overwrite' in text or 'both the catalogue and the priors' in text
    assert open(coadd, 'rb').read() == before and not os.path.exists(tmp_path / 'x.fits')
    # the coadd given through a symbolic link is the same input
    os.makedirs(tmp_path / 'links')
    link = str(tmp_path / 'links' / 'coadd-main-dark-100.fits')
    os.symlink(coadd, link)
    os.symlink(redrock, link.replace('coadd-', 'redrock-'))
    rc, text = run(caplog, '--coadd', link, '--model', model_path, '--overwrite', '--output', coadd)
    assert rc == 1 and 'is an input file; refusing to overwrite it' in text
    assert open(coadd, 'rb').read() == before


def test_coadd_name_without_redrock_counterpart(tmp_path, model_path, caplog):
    coadd, _ = make_pair(str(tmp_path))
    odd = str(tmp_path / 'spectra-e.fits')
    os.rename(coadd, odd)
    rc, text = run(caplog, '--coadd', odd, '--model', model_path)
    assert rc == 1 and 'spectra-e.fits: file name does not start with "coadd"' in text
    assert 'Traceback' not in text
    assert f'FAILED {odd}: file name does not start' in text        # path named once


@pytest.mark.parametrize('damage', ['truncate', 'garbage'])
def test_corrupt_input(tmp_path, model_path, caplog, damage):
    coadd, output = make_pair(str(tmp_path))
    data = open(coadd, 'rb').read()
    with open(coadd, 'wb') as fx:
        fx.write(data[:len(data) // 2] if damage == 'truncate' else b'hello' * 1000)
    rc, text = run(caplog, '--coadd', coadd, '--model', model_path)
    assert rc == 1 and not os.path.exists(output) and 'Traceback' not in text
    assert ('truncated' if damage == 'truncate' else 'not a readable FITS') in text


def test_missing_camera_is_processed_and_flagged(tmp_path, model_path, caplog):
    """A coadd without a camera's HDUs (DESI writes all three, a dead camera with ivar 0:
    a copy cut short at an HDU boundary looks like this) is processed, flagged, and warned
    about once, naming the file and the camera."""
    coadd, output = make_pair(str(tmp_path), bands='br')
    rc, text = run(caplog, '--coadd', coadd, '--model', model_path)
    assert rc == 0
    assert text.count(f'{coadd}: no z camera in the file (b, r only): every spectrum is '
                      'flagged MISSING_CAMERA') == 1
    cat, _ = read_catalog(output)
    assert np.all(cat['LBG_FLAG'] & MASK.MISSING_CAMERA) and np.all(np.isfinite(cat['C_LBG']))


def edit_bad_pixels(flux, ivar):
    ivar['b'][0] = 0.0                         # spectrum 0: b arm fully masked
    for band in flux:                          # spectrum 1: everything masked
        ivar[band][1] = 0.0
    flux['r'][2, 100:120] = np.nan             # spectrum 2: NaN flux and inf ivar pixels
    ivar['z'][2, 50:60] = np.inf
    flux['b'][3, :] = np.inf                   # spectrum 3: non-finite b arm


def test_masked_and_nonfinite_pixels(tmp_path, model_path, caplog):
    coadd, output = make_pair(str(tmp_path), nspec=6, rr_order=np.arange(6), edit=edit_bad_pixels)
    rc, _ = run(caplog, '--coadd', coadd, '--model', model_path)
    assert rc == 0
    cat, _ = read_catalog(output)
    flag = cat['LBG_FLAG']
    assert flag[1] & MASK.NODATA and np.isnan(cat['C_LBG'][1]) and not cat['IS_LBG'][1]
    assert np.isnan(cat['Z_LYA'][1])
    assert flag[0] & MASK.MISSING_CAMERA and flag[3] & MASK.MISSING_CAMERA
    assert not flag[2] & (MASK.NODATA | MASK.MISSING_CAMERA)
    good = np.arange(6) != 1
    assert np.all(np.isfinite(cat['C_LBG'][good])) and np.all(np.isfinite(cat['Z_LBG'][good]))


def test_zero_spectra_gives_valid_empty_catalogue(tmp_path, model_path, caplog):
    coadd, output = make_pair(str(tmp_path), nspec=0, rr_order=np.arange(0))
    assert run(caplog, '--coadd', coadd, '--model', model_path)[0] == 0
    cat, _ = read_catalog(output)
    assert len(cat) == 0 and 'C_LYA' in cat.colnames and 'LBG_FLAG' in cat.colnames
    # same column format as a catalogue with rows (was 1 character wide)
    spectype = np.asarray(cat['SPECTYPE_RR']).dtype
    assert spectype.itemsize // (4 if spectype.kind == 'U' else 1) == 6
    assert len(read_priors(output.replace('lbg_cnn-', 'priors_lbg-'))) == 0


def test_targetid_mismatch_writes_nothing(tmp_path, model_path, caplog):
    coadd, output = make_pair(str(tmp_path))
    write_test_redrock(coadd.replace('coadd-', 'redrock-'), np.arange(12) + 5000)
    rc, text = run(caplog, '--coadd', coadd, '--model', model_path)
    assert rc == 1 and 'TARGETID mismatch' in text and 'Traceback' not in text
    assert sorted(os.listdir(tmp_path)) == ['coadd-main-dark-100.fits', 'redrock-main-dark-100.fits']


def test_redrock_rows_not_in_coadd_are_flagged(tmp_path, model_path, caplog):
    coadd, output = make_pair(str(tmp_path), nspec=5, rr_order=np.arange(5))
    write_test_redrock(coadd.replace('coadd-', 'redrock-'), [1004, 77, 1000, 1001, 1002, 1003])
    rc, text = run(caplog, '--coadd', coadd, '--model', model_path)
    assert rc == 0 and ': 5 spectra (6 catalogue rows), ' in text   # spectra, not Redrock rows
    cat, _ = read_catalog(output)
    assert cat['TARGETID'].tolist() == [1004, 77, 1000, 1001, 1002, 1003]
    assert cat['LBG_FLAG'][1] == MASK.NOT_IN_COADD and np.isnan(cat['Z_LBG'][1])


def test_not_science_fibres_flagged(tmp_path, model_path, caplog):
    from lbgnet.io import read_coadd, write_coadd
    coadd, output = make_pair(str(tmp_path), nspec=4, rr_order=np.arange(4))
    data = read_coadd(coadd)
    data.fibermap['OBJTYPE'][1] = 'SKY'
    data.fibermap['COADD_FIBERSTATUS'][2] = 2 ** 2              # BROKENFIBER
    write_coadd(coadd, data.wave, data.flux, data.ivar, data.fibermap, mask=data.mask)
    assert run(caplog, '--coadd', coadd, '--model', model_path)[0] == 0
    flags = read_catalog(output)[0]['LBG_FLAG']
    assert [bool(f & MASK.NOT_SCIENCE) for f in flags] == [False, True, True, False]


@pytest.mark.parametrize('damage', ['missing', 'json', 'weights', 'shape'])
def test_bad_model_fails_before_any_work(tmp_path, model_path, caplog, damage):
    import json
    import shutil
    coadd, output = make_pair(str(tmp_path / 'data'))
    bad = str(tmp_path / 'bad.weights.h5')
    shutil.copy(model_path, bad)
    shutil.copy(model_path.replace('.weights.h5', '.json'), bad.replace('.weights.h5', '.json'))
    if damage == 'missing':
        os.remove(bad)
    elif damage == 'json':
        open(bad.replace('.weights.h5', '.json'), 'w').write('{not json')
    elif damage == 'weights':
        open(bad, 'r+b').write(b'\0' * 64)
    else:
        desc = json.load(open(bad.replace('.weights.h5', '.json')))
        desc['config']['nboxes'] = 20
        json.dump(desc, open(bad.replace('.weights.h5', '.json'), 'w'))
    rc, text = run(caplog, '--coadd', coadd, '--model', bad)
    assert rc == 1 and 'bad.' in text and 'Traceback' not in text
    assert 'spectra' not in text, 'no file may be processed with a bad model'
    assert not os.path.exists(output)


def test_output_dir_not_writable(tmp_path, model_path, caplog):
    coadd, _ = make_pair(str(tmp_path))
    (tmp_path / 'afile').write_text('x')
    rc, text = run(caplog, '--coadd', coadd, '--model', model_path,
                   '--output', str(tmp_path / 'afile' / 'sub' / 'cat.fits'))
    assert rc == 1 and 'cannot create output directory' in text and 'Traceback' not in text
    if os.geteuid() != 0:                       # root ignores permissions
        ro = tmp_path / 'ro'
        ro.mkdir(mode=0o555)
        rc, text = run(caplog, '--coadd', coadd, '--model', model_path, '--output', str(ro / 'c.fits'))
        assert rc == 1 and 'not writable' in text


def test_crash_mid_write_leaves_no_partial_output(tmp_path, model_path, caplog, monkeypatch):
    coadd, output = make_pair(str(tmp_path))
    real = fitsio.FITS.write

    def crash(self, data, **kwargs):
        real(self, data, **kwargs)
        if kwargs.get('extname') == 'LBG_CNN':  # the catalogue table is half written
            raise OSError('simulated crash mid-write')

    priors = output.replace('lbg_cnn-', 'priors_lbg-')
    monkeypatch.setattr(fitsio.FITS, 'write', crash)
    rc, text = run(caplog, '--coadd', coadd, '--model', model_path)
    assert rc == 1 and 'simulated crash' in text and 'Traceback' not in text
    assert not os.path.exists(output) and not os.path.exists(priors)   # neither, not one
    assert not [f for f in os.listdir(tmp_path) if 'tmp' in f or f.startswith('.')]
    # a rerun with other thresholds that crashes leaves the earlier pair as it was
    monkeypatch.setattr(fitsio.FITS, 'write', real)
    assert run(caplog, '--coadd', coadd, '--model', model_path)[0] == 0
    before = [open(p, 'rb').read() for p in (output, priors)]
    monkeypatch.setattr(fitsio.FITS, 'write', crash)
    rc, _ = run(caplog, '--coadd', coadd, '--model', model_path, '--overwrite', '--c-thresh', '0.1')
    assert rc == 1 and [open(p, 'rb').read() for p in (output, priors)] == before


def test_unexpected_setup_error_is_reported_not_raised(tmp_path, model_path, caplog, monkeypatch):
    import lbgnet.scripts.lbg_afterburner as script

    def broken(path, *args):
        raise RuntimeError('simulated failure while loading')

    monkeypatch.setattr(script, 'load_network', broken)
    coadd, output = make_pair(str(tmp_path), nspec=4)
    rc, text = run(caplog, '--coadd', coadd, '--model', model_path)
    assert rc == 1 and 'setup failed: RuntimeError: simulated failure' in text
    assert not os.path.exists(output)
    weights = tmp_path / 'dir.weights.h5'                  # weights path is a directory
    weights.mkdir()
    (tmp_path / 'dir.json').write_text(open(model_path.replace('.weights.h5', '.json')).read())
    monkeypatch.undo()
    rc, text = run(caplog, '--coadd', coadd, '--model', str(weights))
    assert rc == 1 and 'dir.weights.h5: cannot read the weights' in text
    assert 'Traceback' not in text


def test_one_bad_file_among_many(tmp_path, model_path, caplog):
    root = tmp_path / 'redux'
    good = []
    for pix in (101, 102, 103):
        d = root / 'healpix' / 'main' / 'dark' / '1' / str(pix)
        d.mkdir(parents=True)
        good.append(make_pair(str(d), name=f'main-dark-{pix}', nspec=5)[1])
    bad = good.pop(1)
    os.remove(bad.replace('lbg_cnn-', 'redrock-'))
    rc, text = run(caplog, '--input-dir', str(root), '--outdir', str(tmp_path / 'out'),
                   '--model', model_path)
    assert rc == 1
    assert 'FAILED' in text and 'redrock-main-dark-102.fits: no such file' in text
    outs = sorted(str(p.relative_to(tmp_path / 'out')) for p in (tmp_path / 'out').rglob('lbg_cnn-*'))
    assert outs == ['healpix/main/dark/1/101/lbg_cnn-main-dark-101.fits',
                    'healpix/main/dark/1/103/lbg_cnn-main-dark-103.fits']
    # the failed file leaves no (empty) output directory behind
    assert not (tmp_path / 'out' / 'healpix' / 'main' / 'dark' / '1' / '102').exists()


@pytest.mark.parametrize('command', ['lbg_afterburner', 'lbg_evaluate'])
def test_no_refine_refuses_every_other_refinement_option(command, capsys):
    """--no-refine with a refinement option that would be ignored is an error naming it
    (--refine-window, --refine-prior-weight and --refine-step were accepted and ignored,
    while the other refinement options were refused)."""
    import importlib
    parse_command = importlib.import_module(f'lbgnet.scripts.{command}').parse
    base = (['--coadd', 'a.fits'] if command == 'lbg_afterburner'
            else ['--coadd', 'a.fits', '--truth', 't.fits', '--outdir', 'o'])
    for option, value in (('--refine-window', '0.05'), ('--refine-prior-weight', '1'),
                          ('--refine-step', '4e-4'), ('--refine-template', 't.fits'),
                          ('--refine-noise', 'pipeline'), ('--refine-archetypes', 'none')):
        with pytest.raises(SystemExit):
            parse_command(base + ['--no-refine', option, value])
        assert f'{option} and --no-refine exclude each other' in capsys.readouterr().err
    assert parse_command(base + ['--no-refine']).no_refine      # alone: accepted


def test_parse_rules():
    with pytest.raises(SystemExit):
        parse(['--coadd', 'a.fits', 'b.fits', '--output', 'x.fits'])
    with pytest.raises(SystemExit):
        parse(['--input-dir', 'd', '--redrock', 'r.fits'])
    with pytest.raises(SystemExit):
        parse(['--coadd', 'a.fits', '--templates', 't.fits'])
    for bad in (['--no-refine', '--refine-template', 't.fits'], ['--refine-window', '0'],
                ['--refine-window', '1.5'], ['--refine-prior-weight', 'inf'],
                ['--refine-prior-weight', 'nan'], ['--refine-window', 'nan'],
                ['--refine-step', 'nan'], ['--refine-arch-skip', 'inf']):
        with pytest.raises(SystemExit):
            parse(['--coadd', 'a.fits'] + bad)
    with pytest.raises(SystemExit):
        parse(['--coadd', 'a.fits', '--n-thresh', '0'])
    args = parse(['--coadd', 'a.fits', '--rerun-redrock', '--templates', 't.fits', '--mpi'])
    assert args.rerun_redrock and args.mpi and args.templates == ['t.fits']


def test_n_thresh_above_the_line_count_fails_before_any_work(tmp_path, model_path, caplog):
    coadd, output = make_pair(str(tmp_path), nspec=4)
    rc, text = run(caplog, '--coadd', coadd, '--model', model_path, '--n-thresh', '99')
    assert rc == 1 and '--n-thresh 99 exceeds the' in text and 'Traceback' not in text
    assert not os.path.exists(output)


def test_example_runs_end_to_end(tmp_path, model_path, caplog):
    import re
    rc, text = run(caplog, '--example', '--model', model_path)
    assert rc == 0 and '2 files done (400 spectra' in text
    assert 'example result, 400 spectra in 2 files' in text and '(removed;' in text
    counts = [int(n) for n in re.findall(r'(\d+) objects, ', text)]
    assert len(counts) >= 3 and sum(counts) == 400          # one summary over both files
    # --outdir keeps the mock inputs and the catalogues for inspection
    rc, text = run(caplog, '--example', '--model', model_path, '--outdir', str(tmp_path / 'ex'))
    assert rc == 0 and 'example files kept' in text
    assert len(list((tmp_path / 'ex' / 'out').glob('lbg_cnn-*.fits'))) == 2
    assert len(list((tmp_path / 'ex' / 'mock').glob('truth-*.fits'))) == 2
    # run again there with other settings: the summary is of this run, not the kept files
    caplog.clear()
    rc, text = run(caplog, '--example', '--model', model_path, '--outdir', str(tmp_path / 'ex'),
                   '--no-refine', '--c-thresh', '0.999')
    assert rc == 0 and '2 files done (400 spectra' in text and 'skipped' not in text.split(
        'files done')[1].split('\n')[0].replace('0 skipped', '')
    # other files there (a catalogue without a truth file, another coadd set) are neither
    # run nor summarised: they failed the example with a traceback, or were counted in it
    import shutil
    ex = tmp_path / 'ex'
    shutil.copy(next((ex / 'out').glob('lbg_cnn-*.fits')), ex / 'out' / 'lbg_cnn-real-data.fits')
    for kind in ('coadd', 'redrock', 'truth'):
        shutil.copy(next((ex / 'mock').glob(f'{kind}-*.fits')),
                    ex / 'mock' / f'{kind}-other-dark-7.fits')
    caplog.clear()
    rc, text = run(caplog, '--example', '--model', model_path, '--outdir', str(ex), '--no-refine')
    assert rc == 0 and 'Traceback' not in text, text
    assert '2 files done (400 spectra' in text and 'example result, 400 spectra in 2 files' in text
    assert not (ex / 'out' / 'lbg_cnn-other-dark-7.fits').exists()


def test_training_zrange():
    from lbgnet.network import training_zrange
    from lbgnet.config import config_from_dict
    from lbg_testdata import tiny_config
    cfg = tiny_config()
    assert training_zrange(cfg, {'z_range': [2.0, 4.0]}) == (2.0, 4.0)
    lo, hi = training_zrange(cfg, {})                  # no training section: Lya on the grid
    assert lo == pytest.approx(3600 / 1215.67 - 1) and hi == pytest.approx(10000 / 1215.67 - 1)
    data = cfg.to_dict()
    data['training'] = {'simulation': 'lbgnet-mock.yaml'}
    from lbgnet.sim.population import load_sim_config
    expected = tuple(load_sim_config('lbgnet-mock.yaml')['simulation']['lbg']['zrange'])
    assert training_zrange(config_from_dict(data), {}) == expected


def test_training_zrange_does_not_depend_on_the_working_directory(tmp_path, monkeypatch):
    """A card without z_range reads the named simulator from the package's etc/ only: a
    file of that name in the current directory must not change the range (and with it
    Z_OUT_OF_RANGE and GOOD_LBG); the shipped card records its range."""
    from lbgnet.config import config_from_dict
    from lbgnet.io.modelfile import read_model_description
    from lbgnet.network import default_model_path, training_zrange
    from lbg_testdata import tiny_config
    data = tiny_config().to_dict()
    data['training'] = {'simulation': 'lbgnet-mock.yaml'}
    (tmp_path / 'lbgnet-mock.yaml').write_text(
        'base: lbgnet-sim.yaml\nsimulation: {lbg: {zrange: [2.5, 3.0]}}\n')
    monkeypatch.chdir(tmp_path)
    assert training_zrange(config_from_dict(data), {}) == (1.8, 4.6)
    description, config = read_model_description(default_model_path())
    assert description['metadata']['z_range'] == [1.8, 4.6]
    assert training_zrange(config, description['metadata']) == (1.8, 4.6)


def test_shipped_model_is_the_default(tmp_path, caplog):
    from lbgnet.network import default_model_path
    shipped = default_model_path()
    assert shipped is not None, 'the shipped model (lbgnet/data) is missing'
    coadd, output = make_pair(str(tmp_path), nspec=4)
    assert run(caplog, '--coadd', coadd)[0] == 0
    _, hdr = read_catalog(output)
    assert hdr['LBGMODEL'] == os.path.abspath(shipped) and hdr['LBGMSHA'] == sha256sum(shipped)
    assert hdr['LBGTARG'] == 'LBG'


def test_no_model_at_all_is_a_clear_error(tmp_path, caplog, monkeypatch):
    import lbgnet.scripts.lbg_afterburner as script
    monkeypatch.setattr(script, 'default_model_path', lambda: None)
    coadd, output = make_pair(str(tmp_path), nspec=4)
    rc, text = run(caplog, '--coadd', coadd)
    assert rc == 1 and 'no model given and no pretrained model shipped' in text
    assert not os.path.exists(output)


def test_refinement_with_the_calibrated_noise_model(tmp_path, model_path, caplog):
    """The refinement weights χ² by the calibrated noise model by default (recorded in the
    header); ``--refine-noise pipeline`` uses the pipeline ivar, warned about (ZERR_TPL is
    calibrated under the noise model), with the same rows selected and refined; each
    catalogue equals the refiner run by hand on its grid ivar."""
    from lbgnet.io.coadd import read_coadd
    from lbgnet.noise import load_noise_model
    from lbgnet.preprocess import coadd_to_grid
    coadd, output = make_pair(str(tmp_path), nspec=16)
    assert run(caplog, '--coadd', coadd, '--model', model_path)[0] == 0
    cat, hdr = read_catalog(output)
    assert hdr['REFNOISE'] == 'calibrated'
    plainout = str(tmp_path / 'plain.fits')
    rc, text = run(caplog, '--coadd', coadd, '--model', model_path, '--output', plainout,
                   '--priors', str(tmp_path / 'plain-priors.fits'), '--refine-noise', 'pipeline')
    assert rc == 0 and 'only approximately so' in text and '--refine-noise' in text
    base, phdr = read_catalog(plainout)
    assert phdr['REFNOISE'] == 'pipeline'
    for col in ('IS_LBG', 'Z_LBG', 'C_LBG'):
        np.testing.assert_array_equal(cat[col], base[col])
    refined = np.isfinite(cat['Z_TPL'])
    assert refined.any() and np.array_equal(refined, np.isfinite(base['Z_TPL']))
    assert not np.allclose(cat['DELTACHI2_TPL'][refined], base['DELTACHI2_TPL'][refined])
    # by hand: the refiner run on each grid ivar gives each catalogue's values
    net = load_network(model_path, engine='keras')     # the Keras model, as reference
    refiner = load_refiner(hdr['REFTEMPL'], net.config, net.zrange, archetypes=hdr['REFARCH'])
    X, info = coadd_to_grid(read_coadd(coadd), net.config.grid, load_noise_model())
    pos = np.searchsorted(info.targetid, cat['TARGETID'])     # catalogue rows: Redrock order
    res = postprocess(*predict_boxes(net.model, X), net.config)
    z0 = np.where(res['IS_LBG'], res['Z_LBG'], np.nan)
    conf = predict_boxes(net.model, X)[0]
    for table, ivar in ((cat, info.noise_ivar), (base, info.ivar)):
        by_hand = refiner.run(info.flux, ivar, z0, conf)
        for col in ('Z_TPL', 'DELTACHI2_TPL'):
            np.testing.assert_allclose(table[col], by_hand[col][pos], rtol=1e-6, equal_nan=True)
    # --refine-archetypes none: the template fit alone, recorded as such
    alone = str(tmp_path / 'alone.fits')
    rc, text = run(caplog, '--coadd', coadd, '--model', model_path, '--output', alone,
                   '--priors', str(tmp_path / 'alone-priors.fits'), '--refine-archetypes', 'none')
    assert rc == 0 and 'no archetypes (ZERR_TPL calibrated with other ones)' in text
    acat, ahdr = read_catalog(alone)
    assert (ahdr['REFARCH'], ahdr['REFASHA'], ahdr['REFABAS'], ahdr['REFASKP']) == ('none', '', 0.0, 0.0)
    plain_refiner = load_refiner(hdr['REFTEMPL'], net.config, net.zrange)
    by_hand = plain_refiner.run(info.flux, info.noise_ivar, z0, conf)
    np.testing.assert_allclose(acat['Z_TPL'], by_hand['Z_TPL'][pos], rtol=1e-6, equal_nan=True)
    for bad in (['--refine-noise', 'exact'], ['--refine-noise', 'calibrated', '--no-refine'],
                ['--refine-noise', 'pipeline', '--no-refine'], ['--refine-archetypes', 'none',
                                                                '--no-refine'],
                ['--refine-arch-skip', '9', '--no-refine'], ['--refine-arch-skip', '-1'],
                ['--refine-arch-skip', '9', '--refine-archetypes', 'none']):
        with pytest.raises(SystemExit):
            parse(['--coadd', coadd] + bad)
    assert parse(['--coadd', coadd]).refine_noise is None      # the default: calibrated
    assert parse(['--coadd', coadd, '--refine-arch-skip', '0']).refine_arch_skip == 0.0
    # a model whose ZERR_TPL was calibrated with the pipeline ivar (before the noise was
    # recorded): the default refinement warns, --refine-noise pipeline does not
    older = save_tiny_model(str(tmp_path / 'older.weights.h5'),
                            postprocess={'zerr_tpl_scale': 1.7, 'zerr_tpl_floor': 1e-4})
    rc, text = run(caplog, '--coadd', coadd, '--model', older, '--output', str(tmp_path / 'o1.fits'),
                   '--priors', str(tmp_path / 'p1.fits'), '--refine-arch-skip', '9')
    assert rc == 0 and '--refine-noise calibrated (calibrated with pipeline)' in text
    assert '--refine-arch-skip 9' in text                     # another threshold: noted too
    assert read_catalog(str(tmp_path / 'o1.fits'))[1]['REFASKP'] == 9.0
    assert 'these archetypes (ZERR_TPL calibrated without archetypes)' in text
    rc, text = run(caplog, '--coadd', coadd, '--model', older, '--output', str(tmp_path / 'o2.fits'),
                   '--priors', str(tmp_path / 'p2.fits'), '--refine-noise', 'pipeline',
                   '--refine-archetypes', 'none')
    assert rc == 0 and 'only approximately so' not in text
    # an archetype file is no PCA template, and a PCA template no archetypes: one line each
    from lbgnet.afterburner import default_archetype_path
    for opt, path, what in (('--refine-template', default_archetype_path(), 'not a PCA template'),
                            ('--refine-archetypes', hdr['REFTEMPL'], 'not an archetype file')):
        rc, text = run(caplog, '--coadd', coadd, '--model', model_path, '--output',
                       str(tmp_path / 'x.fits'), '--priors', str(tmp_path / 'px.fits'), opt, path)
        assert rc == 1 and what in text and 'Traceback' not in text
        assert not os.path.exists(str(tmp_path / 'x.fits'))
    # a refiner with a noise model never silently falls back to the pipeline ivar
    import dataclasses
    from lbgnet.afterburner import refine_selected
    X0, plain = coadd_to_grid(read_coadd(coadd), net.config.grid)
    with pytest.raises(ValueError, match='noise model'):
        refine_selected(dataclasses.replace(refiner, noise=load_noise_model()), plain, res)
    with pytest.raises(ValueError, match='noise model'):
        refine_selected(refiner, info, res)


def test_gzipped_inputs_give_gzipped_outputs(tmp_path, model_path, caplog):
    """--input-dir finds coadd-*.fits.gz (with redrock-*.fits.gz beside it); its outputs are
    gzip-compressed .fits.gz files holding the catalogue of the uncompressed inputs."""
    import gzip
    import shutil
    plain, gz = tmp_path / 'plain', tmp_path / 'gz'
    plain.mkdir()
    gz.mkdir()
    coadd, output = make_pair(str(plain), nspec=6)
    for name in ('coadd-main-dark-100.fits', 'redrock-main-dark-100.fits'):
        with open(plain / name, 'rb') as fin, gzip.open(gz / (name + '.gz'), 'wb') as fout:
            shutil.copyfileobj(fin, fout)
    assert run(caplog, '--coadd', coadd, '--model', model_path, '--no-refine')[0] == 0
    assert run(caplog, '--input-dir', str(gz), '--model', model_path, '--no-refine')[0] == 0
    outs = sorted(p for p in os.listdir(gz) if not p.startswith(('coadd', 'redrock')))
    assert outs == ['lbg_cnn-main-dark-100.fits.gz', 'priors_lbg-main-dark-100.fits.gz']
    for name in outs:
        assert open(gz / name, 'rb').read(2) == b'\x1f\x8b'     # really compressed
    a, _ = read_catalog(output)
    b, _ = read_catalog(str(gz / outs[0]))
    for col in ('TARGETID', 'C_LBG', 'Z_LBG', 'IS_LBG', 'LBG_FLAG'):
        np.testing.assert_array_equal(a[col], b[col])
    # no time stamp or temporary name in the gzip header: a rerun gives the same bytes,
    # and the checksums hold in the compressed file
    first = {name: (gz / name).read_bytes() for name in outs}
    assert run(caplog, '--input-dir', str(gz), '--model', model_path, '--no-refine',
               '--overwrite')[0] == 0
    assert {name: (gz / name).read_bytes() for name in outs} == first
    for data in first.values():          # gzip header: no file name (FNAME), MTIME 0
        assert data[3] & 0x08 == 0 and data[4:8] == b'\0\0\0\0'
    from astropy.io import fits
    for name in outs:
        with fits.open(gz / name, checksum=True) as hdul:
            assert all(h.verify_checksum() == 1 for h in hdul)
    assert sorted(os.listdir(gz)) == sorted(outs + ['coadd-main-dark-100.fits.gz',
                                                     'redrock-main-dark-100.fits.gz'])


def test_gzipping_processed_inputs_does_not_write_a_second_catalogue(tmp_path, model_path,
                                                                    caplog):
    """A tree processed, then its coadd and Redrock file gzipped: the rerun wrote
    lbg_cnn-X.fits.gz beside lbg_cnn-X.fits with status 0, and desi_lbg_zcatalog then
    refused the pair.  The file now fails with one line naming the other catalogue."""
    import gzip
    import shutil
    coadd, output = make_pair(str(tmp_path), nspec=6)
    assert run(caplog, '--input-dir', str(tmp_path), '--model', model_path, '--no-refine')[0] == 0
    for name in ('coadd-main-dark-100.fits', 'redrock-main-dark-100.fits'):
        with open(tmp_path / name, 'rb') as fin, gzip.open(tmp_path / (name + '.gz'), 'wb') as fout:
            shutil.copyfileobj(fin, fout)
        os.remove(tmp_path / name)
    status, text = run(caplog, '--input-dir', str(tmp_path), '--model', model_path, '--no-refine')
    assert status == 1
    assert ('lbg_cnn-main-dark-100.fits exists beside it, the catalogue of this coadd '
            'uncompressed') in text, text
    assert not os.path.exists(output + '.gz') and os.path.exists(output)


def test_priors_named_as_the_catalogue_under_the_other_compression(tmp_path, model_path,
                                                                      caplog):
    """--output X.fits.gz --priors X.fits: the run wrote both, and every later run (even with
    --overwrite) took the priors file for a second catalogue.  Both names equal is refused
    as before."""
    coadd, _ = make_pair(str(tmp_path), nspec=4)
    for output, priors in (('out.fits.gz', 'out.fits'), ('out.fits', 'out.fits.gz')):
        status, text = run(caplog, '--coadd', coadd, '--model', model_path, '--no-refine',
                           '--output', str(tmp_path / output), '--priors',
                           str(tmp_path / priors))
        assert status == 1 and 'differs from the catalogue' in text and 'only by its ' \
            'compression' in text, text
        assert not os.path.exists(tmp_path / output) and not os.path.exists(tmp_path / priors)
    status, text = run(caplog, '--coadd', coadd, '--model', model_path, '--no-refine',
                       '--output', str(tmp_path / 'same.fits'), '--priors',
                       str(tmp_path / 'same.fits'))
    assert status == 1 and 'given as both the catalogue and the priors output' in text


def test_recorded_input_paths_with_non_ascii_characters_match(tmp_path):
    """INCOADD holds the path with non-ASCII characters escaped (FITS headers are ASCII):
    an unchanged rerun must still recognise it."""
    from lbgnet.io.catalog import printable_ascii
    from lbgnet.resume import _same_path
    path = str(tmp_path / 'données' / 'coadd-main-dark-1.fits')
    assert _same_path(printable_ascii(os.path.abspath(path)), path)
    assert not _same_path(printable_ascii(os.path.abspath(path + '.gz')), path)


def test_recorded_path_through_a_link_names_the_same_file(tmp_path):
    """A catalogue made from a coadd given as a symlink (INCOADD the link's path) names the
    file the link resolves to, whatever either name: a rerun given the real file keeps it;
    a recorded link now pointing elsewhere does not."""
    from lbgnet.resume import _same_path
    real = tmp_path / 'store' / 'coadd-main-dark-5.fits'
    real.parent.mkdir()
    real.write_bytes(b'x')
    link = tmp_path / 'alias-5.fits'
    link.symlink_to(real)
    assert _same_path(str(link), str(real)) and _same_path(str(real), str(link))
    other = tmp_path / 'store' / 'coadd-main-dark-6.fits'
    other.write_bytes(b'y')
    assert not _same_path(str(link), str(other))


def test_rerun_failed_marks_only_candidates_not_rerun():
    """RERUN_FAILED goes to IS_LBG rows with a redshift that got no rerun result, never to
    non-candidates nor to candidates without Z_LBG (the end-to-end test selects every row,
    so it could not tell)."""
    from astropy.table import Table
    from lbgnet.afterburner import rerun_into
    cat = Table(dict(TARGETID=np.array([1, 2, 3]), IS_LBG=np.array([True, False, True]),
                     Z_LBG=np.array([3.0, 3.0, np.nan]), LBG_FLAG=np.zeros(3, np.int32)))
    rerun_into(cat, 'coadd-x.fits', (np.array([], dtype=np.int64), np.array([]), np.array([])),
               ['t.fits'])
    assert cat['LBG_FLAG'].tolist() == [MASK.RERUN_FAILED, 0, 0]
    assert np.all(np.isnan(cat['Z_NEW']))


@pytest.mark.parametrize('engine', ENGINES)
def test_forward_pass_is_the_same_in_any_batching(model_path, engine):
    """Network.predict in batches (the last one a single spectrum) equals one batch, with
    either engine: a skipped or misplaced batch would leave uninitialised rows in the
    catalogue."""
    net = load_network(model_path, engine, threads=2)
    assert net.engine == engine
    X = np.random.default_rng(3).normal(size=(5, net.config.grid.nbins, 2)).astype(np.float32)
    whole = net.predict(X, batch_size=5)
    for size in (1, 2, 4):
        parts = net.predict(X, batch_size=size)
        for a, b in zip(parts, whole):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_engines_and_threads(tmp_path, model_path, caplog):
    """The numpy engine (the default) writes the same catalogue with 1 or 2 threads, bit for
    bit; the keras engine the same numbers to float32 rounding; the header says which."""
    coadd, output = make_pair(str(tmp_path), nspec=40)
    cats = {}
    for engine, threads in (('numpy', 1), ('numpy', 2), ('keras', 2)):
        options = ['--threads', str(threads)] + ([] if engine == 'numpy' else ['--engine', engine])
        rc, _ = run(caplog, '--coadd', coadd, '--model', model_path, '--overwrite', '--no-refine',
                    *options)
        assert rc == 0
        cat, hdr = read_catalog(output)
        assert hdr['LBGENGIN'] == engine
        cats[engine, threads] = cat
    numeric = [c for c in cats['numpy', 1].colnames if cats['numpy', 1][c].dtype.kind == 'f']
    assert 'C_LBG' in numeric and 'Z_LBG' in numeric
    for col in cats['numpy', 1].colnames:
        assert np.array_equal(cats['numpy', 1][col], cats['numpy', 2][col], equal_nan=col in numeric)
    for col in ('C_LBG', 'Z_LBG', 'C_LYA'):
        np.testing.assert_allclose(cats['keras', 2][col], cats['numpy', 1][col], atol=1e-5)
