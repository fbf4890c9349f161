"""Input discovery over DESI reduction layouts and output naming."""
import os

import pytest

from lbgnet.io.discover import (expand_coadds, file_metadata, find_coadds, output_paths,
                                plan_jobs, redrock_path, walk_files)
from lbgnet.io.errors import InputFileError

HPX = 'healpix/main/dark/100/10016/coadd-main-dark-10016.fits'
HPX2 = 'healpix/sv1/bright/50/5012/coadd-sv1-bright-5012.fits'
TILE = 'tiles/cumulative/80605/20201219/coadd-3-80605-thru20201219.fits'


@pytest.fixture
def redux(tmp_path):
    for rel in (HPX, HPX2, TILE):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b'x' * 10)
        (path.parent / path.name.replace('coadd', 'redrock', 1)).write_bytes(b'')
    (tmp_path / 'healpix/main/dark/100/10016/spectra-main-dark-10016.fits').write_bytes(b'')
    return tmp_path


def test_redrock_path_like_desispec():
    assert redrock_path('/a/coadd/b/coadd-main-dark-1.fits') == '/a/coadd/b/redrock-main-dark-1.fits'
    assert redrock_path('coadd-0-1-thru2.fits') == 'redrock-0-1-thru2.fits'
    with pytest.raises(InputFileError, match='does not start with "coadd"'):
        redrock_path('/a/spectra-main-dark-1.fits')


def test_find_coadds_both_layouts(redux):
    found = [os.path.relpath(p, redux) for p in find_coadds(str(redux))]
    assert found == sorted([HPX, HPX2, TILE])
    assert [os.path.relpath(p, redux) for p in find_coadds(str(redux / 'tiles'))] == [TILE]
    with pytest.raises(InputFileError, match='does not exist'):
        find_coadds(str(redux / 'nope'))


def test_outputs_beside_or_mirrored(redux):
    coadd = str(redux / HPX)
    out, pri = output_paths(coadd)
    assert out == str(redux / 'healpix/main/dark/100/10016/lbg_cnn-main-dark-10016.fits')
    assert pri == str(redux / 'healpix/main/dark/100/10016/priors_lbg-main-dark-10016.fits')
    out, _ = output_paths(coadd, str(redux), '/out')
    assert out == '/out/healpix/main/dark/100/10016/lbg_cnn-main-dark-10016.fits'
    jobs = plan_jobs(find_coadds(str(redux)), root=str(redux), outdir='/out')
    assert [j.output for j in jobs] == sorted(
        '/out/' + os.path.join(os.path.dirname(r), os.path.basename(r).replace('coadd', 'lbg_cnn', 1))
        for r in (HPX, HPX2, TILE))
    assert all(j.redrock.endswith(os.path.basename(j.coadd).replace('coadd', 'redrock', 1)) for j in jobs)
    assert all(j.size == 10 for j in jobs)


def test_plan_refuses_outputs_outside_outdir(tmp_path):
    with pytest.raises(ValueError, match='not below the input directory'):
        plan_jobs([str(tmp_path / 'a/coadd-x.fits'), str(tmp_path / 'b/coadd-x.fits')],
                  root=str(tmp_path / 'a'), outdir=str(tmp_path / 'o'))
    # Without a root, outputs go flat into outdir: two coadds of one name are refused.
    with pytest.raises(ValueError, match='would both write .*lbg_cnn-x.fits .*run these two separately'):
        plan_jobs([str(tmp_path / 'a/coadd-x.fits'), str(tmp_path / 'b/coadd-x.fits')],
                  outdir=str(tmp_path / 'o'))


