//! Progress: a bar on a terminal, log lines (or nothing) otherwise.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use tandem::train::{EpochReport, Observer, StepReport};

/// A bar counting `total` items on stderr when it is a terminal (`None` otherwise), labelled
/// `label` and showing the rate.
pub fn counter_bar(label: &str, total: usize) -> Option<ProgressBar> {
    std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{label} [{{bar:30}}] {{pos}}/{{len}} {{per_sec}} eta {{eta}}"
            ))
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar
    })
}

/// Shows training progress on stderr.
pub struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    last_val_rsum: Option<f64>,
}

impl Progress {
    /// A bar when stderr is a terminal, plain log lines otherwise.
    pub fn new(label: &str) -> Self {
        Progress {
            bar: None,
            label: label.to_string(),
            last_val_rsum: None,
        }
    }
}

impl Observer for Progress {
    fn on_start(&mut self, epochs: usize, steps_per_epoch: usize) {
        tracing::info!("{}: {epochs} epochs × {steps_per_epoch} steps", self.label);
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new((epochs * steps_per_epoch) as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta} {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(self.label.clone());
            self.bar = Some(bar);
        }
    }

    fn on_step(&mut self, r: &StepReport) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
            let val = self
                .last_val_rsum
                .map(|v| format!(" val rsum {v:.1}"))
                .unwrap_or_default();
            let scale = r
                .logit_scale
                .map(|s| format!(" τ {:.4}", 1.0 / s))
                .unwrap_or_default();
            let h = &r.health;
            bar.set_message(format!(
                "epoch {} loss {:.4} pos {:.2} neg {:.2} spread {:.3}{scale}{val}",
                r.epoch + 1,
                r.loss,
                h.positive_similarity,
                h.negative_similarity,
                h.spread
            ));
        }
    }

    fn on_warning(&mut self, message: &str) {
        self.warn(message);
    }

    fn on_epoch(&mut self, r: &EpochReport) {
        self.last_val_rsum = r.val.as_ref().map(|m| m.rsum);
        let val = r
            .val
            .as_ref()
            .map(|m| {
                format!(
                    " val rsum {:.1}{}",
                    m.rsum,
                    if r.improved { " (best)" } else { "" }
                )
            })
            .unwrap_or_default();
        let line = format!(
            "{} epoch {}/{} loss {:.4}{val} ({:.1}s){}",
            self.label,
            r.epoch + 1,
            r.epochs,
            r.train_loss,
            r.seconds,
            if r.checkpointed { " · saved" } else { "" }
        );
        match &self.bar {
            Some(bar) => bar.println(line),
            None => tracing::info!("{line}"),
        }
    }
}

impl Progress {
    fn warn(&self, message: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| tracing::warn!("{message}")),
            None => tracing::warn!("{message}"),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
