"""Tests of lbgnet.config: the shipped base config and validation of bad ones."""
import dataclasses
import shutil

import numpy as np
import pytest
import yaml

from lbgnet.config import (ConfigError, arm_wavelengths, as_int, config_from_dict, etc_dir,
                           load_config, load_yaml, read_yaml_config)


def test_base_config(config):
    assert config.grid.nbins == 800 and config.grid.dwave == 8.0 and config.grid.wave_min == 3600.0
    assert config.grid.wave_max == 10000.0
    assert len(config.lines) == 16 and config.nboxes == 40
    assert config.box_width == 160.0
    assert config.lines.waves[config.lines.index('LYA')] == pytest.approx(1215.67)
    np.testing.assert_allclose(np.diff(config.grid.edges), 8.0)
    assert config_from_dict(config.to_dict()) == config


def test_arm_wavelengths(config):
    wave = arm_wavelengths(config)
    assert {b: w.size for b, w in wave.items()} == {'b': 2751, 'r': 2326, 'z': 2881}
    assert wave['b'][-1] == 5800.0 and wave['z'][0] == 7520.0


def test_base_include_and_override(tmp_path):
    child = tmp_path / 'child.yaml'
    child.write_text('base: lbgnet-base.yaml\nnboxes: 20\nselection: {c_thresh: 0.8}\nmodel: {conv_layers: 2}\n')
    cfg = load_config(str(child))
    assert cfg.nboxes == 20 and cfg.selection.c_thresh == 0.8 and cfg.selection.n_thresh == 1
    assert cfg.extra['model'] == {'conv_layers': 2}
    assert len(cfg.lines) == 16


def test_base_typo_names_the_including_file(tmp_path):
    """'base: lbgnet-inital.yaml' named neither the file holding the typo nor where the
    base was looked for."""
    from lbgnet.config import ConfigError, load_config
    path = tmp_path / 'mine.yaml'
    path.write_text('base: lbgnet-inital.yaml\n')
    with pytest.raises(ConfigError, match=r"mine\.yaml: base 'lbgnet-inital\.yaml': "
                       r'configuration file not found \(beside the config, here or in etc/\)'):
        load_config(str(path))


def test_base_beside_the_config_wins_over_the_current_directory(tmp_path, monkeypatch):
    """One --config builds one network wherever the command runs: its ``base:`` is the
    file beside it, not a stale file of that name in the current directory."""
    proj, elsewhere = tmp_path / 'proj', tmp_path / 'elsewhere'
    proj.mkdir()
    elsewhere.mkdir()
    (proj / 'mybase.yaml').write_text('base: lbgnet-base.yaml\nnboxes: 20\n')
    (elsewhere / 'mybase.yaml').write_text('base: lbgnet-base.yaml\nnboxes: 10\n')
    (proj / 'exp.yaml').write_text('base: mybase.yaml\n')
    monkeypatch.chdir(elsewhere)
    assert load_config(str(proj / 'exp.yaml')).nboxes == 20
    assert load_config('mybase.yaml').nboxes == 10        # a name given directly: as before
    (proj / 'exp.yaml').write_text('base: lbgnet-base.yaml\nnboxes: 8\n')
    assert load_config(str(proj / 'exp.yaml')).nboxes == 8   # not beside it: etc/