def test_listed_coadds_write_flat_into_outdir(tmp_path):
    """Without an input directory the outputs do not depend on which other coadds are listed
    (they used to go below the coadds' common directory, which a stray file moved)."""
    a, b = str(tmp_path / 'r/h/1/coadd-main-dark-1.fits'), str(tmp_path / 'r/h/2/coadd-main-dark-2.fits')
    out = str(tmp_path / 'o')
    alone = plan_jobs([a, b], outdir=out)
    assert [j.output for j in alone] == [os.path.join(out, 'lbg_cnn-main-dark-1.fits'),
                                         os.path.join(out, 'lbg_cnn-main-dark-2.fits')]
    assert alone[0].priors == os.path.join(out, 'priors_lbg-main-dark-1.fits')
    typo = str(tmp_path / 'elsewhere/coadd-main-dark-3.fits')        # missing, other tree
    assert plan_jobs([a, b, typo], outdir=out)[:2] == alone
    assert plan_jobs([a], outdir=out)[0] == alone[0]


def test_expand_patterns(redux):
    paths, unmatched = expand_coadds([str(redux / 'healpix/*/*/*/*/coadd-*.fits'),
                                      str(redux / HPX), str(redux / 'missing.fits'),
                                      str(redux / 'none-*.fits')])
    assert [os.path.relpath(p, redux) for p in paths] == [HPX, HPX2, 'missing.fits']
    assert unmatched == [str(redux / 'none-*.fits')]


def test_file_metadata():
    assert file_metadata(HPX) == dict(SURVEY='main', PROGRAM='dark', HPXPIXEL=10016, SPGRP='healpix')
    assert file_metadata('lbg_cnn-3-80605-thru20201219.fits') == dict(
        PETAL=3, TILEID=80605, NIGHT=20201219, SPGRP='cumulative')
    assert file_metadata('coadd-9-1000-20210101.fits')['SPGRP'] == 'pernight'
    assert file_metadata('coadd-whatever.fits') == {}


def test_redrock_path_needs_the_coadd_prefix():
    """Only a leading "coadd" in the file name counts, not one elsewhere in it."""
    with pytest.raises(InputFileError, match='does not start with "coadd"'):
        redrock_path('/a/b/lbg-coadd-main-dark-1.fits')


def test_expand_drops_the_same_file_spelled_differently(redux, monkeypatch):
    """A relative and an absolute spelling of one file are one input; the first one is kept."""
    monkeypatch.chdir(redux)
    paths, unmatched = expand_coadds([HPX, str(redux / HPX), './' + HPX, TILE])
    assert paths == [HPX, TILE] and unmatched == []
    # the same file through a symbolic link to its tree is one input too (two ranks would
    # otherwise write one output at once)
    os.symlink(str(redux), str(redux.parent / 'alias'))
    paths, _ = expand_coadds([HPX, str(redux.parent / 'alias' / HPX)])
    assert paths == [HPX]


def test_plan_single_coadd_and_duplicates(tmp_path):
    """One coadd without root mirrors into outdir itself; two jobs writing one output are refused;
    a missing coadd has size 0 and a non-coadd name has no Redrock file."""
    coadd = str(tmp_path / 'in/x/coadd-main-dark-7.fits')
    (job,) = plan_jobs([coadd], outdir=str(tmp_path / 'o'))
    assert job.output == str(tmp_path / 'o/lbg_cnn-main-dark-7.fits')
    assert job.priors == str(tmp_path / 'o/priors_lbg-main-dark-7.fits')
    assert job.size == 0 and job.redrock == str(tmp_path / 'in/x/redrock-main-dark-7.fits')
    with pytest.raises(ValueError, match='would both write'):
        plan_jobs([coadd, str(tmp_path / 'in/x/./coadd-main-dark-7.fits')])
    os.makedirs(tmp_path / 'in/x')
    os.symlink(str(tmp_path / 'in'), str(tmp_path / 'link'))
    with pytest.raises(ValueError, match='would both write'):           # through a link
        plan_jobs([coadd, str(tmp_path / 'link/x/coadd-main-dark-7.fits')])
    (job,) = plan_jobs([str(tmp_path / 'in/spectra-7.fits')])
    assert job.redrock == '' and job.output == str(tmp_path / 'in/lbg_cnn-spectra-7.fits')
    # without outdir, outputs go beside the coadd even when it is not below root
    (job,) = plan_jobs([coadd], root=str(tmp_path / 'elsewhere'))
    assert job.output == str(tmp_path / 'in/x/lbg_cnn-main-dark-7.fits')


