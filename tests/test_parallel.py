"""split_work: a deterministic, balanced partition of files over ranks."""
import numpy as np
import pytest

from lbgnet.parallel import split_work


@pytest.mark.parametrize('size', [1, 2, 3, 7])
def test_partition_is_exact(size):
    items = [f'f{i}' for i in range(23)]
    weights = np.random.default_rng(size).uniform(1, 100, len(items))
    parts = [split_work(items, size, r, weights) for r in range(size)]
    flat = [x for p in parts for x in p]
    assert sorted(flat) == sorted(items)
    assert len(flat) == len(set(flat))


def test_largest_first_and_balanced():
    rng = np.random.default_rng(0)
    items = list(range(40))
    weights = rng.pareto(1.5, len(items)) + 1
    size = 4
    parts = [split_work(items, size, r, weights) for r in range(size)]
    for part in parts:
        w = weights[part]
        assert np.all(np.diff(w) <= 0), 'each rank gets its files largest first'
    loads = np.array([weights[p].sum() for p in parts])
    # Greedy LPT bound: max load <= mean load + largest single item.
    assert loads.max() <= weights.sum() / size + weights.max() + 1e-9
    # Much better than the naive round-robin on the input order here.
    naive = np.array([weights[r::size].sum() for r in range(size)])
    assert loads.max() - loads.min() <= naive.max() - naive.min()


def test_deterministic_and_unweighted():
    items = ['a', 'b', 'c', 'd', 'e']
    assert split_work(items, 2, 0) == split_work(items, 2, 0)
    assert split_work(items, 2, 0) == ['a', 'c', 'e']
    assert split_work(items, 2, 1) == ['b', 'd']
    assert split_work(items, 10, 7) == []
    assert split_work([], 3, 0) == []


def test_docstring_example():
    assert split_work(['a', 'b', 'c', 'd'], 2, 0, weights=[1, 5, 2, 3]) == ['b', 'a']
    assert split_work(['a', 'b', 'c', 'd'], 2, 1, weights=[1, 5, 2, 3]) == ['d', 'c']


@pytest.mark.parametrize('size, rank, weights', [(0, 0, None), (2, 2, None), (2, -1, None),
                                                 (2, 0, [1.0]), (2, 0, [1, -1, 1]),
                                                 (2, 0, [1, np.nan, 1])])
def test_bad_arguments(size, rank, weights):
    with pytest.raises(ValueError):
        split_work(['a', 'b', 'c'], size, rank, weights)


def test_threads_per_rank():
    from lbgnet.parallel import threads_per_rank
    shared = [frozenset({0, 1, 2, 3})] * 3
    assert [threads_per_rank(shared, r) for r in range(3)] == [1, 1, 1]
    assert threads_per_rank([frozenset(range(8))] * 2, 1) == 4
    bound = [frozenset({0, 1}), frozenset({2, 3}), frozenset({4, 5, 6})]
    assert [threads_per_rank(bound, r) for r in range(3)] == [2, 2, 3]


def test_equal_weights_keep_input_order():
    """Among equal weights the input order is kept (stable sort), also beyond 16 items."""
    items = list(range(100))
    weights = [2.0, 1.0] * 50
    assert split_work(items, 1, 0, weights) == items[0::2] + items[1::2]


def test_zero_weights_are_allowed():
    """Weight 0 is valid (an empty file) and such items are still handed out, once each."""
    parts = [split_work(['a', 'b', 'c'], 2, r, weights=[0.0, 3.0, 0.0]) for r in range(2)]
    assert parts == [['b'], ['a', 'c']]


def test_zero_weight_items_are_shared_between_ranks():
    """Items of weight 0 (empty or missing files) all went to rank 0, whose load stayed
    the least: of ranks with equal loads the one with the fewest items gets the next."""
    shares = [split_work(list('abcde'), 2, r, weights=[0] * 5) for r in range(2)]
    assert shares == [['a', 'c', 'e'], ['b', 'd']]
    shares = [split_work(list('abcd'), 3, r, weights=[5, 0, 0, 0]) for r in range(3)]
    assert sorted(map(len, shares)) == [1, 1, 2] and shares[0] == ['a']


