//! `tandem tune`: a search on the tiny fixture, killed and resumed; bad spaces; the outputs.

use std::path::Path;

use tandem::data::npy;

use super::{TINY, stderr_of_failure, stdout_of_success, tandem, write_fixture};

/// Searched on the fixture: 27 epochs at most, so the rungs are 1, 3, 9 and 27 epochs.
const SPACE: &str = "\
[fixed]
train.epochs = 27

[search]
train.lr = { log_uniform = [1e-3, 3e-2] }
loss.kind = { choices = [\"paper\", \"info_nce\"] }
loss.margin = { uniform = [0.05, 0.3] }
";

/// The fixture with an explicit split whose test images have features of 1e30: a search that
/// trained on them would diverge (a failed trial), one that scored them would overflow the
/// normalisation and report NaN.
fn write_fixture_with_poisoned_test(dir: &Path) {
    write_fixture(dir);
    let mut images = npy::read_features(&dir.join("images.npy")).unwrap();
    let test: Vec<usize> = (25..30).collect();
    for &i in &test {
        images.data[i * images.cols..(i + 1) * images.cols].fill(1e30);
    }
    npy::write_f32(
        &dir.join("images.npy"),
        images.rows,
        images.cols,
        &images.data,
    )
    .unwrap();
    let splits = serde_json::json!({
        "train": (0..20).collect::<Vec<_>>(),
        "val": (20..25).collect::<Vec<_>>(),
        "test": test,
    });
    std::fs::write(dir.join("splits.json"), splits.to_string()).unwrap();
}

fn tune_cmd(data: &Path, space: &Path, out: &Path, extra: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("tandem"));
    c.env("NO_COLOR", "1")
        .env("TANDEM_LOG", "warn")
        .env("RAYON_NUM_THREADS", "2")
        .args(["tune", "--data"])
        .arg(data)
        .arg("--space")
        .arg(space)
        .arg("--out")
        .arg(out)
        .args(TINY)
        .args(["--trials", "9", "--min-epochs", "1"])
        .args(extra);
    c
}

/// The trial table without the times, which differ between runs.
fn trials_without_times(out: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(out.join("trials.json")).unwrap();
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    report["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let mut t = t.clone();
            t.as_object_mut().unwrap().remove("seconds");
            t
        })
        .collect()
}

