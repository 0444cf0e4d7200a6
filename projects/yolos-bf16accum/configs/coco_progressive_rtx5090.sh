# The COCO progressive run of the seed README, per-MAC accumulation (upstream's study), on one RTX 5090.
# Run from projects/yolos-bf16accum; COCO_DIR holds train2017/, val2017/, annotations/.
python train_yolos_progressive_bf16accum_ste.py --output_dir runs/progressive --dataset coco2017 \
    --coco_dir "${COCO_DIR:?set COCO_DIR}" --per_device_train_batch_size 8 --per_device_eval_batch_size 8 \
    --learning_rate 5e-5 --num_train_epochs 1 --precision bf16 \
    --schedule "attn@0.2,mlp@0.4,qkv@0.6,head@0.8" --ramp_mode blocks --blocks_per_stage 2 --accum_chunk 1 "$@"
