#!/usr/bin/env bash
# Make sure the Fashion-MNIST IDX files are on this machine (Debian's dataset-fashion-mnist package).
set -euo pipefail
dir=/usr/share/datasets/fashion-mnist
if [ -n "${FMLAB_DATA:-}" ] || [ -f "$dir/train-images-idx3-ubyte.gz" ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing dataset-fashion-mnist with apt-get" >&2
  (apt-get install -y -qq dataset-fashion-mnist || { apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; }) >/dev/null
  exit 0
fi
echo "Fashion-MNIST not found in $dir. Install it with 'sudo apt-get install dataset-fashion-mnist'," >&2
echo "or run '.venv/bin/fmlab data fetch', or set FMLAB_DATA to a folder with the four IDX files." >&2
exit 1
