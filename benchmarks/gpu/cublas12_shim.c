/* libcublas.so.12 stand-in for the faiss-gpu 1.15.1 wheel on a machine that has only cuBLAS 13.
 *
 * libfaiss.so asks for eight cuBLAS entry points under the symbol version "libcublas.so.12". The CUDA 12
 * cuBLAS wheel is 581 MB, too large to carry to the lent GPU machine, which already has cuBLAS 13 (under
 * PyTorch). This library defines those eight names under that version; each is a jump through a pointer
 * filled from libcublas.so.13 when the library loads, so arguments pass through untouched. The eight
 * functions keep their signatures in cuBLAS 13.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

#define CUBLAS_FUNCS \
    X(cublasCreate_v2) X(cublasDestroy_v2) X(cublasSetStream_v2) X(cublasSetMathMode) \
    X(cublasGetMathMode) X(cublasSgemmEx) X(cublasGemmEx) X(cublasGemmStridedBatchedEx)

#define X(name) __attribute__((visibility("hidden"))) void *real_##name;
CUBLAS_FUNCS
#undef X

#define X(name) __asm__(".text\n.globl " #name "\n.type " #name ",@function\n" #name ":\n" \
                        "  jmp *real_" #name "(%rip)\n.size " #name ",.-" #name "\n");
CUBLAS_FUNCS
#undef X

__attribute__((constructor)) static void load_cublas13(void) {
    const char *path = getenv("HSENET_CUBLAS13");
    void *lib = dlopen(path ? path : "libcublas.so.13", RTLD_NOW | RTLD_GLOBAL);
    if (!lib) {
        fprintf(stderr, "cublas12 shim: cannot load cuBLAS 13: %s\n", dlerror());
        abort();
    }
#define X(name) \
    if (!(real_##name = dlsym(lib, #name))) fprintf(stderr, "cublas12 shim: cuBLAS 13 has no %s\n", #name);
    CUBLAS_FUNCS
#undef X
}
