#!/usr/bin/env bash
# Set up (or reuse) the Python environment for mixprior, then install this checkout into it.
#
# Two layers, so that a fresh clone (CI clones into a new folder every run) costs seconds once
# the heavy part exists:
#   1. A shared dependency environment, about 6 GB, in $MIXPRIOR_CACHE (default
#      ~/.cache/mixprior), keyed by a hash of requirements.txt + the Python version. It is reused
#      whenever that key is unchanged; older keys are deleted to save disk.
#   2. A small per-checkout .venv whose site-packages points at layer 1 (a .pth file), holding an
#      editable install of this checkout and its console scripts (mixprior-train, ..., torchrun).
# Usage: bash tools/setup_env.sh   (then use .venv/bin/python, .venv/bin/mixprior-train, ...)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python3}
cache=${MIXPRIOR_CACHE:-$HOME/.cache/mixprior}
basicsr_spec="basicsr-fixed==1.4.2"

pyver=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
key=$( { cat "$repo/requirements.txt"; echo "$basicsr_spec"; echo "py$pyver"; } | sha256sum | cut -c1-12)
deps="$cache/deps-$key"

log() { echo "[setup_env] $*" >&2; }

if [ ! -f "$deps/.complete" ]; then
  mkdir -p "$cache"
  # Another run may be building the same key: take a lock so the two do not collide.
  exec 9>"$cache/.lock-$key"
  flock 9
  if [ ! -f "$deps/.complete" ]; then
    log "building dependency environment $deps (first time only, ~3 min, ~6 GB)"
    tmp="$cache/.build-$key-$$"
    rm -rf "$tmp"
    "$python" -m venv "$tmp"
    # pip warns about every package missing from this machine's local indexes: hide that noise
    pipq() { "$tmp/bin/python" -m pip install -q "$@" 2> >(grep -v "^WARNING: Location" >&2); }
    pipq --upgrade pip
    pipq -r "$repo/requirements.txt"
    # basicsr-fixed: BasicSR master under the import name `basicsr`. Its sdist lists torch as a
    # build requirement and tb-nightly as a dependency; --no-deps --no-build-isolation avoids a
    # 5 GB isolated CUDA build env and tb-nightly overwriting tensorboard.
    pipq --no-deps --no-build-isolation "$basicsr_spec"
    "$tmp/bin/python" -c "import basicsr, torch, torchvision, mmengine, cv2, lmdb" >/dev/null
    # venvs are not relocatable: rebuild scripts' shebangs would point at $tmp. We only use
    # site-packages from this environment (via a .pth file), so the move is safe.
    rm -rf "$deps"
    mv "$tmp" "$deps"
    touch "$deps/.complete"
    log "done"
  fi
  flock -u 9
  # Mind disk: drop environments built for other requirement sets.
  for old in "$cache"/deps-*; do
    [ "$old" = "$deps" ] || { log "removing stale $old"; rm -rf "$old"; }
  done
fi

# Layer 1b: the optional extras (export: onnx, onnxruntime, safetensors, spandrel) go into the
# same dependency environment, stamped with the hash of requirements-extras.txt. They are not part
# of the base key, so changing them never rebuilds or deletes the base; requirements.txt is the
# constraints file, so pip cannot replace torch, torchvision or numpy.
extras="$repo/requirements-extras.txt"
if [ -f "$extras" ]; then
  extras_key=$(sha256sum "$extras" | cut -c1-12)
  extras_stamp="$deps/.extras-stamp"
  if [ "$(cat "$extras_stamp" 2>/dev/null)" != "$extras_key" ]; then
    exec 8>"$cache/.lock-$key-extras"
    flock 8
    if [ "$(cat "$extras_stamp" 2>/dev/null)" != "$extras_key" ]; then
      log "installing optional extras from requirements-extras.txt into $deps"
      if ! out=$("$deps/bin/python" -m pip install -q -r "$extras" -c "$repo/requirements.txt" 2>&1) ||
         ! "$deps/bin/python" -c "import onnx, onnxruntime, onnxscript, safetensors, spandrel" >/dev/null 2>&1; then
        echo "$out" | grep -v "^WARNING: Location" >&2 || true
        log "installing requirements-extras.txt failed (the base environment is unchanged)"; exit 1
      fi
      echo "$extras_key" > "$extras_stamp"
    fi
    flock -u 8
  fi
fi

site=$(ls -d "$deps"/lib/python*/site-packages)
venv="$repo/.venv"
if [ ! -f "$venv/.deps-key" ] || [ "$(cat "$venv/.deps-key")" != "$key" ]; then
  rm -rf "$venv"
  "$python" -m venv --without-pip "$venv"
  vsite=$(ls -d "$venv"/lib/python*/site-packages)
  echo "$site" > "$vsite/_mixprior_deps.pth"
  echo "$key" > "$venv/.deps-key"
fi
# Editable install: cheap, and refreshes console scripts if setup.py changed.
# (skipped when setup.py is unchanged since the last install).
stamp=$(sha256sum "$repo/setup.py" | cut -c1-12)
if [ "$(cat "$venv/.setup-stamp" 2>/dev/null)" != "$stamp" ]; then
  if ! out=$("$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$repo" 2>&1); then
    echo "$out" >&2; log "installing this checkout failed"; exit 1
  fi
  echo "$stamp" > "$venv/.setup-stamp"
fi
# torchrun: torch's own console script sits in the dependency environment with the shebang of its
# build folder, so the .venv gets one that runs the same module with the .venv's Python.
cat > "$venv/bin/torchrun" <<'EOF'
#!/bin/sh
# torchrun of this checkout's .venv (written by tools/setup_env.sh)
exec "$(dirname "$0")/python" -m torch.distributed.run "$@"
EOF
chmod +x "$venv/bin/torchrun"
log "ready: $venv/bin/python"