@pytest.mark.parametrize('text, match', [
    ('grid: {wave_min: 3600, dwave: 8, nbins: 800}\n', 'missing or invalid key'),
    ('base: lbgnet-base.yaml\nnboxes: 33\n', 'must divide'),
    ('base: lbgnet-base.yaml\nselection: {n_thresh: 99}\n', 'out of range'),
    ('- just\n- a list\n', 'top level must be a mapping'),
    ('a: [unclosed\n', 'cannot read YAML'),
    ('base: lbgnet-default.yaml\ntraining: {max_minute: 0.05}\n',
     r'unknown key\(s\) training.max_minute \(known'),
    ('base: lbgnet-mock.yaml\nsimulation: {class_fractoins: {LBG: 1.0}}\n',
     r'simulation.class_fractoins'),
    ('base: lbgnet-base.yaml\nmodle: {conv_layers: 2}\n', 'unknown section "modle"'),
    ('base: lbgnet-base.yaml\nloss: 3\n', 'section "loss" must be a mapping'),
    # nested mappings with known keys: a typo is refused, not replaced by the default
    ('base: lbgnet-default.yaml\nmodel: {architecture: hybrid, direct: {unitz: 8}}\n',
     r'bad.yaml: unknown key\(s\) model.direct.unitz'),
    ('base: lbgnet-default.yaml\nloss: {direct: {wieght: 0.1}}\n',
     r'bad.yaml: unknown key\(s\) loss.direct.wieght'),
    ('base: lbgnet-default.yaml\nloss: {direct: 0.1}\n', 'loss.direct must be a mapping'),
    ('base: lbgnet-mock.yaml\nsimulation: {lbg: {z_rnage: [2.0, 3.0]}}\n',
     r'bad.yaml: unknown key\(s\) simulation.lbg.z_rnage'),
    ('base: lbgnet-mock.yaml\nsimulation: {igm: {tau_x: 1.0}}\n', 'simulation.igm.tau_x'),
    # review 2026-12-01: tracebacks, multi-line messages, truncated integers
    ('base: [lbgnet-base.yaml]\n', r"base must be a configuration file name, not \['lbgnet"),
    ('base: 3\n', 'base must be a configuration file name, not 3'),
    ('a: [1, 2\nb: 3\n', r"cannot read YAML \(did not find expected ',' or '\]' at line 2, column 2\)$"),
    ('base: lbgnet-base.yaml\nnboxes: 40.9\n', 'missing or invalid key'),
    ('base: lbgnet-base.yaml\nselection: {n_thresh: 2.7}\n', 'missing or invalid key'),
    ('base: lbgnet-base.yaml\ngrid: {nbins: 800.5}\n', 'missing or invalid key'),
    # review 2026-12-02: NaN, infinite and boolean numbers, bad line wavelengths and names
    ('base: lbgnet-base.yaml\ngrid: {dwave: .nan}\n', r'invalid key \(ValueError\(nan\)'),
    ('base: lbgnet-base.yaml\ngrid: {dwave: .inf}\n', r'invalid key \(ValueError\(inf\)'),
    ('base: lbgnet-base.yaml\ngrid: {wave_min: true}\n', r'invalid key \(ValueError\(True\)'),
    ('base: lbgnet-base.yaml\nselection: {c_thresh: true}\n', r'ValueError\(True\)'),
    ('base: lbgnet-base.yaml\nlines: {LYA: 0, CIV: 1549.06}\n',
     'the rest wavelength of LYA must be a finite number > 0'),
    ('base: lbgnet-base.yaml\nlines: {LYA: .nan}\n', 'the rest wavelength of LYA'),
    ('base: lbgnet-base.yaml\nlines: {LYA: -1215.67}\n', 'the rest wavelength of LYA'),
    ('base: lbgnet-base.yaml\nlines: {LYA: 1215.67, lya: 1215.7}\n', 'unique'),
    ('base: lbgnet-base.yaml\nlines: {}\n', 'not an empty mapping'),
    # review 2026-12-05: a key written twice was silently the last one
    ('base: lbgnet-base.yaml\nnboxes: 20\nnboxes: 40\n',
     r"cannot read YAML \(duplicate key 'nboxes' \(first at line 2\) at line 3, column 1\)$"),
    ('base: lbgnet-default.yaml\ntraining:\n  epochs: 3\n  seed: 1\n  epochs: 30\n',
     r"duplicate key 'epochs' \(first at line 3\) at line 5, column 3"),
])
def test_bad_configs(tmp_path, text, match):
    path = tmp_path / 'bad.yaml'
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as err:
        load_config(str(path))
    assert '\n' not in str(err.value)


def test_model_description_given_as_config(tmp_path):
    """A model's NAME.json given to --config says what it is (was: unknown section "format")."""
    import json
    path = tmp_path / 'm.json'
    path.write_text(json.dumps({'format': 'lbgnet-model', 'format_version': 1, 'config': {}}))
    with pytest.raises(ConfigError, match=r'm\.json: a model description, not a configuration'):
        load_config(str(path))


def test_config_file_that_is_not_text(tmp_path):
    path = tmp_path / 'binary.yaml'
    path.write_bytes(b'nboxes: 40\n\xd0\x00\xff\xfe garbage\n')
    with pytest.raises(ConfigError, match='binary.yaml: cannot read YAML') as err:
        load_config(str(path))
    assert '\n' not in str(err.value)


