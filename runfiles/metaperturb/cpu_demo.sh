#!/usr/bin/env bash
# CPU-scale MetaPerturb demo (not a paper result): phi meta-learned on 4 source tasks of the Omniglot
# "minimal" background sets (Conv4), then Conv4 targets trained from scratch on 10 images per class of
# held-out digits (scikit-learn's; 12 classes: digits 6, 8, 9 in 4 rotations, 16x16), base vs
# MetaPerturb vs information dropout, seeds 0-2, two runs at a time; then the table and the plot.
# Both phases resize their images to 32x32, the original's size for its source and default targets,
# where its random crop pads 4 pixels (8 at other sizes: half a 16-px digit; spec 2.3-2.4).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python}
OUT=${OUT:-./results/metaperturb_cpu}
DATA_ROOT=${DATA_ROOT:-./data/omniglot_small}
SRC_STEPS=${SRC_STEPS:-200}
TGT_STEPS=${TGT_STEPS:-300}
$PYTHON get_data.py --dataset omniglot_small --data_root "$DATA_ROOT"
nice $PYTHON transfer.py --phase src --data omniglot_small --data_root "$DATA_ROOT" --model conv4_32 \
  --img_size 32 --num_split 4 --batch_size 32 --train_steps "$SRC_STEPS" --augment crop --print_every 25 \
  --save_every 100 --save_dir "$OUT" --exp_name omniglot_conv4
for seed in 0 1 2; do
  for noise in none metaperturb infodrop; do
    echo "$seed $noise"
  done
done | xargs -P 2 -L 1 bash -c 'nice '"$PYTHON"' transfer.py --phase tgt --data digits --tgt_split test \
  --n_per_class 10 --model conv4_32 --img_size 32 --batch_size 32 --train_steps '"$TGT_STEPS"' --augment crop \
  --print_every 50 --save_every 200 --save_dir '"$OUT"' --src_name omniglot_conv4 --src_steps '"$SRC_STEPS"' \
  --seed "$0" --noise "$1" --exp_name "digits_conv4_32_$1_seed$0" > /dev/null'
$PYTHON report.py --transfer "$OUT/tgt" --baseline none
$PYTHON plot.py --transfer "$OUT/tgt"
if [ "${UPDATE_DOCS:-0}" = 1 ]; then cp "$OUT/tgt/transfer_curves.png" docs/metaperturb_cpu_digits.png; fi
