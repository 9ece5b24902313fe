#!/bin/sh
# Rerun every measurement and regenerate what depends on it (see tools/measure/README.md).
# Needs: pip install -e '.[test,validate]'. Run from anywhere; stops at the first failure.
set -eu
cd "$(dirname "$0")/../.."
python tools/measure/params_kv.py
python tools/measure/peaks.py
python tools/accuracy_table.py