def test_yaml_merge_keys_may_still_be_overridden(tmp_path):
    """``<<: *anchor`` then a key of the anchor is an override, not a duplicate."""
    path = tmp_path / 'merge.yaml'
    path.write_text('base: lbgnet-base.yaml\n_x: &sel {c_thresh: 0.5, n_thresh: 2}\n'
                    'selection: {<<: *sel, n_thresh: 3}\n')
    data = load_yaml(path.read_text())
    assert data['selection'] == {'c_thresh': 0.5, 'n_thresh': 3}
    path.write_text('a: {<<: {b: 1}, c: 2, c: 3}\n')
    with pytest.raises(yaml.YAMLError, match="duplicate key 'c'"):
        load_yaml(path.read_text())


def test_integral_floats_still_accepted(tmp_path):
    path = tmp_path / 'ok.yaml'
    path.write_text('base: lbgnet-base.yaml\nnboxes: 40.0\nselection: {n_thresh: 2.0}\n')
    cfg = load_config(str(path))
    assert cfg.nboxes == 40 and cfg.selection.n_thresh == 2


def test_missing_config():
    with pytest.raises(ConfigError, match='no-such.yaml: configuration file not found'):
        read_yaml_config('no-such.yaml')


def test_directory_as_config_is_named_as_such(tmp_path):
    """A directory given as the configuration was reported as "not found"."""
    with pytest.raises(ConfigError, match=f'^{tmp_path}: a directory, not a configuration file$'):
        read_yaml_config(str(tmp_path))


def test_nested_keys_of_the_shipped_configs_are_known():
    """Every shipped configuration passes the nested key checks (they are compared with the
    shipped simulator configuration)."""
    from lbgnet.config import etc_dir
    for path in sorted(etc_dir().glob('*.yaml')):
        read_yaml_config(str(path))
    sim = read_yaml_config('lbgnet-mock.yaml')['simulation']
    assert {'zrange', 'lines'} <= set(sim['lbg'])


def test_resolve_beside(tmp_path, monkeypatch):
    """A file named in a configuration is taken next to it first, else left to the usual
    look-up (current directory, then etc/)."""
    from lbgnet.config import resolve_beside
    (tmp_path / 'cfg').mkdir()
    (tmp_path / 'cfg' / 'my.yaml').write_text('base: lbgnet-base.yaml\n')
    (tmp_path / 'cfg' / 'my-mock.yaml').write_text('base: lbgnet-mock.yaml\n')
    (tmp_path / 'cfg' / 'lbgnet-mock.yaml').write_text('base: lbgnet-sim.yaml\n')
    (tmp_path / 'elsewhere').mkdir()
    monkeypatch.chdir(tmp_path / 'elsewhere')
    cfg = str(tmp_path / 'cfg' / 'my.yaml')
    assert resolve_beside('my-mock.yaml', cfg) == str(tmp_path / 'cfg' / 'my-mock.yaml')
    # a file next to the configuration wins over the shipped one of the same name
    assert resolve_beside('lbgnet-mock.yaml', cfg) == str(tmp_path / 'cfg' / 'lbgnet-mock.yaml')
    assert resolve_beside('lbgnet-sim.yaml', cfg) == 'lbgnet-sim.yaml'
    assert resolve_beside('lbgnet-mock.yaml', 'lbgnet-default.yaml') == 'lbgnet-mock.yaml'
    assert resolve_beside(str(tmp_path / 'x.yaml'), cfg) == str(tmp_path / 'x.yaml')
    assert resolve_beside(None, cfg) is None


@pytest.mark.parametrize('text, match', [
    ('base: lbgnet-default.yaml\nlines: {LY/A: 1215.67}\nselection: {n_thresh: 1}\n',
     r"line names must be a letter .*\['LY/A'\]"),
    ('base: lbgnet-default.yaml\nname: lbgnet/v2\n', r"name must start .* not 'lbgnet/v2'"),
])
def test_names_that_cannot_name_layers_or_files_are_refused_for_training(tmp_path, text, match):
    """A '/' in a line or model name ended a training in a Keras traceback; such names are
    refused before training, while a model file written earlier with one is still read."""
    from lbgnet.train import check_config
    path = tmp_path / 'bad.yaml'
    path.write_text(text)
    config = load_config(str(path))           # reading is not refused
    with pytest.raises(ConfigError, match=match):
        check_config(config)


