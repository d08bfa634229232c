"""`python get_data.py` run in this folder (as in the original READMEs: cd ./data/<dataset>) prepares
the dataset named by the folder here, through the project's get_data.py; other flags pass through."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

import get_data  # noqa: E402

if __name__ == "__main__":
    # relative to where the user stands, as are the paths and commands its messages name
    root = os.path.relpath(HERE)
    sys.exit(get_data.main(["--dataset", os.path.basename(HERE), "--data_root", root, *sys.argv[1:]]))
