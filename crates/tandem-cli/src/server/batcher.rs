//! Exact searches that arrive together share one pass over the gallery. An exact query reads
//! the whole packed gallery (2 GB at 1M × 512), so concurrent requests each streaming it from
//! memory are bound by memory bandwidth; one worker instead takes every request waiting in
//! the queue (up to `serve --batch`, default [`DEFAULT_BATCH`]), scores them as one block — the tiled kernel reuses each
//! gallery chunk for all of them while it is in cache — and answers each with its own `k`.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};

use tandem::index::{Direction, Hit, Index, SearchMode};

/// Queries scored together at most, by default (eight of the kernel's query groups).
pub const DEFAULT_BATCH: usize = 48;

struct Job {
    query: Vec<f32>,
    direction: Direction,
    k: usize,
    reply: SyncSender<tandem::Result<Vec<Hit>>>,
}

/// The queue in front of the exact-search worker.
pub struct ExactBatcher {
    jobs: Sender<Job>,
}

impl ExactBatcher {
    /// Starts the worker thread, scoring up to `max_batch` queries at once (1: one at a
    /// time); it stops when the batcher is dropped.
    pub fn start(index: Arc<Index>, max_batch: usize) -> Self {
        let (jobs, queue) = channel();
        let max_batch = max_batch.max(1);
        std::thread::Builder::new()
            .name("exact-search".into())
            .spawn(move || work(&index, &queue, max_batch))
            .expect("starting the exact-search thread");
        ExactBatcher { jobs }
    }

    /// The exact top `k` of one embedded query; blocks until its batch is scored.
    ///
    /// # Errors
    /// The index's search error.
    pub fn search(
        &self,
        query: Vec<f32>,
        direction: Direction,
        k: usize,
    ) -> tandem::Result<Vec<Hit>> {
        let (reply, answer) = sync_channel(1);
        self.jobs
            .send(Job {
                query,
                direction,
                k,
                reply,
            })
            .expect("the exact-search thread outlives the server");
        answer
            .recv()
            .expect("the exact-search thread answers every job")
    }
}

fn work(index: &Index, queue: &Receiver<Job>, max_batch: usize) {
    while let Ok(first) = queue.recv() {
        let mut jobs = vec![first];
        while jobs.len() < max_batch {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        for direction in [Direction::TextToImage, Direction::ImageToText] {
            let batch: Vec<&Job> = jobs.iter().filter(|j| j.direction == direction).collect();
            if batch.is_empty() {
                continue;
            }
            // The top k of the largest k, cut to each job's own: lists are prefixes of one
            // total order (score, then id).
            let k = batch.iter().map(|j| j.k).max().unwrap_or(0);
            let queries: Vec<f32> = batch.iter().flat_map(|j| j.query.iter().copied()).collect();
            match index.search(&queries, direction, k, SearchMode::Exact) {
                Ok(lists) => {
                    for (job, mut hits) in batch.into_iter().zip(lists) {
                        hits.truncate(job.k);
                        job.reply.send(Ok(hits)).ok();
                    }
                }
                Err(e) => {
                    let message = e.to_string();
                    for job in batch {
                        job.reply
                            .send(Err(tandem::Error::Config(message.clone())))
                            .ok();
                    }
                }
            }
        }
    }
}