def test_only_rank_zero_prints_option_errors(capsys, monkeypatch):
    """Under an MPI launcher every rank parses the command line: a bad option is printed
    once (rank 0), and every rank exits with status 2."""
    import pytest
    from lbgnet.parallel import RankZeroParser, launcher_rank
    assert launcher_rank({}) == 0 and launcher_rank({'PMI_RANK': '3'}) == 3
    assert launcher_rank({'OMPI_COMM_WORLD_RANK': 'x', 'SLURM_PROCID': '5'}) == 5
    for rank, printed in (('0', True), ('1', False)):
        monkeypatch.setenv('PMI_RANK', rank)
        parser = RankZeroParser(prog='cmd')
        parser.add_argument('--n', type=int)
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(['--n', 'x'])
        assert exit_info.value.code == 2
        assert ('cmd: error:' in capsys.readouterr().err) == printed


def test_rank_prefix_names_each_line_once():
    """Lines get their rank's prefix once; a line rank 0 writes about another rank keeps
    that rank's name alone (it read 'rank 0: rank 1: ...')."""
    import logging
    from lbgnet.ranklog import RankPrefix
    prefix = RankPrefix(0)

    def text(msg, *args):
        record = logging.LogRecord('x', logging.INFO, __file__, 1, msg, args, None)
        prefix.filter(record)
        prefix.filter(record)                    # a record seen by two handlers
        return record.getMessage()
    assert text('%d files', 3) == 'rank 0: 3 files'
    assert text('rank 1: --outdir not writable') == 'rank 1: --outdir not writable'
    assert text('ranking 3 files') == 'rank 0: ranking 3 files'
    assert text('every rank: no config') == 'every rank: no config'
    assert text('run: 3 files done') == 'run: 3 files done'


def test_run_wide_lines_name_the_run_not_rank_0():
    """Under rank_prefix, what rank 0 logs for the whole run (its summary, the files it
    found for every rank) starts with 'run:', not 'rank 0:' as if rank 0's alone; lines
    naming a rank keep it, the rank's prefix comes back after the block, and nothing is
    added without several ranks."""
    import logging
    from types import SimpleNamespace
    from desiutil.log import get_logger
    from lbgnet.ranklog import rank_prefix, run_wide
    handlers = get_logger().parent.handlers
    assert handlers

    def text(msg):
        record = logging.LogRecord('x', logging.INFO, __file__, 1, msg, None, None)
        for handler in handlers:
            handler.filter(record)
        return record.getMessage()
    with rank_prefix(SimpleNamespace(rank=0, size=2)):
        assert text('3 files done') == 'rank 0: 3 files done'
        with run_wide():
            assert text('3 files done') == 'run: 3 files done'
            assert text('rank 1: cannot load') == 'rank 1: cannot load'
        assert text('wrote x') == 'rank 0: wrote x'
    with run_wide():
        assert text('3 files done') == '3 files done'
    assert text('3 files done') == '3 files done'


class _Gathering:
    """A communicator stand-in whose allgather returns the ranks' values given."""

    def __init__(self, values):
        self.values = values

    def allgather(self, value):
        return list(self.values)


def test_stop_if_any_failed_says_whose_failure_it_is(caplog):
    """One line when every rank failed alike (``every rank:`` with several ranks, plain
    with one), else one ``rank N:`` line per failed rank; False when none failed."""
    import logging
    from lbgnet.parallel import stop_if_any_failed
    log = logging.getLogger('lbgnet-test-stop')

    def lines(comm, problem):
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger=log.name):
            stopped = stop_if_any_failed(comm, problem, log)
        return stopped, [r.getMessage() for r in caplog.records]
    assert lines(None, None) == (False, [])
    assert lines(None, 'bad config') == (True, ['bad config'])
    assert lines(_Gathering([None, None]), None) == (False, [])
    assert lines(_Gathering(['x: gone', 'x: gone']), 'x: gone') == (True, ['every rank: x: gone'])
    assert lines(_Gathering([None, 'x: gone']), None) == (True, ['rank 1: x: gone'])
    assert lines(_Gathering(['a', 'b']), 'a') == (True, ['rank 0: a', 'rank 1: b'])


def test_abort_all_on_failure_without_mpi_just_runs():
    """With no communicator (or one rank) the function is called as is, errors included."""
    from lbgnet.parallel import abort_all_on_failure
    assert abort_all_on_failure(None, lambda a, b: a + b, 2, 3) == 5
    with pytest.raises(ZeroDivisionError):
        abort_all_on_failure(None, lambda: 1 / 0)
