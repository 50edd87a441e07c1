"""Fix 8: a mistake in the options or data ends a run with one line, and BasicSR's archiving is undone."""
import os
import shutil
import sys
from os import path as osp

from mixprior_plugin.utils.options import is_user_error

# (folder, where BasicSR archived the previous one) for each mkdir_and_rename of this process
ARCHIVED = []


def wrap_mkdir_and_rename(original):
    """Record BasicSR's archiving of an existing experiment folder, so a failed start can undo it."""

    def mkdir_and_rename(path):
        before = set(os.listdir(osp.dirname(path) or '.')) if osp.exists(path) else None
        original(path)
        if before is not None:
            archived = sorted(set(os.listdir(osp.dirname(path) or '.')) - before)
            if archived:
                ARCHIVED.append((path, osp.join(osp.dirname(path), archived[-1])))

    return mkdir_and_rename


def undo_archiving():
    """Put back folders BasicSR archived in this run when the new ones hold no checkpoint.

    Returns:
        list[str]: The folders restored.
    """
    restored = []
    while ARCHIVED:
        path, archived = ARCHIVED.pop()
        saved = [f for sub in ('models', 'training_states') if osp.isdir(osp.join(path, sub))
                 for f in os.listdir(osp.join(path, sub))]
        if saved or not osp.isdir(archived):
            continue
        shutil.rmtree(path, ignore_errors=True)
        os.rename(archived, path)
        restored.append(path)
    return restored


def report_errors(prog, run):
    """Run ``run()``; a mistake in the options or data ends the process with one readable line.

    The traceback is printed only with ``--debug`` or for an unexpected error. Folders BasicSR
    archived before the error are put back when the run saved nothing.

    Args:
        prog (str): Program name for the message (e.g. 'mixprior-train').
        run (callable): The pipeline.
    """
    ARCHIVED.clear()
    try:
        return run()
    except Exception as err:
        for path in undo_archiving():
            print(f'{prog}: nothing was saved: restored {path} as it was before this run.', file=sys.stderr)
        if '--debug' in sys.argv or not is_user_error(err):
            raise
        print(f'{prog}: error: {err.__class__.__name__}: {err}', file=sys.stderr, flush=True)
        raise SystemExit(1) from None
