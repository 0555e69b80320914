//! One module per subcommand.

mod bench;
mod cli_reference;
mod compare;
mod demo;
mod embed;
mod encode_images;
mod encode_text;
mod eval;
mod prepare;
mod report;
pub(crate) mod search;
mod train;
mod tune;

use std::path::{Path, PathBuf};

use anyhow::Result;
use tandem::config::Config;
use tandem::model::Checkpoint;
use tandem::train::RunFiles;

use crate::cli::{Command, IndexAction};

/// Runs one subcommand.
pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Train {
            data,
            features,
            out,
            config,
            sets,
            overwrite,
            resume,
            skip_nonfinite,
            ranks,
            devices,
            split,
            format,
        } => match (resume, out) {
            (Some(run), _) => train::resume(&data, features.into(), &run, &sets, &split, format),
            (None, Some(out)) => {
                let mut config = Config::resolve(config.as_deref(), &sets)?;
                config.train.skip_nonfinite |= skip_nonfinite;
                train::run(train::NewRun {
                    data: &data,
                    residency: features.into(),
                    out: &out,
                    config: &config,
                    overwrite,
                    devices: train::devices(&devices, ranks.into())?,
                    split: &split,
                    format,
                })
            }
            (None, None) => unreachable!("clap requires --out without --resume"),
        },
        Command::Tune(args) => tune::run(&args),
        Command::Config { config, sets } => {
            print!("{}", Config::resolve(config.as_deref(), &sets)?.to_toml());
            Ok(())
        }
        Command::Eval {
            model,
            data,
            features,
            split,
            protocol,
            ks,
            format,
        } => eval::run(
            &model,
            &data,
            features.into(),
            &split,
            &protocol,
            &ks,
            format,
        ),
        Command::Compare { runs, format } => compare::run(&runs, format),
        Command::Index {
            action:
                IndexAction::Build {
                    model,
                    data,
                    out,
                    hnsw,
                    hnsw_m,
                    hnsw_ef_construction,
                    hnsw_ef,
                    format,
                },
        } => {
            let hnsw = hnsw.then_some(tandem::index::HnswParams {
                connections: hnsw_m,
                ef_construction: hnsw_ef_construction,
                ef_search: hnsw_ef,
            });
            search::build(&model, &data, &out, hnsw, format)
        }
        Command::Index {
            action:
                IndexAction::Push {
                    index,
                    database,
                    hnsw,
                    no_hnsw,
                    force,
                    format,
                },
        } => search::push(&index, &database, (!no_hnsw).then_some(hnsw), force, format),
        Command::Search {
            index,
            postgres,
            table,
            filters,
            text_id,
            image_id,
            text_features,
            text,
            encoder,
            image,
            image_encoder,
            k,
            mode,
            format,
        } => {
            let query = match (text_id, image_id, &text_features) {
                (Some(t), _, _) => search::Query::TextId(t),
                (_, Some(i), _) => search::Query::ImageId(i),
                (_, _, Some(path)) => search::Query::TextFeatures(path),
                _ if !text.is_empty() => search::Query::Text {
                    texts: &text,
                    encoder: encoder.as_deref(),
                },
                _ if !image.is_empty() => search::Query::Image {
                    files: &image,
                    encoder: image_encoder.as_deref(),
                },
                _ => unreachable!("clap requires one query"),
            };
            match (&postgres, &index) {
                (Some(url), _) => search::run_postgres(
                    &crate::cli::PostgresArgs {
                        postgres: url.clone(),
                        table,
                    },
                    index.as_deref(),
                    query,
                    k,
                    mode,
                    &filters,
                    format,
                ),
                (None, Some(index)) => search::run(index, query, k, mode, format),
                (None, None) => unreachable!("clap requires --index without --postgres"),
            }
        }
        Command::Report {
            runs,
            data,
            out,
            split,
            protocol,
        } => report::run(&runs, &data, &out, &split, &protocol),
        Command::Embed { model, data, out } => embed::run(&model, &data, &out),
        Command::Serve {
            index,
            backend,
            table,
            addr,
            encoder,
            image_encoder,
            mode,
            batch,
            token_file,
            insecure_no_auth,
            max_concurrent,
            queue,
            request_timeout,
            header_timeout,
            access_log,
            log_queries,
        } => {
            if batch == 0 {
                anyhow::bail!("--batch must be at least 1");
            }
            let limits = serve_limits(
                max_concurrent,
                batch,
                queue,
                request_timeout,
                header_timeout,
            )?;
            let env_token = std::env::var("TANDEM_TOKEN").ok();
            let tokens = crate::server::Tokens::load(token_file.as_deref(), env_token.as_deref())?;
            let source = crate::server::Source {
                folder: index,
                postgres: backend.map(|postgres| crate::cli::PostgresArgs { postgres, table }),
                connections: limits.max_concurrent.clamp(1, 16),
                encoder,
                image_encoder,
                mode,
                batch,
            };
            let served = source.open(None)?;
            let (images, captions) = served.backend.counts();
            tracing::info!(
                "serving {images} images and {captions} captions from {}{}",
                source.describe(),
                served
                    .text
                    .as_ref()
                    .map(|t| format!("; words encoded by {}", t.describe()))
                    .unwrap_or_default()
            );
            let mut state = crate::server::AppState::new(served, Some(source)).with_limits(limits);
            state.tokens = tokens.map(std::sync::Arc::new);
            state.access_log = access_log
                .map(|path| crate::server::AccessLog::open(&path, log_queries))
                .transpose()?;
            crate::server::check_exposure(addr, &state, insecure_no_auth)?;
            crate::server::serve(state, addr)
        }
        Command::EncodeText {
            captions,
            out,
            encoder,
            tfidf: _,
            max_features,
            batch_size,
        } => {
            let encoder = match &encoder {
                Some(folder) => encode_text::Encoder::Sentence { folder, batch_size },
                None => encode_text::Encoder::Tfidf { max_features },
            };
            encode_text::run(&captions, &out, encoder)
        }
        Command::EncodeImages {
            images,
            list,
            out,
            encoder,
            batch_size,
            skip_bad,
        } => {
            let pictures = match (&images, &list) {
                (Some(dir), _) => encode_images::Pictures::Folder(dir),
                (None, Some(list)) => encode_images::Pictures::List(list),
                (None, None) => unreachable!("clap requires one"),
            };
            let options = tandem::image::EncodeOptions {
                batch_size,
                skip_bad,
            };
            encode_images::run(pictures, &out, &encoder, options)
        }
        Command::Prepare {
            images,
            captions,
            out,
            image_encoder,
            text_encoder,
            tfidf: _,
            val_images,
            test_images,
            seed,
            batch_size,
            skip_bad,
        } => prepare::run(prepare::PrepareArgs {
            images: &images,
            captions: &captions,
            out: &out,
            image_encoder: &image_encoder,
            text_encoder: match &text_encoder {
                Some(folder) => encode_text::Encoder::Sentence {
                    folder,
                    batch_size: 64,
                },
                None => encode_text::Encoder::Tfidf { max_features: 2048 },
            },
            options: tandem::image::EncodeOptions {
                batch_size,
                skip_bad,
            },
            val_images,
            test_images,
            seed,
        }),
        Command::Bench { size, runs, format } => bench::run(size, runs, format),
        Command::Demo {
            data,
            out,
            sets,
            no_baseline,
            format,
        } => demo::run(data, &out, &sets, !no_baseline, format),
        Command::CliReference => cli_reference::run(),
    }
}

