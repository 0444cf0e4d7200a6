#!/usr/bin/env bash
# Fetch Pascal VOC into <dest>/VOCdevkit/VOC2012 (and VOC2007, which the paper's recipe needs: it trains
# on 2007+2012 trainval and reports VOC2007 test), the layout the detection config expects.
#
#   scripts/download_pascal_voc_2012.bash [--only-2012] [--kaggle] [DEST]   # DEST defaults to <project>/data
#
#   --only-2012  skip VOC2007 (then train with @configs/detect_voc2012.args)
#   --kaggle     take VOC2012 from Kaggle "huanghanchina/pascal-voc-2012" (needs the kaggle CLI + token)
#                instead of the official server (host.robots.ox.ac.uk, which is sometimes down)
#
# About 2 GB (2012) + 0.9 GB (2007). For users' machines: tests never run this.
set -euo pipefail

only_2012=0
use_kaggle=0
dest=""
for arg in "$@"; do
    case "$arg" in
        --only-2012) only_2012=1 ;;
        --kaggle) use_kaggle=1 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) dest="$arg" ;;
    esac
done
project_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${dest:-$project_dir/data}"
mkdir -p "$dest/VOCdevkit"
base=http://host.robots.ox.ac.uk/pascal/VOC

fetch_tar() {  # url -> extracted under $dest (the tars hold VOCdevkit/VOC<year>/...)
    local url="$1" tar="$dest/$(basename "$1")"
    if [[ ! -f "$tar.done" ]]; then
        curl -L --fail --retry 3 -o "$tar" "$url"
        tar -xf "$tar" -C "$dest"
        touch "$tar.done"
        rm -f "$tar"
    fi
}

if [[ -f "$dest/VOCdevkit/VOC2012/ImageSets/Main/trainval.txt" ]]; then
    echo "VOC2012 already at $dest/VOCdevkit/VOC2012"
elif [[ $use_kaggle == 1 ]]; then
    command -v kaggle >/dev/null 2>&1 || { echo "error: kaggle CLI not installed (pip install kaggle)" >&2; exit 1; }
    kaggle datasets download -d huanghanchina/pascal-voc-2012 -p "$dest" --unzip
    # That archive unpacks to $dest/VOC2012/{Annotations,ImageSets,JPEGImages,...}.
    found="$(find "$dest" -maxdepth 3 -type d -name VOC2012 -not -path '*/VOCdevkit/*' -print -quit)"
    [[ -n "$found" ]] || { echo "error: no VOC2012 folder in the Kaggle archive" >&2; exit 1; }
    mv "$found" "$dest/VOCdevkit/VOC2012"
else
    fetch_tar "$base/voc2012/VOCtrainval_11-May-2012.tar"
fi

if [[ $only_2012 == 0 ]]; then
    if [[ -f "$dest/VOCdevkit/VOC2007/ImageSets/Main/test.txt" ]]; then
        echo "VOC2007 already at $dest/VOCdevkit/VOC2007"
    else
        fetch_tar "$base/voc2007/VOCtrainval_06-Nov-2007.tar"
        fetch_tar "$base/voc2007/VOCtest_06-Nov-2007.tar"
    fi
fi

for f in VOC2012/ImageSets/Main/train.txt VOC2012/ImageSets/Main/val.txt; do
    [[ -f "$dest/VOCdevkit/$f" ]] || { echo "error: $dest/VOCdevkit/$f missing" >&2; exit 1; }
done
echo "VOC2012 trainval: $(wc -l < "$dest/VOCdevkit/VOC2012/ImageSets/Main/trainval.txt") images"
if [[ -f "$dest/VOCdevkit/VOC2007/ImageSets/Main/test.txt" ]]; then
    echo "VOC2007 trainval: $(wc -l < "$dest/VOCdevkit/VOC2007/ImageSets/Main/trainval.txt"), test: $(wc -l < "$dest/VOCdevkit/VOC2007/ImageSets/Main/test.txt") images"
fi
echo "train with: accelerate launch -m yolov1.detection_train data_root=$dest backbone=<backbone.safetensors>"
