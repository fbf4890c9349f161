"""End-to-end variants (direct regression, hybrid): build, loss, train steps, save/load,
catalogue quantities and desi_lbg_evaluate on them."""
import dataclasses

import numpy as np
import pytest

from lbgnet.config import ConfigError, load_config
from lbgnet.io.modelfile import load_model, save_model
from lbgnet.model import build_model
from lbgnet.predict import catalog_from_raw, choose_catalog_thresholds, predict_catalog
from lbgnet.targets import make_training_targets
from lbgnet.train import compile_model, set_seeds
from lbgnet.variants import DirectOutput, architecture, direct_loss

SMALL = dict(channels=['flux', 'snr'], conv_layers=2, filters=[8, 8], kernel_size=5, strides=4,
             padding='same', dropout=0.0, dense_units=16, offset_margin=0.1, snr_softening=5.0,
             direct={'units': 8, 'z_range': [1.5, 5.0]})


def variant_config(config, arch, **loss):
    extra = dict(config.extra, name=f'small-{arch}', model=dict(SMALL, architecture=arch),
                 loss={'gamma': 1.0, 'pos_weight': 'balanced', 'direct': dict(loss)},
                 training={'epochs': 2, 'batch_size': 32, 'learning_rate': 3e-3})
    return dataclasses.replace(config, extra=extra, source=f'{arch}-test-config')


def fake_truth(n, rng):
    classes = np.where(np.arange(n) % 2 == 0, 'LBG', 'STAR')
    z = np.where(classes == 'LBG', rng.uniform(2.0, 4.0, n), 0.0)
    return {'CLASS': classes, 'Z_TRUE': z, 'RMAG': rng.uniform(22, 25, n)}


def test_direct_loss_hand_computed():
    """Two spectra: an LBG with a known redshift error and a non-LBG (only the BCE counts)."""
    y_true = np.array([[1.0, 3.0, 0.0], [0.0, 0.0, 0.0]], np.float32)
    y_pred = np.array([[0.8, 3.04, 0.02], [0.3, 2.5, 0.5]], np.float32)
    got = np.asarray(direct_loss(y_true, y_pred, gamma=2.0, dz_scale=0.02))
    x = 0.04 / 4.0                                   # dz/(1+z) = 0.01, u = 0.5 -> quadratic
    lbg = -np.log(0.8) + 2.0 * 0.5 * (x / 0.02) ** 2 + 0.5 * (x / 0.02) ** 2 + np.log(0.02 / 0.02)
    np.testing.assert_allclose(got, [lbg, -np.log(0.7)], rtol=1e-5)
    # beyond dz_scale the Huber term is linear: u - 1/2
    far = np.asarray(direct_loss(y_true[:1], np.array([[0.8, 3.4, 0.02]], np.float32), 1.0, 0.02))
    u = 0.4 / 4.0 / 0.02
    np.testing.assert_allclose(far, -np.log(0.8) + (u - 0.5) + 0.5 * u ** 2, rtol=1e-5)