def test_file_metadata_tile_groupings():
    """perexp names give EXPID (not NIGHT), pernight names NIGHT; .fits.gz is accepted."""
    assert file_metadata('coadd-0-1000-exp00012345.fits') == dict(
        PETAL=0, TILEID=1000, EXPID=12345, SPGRP='perexp')
    assert file_metadata('/d/redrock-9-1000-20210101.fits.gz') == dict(
        PETAL=9, TILEID=1000, NIGHT=20210101, SPGRP='pernight')
    assert file_metadata('priors_lbg-sv1-bright-5012.fits.gz')['HPXPIXEL'] == 5012


def test_subfolder_named_like_the_parent_is_below_the_root(tmp_path):
    """A folder called "..old" is inside the input tree, not above it."""
    root = tmp_path / 'redux'
    coadd = root / '..old' / 'coadd-main-dark-1.fits'
    jobs = plan_jobs([str(coadd)], root=str(root), outdir=str(tmp_path / 'out'))
    assert jobs[0].output == str(tmp_path / 'out' / '..old' / 'lbg_cnn-main-dark-1.fits')
    with pytest.raises(ValueError, match='not below the input directory'):
        plan_jobs([str(tmp_path / 'elsewhere' / 'coadd-main-dark-1.fits')], root=str(root),
                  outdir=str(tmp_path / 'out'))


def test_find_coadds_follows_symlinked_directories_once(tmp_path):
    """Symlinked subdirectories are searched; loops, a second link to one directory, a link
    into the tree itself and a file symlink never list a real file twice."""
    root, ext = tmp_path / 'redux', tmp_path / 'elsewhere'
    (root / 'real').mkdir(parents=True)
    ext.mkdir()
    (root / 'real' / 'coadd-main-dark-1.fits').write_bytes(b'x')
    (ext / 'coadd-main-dark-2.fits').write_bytes(b'x')
    (root / 'link').symlink_to(ext)                                    # followed
    (root / 'link2').symlink_to(ext)                                   # same directory again
    (root / 'alias').symlink_to(root / 'real')                         # inside the tree
    (root / 'real' / 'loop').symlink_to(root)                          # loop
    (ext / 'up').symlink_to(tmp_path)                                  # loop through outside
    (root / 'real' / 'coadd-main-dark-9.fits').symlink_to(root / 'real' / 'coadd-main-dark-1.fits')
    found = [os.path.relpath(p, root) for p in find_coadds(str(root))]
    assert found == ['link/coadd-main-dark-2.fits', 'real/coadd-main-dark-1.fits']
    every = walk_files(str(root))
    assert len(every) == len({os.path.realpath(p) for p in every}) == 2


def test_walk_files_filters_names(redux):
    assert walk_files(str(redux / 'healpix/main'), lambda name: name.startswith('spectra-')) == [
        str(redux / 'healpix/main/dark/100/10016/spectra-main-dark-10016.fits')]


def _unlistable(monkeypatch, bad):
    """os.scandir fails on `bad` as it does for a directory without read permission (the
    tests may run as root, whom permissions do not stop)."""
    real = os.scandir

    def scandir(path='.'):
        if os.path.realpath(path) == os.path.realpath(bad):
            raise PermissionError(13, 'Permission denied', str(path))
        return real(path)
    monkeypatch.setattr(os, 'scandir', scandir)


