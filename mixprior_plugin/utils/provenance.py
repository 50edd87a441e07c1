"""Where a result came from: command, git commit, device, date (written beside every result)."""
import datetime
import os
import platform
import subprocess
import sys

import torch


def git_commit(repo):
    """``(commit, dirty)`` of the checkout at ``repo``; ``(None, None)`` outside git."""
    try:
        commit = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=repo, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = bool(subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], cwd=repo,
                                    capture_output=True, text=True, check=True).stdout.strip())
        return commit, dirty
    except (OSError, subprocess.CalledProcessError):
        return None, None


def device_name(device):
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    return f'CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)'


def run_meta(device, repo=None):
    """Provenance of a run of the current process."""
    repo = repo or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    commit, dirty = git_commit(repo)
    spec = getattr(sys.modules.get('__main__'), '__spec__', None)
    if spec is not None and spec.name not in (None, '__main__'):
        program = f'python -m {spec.name}'  # run as a module
    else:
        program = 'python ' + (os.path.relpath(sys.argv[0], repo) if os.path.isabs(sys.argv[0]) else sys.argv[0])
    return dict(command=' '.join([program] + sys.argv[1:]),
                git_commit=commit, git_dirty=dirty, device=device_name(device),
                date=datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
                torch=torch.__version__, python=platform.python_version())
