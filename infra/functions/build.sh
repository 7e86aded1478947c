#!/bin/bash
# Build step of one DigitalOcean function folder (build/do/packages/raiox/<function>/), copied there by
# `raiox deploy build`. The deployer behind `doctl serverless deploy` runs a folder's build.sh because of its
# name (functions-deployer src/finder-builder.ts): in the folder, on the deploying machine (or on DigitalOcean's
# builder with --remote-build), with the deployer's own environment, not the values of --env. When it exits 0,
# everything in the folder but build.sh, .ignore and __deployer__.zip is zipped and uploaded.
set -euo pipefail

PYTHON="${RAIOX_BUILD_PYTHON:-python3}"   # any CPython >= 3.8 with pip >= 20.3; it need not be 3.11 or Linux
SITE=virtualenv/lib/python3.11/site-packages

rm -rf virtualenv
mkdir -p "$SITE" virtualenv/bin

# Wheels for the runtime, not for this machine: CPython 3.11 on glibc x86_64, so a Mac builds the same folder.
# Binary wheels only (nothing is compiled here) and no .pyc (they would be for the local interpreter).
"$PYTHON" -m pip install --quiet --disable-pip-version-check --no-input --no-compile \
    --only-binary=:all: --implementation cp --python-version 3.11 --abi cp311 \
    --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
    --target "$SITE" -r requirements.txt

# Never imported by a function, and many MB of the 48 MB limit: test suites and test files, console scripts,
# numpy's Fortran and distutils tooling; Pillow's AVIF and WebP codecs, font rendering and Tk bridge
# (raiox.adapters.imaging accepts JPEG, PNG, TIFF and DICOM only; Pillow treats a missing codec module as "not
# supported"); pydicom's structured-report dictionaries (pydicom.sr, never imported by pydicom itself); and
# every botocore service model but S3's (raiox.adapters.storage builds S3 clients only; the top-level endpoint,
# partition and retry files stay). tests/tools/test_function_runtime.py serves real requests with the result.
find "$SITE" -depth -type d \( -name tests -o -name __pycache__ \) -exec rm -rf {} +
rm -rf "$SITE/bin" "$SITE/numpy/f2py" "$SITE/numpy/distutils" \
    "$SITE"/PIL/_avif.* "$SITE"/pillow.libs/libavif* \
    "$SITE"/PIL/_webp.* "$SITE"/pillow.libs/libwebp* "$SITE"/pillow.libs/libsharpyuv* \
    "$SITE"/PIL/_imagingft.* "$SITE"/pillow.libs/libfreetype* "$SITE"/pillow.libs/libharfbuzz* \
    "$SITE"/pillow.libs/libbrotli* "$SITE"/PIL/_imagingtk.* \
    "$SITE/pydicom/data/test_files" "$SITE/pydicom/sr"
if [ -d "$SITE/botocore/data" ]; then
    find "$SITE/botocore/data" -mindepth 1 -maxdepth 1 -type d ! -name s3 -exec rm -rf {} +
fi

# The runtime's launcher execs virtualenv/bin/activate_this.py when virtualenv/ exists (and fails without it).
cat > virtualenv/bin/activate_this.py <<'PY'
"""Run by the Python runtime before the function is imported: the bundled packages come first on sys.path."""
import os
import site
import sys

_base = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_before = list(sys.path)
site.addsitedir(os.path.join(_base, "lib", "python3.11", "site-packages"))
sys.path[:] = [p for p in sys.path if p not in _before] + _before
PY
