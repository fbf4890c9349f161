"""lbgnet.progress: the logged progress bar of the commands' long loops."""
import logging

from lbgnet.progress import Progress


def _lines(caplog):
    return [r.getMessage() for r in caplog.records if '%' in r.getMessage()]


def test_every_update_logged_without_interval(caplog):
    with caplog.at_level(logging.INFO):
        progress = Progress(4, unit='files')
        progress.update(1)
        progress.update(3)
    lines = _lines(caplog)
    assert len(lines) == 2
    assert ' 25% 1/4 files' in lines[0] and '100% 4/4 files' in lines[1]
    assert lines[1].startswith('[' + '#' * 30 + ']')


def test_interval_throttles_but_the_last_item_is_logged(caplog):
    """A loop over thousands of files logs at most one line per interval, and always the
    end; iterate() counts items that the loop body skips with continue."""
    with caplog.at_level(logging.INFO):
        progress = Progress(1000, unit='catalogues', min_interval=3600.0)
        seen = 0
        for i in progress.iterate(range(1000)):
            seen += 1
            if i % 2:
                continue
    lines = _lines(caplog)
    assert seen == 1000 and progress.done == 1000
    assert len(lines) == 2                       # the first update, then the end only
    assert '1/1000 catalogues' in lines[0] and '100% 1000/1000 catalogues' in lines[1]


def test_elapsed_time_and_eta(caplog, monkeypatch):
    """Half done after 10 s: 10 s elapsed, 10 s to go (no test looked at the times)."""
    from types import SimpleNamespace
    import lbgnet.progress
    clock = iter([100.0, 110.0, 130.0])       # the progress module's clock only
    monkeypatch.setattr(lbgnet.progress, 'time', SimpleNamespace(time=lambda: next(clock)))
    with caplog.at_level(logging.INFO):
        progress = Progress(10)
        progress.update(5)
        progress.update(5)
    lines = _lines(caplog)
    assert lines[0].endswith('5/10 spectra, 10 s, ETA 10 s'), lines
    assert lines[1].endswith('10/10 spectra, 30 s, ETA 0 s'), lines
