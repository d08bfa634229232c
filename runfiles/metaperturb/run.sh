#!/usr/bin/env bash
# MetaPerturb as MetaPerturb's run.sh: `bash runfiles/metaperturb/run.sh src` meta-trains phi on the
# source tasks (NUM_RUN runs); `bash runfiles/metaperturb/run.sh tgt <gpu>` trains a target network
# from scratch with phi of run SRC_RUN, frozen. Change the configuration here. Extra flags after
# `src` / `tgt <gpu>` go to transfer.py.
SRC_DATA=tiny_imagenet
SRC_MODEL=resnet20
SRC_STEPS=750
NUM_RUN=5
NUM_SPLIT=10
SRC_RUN=0
TGT_DATA=stanford_cars   # stl10, small_cifar_100, stanford_dogs, aircraft_official, cub_official
TGT_MODEL=resnet20
IMG_SIZE=84
NOISE=metaperturb   # target regulariser: metaperturb, none, infodrop, mixup
NOISE_COEFF=1
SAVE_DIR=checkpoints
EXP_NAME=${SRC_DATA}_${SRC_MODEL}_final
PYTHON=${PYTHON:-python}

set -euo pipefail
cd "$(dirname "$0")/../.."
case "${1:-}" in
  src)
    exec $PYTHON transfer.py --phase src --num_run "$NUM_RUN" --save_dir "$SAVE_DIR" --num_split "$NUM_SPLIT" \
      --lr 1e-3 --data "$SRC_DATA" --img_size 32 --model "$SRC_MODEL" --train_steps "$SRC_STEPS" \
      --exp_name "$EXP_NAME" "${@:2}" ;;
  tgt)
    if [ $# -lt 2 ]; then echo "usage: run.sh tgt <gpu>" >&2; exit 2; fi
    exec $PYTHON transfer.py --phase tgt --gpus "$2" --save_dir "$SAVE_DIR" --lr 1e-3 --data "$TGT_DATA" \
      --img_size "$IMG_SIZE" --model "$TGT_MODEL" --noise "$NOISE" --noise_coeff "$NOISE_COEFF" \
      --src_name "$EXP_NAME" --src_steps "$SRC_STEPS" --src_run "$SRC_RUN" \
      --exp_name "${EXP_NAME}_${SRC_STEPS}_to_${TGT_DATA}_${TGT_MODEL}_${NOISE}" "${@:3}" ;;
  *)
    echo "Wrong Argument: use 'run.sh src' or 'run.sh tgt <gpu>'" >&2
    exit 2 ;;
esac
