"""Fixes 3 and 10: options parsed, normalised and validated before anything is built."""
import sys
import warnings

from basicsr.utils.registry import MODEL_REGISTRY

from mixprior_plugin.fixes.common import cuda_available
from mixprior_plugin.fixes.distributed import strip_local_rank_arg
from mixprior_plugin.fixes.resume import exact_resume_requested
from mixprior_plugin.utils import validation
from mixprior_plugin.utils.checkpoint import EXACT_RESUME
from mixprior_plugin.utils.options import OptionError, normalise_teacher_aliases
from mixprior_plugin.utils.validation import _is_kd_model, registry_lookup

# Command-line flags of the entry points that BasicSR's argparse does not know (set by mixprior-test).
ENTRY_FLAGS = {'non_strict': False}


def normalise_test_options(opt):
    """Test-time defaults where BasicSR would fail or evaluate something else than asked (fix 10).

    * ``val.suffix`` missing with ``save_img`` on: BasicSR raises KeyError; it defaults to None.
    * The student loads strictly: ``path.strict_load_g: false`` (BasicSR's fine-tuning files set
      it) is ignored with a notice, unless mixprior-test got ``--non-strict``.
    * The training set of a training option file is not evaluated (it is often hours of patches);
      a notice names the sets that are.

    Runs before the options are validated; :func:`default_test_param_key` runs after.
    """
    if opt.get('is_train'):
        return opt
    val = opt.get('val')
    if isinstance(val, dict) and val.get('save_img') and 'suffix' not in val:
        val['suffix'] = None
    path = opt.get('path')
    if isinstance(path, dict) and path.get('pretrain_network_g'):
        if ENTRY_FLAGS['non_strict']:
            path['strict_load_g'] = False
        elif path.get('strict_load_g', True) is False:
            print('mixprior-test: path.strict_load_g: false is ignored: a test loads the student strictly '
                  '(--non-strict evaluates a partial load).', flush=True)
            path['strict_load_g'] = True
    datasets = opt.get('datasets')
    if isinstance(datasets, dict):
        training = [phase for phase in datasets if str(phase).split('_')[0] == 'train']
        if training:
            for phase in training:
                del datasets[phase]
            if not datasets:
                raise OptionError(f'Option datasets holds only the training set ({", ".join(training)}): add a val '
                                  'or test_1 dataset to evaluate')
            print(f'mixprior-test: evaluating datasets {", ".join(datasets)} of the option file; its training set '
                  f'datasets.{training[0]} is skipped.', flush=True)
    return opt


def default_test_param_key(opt):
    """A KD student is evaluated with ``params_ema`` (falling back to ``params``), the key of
    mixprior-export and evaluate.py, unless ``path.param_key_g`` names one (checked to exist before)."""
    path = opt.get('path')
    if not opt.get('is_train') and isinstance(path, dict) and \
            _is_kd_model(registry_lookup(MODEL_REGISTRY, opt.get('model_type'))):
        path.setdefault('param_key_g', 'params_ema')
    return opt


def normalise_device_options(opt):
    """Fall back to CPU (num_gpu 0) when the options ask for GPUs that this machine lacks."""
    if opt.get('num_gpu', 0) not in (0, None) and not cuda_available():
        warnings.warn(f"num_gpu={opt['num_gpu']} but no CUDA device is available: running on CPU.")
        opt['num_gpu'] = 0
    return opt


def wrap_parse_options(original):

    def parse_options(root_path, is_train=True):
        sys.argv = strip_local_rank_arg(sys.argv)
        opt, args = original(root_path, is_train=is_train)
        normalise_device_options(opt)
        normalise_teacher_aliases(opt)
        normalise_test_options(opt)
        validation.validate_options(opt)
        EXACT_RESUME.update(enabled=exact_resume_requested(opt), loader=None)
        validation.validate_files(opt)
        default_test_param_key(opt)
        return opt, args

    parse_options._mixprior_wrapped = True
    return parse_options
