/* mimalloc's options for the tandem binary, set before `main` (mimalloc takes options only
 * from the environment or from its C API, and our Rust crates forbid `unsafe`).
 *
 * purge_delay: how long freed memory stays committed before mimalloc returns it to the OS.
 * Its default, 1 s, is about one paper-size training step on a 2-core machine, so each step's
 * large buffers (gemm outputs and packing, activations, gradients) were returned and faulted
 * in again on the next step: about 3,500 page faults per step, and about 10% of its time
 * (README, Benchmarks, item 10). The delay is not renewed by later frees: mimalloc purges
 * everything free at the moment the delay, counted from the first free after the last purge,
 * runs out. With 10 s a training run still lost its large buffers every ~10 steps (11k–25k page
 * faults in 41 steps, 2–10% of the step time); 60 s makes that once a minute, and a
 * long-running process (`tandem serve`) still gives memory back after a burst.
 * MIMALLOC_PURGE_DELAY in the environment still wins. */
#include <stdlib.h>
#include <mimalloc.h>

#define TANDEM_PURGE_DELAY_MS 60000

/* Constructors run in link order, so mimalloc may already have read its options (and, with
 * MIMALLOC_VERBOSE, printed them); it reads purge_delay again at every purge, so setting it
 * here takes effect either way. The options are printed again as they now stand. */
__attribute__((constructor)) static void tandem_allocator_options(void) {
  if (getenv("MIMALLOC_PURGE_DELAY") == NULL && getenv("MIMALLOC_RESET_DELAY") == NULL) {
    mi_option_set(mi_option_purge_delay, TANDEM_PURGE_DELAY_MS);
  }
  if (mi_option_is_enabled(mi_option_verbose)) {
    mi_options_print();
  }
}
