"""
lbgnet.sim.generator
====================

In-memory training data: batches of network inputs simulated on the fly with the
same physics, instrument and :func:`lbgnet.preprocess.grid_spectra` as the mock
files (and the production reader), so training and production inputs cannot drift.

Batch ``i`` of epoch ``e`` is a pure function of ``(seed, e, i)``: a fresh
population (continuous z and magnitude), fresh noise at a random effective exposure
time and fresh augmentations (:mod:`lbgnet.sim.augment`) every epoch.  (``model.fit``
calls ``on_epoch_end`` once before its first epoch, so training epoch e, counted from 1
as in ``history.csv``, uses stream e.)

:class:`MockBatches` is plain numpy; :func:`as_pydataset` wraps it in a
``keras.utils.PyDataset`` (Keras is imported only there) for ``model.fit``, with
optional worker threads or processes.
"""
import copy
import functools

import numpy as np

from ..preprocess import grid_spectra
from .augment import AugmentConfig, augment_masks, jitter_wavelength
from .instrument import observe
from .mock import draw_efftime, fibre_failures, render_models


def generator_settings(config):
    """The ``generator`` section of a mock configuration (empty dict when absent)."""
    return dict(config.extra.get('generator') or {})


class MockBatches:
    """Simulated training batches, indexed like a Keras dataset.

    Parameters
    ----------
    setup : lbgnet.sim.mock.MockSetup
        Configuration, instrument and optional templates.
    encode : callable, optional
        ``encode(truth) -> targets`` (an array or a dict of arrays), e.g.
        ``lambda t: lbgnet.labels.encode_boxes(t, config)``.  None: targets are omitted.
    batch_size, batches_per_epoch : int, optional
        [``generator`` section of the configuration, else 256 and 100].
    seed : int, optional
        [0].
    class_fractions : dict, optional
        CLASS -> fraction, overriding ``simulation.class_fractions``.
    zrange, rmag_range : (float, float), optional
        LBG redshift and r-magnitude ranges [configuration].
    efftime_range : (float, float), optional
        Effective exposure time range (s) [``generator.efftime_range``, else
        ``mock.efftime_range``].
    augment : AugmentConfig or dict, optional
        [``generator.augment``; no augmentation when absent].
    fibre_failures : bool, optional
        Include the configured dead fibres/arms [``generator.fibre_failures``, False].
    channels : sequence of int, optional
        Input channels to keep (0 normalised flux, 1 S/N) [all].
    return_truth : bool, optional
        ``__getitem__`` also returns the truth table [False].
    """

    def __init__(self, setup, encode=None, batch_size=None, batches_per_epoch=None, seed=0,
                 class_fractions=None, zrange=None, rmag_range=None, efftime_range=None,
                 augment=None, fibre_failures=None, channels=None, return_truth=False):
        gen = generator_settings(setup.config)
        mockcfg = setup.config.extra.get('mock', {})
        self.setup = setup if class_fractions is None else _with_fractions(setup, class_fractions)
        self.encode = encode
        self.batch_size = int(batch_size or gen.get('batch_size', 256))
        self.batches_per_epoch = int(batches_per_epoch or gen.get('batches_per_epoch', 100))
        self.seed = int(seed)
        self.population = {k: v for k, v in (('zrange', zrange), ('rmag_range', rmag_range))
                           if v is not None}
        self.efftime_range = tuple(efftime_range or gen.get('efftime_range')
                                   or mockcfg['efftime_range'])
        if not isinstance(augment, AugmentConfig):
            augment = AugmentConfig.from_dict(gen.get('augment') if augment is None else augment)
        self.augment = augment
        self.fibre_failures = bool(gen.get('fibre_failures', False) if fibre_failures is None
                                   else fibre_failures)
        self.channels = None if channels is None else list(channels)
        self.return_truth = bool(return_truth)
        self.epoch = 0
        if self.batch_size < 1 or self.batches_per_epoch < 1:
            raise ValueError('batch_size and batches_per_epoch must be >= 1')

    def __len__(self):
        return self.batches_per_epoch

    def __getitem__(self, index):
        if not 0 <= index < self.batches_per_epoch:
            raise IndexError(f'batch {index} out of range 0..{self.batches_per_epoch - 1}')
        X, truth = self.simulate(self.epoch, index)
        return batch_outputs(X, truth, self.encode, self.return_truth)

    def on_epoch_end(self):
        """Move to the next epoch (new spectra, noise and augmentations)."""
        self.epoch += 1

    def rng(self, epoch, index):
        """The random generator of batch `index` of `epoch`."""
        return np.random.default_rng([self.seed, int(epoch), int(index)])

    def simulate(self, epoch, index):
        """Network input and truth of one batch.

        Returns
        -------
        X : numpy.ndarray
            Shape (batch_size, nbins, nchannels), float32.
        truth : astropy.table.Table
            The population, with EFFTIME (s) and WAVE_SHIFT (Å) added.
        """
        from .population import draw_population
        rng = self.rng(epoch, index)
        truth = draw_population(self.setup.simcfg, self.batch_size, rng, **self.population)
        return self.observe_truth(truth, rng), truth

    def observe_truth(self, truth, rng):
        """Render, augment, add noise to and grid the spectra of a truth table.

        Parameters
        ----------
        truth : astropy.table.Table
            From :func:`lbgnet.sim.population.draw_population`; EFFTIME and WAVE_SHIFT
            columns are added (replaced).
        rng : numpy.random.Generator

        Returns
        -------
        numpy.ndarray
            Shape (len(truth), nbins, nchannels), float32.
        """
        setup, inst, cfg = self.setup, self.setup.instrument, self.augment
        models = render_models(setup, truth)
        models, shift = jitter_wavelength(inst.waves, models, rng, cfg.p_jitter, cfg.jitter_sigma)
        efftime = draw_efftime(len(truth), self.efftime_range, rng)
        fluxes, ivars = observe(inst, models, efftime, rng)
        augment_masks(inst.waves, ivars, truth, rng, cfg)
        if self.fibre_failures:
            mockcfg = setup.config.extra['mock']
            _, dead = fibre_failures(len(truth), inst.bands, mockcfg['dead_fibre_fraction'],
                                     mockcfg['dead_arm_fraction'], rng)
            for iarm, band in enumerate(inst.bands):
                ivars[band][dead[:, iarm]] = 0.0
        bands = inst.bands
        X, _, _ = grid_spectra([inst.waves[b] for b in bands], [fluxes[b] for b in bands],
                               [ivars[b] for b in bands], setup.config.grid)
        truth['EFFTIME'] = efftime.astype(np.float32)
        truth['WAVE_SHIFT'] = shift.astype(np.float32)
        if self.channels is not None:
            X = np.ascontiguousarray(X[..., self.channels])
        return X


