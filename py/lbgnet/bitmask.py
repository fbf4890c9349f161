"""
lbgnet.bitmask
==============

``LBG_FLAG``: per-spectrum warning bits of the afterburner catalogue.

A spectrum with ``LBG_FLAG == 0`` was processed normally.  Any bit set means the CNN
outputs of that row should be used with care (or, for ``NODATA`` and
``NOT_IN_COADD``, not at all: they are then NaN / False).

Bits (see ``doc/afterburner.rst``):

====  ================  ====================================================================
bit   name              meaning
====  ================  ====================================================================
0     NODATA            no valid pixel on the input grid (all masked / ivar = 0 / NaN)
1     MISSING_CAMERA    one or more of the b, r, z cameras is absent from the file or has no
                        valid pixel for this spectrum; processed with the cameras present
2     NOT_SCIENCE       not a science fibre: FIBERMAP ``OBJTYPE != 'TGT'`` or a bad
                        ``COADD_FIBERSTATUS``: a desispec fibermask bit for which Redrock
                        sets ZWARN NODATA (UNASSIGNED, BROKENFIBER, BADPOSITION), POORDATA
                        (POORPOSITION) or LITTLE_COVERAGE (BADAMPB/R/Z;
                        :data:`lbgnet.catalog.BAD_FIBERSTATUS_BITS`); processed anyway
3     NOT_IN_COADD      TARGETID is in the Redrock file but not in the coadd: no CNN output
4     Z_OUT_OF_RANGE    Z_LBG or Z_TPL is outside the redshift range the model was trained on
5     LOW_COVERAGE      fewer than half of the input-grid bins hold a valid pixel
6     RERUN_FAILED      ``--rerun-redrock``: IS_LBG target not rerun because its prior
                        overlaps none of the templates' redshift grids (also one that falls
                        in a gap between two grids); a Redrock failure fails the whole file
                        instead
7     SMALL_DELTA_CHI2  IS_LBG, but the template refinement does not single out the redshift:
                        ``DELTACHI2_TPL`` < 9 (or NaN), as Redrock's ZWARN bit of that name,
                        or χ² is not convex at Z_TPL or an edge of the search pins it
                        (``ZERR_TPL`` NaN); never set with ``--no-refine``
====  ================  ====================================================================
"""
import yaml
from desiutil.bitmask import BitMask

_BITDEFS = yaml.safe_load("""
lbgwarn:
    - [NODATA,          0, "no valid pixel on the input grid"]
    - [MISSING_CAMERA,  1, "a b/r/z camera is absent or has no valid pixel"]
    - [NOT_SCIENCE,     2, "OBJTYPE != TGT or bad COADD_FIBERSTATUS"]
    - [NOT_IN_COADD,    3, "in the Redrock file but not in the coadd"]
    - [Z_OUT_OF_RANGE,  4, "Z_LBG or Z_TPL outside the model's z range"]
    - [LOW_COVERAGE,    5, "fewer than half of the grid bins are valid"]
    - [RERUN_FAILED,    6, "IS_LBG, prior overlaps no rerun template grid"]
    - [SMALL_DELTA_CHI2, 7, "IS_LBG, DELTACHI2_TPL < 9 or ZERR_TPL NaN"]
""")

#: The cameras a complete DESI spectrum has.
DESI_CAMERAS = ('b', 'r', 'z')

#: The Redrock ZWARN bits lbgnet writes itself (values of
#: ``redrock.zwarning.ZWarningMask``, which cannot be imported under numpy 2): the Redrock
#: mock's warnings, and NODATA in ZWARN_NEW for catalogue rows that were not rerun.
REDROCK_ZWARN = dict(LITTLE_COVERAGE=2 ** 1, SMALL_DELTA_CHI2=2 ** 2, UNPLUGGED=2 ** 7,
                     NODATA=2 ** 9)


class LBGWarnMask(BitMask):
    """The ``LBG_FLAG`` bit mask (a :class:`desiutil.bitmask.BitMask`).

    Examples
    --------
    >>> mask = LBGWarnMask()
    >>> int(mask.NODATA | mask.MISSING_CAMERA)
    3
    >>> mask.names(5)
    ['NODATA', 'NOT_SCIENCE']
    """

    def __init__(self):
        super().__init__('lbgwarn', _BITDEFS)

    def header_cards(self):
        """FITS header cards documenting the bits: ``[(key, value, comment), ...]``.

        The comments fit the card whole (at most 47 characters beside a value of up to
        16: the longest bit name)."""
        return [(f'LBGBIT{self.bitnum(name):02d}', name, self.comment(name))
                for name in self.names()]