def test_an_unreadable_directory_is_not_skipped_silently(redux, monkeypatch, caplog):
    """A directory that cannot be listed was left out without a word (exit 0 with tiles
    or pixels missing)."""
    from lbgnet.scripts.lbg_afterburner import parse, plan, summarise
    bad = redux / 'healpix/sv1'
    _unlistable(monkeypatch, bad)
    with pytest.raises(InputFileError, match='cannot list this directory .Permission denied'):
        walk_files(str(redux))                       # desi_lbg_zcatalog: refused
    problems = []
    found = [os.path.relpath(p, redux) for p in find_coadds(str(redux), problems)]
    assert found == [HPX, TILE] and problems == [(str(bad), 'cannot list this directory '
                                                            '(Permission denied)')]
    # the afterburner processes the rest and counts the directory as a failed input
    jobs, failed = plan(parse(['--input-dir', str(redux), '--outdir', str(redux / 'out')]))
    assert [os.path.relpath(j.coadd, redux) for j in jobs] == [HPX, TILE]
    assert failed == [f'{bad}: cannot list this directory (Permission denied)']
    assert summarise([], failed) == 1 and f'FAILED {bad}: cannot list' in caplog.text
    _unlistable(monkeypatch, redux)                  # the top itself: one failure, not two
    jobs, failed = plan(parse(['--input-dir', str(redux), '--outdir', str(redux / 'out')]))
    assert jobs == [] and failed == [f'{redux}: cannot list this directory (Permission denied)']


def test_file_links_hard_links_and_compressed_copies_are_one_coadd(tmp_path, caplog):
    """A file symlink into the tree was kept over the real file when it sorted first (its
    Redrock file then missing beside it); a hard link or a .gz copy beside the file was a
    second job (catalogue counted twice by desi_lbg_zcatalog)."""
    root = tmp_path / 'redux'
    (root / 'b').mkdir(parents=True)
    (root / 'a').mkdir()
    (root / 'data').mkdir()
    (root / 'b' / 'coadd-main-dark-1.fits').write_bytes(b'x')
    (root / 'a' / 'coadd-main-dark-1.fits').symlink_to(root / 'b' / 'coadd-main-dark-1.fits')
    (root / 'data' / 'stored.fits').write_bytes(b'y')                  # another name: kept
    (root / 'a' / 'coadd-main-dark-2.fits').symlink_to(root / 'data' / 'stored.fits')
    (root / 'a' / 'coadd-main-dark-3.fits').symlink_to(root / 'nowhere.fits')   # dangling: kept
    (root / 'b' / 'coadd-main-dark-4.fits').write_bytes(b'z')
    os.link(root / 'b' / 'coadd-main-dark-4.fits', root / 'data' / 'coadd-main-dark-4.fits')
    (root / 'b' / 'coadd-main-dark-5.fits').write_bytes(b'w')
    (root / 'b' / 'coadd-main-dark-5.fits.gz').write_bytes(b'v')
    found = [os.path.relpath(p, root) for p in find_coadds(str(root))]
    assert found == ['a/coadd-main-dark-2.fits', 'a/coadd-main-dark-3.fits',
                     'b/coadd-main-dark-1.fits', 'b/coadd-main-dark-4.fits',
                     'b/coadd-main-dark-5.fits']
    assert 'b/coadd-main-dark-5.fits.gz' in caplog.text and 'stored twice' in caplog.text


def test_the_name_beside_its_redrock_file_is_kept(tmp_path, caplog):
    """Of two names of one coadd (a hard link sorting first, a .gz twin whose Redrock file
    alone exists), the one with its Redrock file beside it is processed; the other name
    had been kept and failed for want of a Redrock file."""
    root = tmp_path / 'redux'
    real = root / 'healpix' / '7'
    real.mkdir(parents=True)
    (root / 'extra').mkdir()
    (real / 'coadd-main-dark-7.fits').write_bytes(b'x')
    (real / 'redrock-main-dark-7.fits').write_bytes(b'')
    os.link(real / 'coadd-main-dark-7.fits', root / 'extra' / 'coadd-main-dark-7.fits')
    (real / 'coadd-main-dark-8.fits').write_bytes(b'y')            # gunzip -k of the .gz
    (real / 'coadd-main-dark-8.fits.gz').write_bytes(b'z')
    (real / 'redrock-main-dark-8.fits.gz').write_bytes(b'')
    for name in ('coadd-main-dark-9.fits', 'coadd-main-dark-9.fits.gz',   # both paired:
                 'redrock-main-dark-9.fits', 'redrock-main-dark-9.fits.gz'):  # the plain one
        (real / name).write_bytes(b'')
    found = [os.path.relpath(p, root) for p in find_coadds(str(root))]
    assert found == ['healpix/7/coadd-main-dark-7.fits', 'healpix/7/coadd-main-dark-8.fits.gz',
                     'healpix/7/coadd-main-dark-9.fits']
    assert 'skipped ' + str(real / 'coadd-main-dark-8.fits') in caplog.text


