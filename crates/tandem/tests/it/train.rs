//! Training end to end on a slice of the bundled real demo data.

use std::path::{Path, PathBuf};

use candle_core::Device;
use tandem::config::Config;
use tandem::data::{PairedDataset, Residency, SplitView, npy, shard_name};
use tandem::eval::RetrievalMetrics;
use tandem::model::load_checkpoint;
use tandem::train::{
    NoopObserver, RunFiles, StepEvent, TrainOutcome, Trainer, evaluate_split, resume, train,
    train_data_parallel,
};

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
    let val = SplitView::new(&splits.val, &dataset.text_to_image, dataset.images.rows());
    let again = evaluate_split(&mut model, &dataset, &val, "val", 512).unwrap();
    assert_eq!(Some(again), outcome.best_val);

    let test = SplitView::new(&splits.test, &dataset.text_to_image, dataset.images.rows());
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

/// The tensors of a run folder's checkpoint `file`, by name.
fn checkpoint_tensors(dir: &Path, file: &str) -> Vec<(String, Vec<f32>)> {
    let c = load_checkpoint(&dir.join(file), &Device::Cpu).unwrap();
    let mut all: Vec<(String, Vec<f32>)> = c
        .model
        .named()
        .into_iter()
        .map(|(n, t, _)| (n, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .chain(c.extra.into_iter().map(|(n, t)| {
            let t = t.to_dtype(candle_core::DType::F32).unwrap();
            (n, t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        }))
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

/// A caller stepping the Trainer itself (as the Python package and the tuner do) gets the same
/// run as `train`: the same checkpoints bit for bit, the same metrics log, one report per step.
#[test]
fn a_trainer_stepped_by_hand_equals_train() {
    let config = small_config(&["train.epochs=2", "loss.memory.enabled=true"]);
    let (dataset, whole, outcome) = train_demo(&config);
    let outcome = outcome.unwrap();
    let stepped = tempfile::tempdir().unwrap();
    let mut trainer = Trainer::start(&dataset, &config, stepped.path(), &Device::Cpu).unwrap();
    let mut steps = 0;
    while !trainer.is_done() {
        let mut in_epoch = 0;
        while let Some(event) = trainer.step().unwrap() {
            let StepEvent::Trained { report, .. } = event else {
                panic!("a finite batch was skipped");
            };
            in_epoch += 1;
            steps += 1;
            assert_eq!((report.step, report.step_in_epoch), (steps, in_epoch));
            if in_epoch == 1 {
                // Checkpoints hold whole epochs only.
                let err = trainer.checkpoint().unwrap_err().to_string();
                assert!(err.contains("whole epochs"), "{err}");
                let err = trainer.end_epoch().unwrap_err().to_string();
                assert!(err.contains("batches of the epoch left"), "{err}");
            }
        }
        assert_eq!(in_epoch, trainer.steps_per_epoch());
        let epoch = trainer.end_epoch().unwrap();
        assert_eq!(epoch.epoch + 1, trainer.completed_epochs());
    }
    assert!(
        trainer.step().unwrap().is_none(),
        "a finished run trained on"
    );
    let stepped_outcome = trainer.finish(false).unwrap();
    assert_eq!(stepped_outcome.steps, outcome.steps);
    assert_eq!(stepped_outcome.steps, steps);
    assert_eq!(stepped_outcome.best_epoch, outcome.best_epoch);
    for file in [RunFiles::BEST, RunFiles::LAST] {
        let (a, b) = (
            checkpoint_tensors(whole.path(), file),
            checkpoint_tensors(stepped.path(), file),
        );
        assert_eq!(a.len(), b.len());
        for ((name, x), (_, y)) in a.iter().zip(&b) {
            assert!(
                x == y,
                "{file}: {name} differs between train and a stepped Trainer"
            );
        }
    }
    assert_eq!(
        metrics_without_times(whole.path()),
        metrics_without_times(stepped.path())
    );
}

/// Trains one epoch by hand; whether its end handed the checkpoints to the writer.
fn train_one_epoch(trainer: &mut Trainer<&PairedDataset>) -> bool {
    while trainer.step().unwrap().is_some() {}
    trainer.end_epoch().unwrap().checkpointed
}

/// The epoch a checkpoint of `run` holds, once its writes are done; `None` without the file.
fn checkpoint_epoch(run: &Path, file: &str) -> Option<usize> {
    let path = run.join(file);
    path.exists()
        .then(|| load_checkpoint(&path, &Device::Cpu).unwrap().epoch)
}

/// `train.checkpoint_seconds`: epochs' snapshots are held until that long after the previous
/// write, the run's end writes them, and so does dropping the trainer (an interrupt) — the
/// last whole epoch's, not an older one. With 0, every epoch is written.
#[test]
fn checkpoints_are_written_every_checkpoint_seconds_and_at_the_end() {
    let dataset = PairedDataset::open(&demo_data()).unwrap();
    let held = small_config(&["train.epochs=3", "train.checkpoint_seconds=1e9"]);
    let run = tempfile::tempdir().unwrap();
    let mut trainer = Trainer::start(&dataset, &held, run.path(), &Device::Cpu).unwrap();
    assert!(!train_one_epoch(&mut trainer));
    assert!(!train_one_epoch(&mut trainer));
    std::thread::sleep(std::time::Duration::from_millis(200));
    for file in [RunFiles::LAST, RunFiles::BEST] {
        assert_eq!(
            checkpoint_epoch(run.path(), file),
            None,
            "{file} written early"
        );
    }
    assert!(train_one_epoch(&mut trainer), "the last epoch writes");
    trainer.finish(false).unwrap();
    assert_eq!(checkpoint_epoch(run.path(), RunFiles::LAST), Some(3));
    assert!(checkpoint_epoch(run.path(), RunFiles::BEST).is_some());

    let interrupted = tempfile::tempdir().unwrap();
    let mut trainer = Trainer::start(&dataset, &held, interrupted.path(), &Device::Cpu).unwrap();
    assert!(!train_one_epoch(&mut trainer));
    trainer.step().unwrap(); // into epoch 2, then interrupted
    drop(trainer);
    assert_eq!(
        checkpoint_epoch(interrupted.path(), RunFiles::LAST),
        Some(1)
    );
    assert_eq!(
        checkpoint_epoch(interrupted.path(), RunFiles::BEST),
        Some(1)
    );

    let every = small_config(&["train.epochs=3", "train.checkpoint_seconds=0"]);
    let each = tempfile::tempdir().unwrap();
    let mut trainer = Trainer::start(&dataset, &every, each.path(), &Device::Cpu).unwrap();
    assert!(train_one_epoch(&mut trainer));
    // Written on the writer's thread: wait for it (at most a few seconds).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !each.path().join(RunFiles::LAST).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "epoch 1 was not written"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    drop(trainer);
    assert_eq!(checkpoint_epoch(each.path(), RunFiles::LAST), Some(1));
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
        .embed_all(&other.into(), &[0, 1], true, 8)
        .unwrap_err()
        .to_string();
    assert!(e.contains("dimension 1280") && e.contains("has 5"), "{e}");
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

/// Everything a checkpoint holds, as plain values: model tensors, temperature, memory,
/// optimiser state, and the metadata (which carries the training state).
/// Named values of one checkpoint part.
type Named<T> = Vec<(String, Vec<T>)>;

fn checkpoint_contents(path: &Path) -> (Named<f32>, Named<f64>) {
    let c = load_checkpoint(path, &Device::Cpu).unwrap();
    let model = c
        .model
        .named()
        .into_iter()
        .map(|(n, t, _)| (n, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect();
    let mut extra: Named<f64> = c
        .extra
        .iter()
        .map(|(n, t)| {
            let v = t.to_dtype(candle_core::DType::F64).unwrap();
            (
                n.clone(),
                v.flatten_all().unwrap().to_vec1::<f64>().unwrap(),
            )
        })
        .collect();
    extra.sort_by(|a, b| a.0.cmp(&b.0));
    (model, extra)
}

/// The metrics log without wall-clock fields.
fn metrics_without_times(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join(RunFiles::METRICS))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("seconds");
            v
        })
        .collect()
}

/// The demo data written in three pieces (`images-0000K.npy`, `texts-…`, and per-piece
/// `text_to_image-…` counting from each piece's first image) and streamed from disk trains
/// bit for bit as the folder read into memory: the same checkpoints and metrics log.
#[test]
fn streamed_sharded_features_train_as_features_in_memory() {
    let config = small_config(&["train.epochs=2", "loss.memory.enabled=true"]);
    let (dataset, in_memory, outcome) = train_demo(&config);
    outcome.unwrap();
    let sharded = tempfile::tempdir().unwrap();
    write_in_pieces(&dataset, sharded.path(), 3);
    for file in ["splits.json", "captions.jsonl"] {
        std::fs::copy(demo_data().join(file), sharded.path().join(file)).unwrap();
    }
    let streamed = PairedDataset::open_with(sharded.path(), Residency::Stream).unwrap();
    assert!(streamed.images.is_streamed() && streamed.texts.is_streamed());
    assert_eq!(streamed.text_to_image, dataset.text_to_image);
    let run = tempfile::tempdir().unwrap();
    train(
        &streamed,
        &config,
        run.path(),
        &Device::Cpu,
        &mut NoopObserver,
    )
    .unwrap();
    for file in [RunFiles::BEST, RunFiles::LAST] {
        assert!(
            checkpoint_tensors(in_memory.path(), file) == checkpoint_tensors(run.path(), file),
            "{file} differs between features in memory and streamed"
        );
    }
    assert_eq!(
        metrics_without_times(in_memory.path()),
        metrics_without_times(run.path())
    );
    // The same pieces read into memory are the same rows.
    let loaded = PairedDataset::open_with(sharded.path(), Residency::Memory).unwrap();
    assert_eq!(loaded.images.in_memory(), dataset.images.in_memory());
    assert_eq!(loaded.texts.in_memory(), dataset.texts.in_memory());
}

/// Data-parallel ranks (threads) train as one device with the whole batch, to rounding: two
/// and three ranks against one, with BatchNorm, dropout and the cross-batch memory on. The
/// sums add the ranks' parts in another order, and the hardest negatives the loss picks can
/// flip on such a difference, so runs drift apart slowly: after 2 epochs (43 steps, SGD) the
/// weights differ by at most 0.6% of their largest value and the losses by 2e-5 relative (one
/// step's gradients: 1e-4, `parallel::ranked_step`'s test). Rank 0 writes the run folder; the ranks pause
/// together.
#[test]
fn data_parallel_ranks_train_as_one_device() {
    let config = small_config(&[
        "train.epochs=2",
        "loss.memory.enabled=true",
        "train.optimizer=sgd",
        "train.lr=0.1",
    ]);
    let (dataset, single, outcome) = train_demo(&config);
    let outcome = outcome.unwrap();
    let weights = checkpoint_tensors(single.path(), RunFiles::LAST);
    let losses = |run: &Path| -> Vec<f64> {
        metrics_without_times(run)
            .iter()
            .filter(|l| l["kind"] == "step")
            .map(|l| l["loss"].as_f64().unwrap())
            .collect()
    };
    for ranks in [2, 3] {
        let run = tempfile::tempdir().unwrap();
        let parallel = train_data_parallel(
            &dataset,
            &config,
            run.path(),
            &vec![Device::Cpu; ranks],
            &mut NoopObserver,
        )
        .unwrap();
        assert_eq!(
            (parallel.steps, parallel.epochs_run),
            (outcome.steps, outcome.epochs_run)
        );
        for (k, (a, b)) in losses(single.path())
            .iter()
            .zip(losses(run.path()))
            .enumerate()
        {
            assert!(
                (a - b).abs() <= 1e-4 * a.abs(),
                "{ranks} ranks, step {}: loss {b} against {a}",
                k + 1
            );
        }
        for ((name, want), (_, got)) in weights
            .iter()
            .zip(checkpoint_tensors(run.path(), RunFiles::LAST))
        {
            let before_batch_norm =
                name.ends_with(".bias") && !name.contains("out") && !name.contains("bn");
            if before_batch_norm || name.starts_with("optimizer.") {
                // A bias before BatchNorm has no effect on the output and its gradient is
                // rounding noise (so is its velocity among the optimiser's, listed by index).
                continue;
            }
            let scale = want.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
            let error = got
                .iter()
                .zip(want)
                .fold(0f32, |m, (g, w)| m.max((g - w).abs()))
                / scale;
            assert!(
                error < 1e-2,
                "{ranks} ranks: {name} differs by {error} of its largest value"
            );
        }
        let mut files: Vec<String> = std::fs::read_dir(run.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(
            files,
            [
                "best.safetensors",
                "config.toml",
                "last.safetensors",
                "metrics.jsonl",
                "splits.json"
            ]
        );
    }
    // A pause asked of rank 0 stops every rank after the epoch (none is left waiting).
    struct PauseAfterOne;
    impl tandem::train::Observer for PauseAfterOne {
        fn stop_requested(&mut self, completed: usize) -> bool {
            completed >= 1
        }
    }
    let run = tempfile::tempdir().unwrap();
    let paused = train_data_parallel(
        &dataset,
        &config,
        run.path(),
        &[Device::Cpu, Device::Cpu],
        &mut PauseAfterOne,
    )
    .unwrap();
    assert!(paused.paused && paused.epochs_run == 1);
}

/// Writes `dataset` as `pieces` shards of consecutive images with their captions (the demo's
/// captions are ordered by image).
fn write_in_pieces(dataset: &PairedDataset, out: &Path, pieces: usize) {
    let ids = &dataset.text_to_image;
    assert!(
        ids.windows(2).all(|w| w[0] <= w[1]),
        "captions ordered by image"
    );
    let n = dataset.images.rows() as u32;
    let bounds: Vec<u32> = (0..=pieces as u32).map(|k| k * n / pieces as u32).collect();
    for (k, w) in bounds.windows(2).enumerate() {
        let images: Vec<u32> = (w[0]..w[1]).collect();
        let texts: Vec<u32> = (0..ids.len() as u32)
            .filter(|&t| (w[0]..w[1]).contains(&ids[t as usize]))
            .collect();
        let write = |name: &str, features: &tandem::data::Features, rows: &[u32]| {
            let data = features.gather(rows).unwrap();
            let path = out.join(shard_name(name, k));
            npy::write_f32(&path, rows.len(), features.cols(), &data).unwrap();
        };
        write("images", &dataset.images, &images);
        write("texts", &dataset.texts, &texts);
        let local: Vec<i64> = texts
            .iter()
            .map(|&t| (ids[t as usize] - w[0]) as i64)
            .collect();
        std::fs::write(
            out.join(shard_name("text_to_image", k)),
            npy::encode_i64(&local),
        )
        .unwrap();
    }
}

/// Train 3 epochs straight, or 1 epoch, a crash in the middle of the next (its steps already in
/// the metrics log), and a resume to 3: the same weights, temperature, memory, optimiser state,
/// metrics and test embeddings, bit for bit.
#[test]
fn resumed_run_equals_uninterrupted_run() {
    let dataset = PairedDataset::open(&demo_data()).unwrap();
    for overrides in [
        &[
            "loss.memory.enabled=true",
            "loss.memory.capacity=300",
            "loss.memory.warmup_steps=3",
        ][..],
        &[
            "loss.kind=info_nce",
            "loss.memory.enabled=true",
            "loss.memory.capacity=500",
            "train.optimizer=sgd",
            "train.lr=0.1",
            "train.lr_decay_epochs=2",
        ][..],
    ] {
        let mut config = small_config(overrides);
        config.set("train.epochs=3").unwrap();
        config.set("model.hidden=[64]").unwrap();
        let straight = tempfile::tempdir().unwrap();
        train(
            &dataset,
            &config,
            straight.path(),
            &Device::Cpu,
            &mut NoopObserver,
        )
        .unwrap();

        let interrupted = tempfile::tempdir().unwrap();
        let mut first_part = config.clone();
        first_part.set("train.epochs=1").unwrap();
        train(
            &dataset,
            &first_part,
            interrupted.path(),
            &Device::Cpu,
            &mut NoopObserver,
        )
        .unwrap();
        // What a run killed during epoch 2 leaves behind: step lines past the checkpoint.
        let metrics = interrupted.path().join(RunFiles::METRICS);
        let mut log = std::fs::read_to_string(&metrics).unwrap();
        log.push_str("{\"kind\":\"step\",\"epoch\":2,\"step\":999}\n");
        std::fs::write(&metrics, log).unwrap();
        let outcome = resume(
            &dataset,
            interrupted.path(),
            Some(3),
            &Device::Cpu,
            &mut NoopObserver,
        )
        .unwrap();
        assert_eq!(outcome.epochs_run, 3, "{overrides:?}");

        for file in [RunFiles::LAST, RunFiles::BEST] {
            let (model_a, extra_a) = checkpoint_contents(&straight.path().join(file));
            let (model_b, extra_b) = checkpoint_contents(&interrupted.path().join(file));
            assert!(model_a == model_b, "{overrides:?}: {file} weights differ");
            assert_eq!(
                extra_a.iter().map(|e| &e.0).collect::<Vec<_>>(),
                extra_b.iter().map(|e| &e.0).collect::<Vec<_>>()
            );
            for ((name, a), (_, b)) in extra_a.iter().zip(&extra_b) {
                assert!(a == b, "{overrides:?}: {file} {name} differs");
            }
        }
        assert!(
            checkpoint_contents(&straight.path().join(RunFiles::LAST))
                .1
                .iter()
                .any(|(n, v)| n == "memory.texts.rows" && !v.is_empty()),
            "the memory was never filled"
        );
        assert_eq!(
            metrics_without_times(straight.path()),
            metrics_without_times(interrupted.path()),
            "{overrides:?}"
        );
        let splits = dataset.splits.clone().unwrap();
        let test = SplitView::new(&splits.test, &dataset.text_to_image, dataset.images.rows());
        let embed = |run: &Path| {
            let mut m = load_checkpoint(&run.join(RunFiles::LAST), &Device::Cpu)
                .unwrap()
                .model;
            m.embed_all(&dataset.texts, &test.texts, false, 256)
                .unwrap()
        };
        assert!(embed(straight.path()) == embed(interrupted.path()));
    }
}

#[test]
fn resume_without_a_checkpoint_says_what_to_do() {
    let dataset = PairedDataset::open(&demo_data()).unwrap();
    let empty = tempfile::tempdir().unwrap();
    let e = resume(
        &dataset,
        empty.path(),
        None,
        &Device::Cpu,
        &mut NoopObserver,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("last.safetensors") && e.contains("--overwrite"),
        "{e}"
    );
}

/// A training image whose features overflow the first layer: the run stops at its batch and
/// names the step and the captions; with `skip_nonfinite` the batch is skipped and counted and
/// every other batch trains.
#[test]
fn nonfinite_batches_stop_the_run_or_are_skipped() {
    let mut dataset = PairedDataset::open(&demo_data()).unwrap();
    let splits = dataset.splits.clone().unwrap();
    let poisoned = splits.train[0] as usize;
    let cols = dataset.images.cols();
    let mut images = dataset.images.to_matrix().unwrap().as_ref().clone();
    images.data[poisoned * cols..(poisoned + 1) * cols].fill(f32::INFINITY);
    dataset.images = images.into();
    let config = small_config(&["train.epochs=1", "model.hidden=[64]"]);
    let run = tempfile::tempdir().unwrap();
    let e = train(
        &dataset,
        &config,
        run.path(),
        &Device::Cpu,
        &mut NoopObserver,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("training diverged at step") && e.contains("batch captions"),
        "{e}"
    );
    assert!(!run.path().join(RunFiles::LAST).exists());

    let mut skipping = config.clone();
    skipping.set("train.skip_nonfinite=true").unwrap();
    let run = tempfile::tempdir().unwrap();
    let outcome = train(
        &dataset,
        &skipping,
        run.path(),
        &Device::Cpu,
        &mut NoopObserver,
    )
    .unwrap();
    // The poisoned image's captions are anchors in at most a few batches of the epoch.
    assert!(
        (1..outcome.steps).contains(&outcome.skipped_batches),
        "{} of {} skipped",
        outcome.skipped_batches,
        outcome.steps
    );
    let rsum = outcome.best_val.unwrap().rsum;
    assert!(rsum > 20.0, "val rsum {rsum}");
}
