"""Print, one per line, the main.py flags that rebuild the model of a savedir from its config.json
(used by attack_all.sh to meta-test every trained model the way it was trained)."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import main  # noqa: E402

# Set by attack_all.sh itself, derived from other flags, or not part of the model (--maml is --noise
# none).
SKIP = {
    "mode",
    "savedir",
    "metabatch",
    "n_test_mc_samp",
    "n_test_iters",
    "gpu_id",
    "verbose",
    "data_root",
    "episodes",
    "maml",
    "noise_title",
    "noise_version",
    "val_split",
}
SKIP |= {"attack", "attack_eps", "attack_steps"}

config = json.load(open(os.path.join(sys.argv[1], "config.json")))
for key, default in vars(main.parse_args(["--savedir", "x"])).items():
    value = config.get(key, default)
    if isinstance(value, dict):  # --noise_hp K=V[,K=V]
        value = ",".join(f"{k}={v}" for k, v in value.items())
    if key in SKIP or value in (None, False, ""):
        continue
    print(f"--{key}", *([] if value is True else [value]), sep="\n")
