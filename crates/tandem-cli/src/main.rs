//! `tandem`: train, evaluate and use joint image–text embeddings from the command line.
//!
//! Data and reports go to stdout; logs, progress and errors to stderr.

mod cli;
mod commands;
mod output;
mod plots;
mod postgres;
mod progress;
mod server;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

// Training allocates and frees many large tensors per step; glibc returns them to the OS and
// pays page faults and zeroing on every reuse, mimalloc keeps them, for up to 60 s after a free
// (`allocator_options.c`, set before `main`; measured in docs/performance.md, note 10).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TANDEM_LOG").unwrap_or_else(|_| {
                // tokio-postgres logs the server's NOTICEs ("table ... does not exist,
                // skipping") at info: not for users.
                tracing_subscriber::EnvFilter::new(if args.quiet {
                    "warn"
                } else {
                    "info,tokio_postgres=warn"
                })
            }),
        )
        .init();
    match commands::run(args.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
