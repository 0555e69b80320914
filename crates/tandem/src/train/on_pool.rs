//! Running a training step on one of rayon's worker threads.
//!
//! Every parallel pass of a step (candle's gemm splits each product into several parallel
//! loops; the branch passes, the loss and Adam are parallel too) called from a thread outside
//! rayon's pool is injected into the pool's queue while the caller sleeps on a latch, so each
//! costs a round of wake-ups: at the paper's size about 500 context switches per step. Called
//! from a worker, the same pass runs on the calling thread and the other workers steal its
//! halves. Measured on the paper-size step, 13 steps of a `StepBench` per run, runs
//! alternating with and without: context switches per run 5.9k–6.6k → 2.0k–2.2k, CPU time
//! 22.0 → 21.2 s (docs/performance.md, note 14).

/// Runs `f` on a worker thread of rayon's global pool (on this thread when it is one) and
/// returns its result.
pub(crate) fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The closure runs inside the pool (rayon knows its worker index), whether called from
    /// outside or from a worker, and its result comes back.
    #[test]
    fn runs_on_a_worker_and_returns_the_result() {
        assert_eq!(
            rayon::current_thread_index(),
            None,
            "the test thread is not a worker"
        );
        let index = on_pool(rayon::current_thread_index);
        assert!(index.is_some(), "ran outside the pool");
        let nested = on_pool(|| on_pool(rayon::current_thread_index));
        assert!(nested.is_some());
        assert_eq!(on_pool(|| 6 * 7), 42);
    }
}
