#!/usr/bin/env bash
# The GPU check (issue 13), run on a lent GPU machine in two calls of the device tool, back to back (the
# machine stays warm ~30 s between calls; each call carries one half of the kit from `make gpu-kit`):
#   a: installs the kit's wheels, keeps MiniLM's first half, runs the smoke suite on CUDA at fp32, bf16, fp16
#   b: joins MiniLM (sha256 checked), runs SST-2 quick at fp32 and bf16, then CoNLL-2003 quick at bf16 while
#      time is left
# Results come back as $OUT/runs-<step>.tar.gz (records, tables, reports; no predictions) and $OUT/log-<step>.txt.
# Here, for a rehearsal on CPU: GPU_CHECK_DEVICE=cpu GPU_CHECK_BUDGET=smoke PY=.venv/bin/python \
#   GPU_CHECK_NO_INSTALL=1 OUT=/tmp/gpu-out bash benchmarks/gpu/check.sh a   (then b)
set -uo pipefail
cd "$(dirname "$0")/../.."
step=${1:-}
[[ $step == a || $step == b ]] || { echo "usage: check.sh a|b (a first, then b in the next call)" >&2; exit 2; }
OUT=${OUT:-/tmp/gpu-out}
STAGE=${GPU_KIT_STAGE:-/tmp/gpukit}  # outlives the call while the machine stays warm
PY=${PY:-python3}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
BUDGET=${GPU_CHECK_BUDGET:-quick}
DEADLINE_S=${GPU_CHECK_DEADLINE_S:-420}  # start no new grid after this: the call's limit is 600 s
METHODS=full,head,bitfit,lora,adalora   # int8-lora needs bitsandbytes, whose CUDA wheel would not fit the kit
mkdir -p "$OUT" "$STAGE/runs-$step"
exec > >(tee "$OUT/log-$step.txt") 2>&1
export PYTHONPATH="$STAGE/site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
export BENCH_CACHE_DIR="$STAGE/cache"

grid() {  # grid NAME ARGS...: one `bench run` into $STAGE/runs-<step>/NAME, unless the deadline has passed
  local name=$1; shift
  if (( SECONDS > DEADLINE_S )); then echo "== $name: skipped, ${SECONDS}s gone (deadline ${DEADLINE_S}s)"; return; fi
  echo "== $name ($(date +%T))"
  "$PY" -m bench run --device "$DEVICE" --budget "$BUDGET" --methods "$METHODS" --timeout 240 \
    --out "$STAGE/runs-$step/$name" --db "$STAGE/history.db" "$@"
}

if [[ $step == a ]]; then
  [ -d .gpu/a ] || { echo "no .gpu/a: run \`make gpu-kit\` here and carry .gpu/a" >&2; exit 1; }
  nvidia-smi -L || true
  if [[ -z ${GPU_CHECK_NO_INSTALL:-} ]]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$STAGE/site" \
      .gpu/a/wheels/*.whl || exit 1
  fi
  cp .gpu/a/model.safetensors.part1 "$STAGE/"
  export BENCH_MODEL_DIR="$PWD/.gpu/a/models" BENCH_DATA_DIR="$PWD/.gpu/a/data"  # the smoke image task's
  "$PY" - <<'EOF' || exit 1
import importlib.metadata as md, torch
import bench.execute.preload  # what the fork server imports: it must leave CUDA untouched, or forked runs fail
print("CUDA initialised by the preload:", torch.cuda.is_initialized())
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "")
for p in ("transformers", "peft", "datasets", "seqeval", "pyarrow", "pandas", "accelerate", "nvidia-ml-py"):
    try:
        print(p, md.version(p))
    except md.PackageNotFoundError:
        print(p, "MISSING")
EOF
  for p in fp32 bf16 fp16; do grid "smoke-$p" --suite smoke --precision "$p"; done
else
  [ -f "$STAGE/model.safetensors.part1" ] || { echo "no $STAGE/model.safetensors.part1: the machine was given back" \
    "between the calls; run check.sh a again, then b at once" >&2; exit 1; }
  [ -d .gpu/b ] || { echo "no .gpu/b: carry .gpu/b" >&2; exit 1; }
  models="$STAGE/models/sentence-transformers/all-MiniLM-L6-v2"
  mkdir -p "$models" && cp -r .gpu/b/model/. "$models/"
  cat "$STAGE/model.safetensors.part1" .gpu/b/model.safetensors.part2 > "$models/model.safetensors"
  echo "$(cat .gpu/b/model.safetensors.sha256)  $models/model.safetensors" | sha256sum -c - || exit 1
  export BENCH_DATA_DIR="$PWD/.gpu/b/data" BENCH_MODEL_DIR="$STAGE/models"
  grid sst2-fp32 --suite nlp --tasks sst2 --precision fp32
  grid sst2-bf16 --suite nlp --tasks sst2 --precision bf16
  grid conll-bf16 --suite nlp --tasks conll2003 --precision bf16
fi
tar czf "$OUT/runs-$step.tar.gz" --exclude=predictions -C "$STAGE/runs-$step" .
echo "== done in ${SECONDS}s: $OUT/runs-$step.tar.gz"
