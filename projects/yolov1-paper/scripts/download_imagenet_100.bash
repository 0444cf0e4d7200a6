#!/usr/bin/env bash
# Fetch ImageNet-100 (Kaggle "ambityga/imagenet100", the CMC class list) into the layout the pretraining
# config expects: <dest>/Labels.json, <dest>/train.X1..X4/<wnid>/*.JPEG, <dest>/val.X/<wnid>/*.JPEG.
#
#   scripts/download_imagenet_100.bash [DEST]        # DEST defaults to <project>/data/imagenet100
#
# Needs the kaggle CLI (pip install kaggle) and an API token in ~/.kaggle/kaggle.json
# (https://www.kaggle.com/docs/api). About 16 GB download. For users' machines: tests never run this.
set -euo pipefail

project_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-$project_dir/data/imagenet100}"

if ! command -v kaggle >/dev/null 2>&1; then
    echo "error: the kaggle CLI is not installed (pip install kaggle; token in ~/.kaggle/kaggle.json)" >&2
    exit 1
fi
mkdir -p "$dest"
if [[ -f "$dest/Labels.json" && -d "$dest/val.X" ]]; then
    echo "$dest already holds ImageNet-100 (Labels.json and val.X/ present); nothing to do"
    exit 0
fi
kaggle datasets download -d ambityga/imagenet100 -p "$dest" --unzip

# Some mirrors of the archive nest everything one folder deeper; lift it to $dest.
if [[ ! -f "$dest/Labels.json" ]]; then
    nested="$(find "$dest" -maxdepth 3 -name Labels.json -print -quit)"
    if [[ -n "$nested" ]]; then
        src="$(dirname "$nested")"
        shopt -s dotglob
        mv "$src"/* "$dest"/
        rmdir "$src" 2>/dev/null || true
    fi
fi
for need in Labels.json val.X; do
    [[ -e "$dest/$need" ]] || { echo "error: $dest/$need missing after download" >&2; exit 1; }
done
n_train=$(find "$dest"/train.X* -maxdepth 1 -mindepth 1 -type d | wc -l)
n_val=$(find "$dest"/val.X -maxdepth 1 -mindepth 1 -type d | wc -l)
echo "ImageNet-100 at $dest: $n_train train class folders, $n_val val class folders"
echo "pretrain with: accelerate launch -m yolov1.pretrain_train data_root=$dest"
