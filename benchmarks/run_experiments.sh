#!/bin/bash
# The experiment campaign of doc/experiments.rst, at equal training time per model.
#
# Usage (from the repository root, with the package installed and on PATH):
#
#     BUDGET=5 RUNS=runs bash benchmarks/run_experiments.sh
#
# Needs $RUNS/val3000 (validation set) and $RUNS/test-{lowz,midz,highz} (held-out tests);
# the commands that write them are in doc/experiments.rst.  Every model trains for BUDGET
# wall-clock minutes with the learning rate decaying over that time (--lr-schedule
# cosine_time), on batches simulated afresh each epoch with the same seed, so the rows
# compare at equal time and equal data stream.  Runs whose model file exists are skipped:
# an interrupted campaign resumes.  Ends with the results table
# ($RUNS/table/results.rst) and the gamma study ($RUNS/gamma/gamma.rst, gamma.png).
set -u
BUDGET=${BUDGET:-5}              # minutes of training per model
QSO_BUDGET=${QSO_BUDGET:-4}      # minutes of QSO pretraining
TUNE_BUDGET=${TUNE_BUDGET:-12}   # minutes of hyper-parameter search
NTRAIN=${NTRAIN:-12800}         # simulated spectra per epoch
RUNS=${RUNS:-runs}
VAL=${VAL:-$RUNS/val3000}
EXTRA_MODELS=${EXTRA_MODELS:-}   # more NAME=FILE entries for the table (e.g. the shipped model)
TESTS="lowz=$RUNS/test-lowz midz=$RUNS/test-midz highz=$RUNS/test-highz"
# Time-bound runs: the epoch cap is never reached; 12,800 spectra per epoch keeps the
# per-epoch stopping check fine-grained for the slow (8-layer) configurations.
COMMON="--val-dir $VAL --epochs 1000 --ntrain $NTRAIN --max-minutes $BUDGET --lr-schedule cosine_time --verbose 2"
export TF_CPP_MIN_LOG_LEVEL=2
mkdir -p "$RUNS"
status=0

train () {  # NAME desi_lbg_train-options...
    local name=$1
    shift
    if [ -e "$RUNS/$name/$name.weights.h5" ]; then
        echo "$(date +%T) $name: done already"
        return
    fi
    echo "$(date +%T) $name: training ($*)"
    desi_lbg_train --outdir "$RUNS/$name" --name "$name" "$@" > "$RUNS/$name.log" 2>&1
    if [ ! -e "$RUNS/$name/$name.weights.h5" ]; then
        echo "$(date +%T) $name: FAILED, see $RUNS/$name.log"
        status=1
    fi
}

# gamma study; gamma = 3 (etc/lbgnet-default.yaml since 2026-11-26) is the shipped configuration
# trained from scratch at this budget, the "scratch" row (the campaign of doc/experiments.rst
# ran before that, with gamma = 1 as the default)
echo "$(date +%T) gamma study"
python benchmarks/gamma_study.py --config etc/lbgnet-default.yaml --gammas 0.3 1 3 \
    --outdir "$RUNS/gamma" --val-dir "$VAL" --tests $TESTS -- $COMMON \
    > "$RUNS/gamma.log" 2>&1 || { echo "gamma study FAILED"; status=1; }

# the thesis configurations
train initial --config etc/lbgnet-initial.yaml $COMMON
train snr --config etc/lbgnet-snr.yaml $COMMON

# transfer learning from a QSO line finder pretrained on the simulator's quasars
train qso --config etc/lbgnet-qso.yaml --nval 1000 --epochs 1000 --ntrain "$NTRAIN" \
    --max-minutes "$QSO_BUDGET" --lr-schedule cosine_time --verbose 2
QSO="$RUNS/qso/qso.weights.h5"
train ft0 --config etc/lbgnet-default.yaml $COMMON --init-from "$QSO" --init-layers dense
train ft2 --config etc/lbgnet-default.yaml $COMMON --init-from "$QSO" --init-layers dense \
    --freeze 2 --unfreeze-epochs 300
train ft5 --config etc/lbgnet-default.yaml $COMMON --init-from "$QSO" --init-layers dense \
    --freeze 5 --unfreeze-epochs 300

# end-to-end variants; the hybrid also with a lower weight of its direct loss
train direct --config etc/lbgnet-direct.yaml $COMMON
train hybrid --config etc/lbgnet-hybrid.yaml $COMMON
cat > "$RUNS/hybrid-w0.1.yaml" <<EOF
# hybrid with loss.direct.weight 0.1 (doc/experiments.rst)
base: $PWD/etc/lbgnet-hybrid.yaml
name: hybrid-w0.1
loss:
  direct:
    weight: 0.1
EOF
train hybrid-w0.1 --config "$RUNS/hybrid-w0.1.yaml" $COMMON

# Bayesian search (short: a handful of trials on one fixed training set), then its best
# point retrained like every other row
# (the best YAML is also written when a signal stops the study: only a marker written after
# a successful exit says the tuning is done; a rerun of desi_lbg_tune resumes the study)
if [ ! -e "$RUNS/tune/.tuning-done" ]; then
    echo "$(date +%T) tuning"
    desi_lbg_tune --config etc/lbgnet-default.yaml --trials 8 --budget-minutes "$TUNE_BUDGET" \
        --ntrain $((NTRAIN * 2 / 3)) --trial-epochs 6 --trial-minutes 1.5 --startup-trials 5 \
        --val-dir "$VAL" --workdir "$RUNS/tune" --outdir "$RUNS/tune" > "$RUNS/tune.log" 2>&1 \
        && touch "$RUNS/tune/.tuning-done" || { echo "tuning FAILED"; status=1; }
fi
if [ -e "$RUNS/tune/.tuning-done" ]; then
    train tuned --config "$RUNS/tune/lbgnet-default-tune-best.yaml" $COMMON
fi

echo "$(date +%T) results table"
python benchmarks/experiment_table.py --outdir "$RUNS/table" --tests $TESTS --model \
    scratch="$RUNS/gamma/gamma-3/gamma-3.weights.h5" \
    initial="$RUNS/initial/initial.weights.h5" snr="$RUNS/snr/snr.weights.h5" \
    ft0="$RUNS/ft0/ft0.weights.h5" ft2="$RUNS/ft2/ft2.weights.h5" ft5="$RUNS/ft5/ft5.weights.h5" \
    direct="$RUNS/direct/direct.weights.h5" hybrid="$RUNS/hybrid/hybrid.weights.h5" \
    hybrid-w0.1="$RUNS/hybrid-w0.1/hybrid-w0.1.weights.h5" tuned="$RUNS/tuned/tuned.weights.h5" \
    $EXTRA_MODELS > "$RUNS/table.log" 2>&1 || { echo "results table FAILED"; status=1; }
echo "$(date +%T) campaign done (status $status)"
exit $status
