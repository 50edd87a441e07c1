"""Fix 7: a paired-image sample that cannot be read, or whose LR and HR sizes disagree, names its files."""
import functools
import os

from mixprior_plugin.utils.image_io import ImageReadError, read_image


def _size_mismatch(paths, gt_hw, lq_hw, scale):
    return ValueError(f'LR/HR size mismatch at scale {scale}: HR {paths["gt_path"]} is {tuple(gt_hw)}, LR '
                      f'{paths["lq_path"]} is {tuple(lq_hw)} (HR must be LR x {scale}; validation crops HR '
                      'down to that)')


def checked_getitem(getitem):
    """Wrap ``PairedImageDataset.__getitem__``: errors name the files; LR/HR sizes must agree."""

    @functools.wraps(getitem)
    def __getitem__(self, index):
        paths = self.paths[index]
        try:
            data = getitem(self, index)
        except Exception as err:
            scale = self.opt['scale']
            if all(os.path.isfile(paths[k]) for k in ('gt_path', 'lq_path')):  # disk backend (lmdb: keys)
                try:
                    gt_img, lq_img = read_image(paths['gt_path'])[0], read_image(paths['lq_path'])[0]
                except ImageReadError as read_err:
                    raise ImageReadError(f'{read_err} (pair {paths["gt_path"]} / {paths["lq_path"]})') from err
                if gt_img.shape[:2] != (lq_img.shape[0] * scale, lq_img.shape[1] * scale):
                    raise _size_mismatch(paths, gt_img.shape[:2], lq_img.shape[:2], scale) from err
            raise RuntimeError(f'Cannot load the pair {paths["gt_path"]} / {paths["lq_path"]}: '
                               f'{err.__class__.__name__}: {err}') from err
        scale = self.opt['scale']
        gt, lq = tuple(data['gt'].shape[-2:]), tuple(data['lq'].shape[-2:])
        if gt != (lq[0] * scale, lq[1] * scale):
            raise _size_mismatch(paths, gt, lq, scale)
        return data

    return __getitem__
