"""Experiment summaries (lbgnet.experiments) and the γ-study script on a tiny run."""
import csv
import importlib.util
import os
import sys

import numpy as np
import pytest

from lbgnet.io import InputFileError

BENCH = os.path.join(os.path.dirname(__file__), '..', 'benchmarks')

TINY = """
base: lbgnet-base.yaml
name: tinyg
model: {channels: [flux, snr], conv_layers: 1, filters: 4, kernel_size: 5, strides: 4,
        padding: same, dropout: 0.0, dense_units: 8, offset_margin: 0.1, snr_softening: 5.0}
loss: {gamma: 1.0, pos_weight: balanced}
training: {simulation: lbgnet-mock.yaml, ntrain: 64, nval: 40, epochs: 1, batch_size: 64,
           learning_rate: 1.0e-3, patience: 1, seed: 2}
target: {lines: {LYA: 1215.67, CIV: 1549.48}}
"""


def load_bench(name):
    sys.path.insert(0, os.path.abspath(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(name, os.path.join(BENCH, f'{name}.py'))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.pop(0)


def test_rst_table_formats_and_escapes():
    from lbgnet.experiments import rst_table
    rows = [{'model': 'a', 'layers': 4, 'filters': '32/48', 'lr': 1e-3, 'parameters': 623632,
             'score_lowz': 0.85612, 'score_midz': None, 'frac_dz_lowz': float('nan'),
             'train_minutes': 12.66}]
    text = rst_table(rows)
    assert text.startswith('.. list-table::') and '\\|Δz\\|<0.05 low' in text
    assert '- 623,632' in text and '- 0.856' in text and '- 1e-03' in text and '- 12.7' in text
    assert text.count('- —') == 5          # None, NaN and the three absent columns
    # a tuned learning rate keeps its digits (it was rounded to 1e-03, as the default's)
    lrs = rst_table([dict(rows[0], lr=1.45e-3), dict(rows[0], lr=5.4e-4)])
    assert '- 1.45e-03' in lrs and '- 5.4e-04' in lrs


def test_fine_tuning_rows_name_both_learning_rates(tmp_path):
    """A fine-tuning with an unfrozen phase (--unfreeze-epochs) trained at two learning
    rates: its row says both, and which phase gave the weights (the lr cell gave the
    first rate alone); a plain training's row is unchanged."""
    from lbg_testdata import save_tiny_model
    from lbgnet.experiments import rst_table, summary_row
    options = {'learning_rate': 1e-3}
    tuned = save_tiny_model(str(tmp_path / 'ft.weights.h5'), metadata={'training': {
        'options': options, 'kept_phase': 2,
        'transfer': {'freeze': 2, 'unfreeze_epochs': 300, 'unfreeze_lr_factor': 0.1}}})
    plain = save_tiny_model(str(tmp_path / 'plain.weights.h5'), metadata={'training': {
        'options': options, 'kept_phase': 1, 'transfer': None}})
    row = summary_row('ft', tuned, {})
    assert row['lr'] == 1e-3 and row['lr_unfrozen'] == pytest.approx(1e-4)
    assert row['kept_phase'] == 2
    assert '- 1e-03 (1e-04 unfrozen, unfrozen phase kept)' in rst_table([row])
    row = summary_row('plain', plain, {})
    assert row['lr_unfrozen'] is None and row['kept_phase'] is None
    assert '- 1e-03\n' in rst_table([row])


def test_pe_comparison_plot(tmp_path):
    """One panel per regime present; curves read from the metrics files."""
    import json
    from matplotlib.image import imread
    from lbgnet.experiments import plot_pe_comparison
    paths = {}
    for name, shift in (('a', 0.0), ('b', 0.1)):
        eff = np.linspace(1.0, 0.0, 11)
        res = {'pe_score': 0.8 + shift, 'curve': {'efficiency': list(eff),
                                                  'purity': list(np.clip(1.2 - eff + shift, 0, 1))}}
        path = tmp_path / f'{name}.json'
        path.write_text(json.dumps({'regimes': {'midz': res, 'highz': res}}))
        paths[name] = {'midz': str(path), 'highz': str(path)}
    out = plot_pe_comparison(paths, str(tmp_path / 'pe.png'))
    image = imread(out)
    assert image.shape[1] == pytest.approx(2 * 4.2 * 90, abs=2)   # two panels, 90 dpi
    with pytest.raises(FileNotFoundError):
        plot_pe_comparison({'c': {'midz': str(tmp_path / 'none.json')}}, str(tmp_path / 'x.png'))


def test_gamma_study_tiny_run(tmp_path):
    from lbgnet.io.mock import write_mock
    from lbgnet.sim.mock import load_mock_setup, make_mock
    setup = load_mock_setup()
    test_dir = tmp_path / 'test'
    write_mock(str(test_dir), make_mock(setup, 40, np.random.default_rng(99), pixel=7,
                                        with_resolution=False), 'lbgnet-mock.yaml')
    cfg = tmp_path / 'tinyg.yaml'
    cfg.write_text(TINY)
    study = load_bench('gamma_study')
    args = ['--config', str(cfg), '--gammas', '0.5', '2', '--outdir', str(tmp_path / 'g'),
            '--tests', f'midz={test_dir}', '--', '--workers', '1']
    assert study.main(args) == 0
    rows = list(csv.DictReader(open(tmp_path / 'g' / 'gamma.csv')))
    assert [float(r['gamma']) for r in rows] == [0.5, 2.0]
    assert all(r['layers'] == '1' and r['score_midz'] != '' for r in rows)
    import yaml
    assert yaml.safe_load((tmp_path / 'g' / 'gamma-2.yaml').read_text())['loss'] == {'gamma': 2.0}
    from lbgnet.io.modelfile import load_model
    assert load_model(str(tmp_path / 'g' / 'gamma-2' / 'gamma-2.weights.h5'))[1].extra['loss']['gamma'] == 2.0
    png = tmp_path / 'g' / 'gamma.png'
    assert 0 < png.stat().st_size < 300_000
    assert 'σ_NMAD low' in (tmp_path / 'g' / 'gamma.rst').read_text()
    # rerun: nothing is retrained (models and evaluations exist)
    model = tmp_path / 'g' / 'gamma-0.5' / 'gamma-0.5.weights.h5'
    mtime = model.stat().st_mtime
    assert study.main(args) == 0 and model.stat().st_mtime == mtime
    table = load_bench('experiment_table')
    assert table.main(['--model', f'a={model}', '--tests', f'midz={test_dir}',
                       '--outdir', str(tmp_path / 't')]) == 0
    assert 'score low' in (tmp_path / 't' / 'results.rst').read_text()
    with open(tmp_path / 't' / 'results.csv') as fx:
        row = next(csv.DictReader(fx))
    assert float(row['score_err_midz']) > 0 and 'frac_dz_err_midz' in row
    assert 0 < (tmp_path / 't' / 'purity_efficiency.png').stat().st_size < 300_000
    with pytest.raises(SystemExit):
        table.main(['--model', 'nopath', '--tests', f'midz={test_dir}', '--outdir', str(tmp_path)])
    with pytest.raises(SystemExit, match="'mid' is not one of lowz, midz, highz"):
        table.main(['--model', f'a={model}', '--tests', f'mid={test_dir}',   # an empty row
                    '--outdir', str(tmp_path / 't2')])
    assert not (tmp_path / 't2').exists()


def test_oracle_class_likelihood_integrates_the_amplitude():
    """benchmarks/oracle_class_bound.py: the closed-form amplitude integral of each bank
    spectrum's likelihood matches a numerical integral over a >= 0, and the true noise
    weights add the noise excess and the sky-line residuals."""
    from scipy.integrate import quad
    bench = load_bench('oracle_class_bound')
    rng = np.random.default_rng(4)
    npix = 30
    w = rng.uniform(0.5, 2.0, (3, npix))
    data = rng.normal(0.0, 1.0, (3, npix)) + np.linspace(0.2, 1.0, npix) * np.array([[0.0], [1.0], [3.0]])
    models = np.abs(rng.normal(1.0, 0.3, (4, npix)))
    got = bench.bank_loglike(w * data, w, models)
    for i in range(3):
        dd = np.sum(w[i] * data[i] ** 2)
        for j in range(4):
            def like(a):
                return np.exp(-0.5 * (np.sum(w[i] * (data[i] - a * models[j]) ** 2) - dd))
            peak = max(np.sum(w[i] * data[i] * models[j]) / np.sum(w[i] * models[j] ** 2), 0.0)
            val = quad(like, 0.0, peak + 20.0, points=[peak], limit=200)[0]
            assert got[i, j] == pytest.approx(np.log(val), abs=1e-6)
    from lbgnet.sim.mock import load_mock_setup
    inst = load_mock_setup().instrument
    ivar = {b: np.full((2, arm.wave.size), 4.0) for b, arm in inst.arms.items()}
    ivar['b'][1, :5] = 0.0
    weight = bench.true_weights(inst, ivar)
    for band, arm in inst.arms.items():
        pix, _, _ = arm.residual_segments
        quiet = np.setdiff1d(np.arange(arm.wave.size), pix)
        assert np.allclose(weight[band][0, quiet], 4.0 / arm.noise_excess ** 2)
        assert np.all(weight[band][0, pix] < 4.0 / arm.noise_excess ** 2)
    assert np.all(weight['b'][1, :5] == 0)


def test_oracle_grid_weights_keep_sky_residuals_coherent():
    """oracle_class_bound.grid_data propagates the true noise to the 8 A grid with one
    residual amplitude per sky line (grid_noise_ivar), so a bin under a sky line weighs
    less than if its pixels' residuals were independent (grid_effective_ivar)."""
    from lbgnet.noise import NoiseModel
    from lbgnet.preprocess import grid_effective_ivar, grid_noise_ivar
    from lbgnet.sim.mock import load_mock_setup
    bench = load_bench('oracle_class_bound')
    setup = load_mock_setup()
    inst, grid = setup.instrument, setup.config.grid
    rng = np.random.default_rng(2)
    ivar = {b: np.full((2, arm.wave.size), 4.0) for b, arm in inst.arms.items()}
    flux = {b: rng.normal(0.0, 0.5, iv.shape) for b, iv in ivar.items()}
    weight = bench.true_weights(inst, ivar)
    _, got = bench.grid_data(inst, flux, ivar, grid)
    bands = list(flux)
    args = ([inst.waves[b] for b in bands], [flux[b] for b in bands], [ivar[b] for b in bands])
    np.testing.assert_allclose(got, grid_noise_ivar(bands, *args, grid,
                                                    NoiseModel.from_instrument(inst)))
    independent = grid_effective_ivar(*args, [weight[b] for b in bands], grid)
    assert np.all(got <= independent * (1 + 1e-9)) and np.any(got < 0.9 * independent)
    _, pipe = bench.grid_data(inst, flux, ivar, grid, 'pipeline')
    assert np.all(pipe >= got)


def test_oracle_class_bound_runs_and_ranks_bright_objects(tmp_path):
    """The Bayes ranking of oracle_class_bound.py separates bright mock LBGs from
    contaminants (chance is the LBG fraction) and its report is complete."""
    import json
    from lbgnet.scripts.lbg_mock import main as mock_main
    assert mock_main(['--outdir', str(tmp_path / 'test'), '--nspec', '60', '--nfiles', '1',
                      '--seed', '11', '--rmag-min', '22', '--rmag-max', '22.5',
                      '--no-resolution']) == 0
    bench = load_bench('oracle_class_bound')
    out = tmp_path / 'bound.json'
    assert bench.main(['--test', str(tmp_path / 'test'), '--zmin', '1.8', '--zmax', '4.6',
                       '--nbank', '2000', '--grid', '--json', str(out)]) == 0
    res = json.loads(out.read_text())
    assert res['grid'] and res['n_lbg'] + res['n_contaminant'] <= 60
    full = res['by_depth']['25.0']
    assert list(full['bayes_by_bank_size']) == ['2000']
    assert full['bayes_by_bank_size']['2000'] > 0.8
    for who in ('network', 'bayes'):
        assert sum(res['top_n_lbg'][who].values()) == res['n_lbg']
    # the same with the pipeline ivar alone as the noise model
    assert bench.main(['--test', str(tmp_path / 'test'), '--zmin', '1.8', '--zmax', '4.6',
                       '--nbank', '2000', '--grid', '--noise', 'pipeline', '--json', str(out)]) == 0
    res = json.loads(out.read_text())
    assert res['noise'] == 'pipeline'
    assert res['by_depth']['25.0']['bayes_by_bank_size']['2000'] > 0.8


def test_bayes_redshift_bins_and_windows():
    """benchmarks/bayes_redshift_estimate.py: the per-bin log sums equal a direct logsumexp,
    and the best window's probability equals a brute-force sum over every window (end bins
    counted half), edges included."""
    from scipy.special import logsumexp
    bench = load_bench('bayes_redshift_estimate')
    rng = np.random.default_rng(5)
    loglike = rng.normal(0.0, 30.0, (4, 50))
    loglike[2] = -np.inf
    loglike[2, 7] = -3.0
    zbin = rng.integers(0, 9, 50)
    zbin[zbin == 4] = 5                       # bin 4 stays empty
    got = bench.bin_loglike(loglike, zbin, 9)
    for i in range(4):
        for j in range(9):
            want = logsumexp(loglike[i, zbin == j]) if np.any(zbin == j) else -np.inf
            assert got[i, j] == pytest.approx(want, abs=1e-9) if np.isfinite(want) else got[i, j] == -np.inf
    logpost = rng.normal(0.0, 2.0, (6, 40))
    logpost[3, :] = -np.inf
    logpost[3, 0] = 0.0                       # all the mass in the first bin
    logpost[4, 20:] = -np.inf                 # a restricted prior
    pos, prob = bench.window_estimate(logpost, 3)
    dist = np.abs(np.arange(-3, 43)[:, None] - np.arange(40)[None, :])   # centres beyond the ends too
    weight = np.where(dist < 3, 1.0, np.where(dist == 3, 0.5, 0.0))
    for i in range(6):
        post = np.exp(logpost[i] - logpost[i].max())
        post /= post.sum()
        window = weight @ post
        assert prob[i] == pytest.approx(window.max(), rel=1e-12)
        # the chosen centre is the middle of a run of windows that all hold the maximum
        run = np.flatnonzero(window >= window.max() - 1e-9) - 3
        assert run[0] + 0.5 <= pos[i] <= run[-1] + 0.5
    assert pos[3] == pytest.approx(0.5) and prob[3] == pytest.approx(1.0)
    assert pos[4] < 23
    # A posterior narrower than the window: the estimate is centred on it, not on the first
    # window that holds it all (bin i spans [i, i + 1)).
    narrow = np.full((3, 60), -np.inf)
    narrow[0, 30] = 0.0
    narrow[1, [30, 31]] = 0.0
    narrow[2, 59] = 0.0
    pos, prob = bench.window_estimate(narrow, 10)
    assert pos == pytest.approx([30.5, 31.0, 59.5]) and prob == pytest.approx(1.0)
    assert bench.right_fraction(np.array([2.0, np.nan, 2.2]), np.array([2.04, 2.0, 2.3])) == pytest.approx(1 / 3)


def test_bayes_redshift_estimate_runs_and_finds_bright_redshifts(tmp_path):
    """The Bayes redshifts of bayes_redshift_estimate.py are right for most bright mock LBGs
    (a wrong posterior or window would put them anywhere in 1.8-4.6) and the report is
    complete."""
    import json
    from lbgnet.scripts.lbg_mock import main as mock_main
    assert mock_main(['--outdir', str(tmp_path / 'test'), '--nspec', '60', '--nfiles', '1',
                      '--seed', '12', '--rmag-min', '22', '--rmag-max', '22.5',
                      '--zmin', '2.6', '--zmax', '3.4', '--no-resolution']) == 0
    bench = load_bench('bayes_redshift_estimate')
    out = tmp_path / 'bayes.json'
    assert bench.main(['--test', str(tmp_path / 'test'), '--zmin', '2.6', '--zmax', '3.4',
                       '--nbank', '4000', '--grid', '--json', str(out)]) == 0
    res = json.loads(out.read_text())
    assert res['grid'] and 0 < res['n_selected'] <= res['n_lbg'] <= 60
    full = res['by_depth']['25.0']
    assert full['all']['n'] == res['n_lbg'] and full['selected']['n'] == res['n_selected']
    assert list(full['all']['bayes']) == ['2000', '4000']     # growing banks
    assert full['all']['bayes']['4000'] > 0.7
    assert full['all']['bayes_test_prior']['4000'] >= full['all']['bayes']['4000'] - 0.05
    assert 0.5 < full['all']['bayes_expected']['4000'] <= 1.0
    # the estimates are centred on the posterior: a bias of up to the window's half width
    # (0.05) would still count as right but not pass this
    assert full['all']['bayes_median_abs_dz']['4000'] < 0.01


def test_bench_afterburner_variants_are_parsed():
    """benchmarks/bench_afterburner.py --variant NAME=OPTIONS: the extra afterburner options
    split as a shell would; a variant without a name, or whose name cannot label a JSON
    key, is refused."""
    bench = load_bench('bench_afterburner')
    args = bench.parse(['--workdir', 'w', '--variant', 'pipeline=--refine-noise pipeline',
                        '--variant', 'step=--refine-step 4e-4 --refine-noise "pipeline"'])
    assert args.variants == {'pipeline': ['--refine-noise', 'pipeline'],
                             'step': ['--refine-step', '4e-4', '--refine-noise', 'pipeline']}
    assert bench.parse(['--workdir', 'w']).variants == {}
    for bad in ('--refine-noise pipeline', '=--no-refine', 'no refine=--no-refine'):
        with pytest.raises(SystemExit):
            bench.parse(['--workdir', 'w', '--variant', bad])


def test_oracle_redshift_covariance_is_the_exact_inverse():
    """oracle_redshift_bound.Covariance: x^T C^-1 y with C = diag(excess^2 / ivar) plus one
    rank-one term per sky line equals a dense solve; masked pixels carry no weight."""
    bench = load_bench('oracle_redshift_bound')
    rng = np.random.default_rng(5)
    npix = 40
    amp = np.zeros(npix)
    line = np.full(npix, -1)
    amp[5:9], line[5:9] = [0.2, 0.5, 0.4, 0.1], 0           # two sky lines, next to each other
    amp[9:12], line[9:12] = [0.3, 0.6, 0.2], 1
    amp[30:33], line[30:33] = [0.1, 0.2, 0.1], 2

    class Noise:
        excess = {'b': 1.1}

        @staticmethod
        def residual_profile(camera, wave):
            return amp, line

    ivar = {'b': rng.uniform(0.5, 4.0, (2, npix))}
    ivar['b'][1, 7] = 0.0                                   # a masked pixel inside a line
    x = {'b': rng.normal(size=(2, npix))}
    y = {'b': rng.normal(size=(2, npix))}
    cov = bench.Covariance(ivar, {'b': np.arange(npix, dtype=float)}, Noise())
    got = cov.inner(x, y)
    for s in range(2):
        good = ivar['b'][s] > 0
        dense = np.diag(1.1 ** 2 / ivar['b'][s][good])
        for k in range(3):
            r = np.where(line == k, amp, 0.0)[good]
            dense = dense + np.outer(r, r)
        want = x['b'][s][good] @ np.linalg.solve(dense, y['b'][s][good])
        assert got[s] == pytest.approx(want, rel=1e-10)
    plain = bench.Covariance(ivar, {'b': np.arange(npix, dtype=float)}, None)
    assert plain.inner(x, y) == pytest.approx(np.sum(ivar['b'] * x['b'] * y['b'], axis=1))


def test_evaluate_model_reuses_only_metrics_of_this_model_and_test(tmp_path, monkeypatch):
    """An eval-<regime>/metrics.json of another model (or test set) in the same place was
    reused as it was: a results row with another model's numbers."""
    import json
    from lbgnet import experiments
    from lbgnet.scripts import lbg_evaluate
    test_dir = tmp_path / 'test-midz'
    test_dir.mkdir()
    for kind in ('coadd', 'truth'):
        (test_dir / f'{kind}-x.fits').write_text('')
    calls = []

    def fake_evaluate(argv):
        calls.append(argv)
        model = os.path.abspath(argv[argv.index('--model') + 1])
        files = argv[argv.index('--coadd') + 1:argv.index('--truth')]
        target = argv[argv.index('--outdir') + 1]
        os.makedirs(target, exist_ok=True)
        with open(os.path.join(target, 'metrics.json'), 'w') as fx:
            json.dump({'inputs': {'model': model, 'files': files}}, fx)
        return 0
    monkeypatch.setattr(lbg_evaluate, 'main', fake_evaluate)
    tests = {'midz': str(test_dir)}
    experiments.evaluate_model(str(tmp_path / 'OLD.weights.h5'), tests, str(tmp_path))
    experiments.evaluate_model(str(tmp_path / 'OLD.weights.h5'), tests, str(tmp_path))
    assert len(calls) == 1                                  # done: reused
    experiments.evaluate_model(str(tmp_path / 'NEW.weights.h5'), tests, str(tmp_path))
    assert len(calls) == 2                                  # another model: evaluated again
    (test_dir / 'coadd-y.fits').write_text('')
    (test_dir / 'truth-y.fits').write_text('')
    experiments.evaluate_model(str(tmp_path / 'NEW.weights.h5'), tests, str(tmp_path))
    assert len(calls) == 3                                  # another test set: again
    # the same model file retrained (newer than its metrics): again
    metrics = tmp_path / 'eval-midz' / 'metrics.json'
    model = tmp_path / 'NEW.weights.h5'
    model.write_text('v2')

    def age_metrics():
        earlier = os.path.getmtime(metrics) - 100
        os.utime(metrics, (earlier, earlier))
    age_metrics()
    experiments.evaluate_model(str(model), tests, str(tmp_path))
    assert len(calls) == 4
    # test files regenerated under the same names (newer than the metrics): again
    age_metrics()
    (test_dir / 'coadd-x.fits').write_text('regenerated')
    experiments.evaluate_model(str(model), tests, str(tmp_path))
    assert len(calls) == 5
    experiments.evaluate_model(str(model), tests, str(tmp_path))
    assert len(calls) == 5                                  # up to date: reused
    # the model card rewritten alone (thresholds, error calibration): again
    age_metrics()
    (tmp_path / 'NEW.json').write_text('{}')
    experiments.evaluate_model(str(model), tests, str(tmp_path))
    assert len(calls) == 6
    # test files gone: the metrics of this model stay usable for the table
    for path in test_dir.iterdir():
        path.unlink()
    assert experiments.evaluate_model(str(model), tests, str(tmp_path)) == \
        {'midz': str(tmp_path / 'eval-midz' / 'metrics.json')}
    assert len(calls) == 6
    # ... but not for a directory they were not made from (mistyped, not made yet)
    with pytest.raises(InputFileError, match='no coadd'):
        experiments.evaluate_model(str(model), {'midz': str(tmp_path / 'test-midz-v2')},
                                   str(tmp_path))


def test_noise_correlation_statistics_on_known_noise():
    """benchmarks/noise_correlation_check.py: the robust lag correlation recovers that of a
    moving-average noise (ρ₁ = 0.5, ρ₂ = 0 for a 2-pixel sum), an outlier pair does not
    move it (it does move Pearson's), and white noise gives 8 Å bins that scatter like
    their pixels (in σ units) while the 2-pixel sum's bins scatter √(1 + 2·0.9·0.5) more."""
    bench = load_bench('noise_correlation_check')
    from lbgnet.config import load_config
    grid = load_config().grid
    rng = np.random.default_rng(3)
    wave = grid.wave_min + 0.8 * np.arange(4000)
    pixbin = grid.bin_index(wave)
    ivar = np.ones((20, wave.size))
    usable = np.ones(ivar.shape, dtype=bool)
    white = rng.standard_normal(ivar.shape)
    moving = rng.standard_normal((20, wave.size + 1))
    moving = (moving[:, 1:] + moving[:, :-1]) / np.sqrt(2)
    assert abs(bench.robust_correlation(*bench.lag_pairs(moving, 1)) - 0.5) < 0.02
    assert abs(bench.robust_correlation(*bench.lag_pairs(moving, 2))) < 0.02
    spiky = white.copy()
    spiky[:, 100:102] = 200.0
    a, b = bench.lag_pairs(spiky, 1)
    assert abs(bench.robust_correlation(a, b)) < 0.02 and np.corrcoef(a, b)[0, 1] > 0.3
    stats_white = bench.camera_statistics(white, ivar, usable, pixbin, grid.nbins)
    stats_moving = bench.camera_statistics(moving, ivar, usable, pixbin, grid.nbins)
    assert stats_white['bins'] == 20 * 400
    ratio = stats_moving['bin_scatter'] / stats_white['bin_scatter']
    assert abs(ratio - np.sqrt(1 + 2 * 0.9 * 0.5)) < 0.06
    assert abs(stats_white['bin_scatter'] / stats_white['pixel_scatter'] - 1) < 0.1


def test_metrics_of_another_shape_are_evaluated_afresh(tmp_path):
    """A metrics.json that is JSON but not an lbgnet metrics object crashed the
    experiment table with an AttributeError; it is now simply not reused."""
    from lbgnet.experiments import metrics_are_of
    model = tmp_path / 'm.weights.h5'
    model.write_bytes(b'x')
    path = tmp_path / 'metrics.json'
    for text in ('[]', '"x"', '{"inputs": [1]}', '{"inputs": {"files": 3}}'):
        path.write_text(text)
        assert metrics_are_of(str(path), str(model), None, str(tmp_path)) is False
