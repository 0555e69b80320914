//! The two collective operations data-parallel training needs, behind a trait: all-gather (every
//! rank's embeddings to every rank) and all-reduce (gradients and BatchNorm sums added up).
//! [`ThreadGroup`] implements them for ranks that are threads of one process, which is how
//! the CPU tests run N ranks; a multi-GPU backend (NCCL) implements the same trait.

use std::sync::{Arc, Condvar, Mutex};

use crate::error::{Error, Result};

/// One rank's handle on a group of ranks that call every operation in the same order.
pub trait Collective: Send + Sync {
    /// This rank's number, `0..ranks()`.
    fn rank(&self) -> usize;

    /// Ranks in the group.
    fn ranks(&self) -> usize;

    /// Every rank's `local`, concatenated in rank order; blocks until all ranks call it.
    ///
    /// # Errors
    /// [`Error::Config`] when another rank has stopped ([`Collective::abort`]): the group
    /// cannot go on.
    fn all_gather(&self, local: &[f32]) -> Result<Vec<f32>>;

    /// Tells every rank waiting in, or later calling, an operation that this rank stopped
    /// (an error, an interrupt): they fail instead of waiting for it forever.
    fn abort(&self, why: &str);

    /// Replaces `values` with their element-wise sum over the ranks (every rank passes the same
    /// length). The sum is taken in rank order, so every rank gets the same bits.
    ///
    /// # Errors
    /// As [`Collective::all_gather`].
    fn all_reduce_sum(&self, values: &mut [f32]) -> Result<()> {
        let n = values.len();
        let all = self.all_gather(values)?;
        values.copy_from_slice(&all[..n]);
        for other in all[n..].chunks_exact(n.max(1)) {
            for (v, o) in values.iter_mut().zip(other) {
                *v += o;
            }
        }
        Ok(())
    }
}

/// Aborts the group when dropped during a panic, so the other ranks fail rather than wait
/// for this one forever.
pub struct AbortOnPanic<'a>(pub &'a dyn Collective);

impl Drop for AbortOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.abort("it panicked");
        }
    }
}

/// Ranks that are threads of this process, exchanging through shared memory.
pub struct ThreadGroup {
    shared: Arc<Shared>,
    rank: usize,
    ranks: usize,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

/// A reusable barrier with the posted values and a way to abort.
struct State {
    posted: Vec<Vec<f32>>,
    /// Ranks arrived at the current barrier.
    arrived: usize,
    /// Barriers passed: a waiting rank leaves when this moves on.
    generation: u64,
    aborted: Option<String>,
}

impl ThreadGroup {
    /// One handle per rank of a new group of `ranks` (at least 1), to hand to one thread each.
    pub fn new(ranks: usize) -> Vec<ThreadGroup> {
        let ranks = ranks.max(1);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                posted: vec![Vec::new(); ranks],
                arrived: 0,
                generation: 0,
                aborted: None,
            }),
            changed: Condvar::new(),
        });
        (0..ranks)
            .map(|rank| ThreadGroup {
                shared: shared.clone(),
                rank,
                ranks,
            })
            .collect()
    }

    /// [`ThreadGroup::new`]'s handles as shared collectives, the form the trainer takes.
    pub fn shared(ranks: usize) -> Vec<Arc<dyn Collective>> {
        ThreadGroup::new(ranks)
            .into_iter()
            .map(|rank| Arc::new(rank) as Arc<dyn Collective>)
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until every rank has arrived (or one aborted), holding the lock on return.
    fn barrier<'a>(
        &'a self,
        mut state: std::sync::MutexGuard<'a, State>,
    ) -> Result<std::sync::MutexGuard<'a, State>> {
        let generation = state.generation;
        state.arrived += 1;
        if state.arrived == self.ranks {
            state.arrived = 0;
            state.generation += 1;
            self.shared.changed.notify_all();
        }
        while state.generation == generation && state.aborted.is_none() {
            state = self
                .shared
                .changed
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
        match &state.aborted {
            Some(why) => Err(Error::Config(format!(
                "rank {} of {}: another rank stopped ({why})",
                self.rank, self.ranks
            ))),
            None => Ok(state),
        }
    }
}

impl Collective for ThreadGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn ranks(&self) -> usize {
        self.ranks
    }

    fn all_gather(&self, local: &[f32]) -> Result<Vec<f32>> {
        let mut state = self.lock();
        state.posted[self.rank] = local.to_vec();
        let state = self.barrier(state)?;
        let all: Vec<f32> = state.posted.iter().flatten().copied().collect();
        // Nobody posts the next operation's values before every rank has read these.
        drop(self.barrier(state)?);
        Ok(all)
    }

    fn abort(&self, why: &str) {
        let mut state = self.lock();
        state
            .aborted
            .get_or_insert_with(|| format!("rank {}: {why}", self.rank));
        self.shared.changed.notify_all();
    }
}

/// Runs `work` on every rank of a new [`ThreadGroup`] of `ranks`, a thread each, and returns
/// the results in rank order. A rank that panics aborts the group; its panic then goes on.
#[cfg(test)]
pub(crate) fn on_every_rank<T: Send>(
    ranks: usize,
    work: impl Fn(&Arc<dyn Collective>) -> T + Sync,
) -> Vec<T> {
    let group = ThreadGroup::shared(ranks);
    std::thread::scope(|scope| {
        let work = &work;
        let handles: Vec<_> = group
            .iter()
            .map(|rank| {
                scope.spawn(move || {
                    let _abort = AbortOnPanic(&**rank);
                    work(rank)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rank_gathers_all_in_rank_order_and_sums_to_the_same_bits() {
        let results = on_every_rank(3, |rank| {
            assert_eq!(rank.ranks(), 3);
            let r = rank.rank() as f32;
            // Ranks may post different lengths to a gather.
            let local: Vec<f32> = (0..=rank.rank()).map(|k| r * 10.0 + k as f32).collect();
            let gathered = rank.all_gather(&local).unwrap();
            let mut sums = vec![r + 0.1, 2.0 * r, 1e8];
            rank.all_reduce_sum(&mut sums).unwrap();
            // A second round reuses the slots.
            assert_eq!(rank.all_gather(&[r]).unwrap(), vec![0., 1., 2.]);
            (gathered, sums)
        });
        for (gathered, sums) in &results {
            assert_eq!(gathered, &vec![0., 10., 11., 20., 21., 22.]);
            assert_eq!(sums, &results[0].1, "every rank holds the same sum");
        }
        let want = [0.1f32 + 1.1 + 2.1, 6.0, 3e8];
        for (got, want) in results[0].1.iter().zip(want) {
            assert!((got - want).abs() <= want.abs() * 1e-6, "{got} vs {want}");
        }
    }

    #[test]
    fn a_rank_that_stops_fails_the_others_instead_of_hanging_them() {
        let group = ThreadGroup::new(3);
        let errors: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = group[1..]
                .iter()
                .map(|rank| scope.spawn(move || rank.all_gather(&[1.0]).unwrap_err().to_string()))
                .collect();
            std::thread::sleep(std::time::Duration::from_millis(50));
            group[0].abort("the read of batch 3 failed");
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for e in errors {
            assert!(
                e.contains("another rank stopped (rank 0: the read of batch 3 failed)"),
                "{e}"
            );
        }
        assert!(
            group[0].all_gather(&[0.0]).is_err(),
            "an aborted group stays aborted"
        );
    }
}
