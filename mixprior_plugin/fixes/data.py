"""Fix 11: BasicSR's JPEG degradation with an integer quality, which OpenCV 5 requires.

(Fix 7, the paired-image sample check, is :func:`mixprior_plugin.utils.validation.checked_getitem`.)
"""
from mixprior_plugin.fixes.common import ORIGINALS


def fix_jpg_quality():
    """Fix 11 (idempotent): BasicSR's ``add_jpg_compression`` with an integer JPEG quality (OpenCV 5 needs one).

    ``random_add_jpg_compression`` draws a float quality and looks ``add_jpg_compression`` up in its
    module at call time, so replacing the module's function fixes both.
    """
    from basicsr.data import degradations
    if 'add_jpg_compression' in ORIGINALS:
        return
    original = ORIGINALS['add_jpg_compression'] = degradations.add_jpg_compression

    def add_jpg_compression(img, quality=90):
        return original(img, int(round(float(quality))))

    add_jpg_compression.__doc__ = original.__doc__
    degradations.add_jpg_compression = add_jpg_compression
