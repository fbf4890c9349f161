"""QSO pretraining: target class and line list from the YAML, QSO targets, a tiny
pretraining run with desi_lbg_train, and fine-tuning an LBG model from it."""
import dataclasses

import numpy as np

from lbgnet.config import load_config
from lbgnet.labels import decode_boxes
from lbgnet.targets import (apply_target, make_training_targets, metric_truth, target_class,
                            target_line_wavelengths)


def test_qso_config_targets():
    cfg = apply_target(load_config('lbgnet-qso.yaml'))
    base = load_config('lbgnet-default.yaml')
    assert target_class(cfg) == 'QSO' and cfg.lines.names[:3] == ('LYA', 'SIIV', 'CIV')
    assert cfg.grid == base.grid and cfg.nboxes == base.nboxes
    sim = load_config('lbgnet-sim.yaml').extra['simulation']['qso']['lines']
    for name, wave in zip(cfg.lines.names, cfg.lines.waves):
        assert wave == sim[name]['wave'], name          # lines the simulator renders
    truth = {'CLASS': np.array(['QSO', 'LBG', 'STAR']), 'Z_TRUE': np.array([2.5, 3.0, 0.0])}
    waves = target_line_wavelengths(truth, cfg)
    assert np.all(np.isnan(waves[1:])) and waves[0, 0] == 1215.67 * 3.5
    y = make_training_targets(truth, cfg)
    assert y.shape == (3, len(cfg.lines), cfg.nboxes, 2) and y[1:].sum() == 0
    box = y[0, :, :, 0].argmax(axis=1)
    inside = y[0, :, :, 0].sum(axis=1) == 1
    z = decode_boxes(box, y[0, np.arange(len(cfg.lines)), box, 1], cfg)
    np.testing.assert_allclose(z[inside], 2.5, atol=1e-4)
    assert inside[cfg.lines.index('LYA')] and not inside[cfg.lines.index('HA')]   # HA off grid
    relabelled = metric_truth(dict(truth, RMAG=np.zeros(3)), cfg)['CLASS']
    assert list(relabelled) == ['LBG', 'LBG*', 'STAR']


TINY_QSO = """
base: lbgnet-qso.yaml
name: tinyqso
model: {conv_layers: 2, filters: [8, 8], kernel_size: [5, 5], strides: 4, dense_units: 16}
training: {ntrain: 128, nval: 60, epochs: 1, batch_size: 64, seed: 4}
"""


def test_pretrain_qso_then_finetune_lbg(tmp_path):
    from lbgnet.io.modelfile import load_model
    from lbgnet.model import build_model
    from lbgnet.scripts.lbg_train import initial_model, main
    cfg_path = tmp_path / 'tinyqso.yaml'
    cfg_path.write_text(TINY_QSO)
    assert main(['--config', str(cfg_path), '--outdir', str(tmp_path / 'qso'), '--verbose', '0',
                 '--workers', '1']) == 0
    path = str(tmp_path / 'qso' / 'tinyqso.weights.h5')
    qso, qcfg, meta = load_model(path)
    assert qcfg.lines.names == ('LYA', 'SIIV', 'CIV', 'CIII', 'MGII', 'HB', 'HA')
    assert target_class(qcfg) == 'QSO' and 'fc_box_MGII' in {l.name for l in qso.layers}
    assert meta['validation_metrics']['all']['pe_score'] is not None   # QSOs are the positives
    # fine-tune an LBG network of the same trunk: conv + fc_common come from the QSO model
    lbg_cfg = load_config(str(cfg_path))          # without apply_target: the 16 LBG lines
    lbg_cfg = dataclasses.replace(lbg_cfg, extra={k: v for k, v in lbg_cfg.extra.items()
                                                  if k != 'target'})
    model, report = initial_model(lbg_cfg, path, 'dense')
    assert {n for n, _ in report.loaded} == {'conv_1', 'batch_normalization_1', 'conv_2',
                                            'batch_normalization_2', 'fc_common',
                                            'batch_normalization_fc'}
    np.testing.assert_array_equal(model.get_layer('fc_common').get_weights()[0],
                                  qso.get_layer('fc_common').get_weights()[0])
    assert len(build_model(lbg_cfg).output_shape) == 4 and model.output_shape[1] == 16


def test_evaluate_scores_a_qso_finder_on_quasars(tmp_path, caplog):
    """desi_lbg_evaluate counts the model's target class as positive, as training does:
    a QSO finder scored on LBGs reported LBG efficiencies for it."""
    import json
    import logging
    import os
    from astropy.table import Table
    from lbgnet.io.modelfile import save_model
    from lbgnet.model import build_model
    from lbgnet.scripts.lbg_evaluate import main
    from lbgnet.train import set_seeds
    from test_evaluate import _mock_files
    cfg = apply_target(load_config('lbgnet-qso.yaml'))
    cfg = dataclasses.replace(cfg, extra=dict(cfg.extra, model=dict(
        cfg.extra['model'], conv_layers=2, filters=8, kernel_size=5, strides=4, dense_units=16)))
    set_seeds(0)
    model = save_model(str(tmp_path / 'qso.weights.h5'), build_model(cfg), cfg)[0]
    paths = _mock_files(tmp_path, nspec=60, seed=5)
    classes = np.char.strip(np.asarray(Table.read(paths['truth'], 'TRUTH')['CLASS']).astype(str))
    assert (classes == 'QSO').sum() > 0 and (classes == 'LBG').sum() > 0
    with caplog.at_level(logging.WARNING):
        assert main(['--model', model, '--coadd', paths['coadd'], '--truth', paths['truth'],
                     '--outdir', str(tmp_path / 'ev'), '--include-bad-fibres']) == 0
    assert 'finds QSO, not LBGs: no template refinement' in caplog.text
    metrics = json.load(open(tmp_path / 'ev' / 'metrics.json'))
    assert metrics['inputs']['target_class'] == 'QSO' and 'refine' not in metrics['inputs']
    everything = metrics['regimes']['all']
    assert everything['nlbg'] == (classes == 'QSO').sum()
    assert everything['nlbg'] + everything['ncontaminant'] == classes.size
    # the afterburner, as the evaluation runs it: no LBG template fit of its selection
    from lbgnet.io.catalog import read_catalog
    from lbgnet.scripts.lbg_afterburner import main as afterburner
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert afterburner(['--model', model, '--coadd', paths['coadd'], '--outdir',
                            str(tmp_path / 'ab')]) == 0
    assert 'the network finds QSO, not LBGs: no template refinement' in caplog.text
    catalogue = read_catalog(str(tmp_path / 'ab' / os.path.basename(paths['coadd']).replace(
        'coadd-', 'lbg_cnn-')))[0]
    assert 'Z_TPL' not in catalogue.colnames or np.all(np.isnan(catalogue['Z_TPL']))
    # its catalogue says what its IS_LBG selects, and the stacked catalogue warns
    import glob
    from lbgnet.io.catalog import read_catalog_header
    from lbgnet.scripts.lbg_zcatalog import main as zcatalog
    written = str(tmp_path / 'ab' / 'lbg_cnn-*.fits')
    assert {read_catalog_header(p)['LBGTARG'] for p in glob.glob(written)} == {'QSO'}
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert zcatalog(['--catalogs', written, '--output', str(tmp_path / 'zcat.fits')]) == 0
    assert ('1 of the stacked catalogues were made by a network that selects QSO, not LBGs '
            '(header LBGTARG)') in caplog.text
    assert read_catalog_header(str(tmp_path / 'zcat.fits'), 'LBG_ZCAT')['LBGTARG'] == 'QSO'
