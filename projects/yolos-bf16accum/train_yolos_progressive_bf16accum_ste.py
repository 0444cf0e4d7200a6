"""Progressive bf16-accumulation forward with a straight-through backward.

    python train_yolos_progressive_bf16accum_ste.py --output_dir runs/progressive --dataset coco2017 \
        --coco_dir /data/coco --schedule "attn@0.2,mlp@0.4,qkv@0.6,head@0.8" --ramp_mode blocks \
        --blocks_per_stage 2 --accum_chunk 1
"""

from yolos_bf16accum.cli import main

if __name__ == "__main__":
    main(regime="progressive")