def test_link_to_a_sibling_with_the_same_prefix_is_followed(tmp_path):
    """A link to /t/red2 from inside /t/red points outside the tree (red2 only shares the
    name's prefix): its coadds are found, not pruned as already listed."""
    red, red2 = tmp_path / 'red', tmp_path / 'red2'
    red.mkdir()
    red2.mkdir()
    for kind in ('coadd', 'redrock'):
        (red2 / f'{kind}-main-dark-1.fits').write_bytes(b'')
    os.symlink(red2, red / 'ext')
    assert find_coadds(str(red)) == [str(red / 'ext' / 'coadd-main-dark-1.fits')]


def test_link_to_a_directory_above_the_tree_is_not_followed(tmp_path):
    """A link inside the tree to a directory that holds it (prodA/out/top -> ../..) walked
    the trees beside it: another production's coadds were found (and its catalogues
    stacked by desi_lbg_zcatalog); a link to a sibling tree is still followed."""
    for prod in ('prodA', 'prodB'):
        (tmp_path / prod / 'out').mkdir(parents=True)
        for kind in ('coadd', 'redrock'):
            (tmp_path / prod / 'out' / f'{kind}-main-dark-{len(prod)}{prod[-1]}.fits'
             ).write_bytes(b'')
    os.symlink('../..', tmp_path / 'prodA' / 'out' / 'top')
    os.symlink('/', tmp_path / 'prodA' / 'out' / 'root')
    top = str(tmp_path / 'prodA' / 'out')
    assert [os.path.basename(p) for p in find_coadds(top)] == ['coadd-main-dark-5A.fits']
    os.symlink(tmp_path / 'prodB', tmp_path / 'prodA' / 'out' / 'sibling')
    assert [os.path.relpath(p, top) for p in find_coadds(top)] == [
        'coadd-main-dark-5A.fits', os.path.join('sibling', 'out', 'coadd-main-dark-5B.fits')]


def test_hidden_directories_are_not_walked(tmp_path):
    """A file system's .snapshots (or a copy set aside as .old) holds old copies of the
    tree's coadds: they were found and processed again."""
    red = tmp_path / 'red'
    for sub in ('1000', os.path.join('.snapshots', 'daily', '1000'), '.old'):
        (red / sub).mkdir(parents=True)
        for kind in ('coadd', 'redrock'):
            (red / sub / f'{kind}-main-dark-1000.fits').write_bytes(b'')
    assert find_coadds(str(red)) == [str(red / '1000' / 'coadd-main-dark-1000.fits')]


def test_of_names_without_redrock_file_the_real_one_is_kept(tmp_path):
    """One coadd under two names in the tree, a symlink (sorting first) and a hard link,
    both to a file outside it: with no Redrock file beside either, the name that is not a
    link is kept; a Redrock file beside the symlink makes it the one kept."""
    root, ext = tmp_path / 'redux', tmp_path / 'store'
    (root / 'a').mkdir(parents=True)
    (root / 'b').mkdir()
    ext.mkdir()
    for pixel in (6, 9):
        (ext / f'stored{pixel}.fits').write_bytes(b'x')
        (root / 'a' / f'coadd-main-dark-{pixel}.fits').symlink_to(ext / f'stored{pixel}.fits')
        os.link(ext / f'stored{pixel}.fits', root / 'b' / f'coadd-main-dark-{pixel}.fits')
    (root / 'a' / 'redrock-main-dark-9.fits').write_bytes(b'')
    found = sorted(os.path.relpath(p, root) for p in find_coadds(str(root)))
    assert found == ['a/coadd-main-dark-9.fits', 'b/coadd-main-dark-6.fits']


