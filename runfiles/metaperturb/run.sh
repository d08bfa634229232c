#!/usr/bin/env bash
# MetaPerturb as MetaPerturb's run.sh: `bash runfiles/metaperturb/run.sh src` meta-trains phi on the
# source tasks (NUM_RUN runs); `run.sh select` picks the best of those runs by a short target run each
# on CIFAR-100 images disjoint from s-CIFAR100 (spec Q9), after which SRC_RUN=best uses the chosen run;
# `run.sh tgt` trains a target network from scratch with phi of run SRC_RUN, frozen. Fine-tuning
# baseline: `run.sh pretrain` trains TGT_MODEL on SRC_DATA (Tiny ImageNet) without regulariser; with
# FINE_TUNE set to that run's folder, `run.sh tgt` starts from its conv weights (batch norm and the
# head fresh) instead.
# Usage: run.sh <src|select|pretrain|tgt> [GPU number(s)] [transfer.py flags]. Without a GPU number
# (and GPUS unset) the run uses what TensorFlow sees (a CPU when there is no GPU).
# Configure it through the environment, e.g. `TGT_DATA=stl10 BATCH_SIZE=64 bash run.sh tgt 0`: each
# variable below is a default that a variable of the same name in the environment replaces.
SRC_DATA=${SRC_DATA:-tiny_imagenet}
SRC_MODEL=${SRC_MODEL:-resnet20}
SRC_STEPS=${SRC_STEPS:-750}
NUM_RUN=${NUM_RUN:-5}
NUM_SPLIT=${NUM_SPLIT:-10}
SRC_RUN=${SRC_RUN:-0}   # a source run number, or best: the run chosen by `run.sh select`
TGT_DATA=${TGT_DATA:-stanford_cars}   # stl10, small_cifar_100, stanford_dogs, aircraft_official, cub_official
TGT_MODEL=${TGT_MODEL:-resnet20}
IMG_SIZE=${IMG_SIZE:-84}
BATCH_SIZE=${BATCH_SIZE:-128}   # transfer.py --batch_size (a small target needs fewer)
NOISE=${NOISE:-metaperturb}   # target regulariser: metaperturb, none, infodrop, mixup
NOISE_COEFF=${NOISE_COEFF:-1}
SAVE_DIR=${SAVE_DIR:-checkpoints}
EXP_NAME=${EXP_NAME:-${SRC_DATA}_${SRC_MODEL}_final}
PRETRAIN_STEPS=${PRETRAIN_STEPS:-100000}   # the original's pre-trained network is model_100000.pth
PRETRAIN_NAME=${PRETRAIN_NAME:-${SRC_DATA}_${TGT_MODEL}_pretrain}
FINE_TUNE=${FINE_TUNE:-}   # empty: from scratch; fine-tuning: $SAVE_DIR/tgt/$PRETRAIN_NAME (after `run.sh pretrain`)
GPUS=${GPUS:-}   # CUDA_VISIBLE_DEVICES (the GPU number after the case overrides it); empty: unchanged
PYTHON=${PYTHON:-python}

set -euo pipefail
cd "$(dirname "$0")/../.."
CASE=${1:-}
shift || true
if [[ "${1:-}" =~ ^[0-9]+(,[0-9]+)*$ ]]; then  # the optional GPU number(s)
  GPUS=$1
  shift
fi
COMMON=(--save_dir "$SAVE_DIR" --lr 1e-3 --batch_size "$BATCH_SIZE" ${GPUS:+--gpus "$GPUS"})
case "$CASE" in
  src)
    exec $PYTHON transfer.py --phase src "${COMMON[@]}" --num_run "$NUM_RUN" --num_split "$NUM_SPLIT" \
      --data "$SRC_DATA" --img_size 32 --model "$SRC_MODEL" --train_steps "$SRC_STEPS" \
      --exp_name "$EXP_NAME" "$@" ;;
  select)
    exec $PYTHON transfer.py --phase select "${COMMON[@]}" --img_size 32 --model "$SRC_MODEL" \
      --noise metaperturb --noise_coeff "$NOISE_COEFF" --src_name "$EXP_NAME" --src_steps "$SRC_STEPS" "$@" ;;
  pretrain)
    exec $PYTHON transfer.py --phase tgt "${COMMON[@]}" --data "$SRC_DATA" --img_size 32 \
      --model "$TGT_MODEL" --noise none --train_steps "$PRETRAIN_STEPS" --exp_name "$PRETRAIN_NAME" "$@" ;;
  tgt)
    exec $PYTHON transfer.py --phase tgt "${COMMON[@]}" --data "$TGT_DATA" --img_size "$IMG_SIZE" \
      --model "$TGT_MODEL" --noise "$NOISE" --noise_coeff "$NOISE_COEFF" --src_name "$EXP_NAME" \
      --src_steps "$SRC_STEPS" --src_run "$SRC_RUN" ${FINE_TUNE:+--fine_tune "$FINE_TUNE"} \
      --exp_name "${EXP_NAME}_${SRC_STEPS}_to_${TGT_DATA}_${TGT_MODEL}_${NOISE}${FINE_TUNE:+_finetune}" "$@" ;;
  *)
    echo "Wrong Argument: use 'run.sh src', 'run.sh select', 'run.sh pretrain' or 'run.sh tgt', each optionally followed by a GPU number" >&2
    exit 2 ;;
esac
