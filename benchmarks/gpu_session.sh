#!/usr/bin/env bash
# The accelerator checks of the autoregressive and flow families in one command that fits
# one 10-minute call of a lent GPU (its boxes add up to 9m45s, typically far less; every
# part is time-boxed, and what a part printed before its box closed is kept):
#   1. training throughput, fp32, every config of benchmarks/train_throughput.py (MFU
#      against dense TF32 peak), then the peer configs in bf16 and ImageGPT in
#      full-precision fp32 (PyTorch's default for matrix products);
#   2. the masked-convolution implementations (benchmarks/conv_impl.py, whole PixelCNNs),
#      which decide MaskedConv2D's 'auto' on this backend;
#   3. naive against cached sampling at 28x28 for every model with a cached step;
#   4. a full-size binarized-MNIST Gated PixelCNN run (gated_pixelcnn_mnist.flags, as many
#      steps as part 1's throughput fits in TRAIN_S), evaluated on t10k[8000:].
#
# Prepare once, in the repository root on the development machine (both paths are ignored
# by git; the GPU machine has no network and no ../shared, and lacks tensorboardX):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux2014_x86_64 -d .whl tensorboardX==2.6.5
#   mkdir -p .data/mnist && cp ../shared/data/mnist/t10k-* .data/mnist/   # never committed
# then run `bash benchmarks/gpu_session.sh` there with carry ['.whl', '.data'].
#
# Writes to $OUT (default /tmp/dulx-gpu): env.txt, throughput.jsonl, conv_impl.jsonl,
# sampling.jsonl, train.log, metrics.jsonl and session.log (all that was printed).
# SMOKE=1 runs every part at toy sizes on whatever device there is (a check of this
# script on a CPU, about 3 minutes on 2 cores).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/dulx-gpu}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/session.log") 2>&1
export PYTHONUNBUFFERED=1
if compgen -G '.whl/*.whl' >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/dulx-site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/dulx-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
MNIST=${MNIST:-.data/mnist/t10k-images-idx3-ubyte.gz}
[[ -f $MNIST || ${SMOKE:-0} == 1 ]] || { echo "no MNIST at $MNIST (see the preparation above)"; exit 2; }

# Dense peaks of an H100/H200 SXM: TF32 495 and bf16 989 TFLOP/s.
PEAK_TF32=${PEAK_TF32:-495}
PEAK_BF16=${PEAK_BF16:-989}
THROUGHPUT_S=${THROUGHPUT_S:-180}
PEERS_S=${PEERS_S:-90}
HIGHEST_S=${HIGHEST_S:-45}
CONV_S=${CONV_S:-45}
SAMPLING_S=${SAMPLING_S:-90}
TRAIN_S=${TRAIN_S:-90}
PEERS=gated_pixelcnn_10x128,pixelsnail_8x64,imagegpt_8x64
HIGHEST=imagegpt_8x64
CONV_ARGS=(--only=models --reps=5)
SAMPLERS=imagegpt_8x64,pixelsnail_8x64,gated_pixelcnn,pixelcnn,wavenet,rnn,pixelcnn_pp
STEPS=(--steps=20 --warmup=2)
SAMPLE_ARGS=(--num=16 --repeats=2)
TRAIN_MODEL=gated_pixelcnn
TRAIN_ARGS=(--flagfile=experiments/configs/gated_pixelcnn_mnist.flags "--dataset=idx:$MNIST")
if [[ ${SMOKE:-0} == 1 ]]; then
  PEERS=made_784-8000-784 HIGHEST=made_784-8000-784 SAMPLERS=pixelcnn
  STEPS=(--steps=1 --warmup=1) CONV_ARGS=(--only=layers --reps=1)
  SAMPLE_ARGS=(--num=2 --repeats=1 --height=8 --width=8)
  TRAIN_ARGS=(--flagfile=experiments/configs/gated_pixelcnn_digits.flags --num_layers=2
              --channels=8 --skip_channels=8 --num_samples=4)
fi

part() { echo; echo "== $(date -u +%T) $*"; }

part environment
{ nvidia-smi -L 2>/dev/null; python3 -c 'import jax, flax, optax; print("jax", jax.__version__,
  "flax", flax.__version__, "optax", optax.__version__, jax.devices())'; } | tee "$OUT/env.txt"

part "throughput: fp32 (precision default), every config"
only=()
[[ ${SMOKE:-0} == 1 ]] && only=(--only=$PEERS)
timeout "$THROUGHPUT_S" python3 benchmarks/train_throughput.py "${only[@]}" --dtypes=float32 \
    "${STEPS[@]}" --peak_tflops="$PEAK_TF32" | tee -a "$OUT/throughput.jsonl"
part "throughput: bf16, peer configs"
timeout "$PEERS_S" python3 benchmarks/train_throughput.py --only=$PEERS --dtypes=bfloat16 \
    "${STEPS[@]}" --peak_tflops="$PEAK_BF16" | tee -a "$OUT/throughput.jsonl"
part "throughput: fp32 (precision highest), $HIGHEST"
timeout "$HIGHEST_S" python3 benchmarks/train_throughput.py --only=$HIGHEST --dtypes=float32 \
    --matmul_precision=highest "${STEPS[@]}" | tee -a "$OUT/throughput.jsonl"

part "masked convolution: xla against taps"
timeout "$CONV_S" python3 benchmarks/conv_impl.py "${CONV_ARGS[@]}" | tee -a "$OUT/conv_impl.jsonl"

part "sampling: naive against cached"
timeout "$SAMPLING_S" python3 benchmarks/sampling.py --only=$SAMPLERS "${SAMPLE_ARGS[@]}" \
    | tee -a "$OUT/sampling.jsonl"

part "training: $TRAIN_MODEL, as many steps as fit in ${TRAIN_S}s"
steps=$(python3 - "$OUT/throughput.jsonl" "$TRAIN_S" "${SMOKE:-0}" <<'EOF'
import json, sys
path, budget, smoke = sys.argv[1], float(sys.argv[2]), sys.argv[3] == '1'
if smoke:
  print(5); sys.exit()
rates = [json.loads(l) for l in open(path) if l.startswith('{')]
ips = [r['img_per_s'] for r in rates if r.get('config') == 'gated_pixelcnn_10x128'
       and r.get('dtype') == 'float32' and r.get('precision') == 'default' and 'img_per_s' in r]
# Half the budget trains; compilation, evaluations and sample grids take the rest.
print(max(100, int(0.5 * budget * ips[0] / 128)) if ips else 500)
EOF
)
workdir=/tmp/dulx-gpu-train
rm -rf "$workdir"
timeout -s TERM "$TRAIN_S" python3 experiments/$TRAIN_MODEL.py "${TRAIN_ARGS[@]}" \
    --num_steps="$steps" --eval_every="$steps" --checkpoint_every="$steps" \
    --workdir="$workdir" 2>&1 | tee "$OUT/train.log"
if ! grep -q '"nll"' "$OUT/train.log"; then  # Stopped by its box: score the checkpoint it saved.
  timeout 45 python3 experiments/$TRAIN_MODEL.py --workdir="$workdir" --mode=eval \
      2>&1 | tee -a "$OUT/train.log"
fi
cp "$workdir/metrics.jsonl" "$OUT/metrics.jsonl" 2>/dev/null
part done
