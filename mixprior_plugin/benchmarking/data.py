"""The benchmark's data: training pairs held in memory, the held-out validation split and its learning-curve
scorer, the evaluation folders."""
import hashlib
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from functools import partial

import torch
from tqdm import tqdm

from basicsr.metrics import calculate_psnr
from basicsr.utils import img2tensor, tensor2img

from mixprior_plugin.inference import sr_tensor
from mixprior_plugin.utils.image_io import hr_lr_pair, list_images
from .profiles import VAL_SET, BenchmarkError


def split_paths(folders, val_count):
    """Training image paths and the held-out validation paths (the last ``val_count`` of the last folder)."""
    per_folder = [sorted(list_images(f)) for f in folders]
    if not per_folder or not per_folder[-1]:
        raise BenchmarkError(f'No training images in {folders}')
    if val_count >= len(per_folder[-1]):
        raise BenchmarkError(f'--val-count {val_count} leaves no training image in {folders[-1]}')
    val = per_folder[-1][len(per_folder[-1]) - val_count:] if val_count else []
    train = [p for paths in per_folder for p in paths if p not in set(val)]
    return train, val


class InMemoryPairs:
    """HR/LR training pairs as uint8 tensors on the device; random aligned patches cut there.

    Args:
        paths (list[str]): HR images (PNG/JPEG/BMP).
        device (torch.device): Where the images live.
        lq_patch (int): LR patch side.
        scale (int): Upscaling factor.
        workers (int): Processes for the MATLAB-bicubic downscaling.
    """

    def __init__(self, paths, device, lq_patch, scale, workers=None):
        workers = workers or min(16, os.cpu_count() or 1)
        if workers == 1:
            pairs = [hr_lr_pair(p, scale) for p in tqdm(paths, desc='LR images', mininterval=5)]
        else:
            # spawn, not fork: a forked child of a process that already ran torch/OpenCV threads can hang
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context('spawn')) as pool:
                pairs = list(tqdm(pool.map(partial(hr_lr_pair, scale=scale), paths, chunksize=4), total=len(paths),
                                  desc='LR images', mininterval=5))
        self.hr, self.lq = [], []
        for hr, lq in pairs:
            if min(lq.shape[:2]) < lq_patch:
                continue
            # BGR -> RGB, HWC -> CHW (BasicSR's img2tensor convention)
            self.hr.append(torch.from_numpy(hr[..., ::-1].copy()).permute(2, 0, 1).to(device))
            self.lq.append(torch.from_numpy(lq[..., ::-1].copy()).permute(2, 0, 1).to(device))
        if not self.hr:
            raise BenchmarkError(f'No training image of at least {lq_patch * scale} px among {len(paths)} files')
        self.device, self.lq_patch, self.scale = device, lq_patch, scale

    def batch(self, size, generator):
        """``(lq (B, 3, p, p), gt (B, 3, sp, sp))`` in [0, 1] with random flips and rotations."""
        p, s = self.lq_patch, self.scale
        picks = torch.randint(len(self.hr), (size, ), generator=generator).tolist()
        lqs, gts = [], []
        for i in picks:
            lq, hr = self.lq[i], self.hr[i]
            y = int(torch.randint(lq.shape[1] - p + 1, (1, ), generator=generator))
            x = int(torch.randint(lq.shape[2] - p + 1, (1, ), generator=generator))
            a, b = lq[:, y:y + p, x:x + p], hr[:, y * s:(y + p) * s, x * s:(x + p) * s]
            flip, rot = torch.randint(2, (2, ), generator=generator).tolist()
            if flip:
                a, b = a.flip(-1), b.flip(-1)
            if rot:
                a, b = a.transpose(1, 2), b.transpose(1, 2)
            lqs.append(a)
            gts.append(b)
        return torch.stack(lqs).float().div_(255), torch.stack(gts).float().div_(255)


def tensor_sha(tensors):
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class ValidationCurve:
    """PSNR (Y, crop_border = scale) of a network on held-out images, for learning curves.

    The pairs are read and downscaled once; only PSNR is computed (SSIM is for the final evaluation).

    Args:
        paths (list[str]): HR images.
        scale (int): Upscaling factor.
        device (torch.device): Where the network runs.
    """

    def __init__(self, paths, scale, device):
        self.pairs = [hr_lr_pair(p, scale) for p in paths]
        self.scale, self.device = scale, device

    def psnr(self, net):
        was_training = net.training
        net.eval()
        total = 0.0
        for hr, lr in self.pairs:
            x = img2tensor(lr.astype('float32') / 255., bgr2rgb=True, float32=True)[None].to(self.device)
            sr = tensor2img(sr_tensor(net, x, self.scale))
            total += calculate_psnr(sr, hr, crop_border=self.scale, test_y_channel=True)
        net.train(was_training)
        return total / len(self.pairs)


def prepare_eval_roots(args, val_paths, out):
    """Folders to evaluate on: the test sets, and the validation split as set 'Val'."""
    roots = {s: args.test_root for s in args.sets}
    if val_paths:
        val_hr = os.path.join(out, 'val_split', VAL_SET, 'HR')
        os.makedirs(val_hr, exist_ok=True)
        for p in val_paths:
            dst = os.path.join(val_hr, os.path.basename(p))
            if not os.path.exists(dst):
                shutil.copyfile(p, dst)
        roots[VAL_SET] = os.path.join(out, 'val_split')
    return roots
