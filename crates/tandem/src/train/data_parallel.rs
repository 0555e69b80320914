//! A data-parallel run whose ranks are threads of this process, one per device (CPU ranks
//! each with their own share of the cores): the same training as one device with the whole
//! batch, to rounding (the BatchNorm and gradient sums add the ranks' parts in another order).
//! The ranks exchange through this process's memory ([`ThreadGroup`]).

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::Sender;

use candle_core::Device;

use crate::config::Config;
use crate::data::PairedDataset;
use crate::error::{Error, Result};
use crate::parallel::{Collective, ThreadGroup};
use crate::train::{EpochReport, Observer, StepReport, TrainOutcome, Trainer};

/// Trains `config` on `dataset` on `devices`: on the default device ([`crate::default_device`])
/// when none is given, on the one given alone, else as one data-parallel rank on each
/// ([`train_data_parallel`]).
///
/// # Errors
/// As [`crate::train::train`] and [`train_data_parallel`].
pub fn train_on_devices(
    dataset: &PairedDataset,
    config: &Config,
    run_dir: &Path,
    devices: &[Device],
    observer: &mut dyn Observer,
) -> Result<TrainOutcome> {
    match devices {
        [] => crate::train::train(
            dataset,
            config,
            run_dir,
            &crate::default_device()?,
            observer,
        ),
        [device] => crate::train::train(dataset, config, run_dir, device, observer),
        _ => train_data_parallel(dataset, config, run_dir, devices, observer),
    }
}

/// Trains `config` on `dataset` as data-parallel ranks (threads), one on each of `devices`,
/// writing the run folder as [`crate::train::train`] does; rank 0 reports to `observer`. Each
/// rank reads and embeds its share of every batch, the loss ranks against the whole batch,
/// and the ranks step in lockstep. `[Device::Cpu; N]` runs N ranks on the CPU.
///
/// # Errors
/// [`Error::Config`] without devices; the first rank's error (a rank that fails stops the
/// others).
pub fn train_data_parallel(
    dataset: &PairedDataset,
    config: &Config,
    run_dir: &Path,
    devices: &[Device],
    observer: &mut dyn Observer,
) -> Result<TrainOutcome> {
    if devices.is_empty() {
        return Err(Error::Config(
            "data-parallel training needs at least one device".into(),
        ));
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (cores / devices.len()).max(1);
    let group = ThreadGroup::shared(devices.len());
    let (events, received) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        let ranks: Vec<_> = group
            .into_iter()
            .zip(devices)
            .map(|(rank, device)| {
                let mut relay = Relay((rank.rank() == 0).then(|| events.clone()));
                let place = RankPlace { device, threads };
                scope.spawn(move || run_rank(dataset, config, run_dir, rank, place, &mut relay))
            })
            .collect();
        drop(events);
        // Rank 0's reports reach the caller's observer on this thread (it need not be Send).
        for event in received {
            event.deliver(observer);
        }
        let mut results = ranks.into_iter().map(|r| {
            r.join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        });
        let first = results.next().expect("at least one rank");
        let failure = results.find_map(|r| r.err());
        // Rank 0's own error says what went wrong; the others' only that a rank stopped.
        match (first, failure) {
            (Ok(outcome), None) => Ok(outcome),
            (Err(e), _) | (Ok(_), Some(e)) => Err(e),
        }
    })
}

/// What rank 0's observer hears, sent to the caller's thread; questions carry their answer's
/// way back.
enum Event {
    Start(usize, usize),
    Step(Box<StepReport>),
    Epoch(Box<EpochReport>),
    Warning(String),
    Stop(usize, Sender<bool>),
    Interrupt(Sender<bool>),
}

impl Event {
    fn deliver(self, observer: &mut dyn Observer) {
        // A rank that has gone no longer waits for the answer: nothing to do then.
        match self {
            Event::Start(epochs, steps) => observer.on_start(epochs, steps),
            Event::Step(report) => observer.on_step(&report),
            Event::Epoch(report) => observer.on_epoch(&report),
            Event::Warning(message) => observer.on_warning(&message),
            Event::Stop(epochs, answer) => {
                let _ = answer.send(observer.stop_requested(epochs));
            }
            Event::Interrupt(answer) => {
                let _ = answer.send(observer.interrupt_requested());
            }
        }
    }
}

/// An observer that forwards to the caller's thread (rank 0), or hears nothing (the others).
struct Relay(Option<Sender<Event>>);

impl Relay {
    fn send(&self, event: Event) {
        if let Some(events) = &self.0 {
            let _ = events.send(event);
        }
    }

    fn ask(&self, question: impl FnOnce(Sender<bool>) -> Event) -> bool {
        let Some(events) = &self.0 else {
            return false;
        };
        let (answer, answered) = std::sync::mpsc::channel();
        events.send(question(answer)).is_ok() && answered.recv().unwrap_or(false)
    }
}

impl Observer for Relay {
    fn on_start(&mut self, epochs: usize, steps_per_epoch: usize) {
        self.send(Event::Start(epochs, steps_per_epoch));
    }
    fn on_step(&mut self, report: &StepReport) {
        self.send(Event::Step(Box::new(report.clone())));
    }
    fn on_epoch(&mut self, report: &EpochReport) {
        self.send(Event::Epoch(Box::new(report.clone())));
    }
    fn on_warning(&mut self, message: &str) {
        self.send(Event::Warning(message.to_string()));
    }
    fn stop_requested(&mut self, completed_epochs: usize) -> bool {
        self.ask(|answer| Event::Stop(completed_epochs, answer))
    }
    fn interrupt_requested(&mut self) -> bool {
        self.ask(Event::Interrupt)
    }
}

/// Where a rank computes: its device, and the CPU threads of its own pool.
struct RankPlace<'a> {
    device: &'a Device,
    threads: usize,
}

/// One rank's run on a rayon pool of its own: its parallel passes must not queue behind
/// another rank's, which may be waiting in a collective for this one.
fn run_rank(
    dataset: &PairedDataset,
    config: &Config,
    run_dir: &Path,
    rank: Arc<dyn Collective>,
    RankPlace { device, threads }: RankPlace<'_>,
    observer: &mut Relay,
) -> Result<TrainOutcome> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(move |k| format!("tandem-rank-worker-{k}"))
        .build()
        .map_err(|e| Error::Config(format!("cannot start a rank's threads: {e}")))?;
    let _abort = crate::parallel::AbortOnPanic(&*rank);
    let result = pool.install(|| {
        Trainer::start_rank(dataset, config, run_dir, device, rank.clone())?.drive(observer)
    });
    if let Err(e) = &result {
        rank.abort(&e.to_string());
    }
    result
}
