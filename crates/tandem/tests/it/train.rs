//! Training end to end on a slice of the bundled real demo data.

use std::path::{Path, PathBuf};

use candle_core::Device;
use tandem::config::Config;
use tandem::data::{PairedDataset, SplitView};
use tandem::eval::RetrievalMetrics;
use tandem::model::load_checkpoint;
use tandem::train::{NoopObserver, RunFiles, TrainOutcome, evaluate_split, train};

fn demo_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/emoji")
}

/// Small and quick: a 256-wide hidden layer, 6 epochs; then `overrides`.
fn small_config(overrides: &[&str]) -> Config {
    let mut c = Config::default();
    let base = [
        "model.hidden=[256]",
        "model.dim=128",
        "train.batch_size=200",
        "train.epochs=6",
        "train.lr=2e-3",
        "train.patience=0",
    ];
    for s in base.iter().chain(overrides) {
        c.set(s).unwrap();
    }
    c
}

/// Trains `config` on the demo data into a fresh run folder.
fn train_demo(
    config: &Config,
) -> (
    PairedDataset,
    tempfile::TempDir,
    tandem::Result<TrainOutcome>,
) {
    let dataset = PairedDataset::open(&demo_data()).unwrap();
    let run = tempfile::tempdir().unwrap();
    let outcome = train(
        &dataset,
        config,
        run.path(),
        &Device::Cpu,
        &mut NoopObserver,
    );
    (dataset, run, outcome)
}

#[test]
fn trains_well_above_chance_on_the_demo_data() {
    let config = small_config(&[]);
    let (dataset, run, outcome) = train_demo(&config);
    let outcome = outcome.unwrap();
    assert_eq!(outcome.epochs_run, 6);
    for f in [
        RunFiles::CONFIG,
        RunFiles::SPLITS,
        RunFiles::METRICS,
        RunFiles::BEST,
        RunFiles::LAST,
    ] {
        assert!(run.path().join(f).exists(), "{f} missing");
    }
    // The metrics log has one line per step and one per epoch, each valid JSON.
    let log = std::fs::read_to_string(run.path().join(RunFiles::METRICS)).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let count = |kind: &str| lines.iter().filter(|l| l["kind"] == kind).count();
    assert_eq!((count("step"), count("epoch")), (outcome.steps, 6));
    assert!(lines[0]["health"]["spread"].as_f64().unwrap() > 0.0);
    assert!(lines[0]["terms"]["text_to_image"]["loss"].is_number());

    // The best checkpoint alone rebuilds the model; its val metrics are the ones recorded.
    let ckpt = load_checkpoint(&run.path().join(RunFiles::BEST), &Device::Cpu).unwrap();
    assert_eq!(ckpt.config, config);
    let mut model = ckpt.model;
    let splits = dataset.splits.clone().unwrap();
    let val = SplitView::new(&splits.val, &dataset.text_to_image, dataset.images.rows);
    let again = evaluate_split(&mut model, &dataset, &val, "val", 512).unwrap();
    assert_eq!(Some(again), outcome.best_val);

    let test = SplitView::new(&splits.test, &dataset.text_to_image, dataset.images.rows);
    let m = evaluate_split(&mut model, &dataset, &test, "test", 512).unwrap();
    let chance = RetrievalMetrics::chance("test", &test.captions_per_image());
    // Chance rsum is about 8 on 400 test images; a trained model is far above it.
    assert!(
        m.rsum > 10.0 * chance.rsum,
        "test rsum {} vs chance {}",
        m.rsum,
        chance.rsum
    );
    assert!(
        m.text_to_image[2] > 20.0 && m.image_to_text[2] > 20.0,
        "{m:?}"
    );
}

#[test]
fn same_seed_gives_identical_checkpoints() {
    let config = small_config(&["train.epochs=1", "model.hidden=[64]"]);
    let (_, a, first) = train_demo(&config);
    let (_, b, second) = train_demo(&config);
    first.unwrap();
    second.unwrap();
    let read = |d: &Path| {
        let c = load_checkpoint(&d.join(RunFiles::LAST), &Device::Cpu).unwrap();
        c.model
            .named()
            .into_iter()
            .map(|(n, t, _)| (n, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
            .collect::<Vec<_>>()
    };
    let (ta, tb) = (read(a.path()), read(b.path()));
    assert_eq!(ta.len(), tb.len());
    for ((na, va), (_, vb)) in ta.iter().zip(&tb) {
        assert!(va == vb, "two runs with one seed differ in {na}");
    }
}

#[test]
fn checkpoint_from_other_feature_dimension_is_refused() {
    let (_, run, outcome) = train_demo(&small_config(&["train.epochs=1", "model.hidden=[]"]));
    outcome.unwrap();
    let mut model = load_checkpoint(&run.path().join(RunFiles::BEST), &Device::Cpu)
        .unwrap()
        .model;
    let other = tandem::data::Matrix {
        rows: 2,
        cols: 5,
        data: vec![0.0; 10],
    };
    let e = model
        .embed_all(&other, &[0, 1], true, 8)
        .unwrap_err()
        .to_string();
    assert!(e.contains("dimension 432") && e.contains("has 5"), "{e}");
}

#[test]
fn batch_larger_than_the_split_is_a_config_error() {
    let (_, _run, outcome) = train_demo(&small_config(&["train.batch_size=5000"]));
    let e = outcome.unwrap_err().to_string();
    assert!(e.contains("larger than the 1306 training images"), "{e}");
}

#[test]
fn sgd_with_momentum_and_weight_decay_learns() {
    let config = small_config(&[
        "train.optimizer=sgd",
        "train.lr=0.1",
        "train.momentum=0.9",
        "train.weight_decay=1e-4",
        "train.epochs=3",
        "model.hidden=[]",
    ]);
    let (_, _run, outcome) = train_demo(&config);
    let val = outcome.unwrap().best_val.unwrap();
    // Chance rsum on the 200 validation images is about 15.
    assert!(val.rsum > 60.0, "{val:?}");
}
