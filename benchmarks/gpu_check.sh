#!/usr/bin/env bash
# Every GPU check of the project in one run on the lent GPU machine (python3.12 + torch cu130, no package index).
#
#   1. GPU FAISS vs CPU FAISS on the same index, exact and IVF: same top-k, latency, QPS (bench_gpu_faiss.py)
#   2. index build --ray auto with a GPU encoder actor, checked equal to the single-process GPU build
#   3. CUDA encode throughput (bench_encode.py) and CUDA index-build throughput (bench_build.py)
#   4. benchmarks/bench_slices.py --device cuda, when that file exists
# Results: JSON under $OUT (what the device tool brings back) and benchmarks/results/gpu/.
#
# The machine has no faiss, ray, monai, nibabel...: benchmarks/gpu/stage.sh (run HERE, in /work/main) packs
# them, with a libcublas.so.12 shim over the machine's cuBLAS 13, as 5 parts of <= 46 MB in the ignored
# folder .gpu/ (a call carries at most 64 MiB with the tree). The machine keeps /tmp while it stays warm
# (30 s idle), so the parts go over in back-to-back calls and the last call runs this script:
#
#   here:   cd /work/main && bash benchmarks/gpu/stage.sh
#   device: run(command="bash benchmarks/gpu_check.sh --stage", carry=[".gpu/p1"], timeout_s=120)
#           run(command="bash benchmarks/gpu_check.sh --stage", carry=[".gpu/p2"], timeout_s=120)
#           run(command="bash benchmarks/gpu_check.sh --stage", carry=[".gpu/p3"], timeout_s=120)
#           run(command="bash benchmarks/gpu_check.sh --stage", carry=[".gpu/p4"], timeout_s=120)
#           run(command="bash benchmarks/gpu_check.sh", carry=[".gpu/p5"], timeout_s=600)
#   then:   give_back(); copy files_at/*.json into benchmarks/results/gpu/ and commit.
# Issue each call as soon as the previous one returns (the machine is given back after 30 s idle; a fresh
# machine has lost the earlier parts: the script then says which parts are missing).
set -uo pipefail
cd "$(dirname "$0")/.."
STAGE=/tmp/hsenet-gpu
OUT=${OUT:-$PWD/benchmarks/results/gpu}
RES=$PWD/benchmarks/results/gpu
mkdir -p "$STAGE" "$OUT" "$RES"
for f in .gpu/p*/*; do [ -f "$f" ] && cp "$f" "$STAGE/"; done
ls "$STAGE"
[ "${1:-}" = "--stage" ] && exit 0

# ---------------------------------------------------------------- unpack the staged environment
parts=$(cat "$STAGE/PARTS" 2>/dev/null || echo 0)
for i in $(seq 0 $((parts - 1))); do
  [ -f "$STAGE/part_$i" ] || { echo "missing part_$i: carry .gpu/p$((i + 1)) in a call before this one"; exit 3; }
done
[ "$parts" -gt 0 ] || { echo "no staged parts: run benchmarks/gpu/stage.sh here, then the calls above"; exit 3; }
if [ ! -d /tmp/site ]; then
  cat $(for i in $(seq 0 $((parts - 1))); do echo "$STAGE/part_$i"; done) > "$STAGE/bundle.tar"
  [ "$(sha256sum "$STAGE/bundle.tar" | cut -d' ' -f1)" = "$(cat "$STAGE/SHA256")" ] || { echo "bad bundle"; exit 3; }
  tar -C "$STAGE" -xf "$STAGE/bundle.tar"
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$STAGE"/bundle/*.whl || exit 3
  cp -r "$STAGE/bundle/nvidia/cublas" /tmp/site/nvidia/
  rm -f /tmp/site/nvidia/__init__.py  # keep `nvidia` a namespace: torch's nvidia.cu13 must stay visible
fi
CU13=$(python3 -c "import nvidia.cu13, os; print(os.path.join(list(nvidia.cu13.__path__)[0], 'lib'))")
mkdir -p /tmp/site/nvidia/curand/lib && ln -sf "$CU13/libcurand.so.10" /tmp/site/nvidia/curand/lib/
SRC=${HSENET_SRC:-$PWD}
# the package as setuptools maps it (hsenet_search.cli lives in ./cli), without installing it
rm -rf /tmp/hsenet-pkg && mkdir -p /tmp/hsenet-pkg && cp -r "$SRC/hsenet_search" /tmp/hsenet-pkg/ && \
  cp -r "$SRC/cli" /tmp/hsenet-pkg/hsenet_search/cli
export HSENET_CUBLAS13="$CU13/libcublas.so.13" PYTHONPATH="/tmp/site:/tmp/hsenet-pkg" PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_ENABLE_UV_RUN_RUNTIME_ENV=0
# `python -m` puts the working directory first on sys.path: run from the copied package, not from the repo
# (whose hsenet_search/ lacks the cli subpackage that setuptools maps from ./cli)
cd /tmp/hsenet-pkg
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import faiss; print('faiss', faiss.__version__, 'GPUs', faiss.get_num_gpus())" | tee -a "$OUT/gpu.txt"
status=0

# ---------------------------------------------------------------- 1. GPU FAISS vs CPU FAISS
python3 "$SRC/benchmarks/bench_gpu_faiss.py" --n 1000000 --out "$OUT/faiss_gpu_vs_cpu.json" || status=1

# ---------------------------------------------------------------- 2. Ray build with a GPU actor
W=/tmp/hsenet-work
rm -rf "$W" && mkdir -p "$W"
python3 "$SRC/benchmarks/gpu/tiny_models.py" "$W/m" >/dev/null || status=1
python3 -m hsenet_search.cli.main data synth --n 160 --seed 3 --out "$W/data" >/dev/null || status=1
python3 "$SRC/benchmarks/bench_ray_build.py" --n 160 --repeats 1 --model "$W/m/model" --device cuda \
    --workers 8 --out "$OUT/ray_build_cuda.json" || status=1
python3 -m hsenet_search.cli.main index build "$W/data" --out "$W/single" --model "$W/m/model" --workers 8 \
    --device cuda >/dev/null && \
python3 -m hsenet_search.cli.main index build "$W/data" --out "$W/ray" --model "$W/m/model" --ray auto \
    --device cuda > "$W/ray.log" 2>&1 && \
python3 - "$W" "$OUT/ray_gpu_equality.json" <<'EOF' || status=1
import json, sys
import numpy as np
from hsenet_search.index.store import read_embeddings, read_metadata
w, out = sys.argv[1], sys.argv[2]
a, b = read_embeddings(f"{w}/single", "volumes"), read_embeddings(f"{w}/ray", "volumes")
same_rows = read_metadata(f"{w}/single/metadata.parquet").equals(read_metadata(f"{w}/ray/metadata.parquet"))
import platform, torch
res = {"benchmark": "index build --ray auto --device cuda (GPU encoder actor) vs single-process --device cuda build",
       "rows": len(a), "same_rows": bool(same_rows), "max_abs_diff": float(np.abs(a - b).max()),
       "machine": {"gpu": torch.cuda.get_device_name(0), "platform": platform.platform(), "torch": torch.__version__}}
json.dump(res, open(out, "w"), indent=2)
print(res)
assert same_rows and res["max_abs_diff"] < 2e-3
EOF

# ---------------------------------------------------------------- 3. CUDA encode and build throughput
python3 "$SRC/benchmarks/bench_encode.py" --configs tiny --device cuda --text-model "$W/m/text" \
    --out "$OUT/encode_throughput_cuda.json" || status=1
python3 "$SRC/benchmarks/bench_build.py" --model "$W/m/model" --device cuda --workers 8 \
    --out "$OUT/build_throughput_cuda.json" || status=1

# ---------------------------------------------------------------- 4. the 2D slice pipeline on CUDA
if [ -f "$SRC/benchmarks/bench_slices.py" ]; then
  python3 "$SRC/benchmarks/bench_slices.py" --device cuda || status=1
  cp "$SRC"/benchmarks/results/*slice*cuda*.json "$OUT/" 2>/dev/null
fi
cp "$OUT"/*.json "$OUT"/gpu.txt "$RES/" 2>/dev/null
echo "gpu_check status $status"
exit $status