def test_direct_output_layer_and_config_round_trip():
    layer = DirectOutput(1.5, 5.0)
    clone = DirectOutput.from_config(layer.get_config())
    raw = np.array([[-50.0, -50.0, -50.0], [50.0, 50.0, 3.0]], np.float32)
    out = np.asarray(clone(raw))
    np.testing.assert_allclose(out[:, 0], [0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(out[:, 1], [1.5, 5.0], atol=1e-5)
    assert np.all(out[:, 2] > 0)


@pytest.mark.parametrize('arch', ['direct', 'hybrid'])
def test_variant_trains_saves_and_predicts(tmp_path, config, arch):
    cfg = variant_config(config, arch)
    set_seeds(3)
    rng = np.random.default_rng(0)
    X = rng.normal(0, 1, (64, cfg.grid.nbins, 2)).astype(np.float32)
    truth = fake_truth(64, rng)
    y = make_training_targets(truth, cfg)
    model = compile_model(build_model(cfg), cfg)
    names = {layer.name for layer in model.layers}
    assert {'conv_1', 'conv_2', 'fc_common', 'fc_direct', 'direct'} <= names
    assert ('fc_box_LYA' in names) == (arch == 'hybrid')
    before = float(np.sum(model.evaluate(X, y, verbose=0)))
    model.fit(X, y, epochs=4, batch_size=32, verbose=0)
    after = float(np.sum(model.evaluate(X, y, verbose=0)))
    assert after < before                                  # a few steps reduce the loss
    res, raw = predict_catalog(model, X, cfg)
    for key in ('C_LBG', 'IS_LBG', 'Z_LBG', 'ZERR_LBG', 'Z_BESTLINE', 'P_DIRECT'):
        assert res[key].shape == (64,), key
    assert np.all((res['Z_DIRECT'] >= 1.5) & (res['Z_DIRECT'] <= 5.0))
    assert np.all(res['ZERR_LBG'] > 0)
    np.testing.assert_array_equal(res['IS_LBG'], res['C_LBG'] > cfg.selection.c_thresh)
    if arch == 'direct':
        assert raw.keys() == {'direct'} and np.all(np.isnan(res['C_LINES']))
        np.testing.assert_allclose(res['C_LBG'], raw['direct'][:, 0])
    else:
        assert res['C_LINES'].shape == (64, len(cfg.lines))
        lf = catalog_from_raw(raw, dataclasses.replace(
            cfg, extra=dict(cfg.extra, postprocess={'hybrid_score': 'linefinder'})))
        np.testing.assert_allclose(res['C_LBG'], 0.5 * (lf['C_LBG'] + raw['direct'][:, 0]),
                                   atol=1e-6)
    wpath, _ = save_model(str(tmp_path / f'{arch}.weights.h5'), model, cfg, {'arch': arch})
    loaded, cfg2, _ = load_model(wpath)
    assert architecture(cfg2) == arch
    res2, _ = predict_catalog(loaded, X, cfg2)
    np.testing.assert_allclose(res2['C_LBG'], res['C_LBG'], atol=1e-6)
    np.testing.assert_allclose(res2['Z_LBG'], res['Z_LBG'], atol=1e-5)
    c_thresh, n_thresh, table = choose_catalog_thresholds(raw, truth, cfg)
    assert n_thresh in table and (arch == 'hybrid' or list(table) == [1])


def test_direct_learns_redshift(config):
    """On a toy set whose flux peak position encodes z, the direct head learns z and the class."""
    cfg = variant_config(config, 'direct', dz_scale=0.1)
    set_seeds(1)
    rng = np.random.default_rng(1)
    truth = fake_truth(512, rng)
    bins = np.arange(cfg.grid.nbins)
    peak = np.where(truth['CLASS'] == 'LBG', (truth['Z_TRUE'] - 1.5) / 3.5 * cfg.grid.nbins, -1e3)
    X = np.zeros((512, cfg.grid.nbins, 2), np.float32)
    X[..., 0] = 5 * np.exp(-0.5 * ((bins[None] - peak[:, None]) / 30.0) ** 2)
    X[..., 1] = X[..., 0] + rng.normal(0, 0.1, X[..., 0].shape)
    model = compile_model(build_model(cfg), cfg, learning_rate=1e-2)
    model.fit(X, make_training_targets(truth, cfg), epochs=16, batch_size=64, verbose=0)
    res, _ = predict_catalog(model, X, cfg)
    lbg = truth['CLASS'] == 'LBG'
    assert np.mean(res['IS_LBG'] == lbg) > 0.95
    dz = np.abs(res['Z_LBG'][lbg] - truth['Z_TRUE'][lbg])
    # z is uniform in [2, 4]: no constant guess has a median |dz| below 0.5
    assert np.median(dz) < 0.25


def test_direct_options_refuse_unknown_keys_and_bad_values(config):
    """Configurations built in code get the checks of the YAML reader."""
    from lbgnet.variants import direct_loss_options, direct_options
    cfg = variant_config(config, 'hybrid')
    assert direct_options(cfg)['units'] == 8
    bad = dataclasses.replace(cfg, extra=dict(cfg.extra, model=dict(
        SMALL, architecture='hybrid', direct={'unitz': 8})))
    with pytest.raises(ConfigError, match=r'hybrid-test-config: unknown key\(s\) model.direct.unitz'):
        direct_options(bad)
    with pytest.raises(ConfigError, match=r'unknown key\(s\) loss.direct.wieght'):
        direct_loss_options(variant_config(config, 'hybrid', wieght=0.1))
    with pytest.raises(ConfigError, match="hybrid-test-config: loss.direct.weight must be a "
                                          "finite number, not 'heavy'"):
        direct_loss_options(variant_config(config, 'hybrid', weight='heavy'))
    for bad in ({'dz_scale': float('nan')}, {'weight': float('inf')}, {'gamma': float('nan')}):
        with pytest.raises(ConfigError, match=f'loss.direct.{next(iter(bad))} must be a finite'):
            direct_loss_options(variant_config(config, 'hybrid', **bad))
    # YAML booleans are no numbers (dz_scale: true was 1.0, 100 times the default)
    for bad in ({'dz_scale': True}, {'gamma': False}, {'weight': None}):
        with pytest.raises(ConfigError, match=f'loss.direct.{next(iter(bad))} must be a finite'):
            direct_loss_options(variant_config(config, 'hybrid', **bad))
    with pytest.raises(ConfigError, match='all finite'):
        direct_loss_options(variant_config(config, 'hybrid', dz_scale=-1.0))
    # truncated or boolean units and an infinite z_range were accepted (64.9 -> 64 units)
    for direct in ({'units': 64.9}, {'units': True}, {'z_range': [1.5, float('inf')]}):
        bad = dataclasses.replace(cfg, extra=dict(cfg.extra, model=dict(
            SMALL, architecture='hybrid', direct=dict({'units': 8, 'z_range': [1.5, 5.0]},
                                                      **direct))))
        with pytest.raises(ConfigError, match='invalid model.direct'):
            direct_options(bad)
    # one list of keys: the YAML check and the defaults agree
    from lbgnet.config import NESTED_KEYS
    from lbgnet.modelspec import DIRECT_DEFAULTS
    from lbgnet.variants import DIRECT_LOSS_DEFAULTS
    assert set(NESTED_KEYS['model.direct']) == set(DIRECT_DEFAULTS)
    assert set(NESTED_KEYS['loss.direct']) == set(DIRECT_LOSS_DEFAULTS)


def test_invalid_architecture(config):
    cfg = variant_config(config, 'transformer')
    with pytest.raises(ConfigError, match='architecture'):
        build_model(cfg)
    bad = dataclasses.replace(cfg, extra=dict(cfg.extra, model=dict(
        SMALL, architecture='direct', direct={'units': 8, 'z_range': [3.0, 2.0]})))
    with pytest.raises(ConfigError, match='z_lo < z_hi'):
        build_model(bad)


@pytest.mark.parametrize('name', ['lbgnet-direct.yaml', 'lbgnet-hybrid.yaml'])
def test_shipped_variant_configs_build(name):
    cfg = load_config(name)
    model = build_model(cfg)
    assert architecture(cfg) == name.split('-')[1].split('.')[0]
    assert model.get_layer('direct').output.shape[-1] == 3


def test_evaluate_script_on_direct_model(tmp_path, config, caplog):
    """desi_lbg_evaluate runs a direct network on mock files and writes the usual metrics;
    it says why there is no examples figure, and its best-line redshift is Z_LBG."""
    import json
    from lbg_testdata import run_logged
    from lbgnet.io.mock import write_mock
    from lbgnet.scripts.lbg_evaluate import main
    from lbgnet.sim.mock import load_mock_setup, make_mock
    setup = load_mock_setup()
    mock = make_mock(setup, 40, np.random.default_rng(11), with_resolution=False)
    paths = write_mock(str(tmp_path), mock, 'lbgnet-mock.yaml')
    cfg = variant_config(config, 'direct')
    wpath, _ = save_model(str(tmp_path / 'd.weights.h5'), build_model(cfg), cfg)
    out = tmp_path / 'eval'
    rc, text = run_logged(main, caplog, '--coadd', paths['coadd'], '--truth', paths['truth'],
                          '--model', wpath, '--outdir', str(out))
    assert rc == 0
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['regimes']['all']['nlbg'] > 0
    assert (out / 'purity_efficiency.png').exists() and not (out / 'examples.png').exists()
    assert 'no examples.png: a direct network finds no lines to draw' in text
    every = metrics['regimes']['all']
    assert every['redshift_bestline'] == every['redshift']


@pytest.mark.parametrize('arch', ['direct', 'hybrid'])
def test_afterburner_runs_variants(tmp_path, config, arch):
    """desi_lbg_afterburner takes direct and hybrid model files: catalogue = predict_catalog."""
    from lbg_testdata import write_test_coadd, write_test_redrock
    from lbgnet.io.catalog import read_catalog
    from lbgnet.predict import predict_catalog
    from lbgnet.preprocess import load_coadd_grid
    from lbgnet.scripts.lbg_afterburner import main
    cfg = variant_config(config, arch)
    cfg = dataclasses.replace(cfg, selection=dataclasses.replace(cfg.selection, c_thresh=0.3))
    wpath, _ = save_model(str(tmp_path / f'{arch}.weights.h5'), build_model(cfg), cfg)
    coadd = str(tmp_path / 'coadd-main-dark-7.fits')
    tid, _ = write_test_coadd(coadd, 9)
    write_test_redrock(str(tmp_path / 'redrock-main-dark-7.fits'), np.asarray(tid)[::-1])
    assert main(['--coadd', coadd, '--model', wpath, '--chunk-size', '4']) == 0
    cat, _ = read_catalog(str(tmp_path / 'lbg_cnn-main-dark-7.fits'))
    model, saved, _ = load_model(wpath)
    X, info = load_coadd_grid(coadd, saved)
    res, _ = predict_catalog(model, X, saved)
    pos = np.searchsorted(info.targetid, cat['TARGETID'])
    assert cat['TARGETID'].tolist() == list(np.asarray(tid)[::-1])
    assert np.allclose(cat['C_LBG'], res['C_LBG'][pos], atol=1e-6)
    assert np.allclose(cat['Z_LBG'], res['Z_LBG'][pos], atol=1e-6)
    assert np.array_equal(cat['IS_LBG'], res['C_LBG'][pos] > 0.3)


def test_hybrid_nan_line_confidence_falls_back_to_the_direct_head(config):
    """A NaN line confidence counts as absent, as in combine_lines: with every other line
    below the floor Z_LBG is the direct head's, not line 0's box below the floor."""
    cfg = variant_config(config, 'hybrid')
    nlines, nboxes = len(cfg.lines), cfg.nboxes
    conf = np.full((2, nlines, nboxes), 0.01, np.float32)
    conf[0, 4, :] = np.nan
    raw = {'conf': conf, 'offset': np.full(conf.shape, 0.5, np.float32),
           'direct': np.array([[0.9, 3.0, 0.001]] * 2, np.float32)}
    res = catalog_from_raw(raw, cfg, calibrate=False)
    np.testing.assert_allclose(res['Z_LBG'], [3.0, 3.0])
    np.testing.assert_allclose(res['ZERR_LBG'], [0.004, 0.004], rtol=1e-6)


def test_direct_threshold_out_of_range_is_refused(config):
    """Line finders and hybrids refuse c_thresh outside [0, 1] (postprocess); a direct
    network took 1.5 (nothing selected, silently) or NaN."""
    cfg = variant_config(config, 'direct')
    raw = {'direct': np.array([[0.9, 3.0, 0.001]] * 2, np.float32)}
    assert catalog_from_raw(raw, cfg, c_thresh=0.5, calibrate=False)['IS_LBG'].all()
    for bad in (1.5, -0.1, np.nan):
        with pytest.raises(ValueError, match='must be between 0 and 1'):
            catalog_from_raw(raw, cfg, c_thresh=bad, calibrate=False)


@pytest.mark.parametrize('arch', ['direct', 'hybrid'])
def test_direct_head_reads_the_dropout_of_the_trunk(config, arch):
    """With model.dropout > 0 the direct head reads the trunk after its dropout, as the
    line heads do (reading fc_activation would skip the dropout in training: a mutant
    no test with dropout 0 could tell)."""
    from lbgnet.variants import build_variant
    cfg = variant_config(config, arch)
    cfg = dataclasses.replace(cfg, extra=dict(cfg.extra, model=dict(cfg.extra['model'],
                                                                     dropout=0.2)))
    model = build_variant(cfg)
    assert model.get_layer('fc_direct').input is model.get_layer('dropout_fc').output


def test_direct_option_boundaries(config):
    """The documented limits hold at their edges: loss.direct.gamma = 0 (no regression
    term) is accepted; model.direct.z_range must start above -1 (1 + z = 0 divides)."""
    from lbgnet.modelspec import direct_options
    from lbgnet.variants import direct_loss_options
    cfg = variant_config(config, 'direct', gamma=0.0)
    assert direct_loss_options(cfg)['gamma'] == 0.0
    for z_range, ok in (([-0.99, 5.0], True), ([-1.0, 5.0], False)):
        model = dict(cfg.extra['model'], direct={'z_range': z_range})
        edited = dataclasses.replace(cfg, extra=dict(cfg.extra, model=model))
        if ok:
            assert direct_options(edited)['z_range'] == tuple(z_range)
        else:
            with pytest.raises(ConfigError, match='-1 < z_lo < z_hi'):
                direct_options(edited)