def test_lines_replace_those_of_the_base(tmp_path):
    """A ``lines:`` block names the lines to use: it replaces the base's list instead of
    being merged into it (a two-line ablation silently trained all 16 lines)."""
    child = tmp_path / 'two.yaml'
    child.write_text('base: lbgnet-default.yaml\nlines: {CIV: 1549.06, LYA: 1215.67}\n'
                     'selection: {n_thresh: 1}\n')
    cfg = load_config(str(child))
    assert cfg.lines.names == ('CIV', 'LYA') and cfg.lines.waves == (1549.06, 1215.67)
    # target.lines too (a QSO target's two lines were merged into the base's seven)
    from lbgnet.targets import apply_target
    child.write_text('base: lbgnet-qso.yaml\ntarget: {lines: {LYA: 1215.67, CIV: 1549.06}}\n'
                     'selection: {n_thresh: 1}\n')
    assert apply_target(load_config(str(child))).lines.names == ('LYA', 'CIV')
    # an empty or false target.lines is refused (it trained a QSO model on the LBG lines)
    for empty in ('{}', '[]', '0', 'false', "''"):
        child.write_text(f'base: lbgnet-qso.yaml\ntarget: {{lines: {empty}}}\n')
        with pytest.raises(ConfigError, match='target.lines must map each line name'):
            apply_target(load_config(str(child)))
    # other sections still merge key by key
    child.write_text('base: lbgnet-default.yaml\nmodel: {dropout: 0.2}\n')
    cfg = load_config(str(child))
    assert cfg.extra['model']['dropout'] == 0.2 and 'conv_layers' in cfg.extra['model']
    assert len(cfg.lines) == 16


def test_lines_as_a_list_is_named(config):
    """A line list given as a YAML list (names only) is refused saying what lines must be,
    not with an AttributeError."""
    data = config.to_dict()
    data['lines'] = ['LYA', 'CIV']
    with pytest.raises(ConfigError, match=r'x\.yaml: lines must map each line name to its rest '
                                          r'wavelength \(NAME: Angstrom\), not a list'):
        config_from_dict(data, 'x.yaml')


def test_selection_of_a_training_config_is_said_to_be_unused(tmp_path, caplog):
    """Training chooses c_thresh and n_thresh on validation: a selection block written in
    the --config file is warned about (it was silently replaced); one only inherited from
    a base is not."""
    import logging
    from lbgnet.config import file_sections
    from lbgnet.scripts.lbg_train import main
    cfg = tmp_path / 'sel.yaml'
    cfg.write_text('base: lbgnet-default.yaml\nselection: {n_thresh: 2}\n')
    assert file_sections(str(cfg)) == {'base', 'selection'}
    assert 'selection' not in file_sections('lbgnet-default.yaml')
    empty = tmp_path / 'empty'
    empty.mkdir()
    # a --name that cannot name the model files: one line, before any work
    caplog.clear()
    assert main(['--config', 'lbgnet-default.yaml', '--outdir', str(tmp_path / 'out'),
                 '--name', 'a/b']) == 1
    assert "model name 'a/b'" in caplog.text
    for path, warned in ((cfg, True), ('lbgnet-default.yaml', False)):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert main(['--config', str(path), '--outdir', str(tmp_path / 'out'),
                         '--val-dir', str(empty)]) == 1        # stops at the empty --val-dir
        assert ('its selection section is not used by training' in caplog.text) == warned


def test_lbg_lines_must_match_the_simulator_in_wavelength():
    """A model line with the simulator's name but another rest wavelength (1216.0 for Lyα's
    1215.67) would train the network on targets that miss the rendered line: refused."""
    import dataclasses
    from lbgnet.config import line_list
    from lbgnet.targets import check_target_lines
    config = load_config()
    check_target_lines(config, config)
    lines = [(n, 1216.0 if n == 'LYA' else w) for n, w in zip(config.lines.names, config.lines.waves)]
    shifted = dataclasses.replace(config, lines=line_list(dict(lines), 'test'))
    with pytest.raises(ConfigError, match='LYA'):
        check_target_lines(shifted, config)


