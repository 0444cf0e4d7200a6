# The matching AMP bf16 baseline (same data, schedule length and seed as the progressive run).
python train_yolos_baseline_bf16.py --output_dir runs/baseline --dataset coco2017 \
    --coco_dir "${COCO_DIR:?set COCO_DIR}" --per_device_train_batch_size 8 --per_device_eval_batch_size 8 \
    --learning_rate 5e-5 --num_train_epochs 1 --precision bf16 "$@"
