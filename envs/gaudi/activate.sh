#!/usr/bin/env bash
# Gaudi activation: PT_HPU_* variables are read once, when the Habana bridge is imported (since Gaudi 1.18
# `import torch` can autoload it), so they must be set in the environment BEFORE Python starts. Setting
# them from Python after `import torch` silently does nothing. Each value can be overridden by exporting
# it before `pixi run` / `source`.
#
#   source envs/gaudi/activate.sh      # outside pixi (Intel's container, a plain venv)

# Lazy mode: the ops are accumulated into a graph and run at htcore.mark_step(). It is the mode the YOLOX
# port was tuned for; the bridge's default became eager (0) around 1.21, so say it explicitly.
export PT_HPU_LAZY_MODE="${PT_HPU_LAZY_MODE:-1}"
# Smaller lazy graphs: less device memory and compile time per graph, at some speed cost (the YOLOX port's value).
export PT_HPU_MAX_COMPOUND_OP_SIZE="${PT_HPU_MAX_COMPOUND_OP_SIZE:-100}"
# Dynamic-shape refinement recompiles on new shapes; the training code pads to fixed shapes instead.
export PT_HPU_ENABLE_REFINE_DYNAMIC_SHAPES="${PT_HPU_ENABLE_REFINE_DYNAMIC_SHAPES:-0}"

# BF16 autocast op lists (torch.autocast("hpu", torch.bfloat16) reads them at bridge load). A project that
# ships lists (yolox-gaudi: ops_bf16_yolox.txt / ops_fp32_yolox.txt) is used when present; the variables
# stay unset otherwise, so the bridge's built-in lists apply.
_here="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")" && pwd)"
_ops="${YOLO_HPU_OPS_DIR:-$_here/../../projects/yolox-gaudi/configs}"
if [ -z "${PT_HPU_AUTOCAST_LOWER_PRECISION_OPS_LIST:-}" ] && [ -f "$_ops/ops_bf16_yolox.txt" ]; then
  export PT_HPU_AUTOCAST_LOWER_PRECISION_OPS_LIST="$_ops/ops_bf16_yolox.txt"
fi
if [ -z "${PT_HPU_AUTOCAST_FP32_OPS_LIST:-}" ] && [ -f "$_ops/ops_fp32_yolox.txt" ]; then
  export PT_HPU_AUTOCAST_FP32_OPS_LIST="$_ops/ops_fp32_yolox.txt"
fi
unset _here _ops
