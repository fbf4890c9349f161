"""
lbgnet.sim
==========

Physical simulator of DESI-like spectra of Lyman Break Galaxies and their
contaminants (quasars, low-redshift galaxies, stars).

* :mod:`lbgnet.sim.population` draws a truth table (class, redshift, magnitude and
  every physical parameter);
* :mod:`lbgnet.sim.render` turns it into noiseless observed-frame spectra on any grid;
* :mod:`lbgnet.sim.lbg`, :mod:`~lbgnet.sim.qso`, :mod:`~lbgnet.sim.galaxy`,
  :mod:`~lbgnet.sim.star` hold the class models, :mod:`~lbgnet.sim.igm` the
  intergalactic transmission, :mod:`~lbgnet.sim.profiles` the line rendering and
  :mod:`~lbgnet.sim.photometry` the magnitude normalisation.

The instrument (resolution, noise, files) is added on top by the instrument modules.
See ``doc/sim_physics.rst``.
"""
from .population import CLASSES, draw_population, load_sim_config
from .render import line_wavelengths, render_arms, render_spectra

__all__ = ['CLASSES', 'draw_population', 'load_sim_config', 'render_spectra', 'render_arms',
           'line_wavelengths']
