#!/usr/bin/env bash
# Type-check the TensorRT backend against the TensorRT 10.3 (JetPack 6) and 11.4 stubs
# (../shared/stubs, see its README) with mypy --strict. Exit status != 0 on any error.
# Usage: tools/typecheck.sh [files...]   (default: the TensorRT backend and its helpers, and the
# engine builder trt_build/{builder,profile,sidecar,engine_step}.py)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
stubs="${EDGEQC_TRT_STUBS:-$repo/../shared/stubs}"
mypy="${MYPY:-$repo/.venv/bin/mypy}"
files=("$@")
if [ ${#files[@]} -eq 0 ]; then
  files=(edge/backends/tensorrt.py edge/backends/_cuda.py edge/backends/engine_sidecar.py
         trt_build/builder.py trt_build/profile.py trt_build/sidecar.py trt_build/engine_step.py)
fi
cd "$repo"
status=0
for version in 10.3 11.4; do
  dir="$stubs/tensorrt-$version"
  if [ ! -d "$dir" ]; then echo "typecheck: stubs not found: $dir" >&2; exit 2; fi
  cfg="$(mktemp --suffix=.ini)"
  cat > "$cfg" <<INI
[mypy]
python_version = 3.10
mypy_path = $dir
ignore_missing_imports = True
cache_dir = $repo/.mypy_cache/trt-$version

# Errors inside the stubs are not ours; but they must be found: a missing stub would
# otherwise silently make every TensorRT name 'Any'.
[mypy-tensorrt,tensorrt.*,tensorrt_bindings,tensorrt_bindings.*]
ignore_errors = True
ignore_missing_imports = False
INI
  echo "== mypy --strict against TensorRT $version stubs: ${files[*]}"
  if ! "$mypy" --config-file "$cfg" --strict --follow-imports=silent "${files[@]}"; then status=1; fi
  rm -f "$cfg"
done
exit $status
