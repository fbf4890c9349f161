#!/bin/bash
# The larger networks of doc/experiments.rst ("Larger networks on a GPU"): Hyp SNR
# (etc/lbgnet-snr.yaml) and the shipped network twice as wide (etc/lbgnet-wide.yaml),
# trained side by side with the shipped recipe's simulator, validation set and
# cosine_time schedule, on a machine with a GPU and many cores.
#
# Usage (from the repository root, with the package installed and on PATH; TensorFlow is
# not needed under another Keras backend):
#
#     KERAS_BACKEND=jax BUDGET=3.2 RUNS=runs bash benchmarks/gpu_larger_networks.sh
#
# Writes $RUNS/val3000 when missing (the shipped model's validation set), then trains
# $RUNS/gpu-snr and $RUNS/gpu-wide for BUDGET minutes each, each with WORKERS simulation
# processes [half the cores minus one: the simulation, not the GPU, limits the rate];
# runs whose model file exists are skipped.  When $RUNS/test-{lowz,midz,highz} exist
# (commands in doc/experiments.rst), both models are evaluated on them into
# $RUNS/eval-gpu-NAME-REGIME.
set -u
BUDGET=${BUDGET:-3.2}
NTRAIN=${NTRAIN:-51200}          # simulated spectra per epoch
RUNS=${RUNS:-runs}
VAL=${VAL:-$RUNS/val3000}
# all the machine's cores: nproc alone obeys OMP_NUM_THREADS, set to 1 below
WORKERS=${WORKERS:-$(( $(nproc --all) / 2 - 1 ))}
[ "$WORKERS" -ge 1 ] || WORKERS=1
export TF_CPP_MIN_LOG_LEVEL=2 XLA_PYTHON_CLIENT_PREALLOCATE=false
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1   # one core per process
mkdir -p "$RUNS"
status=0

if [ ! -d "$VAL" ]; then
    echo "$(date +%T) writing the validation set $VAL"
    rm -rf "$RUNS/val-writer"
    desi_lbg_train --config etc/lbgnet-default.yaml --outdir "$RUNS/val-writer" --nval 3000 \
        --seed 1 --validation-only > "$RUNS/val-writer.log" 2>&1 \
        && mv "$RUNS/val-writer/validation" "$VAL" \
        || { echo "validation set FAILED, see $RUNS/val-writer.log"; exit 1; }
fi

pids=()
for name in snr wide; do
    out="$RUNS/gpu-$name"
    if [ -e "$out/gpu-$name.weights.h5" ]; then
        echo "$(date +%T) gpu-$name: done already"
        continue
    fi
    echo "$(date +%T) gpu-$name: training for $BUDGET min with $WORKERS worker processes"
    desi_lbg_train --config "etc/lbgnet-$name.yaml" --outdir "$out" --name "gpu-$name" \
        --lr-schedule cosine_time --max-minutes "$BUDGET" --epochs 100000 --patience 100000 \
        --ntrain "$NTRAIN" --seed 1 --val-dir "$VAL" --workers "$WORKERS" --worker-processes \
        --verbose 2 > "$RUNS/gpu-$name.log" 2>&1 &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done

for name in snr wide; do
    model="$RUNS/gpu-$name/gpu-$name.weights.h5"
    if [ ! -e "$model" ]; then
        echo "$(date +%T) gpu-$name: FAILED, see $RUNS/gpu-$name.log"
        status=1
        continue
    fi
    grep -h "best val_score" "$RUNS/gpu-$name.log"
    for regime in lowz midz highz; do
        test="$RUNS/test-$regime"
        [ -d "$test" ] || continue
        desi_lbg_evaluate --model "$model" --coadd "$test"/coadd-*.fits \
            --truth "$test"/truth-*.fits --redrock "$test"/redrock-*.fits \
            --outdir "$RUNS/eval-gpu-$name-$regime" > "$RUNS/eval-gpu-$name-$regime.log" 2>&1 \
            || { echo "evaluation gpu-$name $regime FAILED"; status=1; }
    done
done
echo "$(date +%T) done"
exit $status
