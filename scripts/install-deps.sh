#!/usr/bin/env bash
# System packages fmlab needs: the Fashion-MNIST IDX files (Debian's dataset-fashion-mnist) and,
# for the test suite (--test), Chromium to check the report pages as a person would and tmux to check
# `fmlab watch` in a real terminal.
set -euo pipefail
dir=/usr/share/datasets/fashion-mnist
need=()
[ -n "${FMLAB_DATA:-}" ] || [ -f "$dir/train-images-idx3-ubyte.gz" ] || need+=(dataset-fashion-mnist)
[ "${1:-}" = --test ] && ! command -v chromium >/dev/null && need+=(chromium)
[ "${1:-}" = --test ] && ! command -v tmux >/dev/null && need+=(tmux)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "apt-get install ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  (apt-get install -y -qq "${need[@]}" || { apt-get update -qq && apt-get install -y -qq "${need[@]}"; }) >/dev/null
  exit 0
fi
echo "missing: ${need[*]}. Install with 'sudo apt-get install ${need[*]}'." >&2
echo "For the data you can instead run '.venv/bin/fmlab data fetch' or set FMLAB_DATA to a folder with the IDX files." >&2
exit 1