#[test]
fn a_search_killed_and_resumed_equals_one_never_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    write_fixture_with_poisoned_test(dir.path());
    let space = dir.path().join("space.toml");
    std::fs::write(&space, SPACE).unwrap();

    let straight = dir.path().join("straight");
    let out = tune_cmd(dir.path(), &space, &straight, &["--format", "json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&stdout_of_success(out)).unwrap();
    assert_eq!(report["rungs"], serde_json::json!([1, 3, 9, 27]));
    assert_eq!(report["ended"], "done");
    let trials = report["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 9);
    for t in trials {
        let rsum = t["val_rsum"].as_f64().unwrap();
        assert!(rsum.is_finite() && rsum > 0.0, "{t}");
        assert!(!t["status"].as_str().unwrap().starts_with("failed"), "{t}");
    }
    // Successive halving: the best continue, so at least one trial has the full 27 epochs,
    // and most have fewer.
    let epochs: Vec<u64> = trials
        .iter()
        .map(|t| t["epochs"].as_u64().unwrap())
        .collect();
    assert!(epochs.contains(&27), "{epochs:?}");
    assert!(
        epochs.iter().filter(|&&e| e == 1).count() >= 5,
        "{epochs:?}"
    );
    // The best trial is one trained longest, and best.toml is its whole config.
    let best = report["best"].as_u64().unwrap() as usize;
    assert_eq!(trials[best]["epochs"], 27);
    let recipe = std::fs::read_to_string(straight.join("best.toml")).unwrap();
    let config = tandem::config::Config::from_toml(&recipe).unwrap();
    assert_eq!(config.train.epochs, 27);
    assert_eq!(
        serde_json::json!(config.train.lr),
        trials[best]["params"]["train.lr"]
    );
    for file in ["val_rsum.png", "val_rsum.svg", "tune.jsonl"] {
        assert!(straight.join(file).exists(), "{file}");
    }

    // Kill a second search at a varying point after its first result, then run it again.
    let killed = dir.path().join("killed");
    let mut child = tune_cmd(dir.path(), &space, &killed, &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let journal = killed.join("tune.jsonl");
    while std::fs::read_to_string(&journal).map_or(0, |t| t.lines().count()) < 3 {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        % 100;
    std::thread::sleep(std::time::Duration::from_millis(u64::from(jitter)));
    child.kill().unwrap(); // SIGKILL on Unix
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the search finished before the kill; lengthen it"
    );
    let resumed = tune_cmd(dir.path(), &space, &killed, &[]).output().unwrap();
    stdout_of_success(resumed);
    assert_eq!(
        trials_without_times(&straight),
        trials_without_times(&killed),
        "killed at +{jitter} ms after the first result"
    );
    assert_eq!(
        std::fs::read_to_string(killed.join("best.toml"))
            .unwrap()
            .lines()
            .skip(2)
            .collect::<Vec<_>>(),
        recipe.lines().skip(2).collect::<Vec<_>>()
    );
}

#[test]
fn a_bad_space_is_one_error_before_any_trial() {
    let dir = tempfile::tempdir().unwrap();
    write_fixture(dir.path());
    let cases = [
        (
            "[search]\ntrain.lrr = { uniform = [0.1, 0.2] }\n",
            "unknown key `train.lrr`",
        ),
        (
            "[search]\nloss.margin = { uniform = [0.3, 0.1] }\n",
            "empty or inverted",
        ),
        (
            "[search]\ntrain.batch_size = { choices = [\"big\"] }\n",
            "train.batch_size",
        ),
        (
            "[search]\ntrain.lr = { log_uniform = [1e-4, 1e-2] }\n",
            "needs `steps`",
        ),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let space = dir.path().join(format!("space{i}.toml"));
        std::fs::write(&space, text).unwrap();
        let out = dir.path().join(format!("out{i}"));
        let grid = if i == 3 { "grid" } else { "random" };
        let err = stderr_of_failure(
            tune_cmd(dir.path(), &space, &out, &["--sampler", grid])
                .output()
                .unwrap(),
        );
        assert!(
            err.contains(expected) && err.contains(&format!("space{i}.toml")),
            "{text}\n→ {err}"
        );
        assert_eq!(err.matches("error:").count(), 1, "{err}");
        assert!(!out.exists(), "a trial started for {text}");
    }
    // A random search needs a bound.
    let space = dir.path().join("space.toml");
    std::fs::write(&space, SPACE).unwrap();
    let err = stderr_of_failure(
        tandem()
            .args(["tune", "--data"])
            .arg(dir.path())
            .arg("--space")
            .arg(&space)
            .args(["--out"])
            .arg(dir.path().join("unbounded"))
            .output()
            .unwrap(),
    );
    assert!(err.contains("--budget"), "{err}");
}

#[test]
fn a_grid_visits_every_point_and_prints_a_table_and_csv() {
    let dir = tempfile::tempdir().unwrap();
    write_fixture(dir.path());
    let space = dir.path().join("space.toml");
    std::fs::write(
        &space,
        "[fixed]\ntrain.epochs = 3\n[search]\ntrain.lr = { log_uniform = [1e-3, 1e-2], steps = 3 }\nloss.kind = { choices = [\"paper\", \"info_nce\"] }\n",
    )
    .unwrap();
    let out = dir.path().join("grid");
    let csv = stdout_of_success(
        tune_cmd(
            dir.path(),
            &space,
            &out,
            &["--sampler", "grid", "--format", "csv", "--eta", "2"],
        )
        .output()
        .unwrap(),
    );
    let csv = String::from_utf8(csv).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "trial,epochs,best_epoch,val_rsum,seconds,status,loss.kind,train.lr"
    );
    let mut points: Vec<String> = lines
        .map(|l| l.split(',').skip(6).collect::<Vec<_>>().join(","))
        .collect();
    points.sort();
    assert_eq!(
        points,
        [
            "info_nce,0.001",
            "info_nce,0.00316",
            "info_nce,0.01",
            "paper,0.001",
            "paper,0.00316",
            "paper,0.01"
        ]
    );
    // Running it again continues the finished search: the same table, no new trial.
    let table = stdout_of_success(
        tune_cmd(
            dir.path(),
            &space,
            &out,
            &["--sampler", "grid", "--format", "table", "--eta", "2"],
        )
        .output()
        .unwrap(),
    );
    let table = String::from_utf8(table).unwrap();
    assert!(table.starts_with("trial  epochs"), "{table}");
    assert!(
        table.contains("6 trials, rungs of [1, 2, 3] epochs"),
        "{table}"
    );
}