def test_plan_refuses_a_plain_and_gzipped_copy_of_one_coadd(tmp_path):
    """A coadd listed as .fits and as .fits.gz wrote two catalogues of the same spectra flat
    into --outdir (lbg_cnn-X.fits and lbg_cnn-X.fits.gz), which desi_lbg_zcatalog then
    refused as counted twice: refused before any file."""
    a, b = str(tmp_path / 'g1/coadd-x.fits'), str(tmp_path / 'g2/coadd-x.fits.gz')
    with pytest.raises(ValueError, match=r'g2/coadd-x.fits.gz and .*g1/coadd-x.fits would write '
                                         r'the same catalogue, plain and gzipped'):
        plan_jobs([a, b], outdir=str(tmp_path / 'o'))
    with pytest.raises(ValueError, match='plain and gzipped'):
        plan_jobs([b, a], outdir=str(tmp_path / 'o'))
    # beside their coadds (other directories) they are two catalogues, as before
    assert len(plan_jobs([a, b])) == 2


def test_expand_keeps_an_existing_file_whose_name_looks_like_a_pattern(tmp_path):
    """A literal path holding glob characters (``run[1]/coadd-x.fits``) that exists is the
    file itself: as a pattern it would match ``run1/`` instead (here nothing) and the
    coadd would be reported unmatched."""
    path = tmp_path / 'run[1]' / 'coadd-main-dark-1.fits'
    path.parent.mkdir()
    path.write_bytes(b'x')
    assert expand_coadds([str(path)]) == ([str(path)], [])
    # a pattern that names no existing file is still a pattern ([1] matches "1")
    (tmp_path / 'run1').mkdir()
    (tmp_path / 'run1' / 'coadd-main-dark-2.fits').write_bytes(b'x')
    assert expand_coadds([str(tmp_path / 'run[1]' / 'coadd-*.fits')]) == (
        [str(tmp_path / 'run1' / 'coadd-main-dark-2.fits')], [])


def test_an_input_dir_that_is_a_file_is_not_a_directory(redux):
    """A file given as the input directory exists: the error says it is not a directory,
    not that it does not exist (which would send the user looking for a typo)."""
    with pytest.raises(InputFileError, match='not a directory'):
        find_coadds(str(redux / HPX))


def test_file_metadata_petal_is_one_digit():
    """DESI petals are 0-9: a tile-like name with a two-digit first number is no tile
    file (no PETAL 12 read from it)."""
    assert file_metadata('coadd-12-80605-thru20201219.fits') == {}
    assert file_metadata('coadd-9-80605-thru20201219.fits')['PETAL'] == 9


def test_input_array_names_drop_every_fits_suffix(tmp_path):
    """coadd-X.fits, coadd-X.fits.gz and coadd-X.fits.fz all write lbg_input-X.npz (so a
    plain and a compressed copy of one coadd are refused as writing one file); another
    name NAME.fits writes lbg_input-NAME.npz."""
    from lbgnet.io.discover import input_array_paths
    out = str(tmp_path / 'o')
    assert input_array_paths(['/a/coadd-main-dark-1.fits.fz', '/a/coadd-main-dark-2.fits.gz',
                              '/b/spectra-7.fits'], out) == [
        os.path.join(out, 'lbg_input-main-dark-1.npz'),
        os.path.join(out, 'lbg_input-main-dark-2.npz'),
        os.path.join(out, 'lbg_input-spectra-7.npz')]
    with pytest.raises(ValueError, match='would both write'):
        input_array_paths(['/a/coadd-main-dark-1.fits', '/a/coadd-main-dark-1.fits.fz'], out)
