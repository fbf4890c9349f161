"""
lbgnet.modelspec
================

The ``model`` section of a configuration, read and checked without Keras: the network's
architecture (:func:`architecture`), the line finder's options (:func:`model_options`),
the direct head's (:func:`direct_options`) and the constants the Keras network
(:mod:`lbgnet.model`, :mod:`lbgnet.variants`) and its numpy forward pass
(:mod:`lbgnet.npforward`) share.  Importing it imports neither Keras nor TensorFlow.
"""
from .config import ConfigError, as_float, as_int, check_keys

#: Names of the input channels, in the order of :func:`lbgnet.preprocess.grid_spectra`.
CHANNEL_NAMES = ('flux', 'snr')

#: Keys of the ``model`` configuration section; all are required.
MODEL_KEYS = ('channels', 'conv_layers', 'filters', 'kernel_size', 'strides', 'padding',
              'dropout', 'dense_units', 'offset_margin', 'snr_softening')

#: Epsilon of every batch normalisation of the network (Keras's default, set explicitly so
#: that the numpy forward pass folds the same value).
BN_EPSILON = 1e-3

#: Architectures of ``model.architecture`` (:mod:`lbgnet.variants`).
ARCHITECTURES = ('linefinder', 'direct', 'hybrid')
#: Defaults of ``model.direct``.
DIRECT_DEFAULTS = {'units': 64, 'z_range': [1.5, 5.0]}
#: Columns of the direct head and of its target: (P or truth flag, z, σ or unused).
NDIRECT = 3


def architecture(config):
    """The ``model.architecture`` of a configuration ['linefinder'].

    Raises
    ------
    lbgnet.config.ConfigError
        For an unknown architecture.
    """
    arch = (config.extra.get('model') or {}).get('architecture', 'linefinder')
    if arch not in ARCHITECTURES:
        raise ConfigError(f'{config.source}: model.architecture must be one of {ARCHITECTURES}, '
                          f'not {arch!r}')
    return arch


def direct_options(config):
    """``model.direct`` with defaults: ``units`` (int) and ``z_range`` (z_lo, z_hi)."""
    section = (config.extra.get('model') or {}).get('direct') or {}
    check_keys({'model': {'direct': section}}, config.source)   # also for configs built in code
    opts = dict(DIRECT_DEFAULTS, **section)
    try:
        units = as_int(opts['units'])
        z_lo, z_hi = (as_float(v) for v in opts['z_range'])
    except (TypeError, ValueError) as err:
        raise ConfigError(f'{config.source}: invalid model.direct (units must be an integer, '
                          f'z_range two finite numbers; {err!r})') from None
    if units < 1 or not -1.0 < z_lo < z_hi:
        raise ConfigError(f'{config.source}: model.direct needs units >= 1 and -1 < z_lo < z_hi')
    return {'units': units, 'z_range': (z_lo, z_hi)}


def _positive_int(value):
    """`value` as an int >= 1 (:func:`lbgnet.config.as_int`); ValueError otherwise."""
    out = as_int(value)
    if out < 1:
        raise ValueError(value)
    return out


def _per_layer(value, nlayers, key):
    """Broadcast an int or list option to one value per conv layer."""
    values = list(value) if isinstance(value, (list, tuple)) else [value] * nlayers
    if len(values) != nlayers:
        raise ConfigError(f'model.{key} has {len(values)} values for {nlayers} conv layers')
    try:
        return [_positive_int(v) for v in values]
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f'model.{key} must be integers > 0, not {value!r}') from None


def model_options(config):
    """Validated ``model`` section of a configuration.

    Parameters
    ----------
    config : lbgnet.config.Config

    Returns
    -------
    dict
        The options, with ``filters``, ``kernel_size`` and ``strides`` expanded to one
        value per convolutional layer and ``channels`` converted to indices.

    Raises
    ------
    lbgnet.config.ConfigError
        When the section or a key is missing or a value is invalid.
    """
    section = config.extra.get('model')
    if not isinstance(section, dict):
        raise ConfigError(f'{config.source}: no "model" section')
    missing = [k for k in MODEL_KEYS if k not in section]
    if missing:
        raise ConfigError(f'{config.source}: model section lacks {", ".join(missing)}')
    opts = dict(section)
    for key in ('conv_layers', 'dense_units'):
        try:
            opts[key] = _positive_int(opts[key])
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f'{config.source}: model.{key} must be an integer >= 1, '
                              f'not {opts[key]!r}') from None
    nconv = opts['conv_layers']
    for key, low, high in (('dropout', 0.0, 1.0), ('offset_margin', 0.0, 1.0)):
        try:
            value = as_float(opts[key])
            good = low <= value < high
        except (TypeError, ValueError):
            good = False
        if not good:
            raise ConfigError(f'{config.source}: model.{key} must be a number in '
                              f'[{low:g}, {high:g}), not {opts[key]!r}')
        opts[key] = value
    for key in ('filters', 'kernel_size', 'strides'):
        opts[key] = _per_layer(opts[key], nconv, key)
    channels = opts['channels']
    bad = ([c for c in channels if c not in CHANNEL_NAMES]
           if isinstance(channels, (list, tuple)) else [channels])
    if bad or not channels:
        raise ConfigError(f'{config.source}: model.channels must be taken from {CHANNEL_NAMES}, '
                          f'not {opts["channels"]!r}')
    opts['channel_index'] = [CHANNEL_NAMES.index(c) for c in opts['channels']]
    if opts['snr_softening'] is not None:        # None: no softening
        try:
            opts['snr_softening'] = as_float(opts['snr_softening'])
            good = opts['snr_softening'] > 0
        except (TypeError, ValueError):
            good = False
        if not good:
            raise ConfigError(f'{config.source}: model.snr_softening must be a number > 0 '
                              f'(or null: no softening), not {section["snr_softening"]!r}')
    if opts['padding'] not in ('same', 'valid'):
        raise ConfigError(f'{config.source}: model.padding must be "same" or "valid"')
    nbins = config.grid.nbins
    for i in range(nconv):          # Keras refuses a layer with no output bin: say why here
        kernel, stride = opts['kernel_size'][i], opts['strides'][i]
        nbins = -(-nbins // stride) if opts['padding'] == 'same' else (nbins - kernel) // stride + 1
        if nbins < 1:
            raise ConfigError(f'{config.source}: conv_{i + 1} leaves no bins '
                              f'(padding {opts["padding"]}, kernel {kernel}, stride {stride}); '
                              'reduce layers, kernels or strides')
    return opts
