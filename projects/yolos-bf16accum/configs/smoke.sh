# What `pixi run yolos-smoke` runs: both regimes on the tiny random model and the synthetic set (CPU).
set -e
python train_yolos_baseline_bf16.py --smoke "$@"
python train_yolos_progressive_bf16accum_ste.py --smoke "$@"