/// Opens a run folder (its best checkpoint) or a checkpoint file; returns it with the folder
/// that holds its run files (the checkpoint's own folder when it is not a run's).
pub fn open_model(path: &Path) -> Result<(Checkpoint, PathBuf)> {
    let opened = RunFiles::open_model(path, &tandem::default_device()?)?;
    let folder = opened
        .file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    Ok((opened.checkpoint, opened.run_dir.unwrap_or(folder)))
}

/// `tandem serve`'s bounds from its options, each checked. Without `--max-concurrent`, as
/// many searches run at once as one exact batch holds (`--batch`), at least one per core:
/// fewer would starve the batcher, which scores concurrent searches in one pass.
fn serve_limits(
    max_concurrent: Option<usize>,
    batch: usize,
    queue: usize,
    request_timeout: f64,
    header_timeout: f64,
) -> Result<crate::server::Limits> {
    let defaults = crate::server::Limits::for_this_machine();
    if max_concurrent == Some(0) {
        anyhow::bail!("--max-concurrent must be at least 1");
    }
    let seconds = |value: f64, flag: &str| -> Result<std::time::Duration> {
        if !(value.is_finite() && value > 0.0 && value <= 86_400.0) {
            anyhow::bail!(
                "{flag} must be a number of seconds above 0 (at most a day), got {value}"
            );
        }
        Ok(std::time::Duration::from_secs_f64(value))
    };
    Ok(crate::server::Limits {
        max_concurrent: max_concurrent.unwrap_or(defaults.max_concurrent.max(batch)),
        queue,
        request_timeout: seconds(request_timeout, "--request-timeout")?,
        header_timeout: seconds(header_timeout, "--header-timeout")?,
    })
}
