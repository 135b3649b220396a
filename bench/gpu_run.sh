#!/usr/bin/env bash
# The one GPU run that issue 23 waits for, as ../shared/GPU.md describes it: run from the repository root on the
# device machine, with the wheels of ../shared/gpu/wheelhouse.sh carried in .wheelhouse/ and $OUT set (the device
# tool sets it). Each step writes its log under $OUT; a failing step does not stop the next. Estimated (not yet run): 8-10
# minutes on an H200 with the machine's start; if a run's 10-minute limit is near, run the last two steps apart.
set -u
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
pip install -q --no-index --no-deps --target /tmp/site .wheelhouse/*.whl
export PYTHONPATH=/tmp/site:$PWD SSD_TUTORIAL_HOME=/tmp/ssdhome MPLBACKEND=Agg PYTHONUNBUFFERED=1
mkdir -p /tmp/bin && printf '#!/bin/sh\nexec python3 -c "import sys; from ssd_tutorial.cli import main; sys.exit(main())" "$@"\n' > /tmp/bin/ssd-tutorial && chmod +x /tmp/bin/ssd-tutorial
export PATH=/tmp/bin:$PATH   # the console script the CLI tests call
python3 -m pytest -q -p no:cacheprovider -m cuda tests --ignore=tests/test_notebooks.py 2>&1 | tail -30 > "$OUT/cuda.log"
python3 -m pytest -q -p no:cacheprovider tests --ignore=tests/test_notebooks.py -m 'not cuda' 2>&1 | tail -30 > "$OUT/suite.log"
python3 bench/train_speed.py --stage ssd --size 300 --backbone resnet34 --bs 32 --n-train 2048 --out "$OUT/train_speed.md" > /dev/null 2>&1
python3 bench/predict.py --n 256 --device cuda --decode-bs 64 --out "$OUT/predict.md" > /dev/null 2>&1
python3 bench/vgg_scratch.py --n-train 4096 --epochs 2 --bs 32 --backbones vgg16_bn resnet34 --out "$OUT/vgg_scratch.md" > /dev/null 2>&1
ls -l "$OUT"
