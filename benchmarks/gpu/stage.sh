#!/usr/bin/env bash
# Stage what benchmarks/gpu_check.sh needs on the lent GPU machine (python3.12 + torch cu130, no package index):
# the faiss-gpu 1.15.1 wheel, the CUDA 12 runtime it links (libcudart.so.12), a libcublas.so.12 shim over the
# machine's cuBLAS 13 (cublas12_shim.c: the CUDA 12 cuBLAS wheel is 581 MB), Ray and the project's pure-Python
# dependencies missing there, as wheels plus the shim in one tar split into
# parts of at most PART_MB under REPO/.gpu/pN/ (an ignored folder), one part per device call.
# Usage (here, in the repository root the device tool sends, /work/main): bash benchmarks/gpu/stage.sh
set -euo pipefail
REPO=$(pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
PART_MB=${PART_MB:-46}
WORK=${WORK:-/tmp/hsenet-gpu-stage}
PY=${PY:-python3}
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.gpu/' >> .git/info/exclude; }
mkdir -p "$WORK/wheels"
PLAT="--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
      --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
$PY -m pip download -q --no-deps $PLAT -d "$WORK/wheels" \
    faiss-gpu==1.15.1 nvidia-cuda-runtime-cu12==12.9.79 ray==2.60.0 monai==1.6.1 nibabel==5.4.2 \
    open_clip_torch==3.3.0 pydicom==3.0.2 isal==1.9.1 nltk==3.10.4 ftfy==6.3.1 wcwidth==0.2.13 \
    jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1 gguf==0.19.0
rm -rf "$WORK/bundle" && mkdir -p "$WORK/bundle/nvidia/cublas/lib"
cp "$WORK"/wheels/*.whl "$WORK/bundle/"
gcc -O2 -shared -fPIC -Wl,-soname,libcublas.so.12 -Wl,--version-script="$HERE/cublas12.map" \
    -o "$WORK/bundle/nvidia/cublas/lib/libcublas.so.12" "$HERE/cublas12_shim.c" -ldl
echo 'int hsenet_cublaslt12_placeholder;' > "$WORK/lt.c"
gcc -shared -fPIC -Wl,-soname,libcublasLt.so.12 -o "$WORK/bundle/nvidia/cublas/lib/libcublasLt.so.12" "$WORK/lt.c"
# wheels are already deflated: a plain tar, split into parts
tar -C "$WORK" -cf "$WORK/bundle.tar" bundle
rm -rf .gpu/p[0-9]* && mkdir -p .gpu
(cd "$WORK" && rm -f part_* && split -b "${PART_MB}M" -d -a 1 bundle.tar part_)
n=0
for f in "$WORK"/part_*; do n=$((n + 1)); mkdir -p ".gpu/p$n"; cp "$f" ".gpu/p$n/"; done
sha256sum "$WORK/bundle.tar" | cut -d' ' -f1 > .gpu/p$n/SHA256
echo "$n" > .gpu/p$n/PARTS
ls -la .gpu/p*/
echo "staged $n parts; see benchmarks/README.md (GPU section) for the device call sequence"