# ---- from the mutation audit of config.py (2026-12-03)
def test_grid_centers(config):                                            # C03
    assert config.grid.centers[0] == 3604.0 and config.grid.centers[-1] == 9996.0


def test_as_int_strings():                                                # C07
    assert as_int('40') == 40
    with pytest.raises(ValueError):
        as_int('40.9')


@pytest.mark.parametrize('text, match', [
    ('nboxes: true\n', 'missing or invalid key'),                          # C08
    ('selection: {n_thresh: true}\n', 'missing or invalid key'),           # C08
    ('grid: {dwave: -8}\n', 'grid needs'),                                 # C38
    ('grid: {wave_min: 0}\n', 'grid needs'),                               # C38
    ('nboxes: 0\n', 'must divide'),                                        # C39
    ('selection: {n_thresh: 0}\n', 'out of range'),                        # C40
    ('selection: {c_thresh: 1.5}\n', 'out of range'),                      # C41
    ('selection: {c_thresh: -0.1}\n', 'out of range'),                     # C41
])
def test_more_bad_values(tmp_path, text, match):
    """Values the mutation audit of config.py found unchecked by the tests."""
    path = tmp_path / 'bad.yaml'
    path.write_text('base: lbgnet-base.yaml\n' + text)
    with pytest.raises(ConfigError, match=match):
        load_config(str(path))


def test_empty_section_keeps_the_base_section(tmp_path):
    """An empty block (its keys commented out) overrides nothing: it replaced the base's
    whole section, so training fell back on code defaults (epochs 30 instead of 1000,
    no simulator, ...) without a word."""
    from lbgnet.train import training_options
    path = tmp_path / 'c.yaml'
    path.write_text('base: lbgnet-default.yaml\ntraining:\n#  epochs: 5\nmodel:\n')
    got, base = load_config(str(path)), load_config('lbgnet-default.yaml')
    assert training_options(got) == training_options(base)
    assert got.extra['model'] == base.extra['model']


def test_circular_base(tmp_path):                                         # C24
    (tmp_path / 'a.yaml').write_text('base: b.yaml\n')
    (tmp_path / 'b.yaml').write_text('base: a.yaml\n')
    with pytest.raises(ConfigError, match='circular "base:" include'):
        load_config(str(tmp_path / 'a.yaml'))


def test_current_directory_before_etc(tmp_path, monkeypatch):             # C23
    (tmp_path / 'lbgnet-base.yaml').write_text((etc_dir() / 'lbgnet-base.yaml').read_text()
                                               .replace('nboxes: 40', 'nboxes: 20'))
    monkeypatch.chdir(tmp_path)
    assert load_config('lbgnet-base.yaml').nboxes == 20


def test_lbgnet_etc(tmp_path, monkeypatch):                               # C12 C13
    shutil.copytree(etc_dir(), tmp_path / 'etc')
    monkeypatch.setenv('LBGNET_ETC', str(tmp_path / 'etc'))
    assert etc_dir() == tmp_path / 'etc'
    (tmp_path / 'empty').mkdir()
    monkeypatch.setenv('LBGNET_ETC', str(tmp_path / 'empty'))
    assert etc_dir() != tmp_path / 'empty'


def test_pixel_must_be_positive(config):                                  # C42
    from lbgnet.config import arm_pixel
    bad = dataclasses.replace(config, extra=dict(config.extra, instrument=dict(
        config.extra['instrument'], pixel=0)))
    with pytest.raises(ConfigError, match='pixel must be > 0'):
        arm_pixel(bad)
    for value in (float('inf'), True):            # inf made every arm a single pixel
        bad = dataclasses.replace(config, extra=dict(config.extra, instrument=dict(
            config.extra['instrument'], pixel=value)))
        with pytest.raises(ConfigError, match='pixel'):
            arm_pixel(bad)


@pytest.mark.parametrize('name', ['-v2', '.hidden', 2024])                # C37 C45
def test_model_names(config, name):
    from lbgnet.config import check_names
    with pytest.raises(ConfigError, match='name must start'):
        check_names(dataclasses.replace(config, extra=dict(config.extra, name=name)))


def test_range_errors_without_a_source_name_the_config():
    data = load_config('lbgnet-base.yaml').to_dict()
    data['nboxes'] = 33
    with pytest.raises(ConfigError, match=r'^config: nboxes=33 must divide'):
        config_from_dict(data)
