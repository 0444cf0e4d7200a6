"""Baseline: YOLOS fine-tuning with standard accumulators under AMP bf16/fp16 or fp32.

    python train_yolos_baseline_bf16.py --output_dir runs/baseline --dataset coco2017 --coco_dir /data/coco \
        --per_device_train_batch_size 4 --learning_rate 5e-5 --num_train_epochs 1 --precision bf16
"""

from yolos_bf16accum.cli import main

if __name__ == "__main__":
    main(regime="baseline")