def batch_outputs(X, truth, encode=None, return_truth=False):
    """What a training dataset returns for one batch: ``X``, ``(X, targets)``,
    ``(X, truth)`` or ``(X, targets, truth)``.

    Parameters
    ----------
    X : numpy.ndarray
        Network input of the batch.
    truth : astropy.table.Table
    encode : callable, optional
        ``encode(truth) -> targets``; None: no targets.
    return_truth : bool, optional
    """
    out = [X]
    if encode is not None:
        out.append(encode(truth))
    if return_truth:
        out.append(truth)
    return tuple(out) if len(out) > 1 else X


def _with_fractions(setup, fractions):
    """A copy of `setup` whose simulator configuration uses other class fractions."""
    from dataclasses import replace
    simcfg = copy.deepcopy(setup.simcfg)
    simcfg['simulation']['class_fractions'] = {str(k): float(v) for k, v in fractions.items()}
    return replace(setup, simcfg=simcfg)


@functools.lru_cache(maxsize=None)
def pydataset_class():
    """The ``keras.utils.PyDataset`` subclass wrapping :class:`MockBatches` (imports Keras).

    Also reachable as ``lbgnet.sim.generator.MockPyDataset``; its ``__getitem__`` and
    ``on_epoch_end`` forward to the wrapped :class:`MockBatches`.
    """
    import keras

    class MockPyDataset(keras.utils.PyDataset):
        """Keras view of a :class:`MockBatches`."""

        def __init__(self, batches, **kwargs):
            super().__init__(**kwargs)
            self.batches = batches

        def __len__(self):
            return len(self.batches)

        def __getitem__(self, index):
            return self.batches[index]

        def on_epoch_end(self):
            self.batches.on_epoch_end()

    MockPyDataset.__module__ = __name__
    MockPyDataset.__qualname__ = 'MockPyDataset'
    return MockPyDataset


def __getattr__(name):
    if name == 'MockPyDataset':
        return pydataset_class()
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def as_pydataset(batches, workers=1, use_multiprocessing=False, max_queue_size=10):
    """Wrap :class:`MockBatches` in a ``keras.utils.PyDataset`` for ``model.fit``.

    Parameters
    ----------
    batches : MockBatches
    workers : int, optional
        Threads (or processes) simulating batches ahead of the training loop [1].
    use_multiprocessing : bool, optional
        Use processes instead of threads [False].
    max_queue_size : int, optional
        Batches prepared ahead [10].

    Returns
    -------
    MockPyDataset
        A ``keras.utils.PyDataset``.
    """
    return pydataset_class()(batches, workers=workers, use_multiprocessing=use_multiprocessing,
                             max_queue_size=max_queue_size)
