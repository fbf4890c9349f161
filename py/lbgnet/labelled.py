"""
lbgnet.labelled
===============

Training batches from labelled spectra read from files (real spectra with visual or
other labels, or mock files standing in for them), optionally mixed with simulated
spectra.

An epoch is one pass over the labelled spectra in a random order.  Every epoch each
spectrum is augmented afresh on its arms, then put on the network grid by
:func:`lbgnet.preprocess.grid_spectra` (the production gridding):

* extra noise as if observed to a random fraction of its depth, uniform in
  [``depth_min``, 1] (:func:`lbgnet.sim.augment.degrade_depth`);
* the masks of the simulator's ``generator.augment`` (b/r overlap, chunks, Lyα of LBGs;
  :func:`lbgnet.sim.augment.augment_masks`).

Neither a redshift shift nor a wavelength jitter is applied: the noise, the sky residuals
and the instrument of an observed spectrum belong to its observed wavelengths.  The
simulated part of a mixed batch gets everything the simulator does
(:class:`lbgnet.sim.generator.MockBatches`).

Batch ``i`` of epoch ``e`` is a pure function of ``(seed, e, i)`` like the simulated
batches: the order of the epoch comes from the stream ``(seed, STREAM_TAG, e)``, the
augmentations of batch ``i`` from ``(seed, STREAM_TAG, e, i + 1)``.  (numpy treats trailing
zeros of a seed as absent, hence ``i + 1``; :data:`STREAM_TAG` is larger than any epoch
number, so these streams never coincide with the simulator's ``(seed, e, i)``.)
"""
import dataclasses

import numpy as np

from .preprocess import grid_spectra
from .sim.augment import AugmentConfig, augment_masks, degrade_depth
from .sim.generator import batch_outputs

#: Seed-stream tag of the labelled batches: the second word of their streams, where the
#: simulated batches have their epoch number (so the two never share a stream).
STREAM_TAG = 2_000_000_007


