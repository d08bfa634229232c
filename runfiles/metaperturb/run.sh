#!/usr/bin/env bash
# MetaPerturb as MetaPerturb's run.sh: `bash runfiles/metaperturb/run.sh src` meta-trains phi on the
# source tasks (NUM_RUN runs); `bash runfiles/metaperturb/run.sh select <gpu>` picks the best of those
# runs by a short target run each on CIFAR-100 images disjoint from s-CIFAR100 (spec Q9), after which
# SRC_RUN=best uses the chosen run; `bash runfiles/metaperturb/run.sh tgt <gpu>` trains a target
# network from scratch with phi of run SRC_RUN, frozen. Fine-tuning baseline: `run.sh pretrain <gpu>`
# trains TGT_MODEL on SRC_DATA (Tiny ImageNet) without regulariser; with FINE_TUNE set to that run's
# folder, `run.sh tgt <gpu>` starts from its conv weights (batch norm and the head fresh) instead.
# Change the configuration here. Extra flags after the case (and <gpu>) go to transfer.py.
SRC_DATA=tiny_imagenet
SRC_MODEL=resnet20
SRC_STEPS=750
NUM_RUN=5
NUM_SPLIT=10
SRC_RUN=0   # a source run number, or best: the run chosen by `run.sh select`
TGT_DATA=stanford_cars   # stl10, small_cifar_100, stanford_dogs, aircraft_official, cub_official
TGT_MODEL=resnet20
IMG_SIZE=84
NOISE=metaperturb   # target regulariser: metaperturb, none, infodrop, mixup
NOISE_COEFF=1
SAVE_DIR=checkpoints
EXP_NAME=${SRC_DATA}_${SRC_MODEL}_final
PRETRAIN_STEPS=100000   # the original's pre-trained network is model_100000.pth
PRETRAIN_NAME=${SRC_DATA}_${TGT_MODEL}_pretrain
FINE_TUNE=   # empty: from scratch; fine-tuning: $SAVE_DIR/tgt/$PRETRAIN_NAME (after `run.sh pretrain`)
PYTHON=${PYTHON:-python}

set -euo pipefail
cd "$(dirname "$0")/../.."
case "${1:-}" in
  src)
    exec $PYTHON transfer.py --phase src --num_run "$NUM_RUN" --save_dir "$SAVE_DIR" --num_split "$NUM_SPLIT" \
      --lr 1e-3 --data "$SRC_DATA" --img_size 32 --model "$SRC_MODEL" --train_steps "$SRC_STEPS" \
      --exp_name "$EXP_NAME" "${@:2}" ;;
  select)
    if [ $# -lt 2 ]; then echo "usage: run.sh select <gpu>" >&2; exit 2; fi
    exec $PYTHON transfer.py --phase select --gpus "$2" --save_dir "$SAVE_DIR" --lr 1e-3 --img_size 32 \
      --model "$SRC_MODEL" --noise metaperturb --noise_coeff "$NOISE_COEFF" --src_name "$EXP_NAME" \
      --src_steps "$SRC_STEPS" "${@:3}" ;;
  pretrain)
    if [ $# -lt 2 ]; then echo "usage: run.sh pretrain <gpu>" >&2; exit 2; fi
    exec $PYTHON transfer.py --phase tgt --gpus "$2" --save_dir "$SAVE_DIR" --lr 1e-3 --data "$SRC_DATA" \
      --img_size 32 --model "$TGT_MODEL" --noise none --train_steps "$PRETRAIN_STEPS" \
      --exp_name "$PRETRAIN_NAME" "${@:3}" ;;
  tgt)
    if [ $# -lt 2 ]; then echo "usage: run.sh tgt <gpu>" >&2; exit 2; fi
    exec $PYTHON transfer.py --phase tgt --gpus "$2" --save_dir "$SAVE_DIR" --lr 1e-3 --data "$TGT_DATA" \
      --img_size "$IMG_SIZE" --model "$TGT_MODEL" --noise "$NOISE" --noise_coeff "$NOISE_COEFF" \
      --src_name "$EXP_NAME" --src_steps "$SRC_STEPS" --src_run "$SRC_RUN" ${FINE_TUNE:+--fine_tune "$FINE_TUNE"} \
      --exp_name "${EXP_NAME}_${SRC_STEPS}_to_${TGT_DATA}_${TGT_MODEL}_${NOISE}${FINE_TUNE:+_finetune}" "${@:3}" ;;
  *)
    echo "Wrong Argument: use 'run.sh src', 'run.sh select <gpu>', 'run.sh pretrain <gpu>' or 'run.sh tgt <gpu>'" >&2
    exit 2 ;;
esac
