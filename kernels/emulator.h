// The CPU emulator's shim: just enough CUDA for g++ to compile the kernels in this folder
// unchanged, so that the tests can run them on machines without a GPU.
//
// minifcn/emulator.py compiles one C++ file made of
//
//     #include "emulator.h"
//     #include "im2col.cu"
//     #include "pooling.cu"   ...
//
// into a shared library and calls the extern "C" entry points that EMULATOR_ENTRY adds to it.
// Each entry point plays the role of the CUDA driver's launch call: it gets the grid and block
// sizes and an array of pointers to the arguments (the same `void **kernelParams` a CUDA launch
// takes), and runs every thread of the grid one after the other.
//
// Running threads one at a time is faithful only for kernels whose threads never wait for each
// other; that is true of every kernel here (no shared memory, no __syncthreads). Atomics are
// fine: one thread after another is one of the orders a GPU may run them in.
#ifndef MINIFCN_EMULATOR_H
#define MINIFCN_EMULATOR_H

#include <cmath>
#include <cstring>
#include <algorithm>
#include <type_traits>
#include <utility>

// CUDA's function qualifiers mean nothing to a CPU compiler. (__restrict__ is a g++ keyword.)
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline

// The math functions the kernels call, overloaded for float and double as on the GPU.
using std::exp;
using std::log;
using std::max;
using std::min;

// The built-in thread coordinates. On a GPU each thread has its own; here one CPU thread plays
// all of them in turn, so they are (thread-local) globals that the launch loop below sets.
struct dim3 {
    unsigned int x, y, z;
};
static thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

// Device intrinsics that reinterpret bits (used to spell infinity and NaN without a header).
inline float __int_as_float(int bits) {
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}
inline double __longlong_as_double(long long bits) {
    double d;
    std::memcpy(&d, &bits, sizeof d);
    return d;
}

// atomicAdd(address, value): *address += value, returning the old value. Threads run one at
// a time here, so a plain read-modify-write is atomic. (float and double, as CUDA's.)
template <typename T>
T atomicAdd(T *address, T value) {
    static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value,
                  "atomicAdd: float or double");
    T old = *address;
    *address = old + value;
    return old;
}

namespace emulator {

// Call kernel(*args[0], *args[1], ...), reading each argument with its declared type.
template <typename... Args, std::size_t... I>
void call_with(void (*kernel)(Args...), void **args, std::index_sequence<I...>) {
    kernel(*static_cast<typename std::remove_reference<Args>::type *>(args[I])...);
}

// Run every thread of a grid, block by block, like a GPU with a single, very slow core.
template <typename... Args>
void launch(void (*kernel)(Args...), const unsigned int *grid, const unsigned int *block,
            void **args) {
    gridDim = {grid[0], grid[1], grid[2]};
    blockDim = {block[0], block[1], block[2]};
    for (unsigned int bz = 0; bz < grid[2]; ++bz)
        for (unsigned int by = 0; by < grid[1]; ++by)
            for (unsigned int bx = 0; bx < grid[0]; ++bx)
                for (unsigned int tz = 0; tz < block[2]; ++tz)
                    for (unsigned int ty = 0; ty < block[1]; ++ty)
                        for (unsigned int tx = 0; tx < block[0]; ++tx) {
                            blockIdx = {bx, by, bz};
                            threadIdx = {tx, ty, tz};
                            call_with(kernel, args, std::index_sequence_for<Args...>{});
                        }
}

}  // namespace emulator

// One exported entry point per kernel: emu_<name>(grid[3], block[3], args[]).
#define EMULATOR_ENTRY(name)                                                                 \
    extern "C" void emu_##name(const unsigned int *grid, const unsigned int *block,          \
                               void **args) {                                                \
        emulator::launch(name, grid, block, args);                                           \
    }

#endif  // MINIFCN_EMULATOR_H
