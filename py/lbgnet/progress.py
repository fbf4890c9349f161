"""
lbgnet.progress
===============

A progress bar written through the DESI logger (one line per update), for the commands'
long loops: ``[#####.....] 50% 5000/10000 spectra, 30 s, ETA 30 s``.  Lines go to the log
rather than to a terminal, so they read the same in a batch job's log file.
"""
import time

from desiutil.log import get_logger


class Progress:
    """Logger-based progress bar.

    Parameters
    ----------
    total : int
        Items to do.
    unit : str, optional
        What the items are, for the line ['spectra'].
    width : int, optional
        Characters of the bar [30].
    min_interval : float, optional
        Seconds between two lines; the last item is always logged [0: every update].
    """

    def __init__(self, total, unit='spectra', width=30, min_interval=0.0):
        self.total, self.unit, self.width = int(total), unit, int(width)
        self.min_interval = float(min_interval)
        self.done, self.start, self.last = 0, time.time(), None

    def update(self, n=1):
        """Count `n` more items and log the bar (unless one was logged less than
        `min_interval` seconds ago and items remain)."""
        self.done += n
        now = time.time()
        if (self.last is not None and now - self.last < self.min_interval
                and self.done < self.total):
            return
        self.last = now
        elapsed = now - self.start
        frac = self.done / max(self.total, 1)
        eta = elapsed * (1 - frac) / frac if frac > 0 else float('nan')
        bar = '#' * int(round(frac * self.width))
        get_logger().info('[%-*s] %3.0f%% %d/%d %s, %.0f s, ETA %.0f s', self.width, bar,
                          100 * frac, self.done, self.total, self.unit, elapsed, eta)

    def iterate(self, items):
        """Yield `items`, counting each one once the loop body has handled it (also when
        the body skips to the next item with ``continue``)."""
        for item in items:
            yield item
            self.update()