class FileBatches:
    """Training batches of labelled spectra, indexed like a Keras dataset.

    Parameters
    ----------
    spectra : lbgnet.io.labelled.LabelledSpectra
    grid : lbgnet.config.Grid
    encode : callable, optional
        ``encode(truth) -> targets``; None: targets are omitted.
    batch_size : int, optional
        Spectra per batch, labelled and simulated together [256].
    seed : int, optional
        [0].
    augment : AugmentConfig or dict, optional
        Masking augmentations [none].  Its wavelength jitter is not used (set to 0 in
        the ``augment`` attribute).
    depth_min : float, optional
        Lowest depth fraction of :func:`lbgnet.sim.augment.degrade_depth`, in (0, 1]
        [0.5]; 1 adds no noise.
    simulator : lbgnet.sim.generator.MockBatches, optional
        Source of the simulated part of each batch (its ``batch_size`` spectra per batch,
        drawn with its own streams); None: labelled spectra only.
    channels : sequence of int, optional
        Input channels to keep [all].
    return_truth : bool, optional
        ``__getitem__`` also returns the truth table [False].

    Notes
    -----
    Each batch holds ``batch_size − simulator.batch_size`` labelled spectra; the epoch has
    as many batches as it takes to show every labelled spectrum once, and the last one is
    completed with other labelled spectra drawn at random (repeats only when there are
    fewer labelled spectra than a batch holds).
    """

    def __init__(self, spectra, grid, encode=None, batch_size=256, seed=0, augment=None,
                 depth_min=0.5, simulator=None, channels=None, return_truth=False):
        self.spectra = spectra
        self.grid = grid
        self.encode = encode
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        if not isinstance(augment, AugmentConfig):
            augment = AugmentConfig.from_dict(augment)
        self.augment = dataclasses.replace(augment, p_jitter=0.0)
        self.depth_min = float(depth_min)
        self.simulator = simulator
        self.channels = None if channels is None else list(channels)
        self.return_truth = bool(return_truth)
        self.epoch = 0
        nsim = 0 if simulator is None else simulator.batch_size
        self.nfile = self.batch_size - nsim
        if not 0 < self.depth_min <= 1:
            raise ValueError(f'depth_min must be in (0, 1], not {depth_min}')
        if self.nfile < 1:
            raise ValueError(f'batches of {self.batch_size} leave no room for labelled spectra '
                             f'beside {nsim} simulated ones')
        if len(spectra) == 0:
            raise ValueError('no labelled spectra')
        self.batches_per_epoch = -(-len(spectra) // self.nfile)
        self._orders = {}            # epoch -> order: computed once, not once per batch

    def __len__(self):
        return self.batches_per_epoch

    def on_epoch_end(self):
        """Move to the next epoch (new order, noise and masks; new simulated spectra)."""
        self.epoch += 1
        if self.simulator is not None:
            self.simulator.on_epoch_end()

    def order(self, epoch):
        """Labelled spectra of each batch of `epoch`: shape (batches_per_epoch, nfile).

        Kept for the two latest epochs asked (worker threads may compute one twice, with
        the same result).
        """
        epoch = int(epoch)
        order = self._orders.get(epoch)
        if order is None:           # a new dict, never one another thread is reading, edited
            order = self._compute_order(epoch)
            kept = {e: o for e, o in self._orders.items() if e >= epoch - 1}
            kept[epoch] = order
            self._orders = kept
        return order

    def _compute_order(self, epoch):
        """The order of :meth:`order`, drawn from the stream ``(seed, STREAM_TAG, epoch)``."""
        n, total = len(self.spectra), self.batches_per_epoch * self.nfile
        rng = np.random.default_rng([self.seed, STREAM_TAG, int(epoch)])
        idx = rng.permutation(n)
        need = total - n
        if need:                # complete the last batch with spectra it does not hold yet
            rest = np.setdiff1d(np.arange(n), idx[total - self.nfile:])
            if rest.size >= need:
                fill = rng.choice(rest, need, replace=False)
            else:               # fewer labelled spectra than a batch holds: repeats
                fill = np.concatenate([rng.permutation(rest),
                                       rng.choice(n, need - rest.size, replace=True)])
            idx = np.concatenate([idx, fill])
        return idx.reshape(self.batches_per_epoch, self.nfile)

    def rng(self, epoch, index):
        """The random generator of the augmentations of batch `index` of `epoch`."""
        return np.random.default_rng([self.seed, STREAM_TAG, int(epoch), int(index) + 1])

    def __getitem__(self, index):
        if not 0 <= index < self.batches_per_epoch:
            raise IndexError(f'batch {index} out of range 0..{self.batches_per_epoch - 1}')
        X, truth = self.labelled_batch(self.epoch, index)
        if self.simulator is not None:
            from astropy.table import Table, vstack
            Xs, sim_truth = self.simulator.simulate(self.epoch, index)
            if self.channels is not None:
                Xs = Xs[..., self.channels]
            X = np.concatenate([X, Xs])
            sim = Table({c: sim_truth[c] for c in ('CLASS', 'Z_TRUE', 'RMAG')})
            sim['TARGETID'] = np.full(len(sim), -1, dtype=np.int64)
            sim['DEPTH_FRAC'] = np.ones(len(sim), dtype=np.float32)
            truth = vstack([truth, sim])
        return batch_outputs(X, truth, self.encode, self.return_truth)

    def labelled_batch(self, epoch, index):
        """Augmented, gridded labelled spectra of one batch.

        Returns
        -------
        X : numpy.ndarray
            Shape (nfile, nbins, nchannels), float32.
        truth : astropy.table.Table
            TARGETID, CLASS, Z_TRUE, RMAG of those spectra, with DEPTH_FRAC (the depth
            fraction drawn).  (In :meth:`__getitem__`, simulated rows follow, with
            TARGETID −1 and DEPTH_FRAC 1.)
        """
        from astropy.table import Table
        sp = self.spectra
        rows = self.order(epoch)[index]
        rng = self.rng(epoch, index)
        fluxes = {b: sp.fluxes[b][rows] for b in sp.bands}
        ivars = {b: sp.ivars[b][rows] for b in sp.bands}
        truth = Table({c: sp.truth[c][rows] for c in ('TARGETID', 'CLASS', 'Z_TRUE', 'RMAG')})
        frac = rng.uniform(self.depth_min, 1.0, rows.size)
        degrade_depth(fluxes, ivars, frac, rng)
        augment_masks(sp.waves, ivars, truth, rng, self.augment)
        X, _, _ = grid_spectra([sp.waves[b] for b in sp.bands], [fluxes[b] for b in sp.bands],
                               [ivars[b] for b in sp.bands], self.grid)
        truth['DEPTH_FRAC'] = frac.astype(np.float32)
        if self.channels is not None:
            X = np.ascontiguousarray(X[..., self.channels])
        return X, truth
