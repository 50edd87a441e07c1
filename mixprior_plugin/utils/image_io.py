"""Image I/O shared by the data and evaluation tools.

Conventions (the same everywhere in tools/):

* Images are ``uint8`` arrays ``(H, W, 3)`` in OpenCV's BGR order, as BasicSR reads them.
  Grayscale files (e.g. Set14's ``bridge.png``) are replicated to 3 channels, which is what
  BasicSR's ``imfrombytes`` (``cv2.IMREAD_COLOR``) does with them during training and testing;
  an alpha channel is dropped; 16-bit images are refused.
* Files are decoded with ``cv2.imdecode`` from their bytes (BasicSR's way). A file that does not
  decode completely (garbage, truncated PNG or JPEG) raises :class:`ImageReadError` naming it.
  For the JPEG test sets (BSD100, Urban100) OpenCV's decoder gives the same pixels as Pillow's.
* "MATLAB bicubic" is :func:`basicsr.utils.matlab_functions.imresize` on ``img / 255`` (float64),
  then ``round`` and clip to ``uint8``: :func:`imresize_uint8`. Downscaling an HR image cropped
  to a multiple of ``s`` by ``1/s`` gives the benchmark LR; upscaling an LR image by ``s`` is the
  "bicubic" baseline of SR papers.
"""
import os

import cv2
import numpy as np

from basicsr.utils.matlab_functions import imresize

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')


class ImageReadError(ValueError):
    """An image file is missing, unreadable or corrupt; the message names the file."""


def is_image_file(name):
    return name.lower().endswith(IMAGE_EXTENSIONS)


def list_images(folder):
    """Sorted paths of the image files directly inside ``folder``.

    Raises:
        ImageReadError: The folder does not exist or holds no image.
    """
    if not os.path.isdir(folder):
        raise ImageReadError(f'Image folder not found: {folder}')
    paths = sorted(os.path.join(folder, f) for f in os.listdir(folder)
                   if is_image_file(f) and os.path.isfile(os.path.join(folder, f)))
    if not paths:
        raise ImageReadError(f'No image files ({", ".join(IMAGE_EXTENSIONS)}) in {folder}')
    return paths


def stem(path):
    """File name without folder and extension."""
    return os.path.splitext(os.path.basename(path))[0]


def read_image(path):
    """Read an image as ``uint8`` BGR ``(H, W, 3)``.

    Returns:
        tuple[ndarray, bool]: The image and whether the file was grayscale.

    Raises:
        ImageReadError: Missing, empty, corrupt/truncated or unsupported file (message names it).
    """
    if not os.path.isfile(path):
        raise ImageReadError(f'Image file not found: {path}')
    with open(path, 'rb') as f:
        data = f.read()
    if not data:
        raise ImageReadError(f'Image file is empty: {path}')
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ImageReadError(f'Cannot decode image {path}: the file is corrupt, truncated or not an image')
    if img.dtype != np.uint8:
        raise ImageReadError(f'{path}: {img.dtype} images are not supported (8-bit images only)')
    gray = img.ndim == 2 or img.shape[2] == 1
    if gray:
        img = cv2.cvtColor(img.reshape(img.shape[:2]), cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 4:
        img = np.ascontiguousarray(img[..., :3])
    elif img.shape[2] != 3:
        raise ImageReadError(f'{path}: unsupported number of channels {img.shape[2]}')
    return img, gray


def write_image(path, img):
    """Write ``img`` (format from the extension); raise naming the file if OpenCV cannot."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not cv2.imwrite(path, img):
        raise OSError(f'Cannot write image {path}')


def crop_to_multiple(img, scale):
    """Crop top-left so that height and width are multiples of ``scale`` (benchmark practice)."""
    h, w = img.shape[:2]
    return img[:h - h % scale, :w - w % scale, ...]


def imresize_uint8(img, factor):
    """MATLAB-style bicubic resize of a ``uint8`` image, rounded back to ``uint8``.

    ``basicsr.utils.matlab_functions.imresize(img / 255., factor)`` (antialiasing when
    downscaling), ``* 255``, ``round``, clip. Output size is ``ceil(size * factor)``.
    """
    out = imresize(img.astype(np.float64) / 255., factor)
    return np.clip(np.round(out * 255.), 0, 255).astype(np.uint8)


def hr_lr_pair(path, scale):
    """``(HR cropped to a multiple of scale, its MATLAB-bicubic LR)`` of one image file."""
    hr = crop_to_multiple(read_image(path)[0], scale)
    return hr, imresize_uint8(hr, 1 / scale)


def lr_candidates(lr_dir, name, scale):
    """Paths where the LR image of ``name`` may be: ``<name>x<s>.<ext>`` then ``<name>.<ext>``."""
    return [os.path.join(lr_dir, base + ext) for base in (f'{name}x{scale}', name) for ext in IMAGE_EXTENSIONS]


def find_lr_file(lr_dir, name, scale):
    """The existing LR file of ``name`` in ``lr_dir`` (see :func:`lr_candidates`), or None."""
    if not lr_dir or not os.path.isdir(lr_dir):
        return None
    for path in lr_candidates(lr_dir, name, scale):
        if os.path.isfile(path):
            return path
    return None


def check_lr_fits(lr, hr, scale, lr_path, hr_path):
    """Raise ImageReadError unless ``lr`` is exactly ``hr`` (cropped) divided by ``scale``."""
    want = (hr.shape[0] // scale, hr.shape[1] // scale)
    if lr.shape[:2] != want:
        raise ImageReadError(f'{lr_path} is {lr.shape[1]}x{lr.shape[0]} (WxH) but {hr_path} at x{scale} '
                             f'needs {want[1]}x{want[0]}: wrong scale or not the LR of this image')
