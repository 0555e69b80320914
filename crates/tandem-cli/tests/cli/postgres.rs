//! Galleries in a real PostgreSQL + pgvector (`pg_server.rs`): push, search, serve, a killed
//! push, and one clear message per way a database can be wrong.

use std::path::Path;

use super::pg_server::{PASSWORD, PgServer};
use super::{
    Server, build_index, stderr_of_failure, stdout_of_success, tandem, train_cmd, trained_index_of,
    worded_fixture_with_image_files, write_fixture_of,
};

/// The worded fixture (30 images with files, 60 captions in words, TF-IDF features), trained
/// and indexed; returns the folder and the index's path.
fn worded_index() -> (tempfile::TempDir, std::path::PathBuf) {
    trained_index_of(worded_fixture_with_image_files)
}

/// The message of a `tandem search --postgres URL --table TABLE ARGS` that must fail.
fn search_error(url: &str, table: &str, args: &[&str]) -> String {
    stderr_of_failure(
        tandem()
            .args(["search", "--postgres", url, "--table", table])
            .args(args)
            .output()
            .unwrap(),
    )
}

fn push(index: &Path, url: &str, table: &str, extra: &[&str]) -> std::process::Output {
    tandem()
        .args(["index", "push", "--index"])
        .arg(index)
        .args(["--postgres", url, "--table", table])
        .args(extra)
        .output()
        .unwrap()
}

/// `tandem search --format json` with `args`; the hits of the first query as (id, score).
fn hits(args: &[&str]) -> Vec<(u64, f64)> {
    let out = tandem()
        .args(["search", "--format", "json"])
        .args(args)
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&stdout_of_success(out)).unwrap();
    json["results"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["id"].as_u64().unwrap(), h["score"].as_f64().unwrap()))
        .collect()
}

fn same_hits(ours: &[(u64, f64)], theirs: &[(u64, f64)], what: &str) {
    assert_eq!(ours.len(), theirs.len(), "{what}");
    for (a, b) in ours.iter().zip(theirs) {
        assert!(
            a.0 == b.0 && (a.1 - b.1).abs() < 1e-5,
            "{what}: {ours:?} vs {theirs:?}"
        );
    }
}

/// Pushed, the gallery answers every query as the index folder does (exact search: the same
/// ids and scores; HNSW on 30 rows: the same), in words too; filters keep only matching rows;
/// pushing the same index again does nothing.
#[test]
fn a_pushed_gallery_answers_as_the_index_does() {
    let Some(pg) = PgServer::start() else { return };
    let (_dir, index) = worded_index();
    let url = pg.url();
    let out = push(&index, &url, "worded", &[]);
    let table = String::from_utf8(stdout_of_success(out)).unwrap();
    assert!(
        table.contains("pushed 30 images and 60 captions"),
        "{table}"
    );
    assert!(!table.contains(PASSWORD), "{table}");
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT attstorage FROM pg_attribute WHERE attrelid = 'worded_images'::regclass AND attname = 'emb'"
        )
        .trim(),
        "p",
        "embeddings stay in the row, not in TOAST"
    );
    assert_eq!(
        pg.psql("postgres", "SELECT count(*) FROM worded_captions")
            .trim(),
        "60"
    );
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_indexes WHERE indexdef LIKE '%USING hnsw%'"
        )
        .trim(),
        "2",
        "one HNSW index per gallery"
    );
    let index_arg = index.to_str().unwrap();
    for query in [
        ["--text-id", "7"],
        ["--image-id", "4"],
        ["--text", "a blue frog"],
    ] {
        let theirs = hits(&[&["--index", index_arg, "--exact", "--k", "5"][..], &query].concat());
        for mode in [&["--exact"][..], &[][..], &["--ef", "10"][..]] {
            let ours = hits(
                &[
                    &["--postgres", &url, "--table", "worded", "--k", "5"][..],
                    mode,
                    &query,
                ]
                .concat(),
            );
            same_hits(&ours, &theirs, &format!("{query:?} {mode:?}"));
        }
    }
    // Filters: the caption text and the image id, parameterised (a quote is just a character).
    let filtered = tandem()
        .args([
            "search",
            "--postgres",
            &url,
            "--table",
            "worded",
            "--format",
            "json",
        ])
        .args([
            "--image-id",
            "0",
            "--k",
            "50",
            "--where",
            "text~cat",
            "--where",
            "image<20",
        ])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&stdout_of_success(filtered)).unwrap();
    let results = json["results"][0].as_array().unwrap();
    assert_eq!(
        results.len(),
        8,
        "cats among images 0..19: 1, 7, 13, 19, two captions each"
    );
    for hit in results {
        assert!(hit["text"].as_str().unwrap().contains("cat"), "{hit}");
        assert!(hit["image"].as_u64().unwrap() < 20, "{hit}");
    }
    let none = hits(&[
        "--postgres",
        &url,
        "--table",
        "worded",
        "--text-id",
        "0",
        "--where",
        "caption=x'; DROP TABLE worded_images; --",
    ]);
    assert!(none.is_empty());
    assert_eq!(
        pg.psql("postgres", "SELECT count(*) FROM worded_images")
            .trim(),
        "30"
    );
    let e = search_error(&url, "worded", &["--text-id", "0", "--where", "text~dog"]);
    assert!(
        e.contains("`text` is not a column of the images gallery; it has id, file, caption"),
        "{e}"
    );
    // The same index again: nothing to do; --force pushes anyway.
    let again = String::from_utf8(stdout_of_success(push(&index, &url, "worded", &[]))).unwrap();
    assert!(again.contains("holds this index already"), "{again}");
    let forced = String::from_utf8(stdout_of_success(push(
        &index,
        &url,
        "worded",
        &["--force", "--no-hnsw"],
    )))
    .unwrap();
    assert!(forced.contains("pushed 30 images"), "{forced}");
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_indexes WHERE indexdef LIKE '%USING hnsw%'"
        )
        .trim(),
        "0"
    );
    let e = search_error(&url, "worded", &["--text-id", "0", "--ef", "20"]);
    assert!(e.contains("pushed without HNSW indexes"), "{e}");
}

/// `tandem serve --backend postgres://...` answers /search like the server on the index
/// folder, and /health says where it searches.
#[test]
fn serve_through_postgres_answers_as_the_index_does() {
    let Some(pg) = PgServer::start() else { return };
    let (_dir, index) = worded_index();
    let url = pg.url();
    stdout_of_success(push(&index, &url, "served", &[]));
    let embedded = Server::start_with(&index, &["--exact"], None);
    let through = Server::start_with(
        &index,
        &["--backend", &url, "--table", "served", "--exact"],
        None,
    );
    for body in [
        r#"{"id": 3, "direction": "text_to_image", "k": 4}"#,
        r#"{"id": 5, "direction": "image_to_text", "k": 6}"#,
        r#"{"text": "the green dog", "k": 3}"#,
    ] {
        let (status, theirs) = embedded.search(body);
        assert_eq!(status, 200, "{theirs}");
        let (status, ours) = through.search(body);
        assert_eq!(status, 200, "{ours}");
        let ids = |v: &serde_json::Value| -> Vec<u64> {
            v["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["id"].as_u64().unwrap())
                .collect()
        };
        assert_eq!(ids(&ours), ids(&theirs), "{body}");
        assert_eq!(
            ours["results"][0]["text"], theirs["results"][0]["text"],
            "{body}"
        );
    }
    let (status, body) = through.search(r#"{"id": 60, "direction": "text_to_image"}"#);
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("caption 60 is out of range"),
        "{body}"
    );
    let (status, _, body) = through.get("/image/3");
    assert_eq!(
        (status, body.as_str()),
        (200, "picture 3"),
        "image files come from the file column"
    );
    let (status, _, body) = through.get("/image/30");
    assert_eq!(status, 400, "{body}");
    let (_, _, health) = through.get("/health");
    assert!(
        health.contains("postgres postgres://postgres:***@127.0.0.1"),
        "{health}"
    );
    assert!(!health.contains(PASSWORD), "{health}");
    // The database gone: a search is the database's failure (502, naming it), not the
    // request's, and the server keeps answering.
    drop(pg);
    let (status, body) = through.search(r#"{"id": 3, "direction": "text_to_image", "k": 4}"#);
    let message = body["error"].as_str().unwrap();
    assert_eq!(status, 502, "{body}");
    assert!(
        message.contains("postgres://postgres:***@127.0.0.1") && !message.contains(PASSWORD),
        "{message}"
    );
    let (status, _, _) = through.get("/health");
    assert_eq!(status, 200);
}

/// SIGKILL at points through a push over an existing gallery: each time the old gallery
/// still answers, whole; a kill after the swap gives the new one; the next push drops what
/// killed ones left.
#[test]
fn a_killed_push_leaves_the_previous_gallery_searchable() {
    use std::time::Instant;
    let Some(pg) = PgServer::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    // Big enough that a push takes a while.
    write_fixture_of(data, 3000, 99);
    let (old_run, new_run) = (data.join("run-old"), data.join("run-new"));
    for (run, seed) in [(&old_run, "1"), (&new_run, "2")] {
        train_cmd(data, run)
            .args([
                "--set",
                &format!("seed={seed}"),
                "--set",
                "train.batch_size=500",
                "--set",
                "data.val_images=100",
                "--set",
                "data.test_images=100",
            ])
            .assert()
            .success();
    }
    let (old_index, new_index) = (data.join("index-old"), data.join("index-new"));
    build_index(&old_run, data, &old_index);
    build_index(&new_run, data, &new_index);
    let url = pg.url();
    let answer = |index: &Path| {
        hits(&[
            "--postgres",
            &url,
            "--table",
            "g",
            "--index",
            index.to_str().unwrap(),
            "--exact",
            "--text-id",
            "0",
        ])
    };
    stdout_of_success(push(&old_index, &url, "g", &[]));
    let old_answer = answer(&old_index);
    let started = Instant::now();
    stdout_of_success(push(
        &new_index,
        &url,
        "g",
        &["--hnsw", "m=16,ef_construction=200"],
    ));
    let push_time = started.elapsed();
    let new_answer = answer(&new_index);
    let new_record = pg.psql(
        "postgres",
        "SELECT model_sha256 FROM tandem_galleries WHERE name = 'g'",
    );
    let staging = || {
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'g\\_%\\_push\\_%'",
        )
    };
    let (mut kept_old, mut got_new, mut left_staging) = (0, 0, 0);
    for i in 0..10u32 {
        stdout_of_success(push(&old_index, &url, "g", &[]));
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("tandem"))
            .env("TANDEM_LOG", "warn")
            .args([
                "index",
                "push",
                "--hnsw",
                "m=16,ef_construction=200",
                "--postgres",
                &url,
                "--table",
                "g",
                "--index",
            ])
            .arg(&new_index)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(push_time * i / 9);
        child.kill().unwrap();
        child.wait().unwrap();
        left_staging += usize::from(staging().trim() != "0");
        let record = pg.psql(
            "postgres",
            "SELECT model_sha256 FROM tandem_galleries WHERE name = 'g'",
        );
        if record == new_record {
            assert_eq!(
                answer(&new_index),
                new_answer,
                "kill {i}: the new record, not the new rows"
            );
            got_new += 1;
        } else {
            assert_eq!(answer(&old_index), old_answer, "kill {i}: neither gallery");
            kept_old += 1;
        }
    }
    assert!(
        kept_old > 0 && left_staging > 0,
        "no kill landed inside the push ({kept_old} old, {got_new} new, {left_staging} left staging tables); it took {push_time:?}"
    );
    stdout_of_success(push(&new_index, &url, "g", &[]));
    assert_eq!(answer(&new_index), new_answer);
    assert_eq!(
        staging().trim(),
        "0",
        "the next push drops a killed one's tables"
    );
    // The other model's folder is refused: its scores would mean nothing here.
    let e = stderr_of_failure(
        tandem()
            .args([
                "search",
                "--postgres",
                &url,
                "--table",
                "g",
                "--text-id",
                "0",
                "--index",
            ])
            .arg(&old_index)
            .output()
            .unwrap(),
    );
    assert!(
        e.contains("another model than the one that embedded gallery `g`") && !e.contains(PASSWORD),
        "{e}"
    );
}

/// One message per way the database can be wrong, naming the URL without its password.
#[test]
fn database_errors_are_one_clear_message_each() {
    let Some(pg) = PgServer::start() else { return };
    let (_dir, index) = worded_index();
    let fail = |args: &[&str]| stderr_of_failure(tandem().args(args).output().unwrap());
    let search = |url: &str, table: &str| {
        fail(&[
            "search",
            "--postgres",
            url,
            "--table",
            table,
            "--text-id",
            "0",
        ])
    };
    // Nothing listens on the port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = search(
        &format!("postgres://app:hunter2@127.0.0.1:{closed}/db"),
        "g",
    );
    assert!(
        e.contains(&format!(
            "postgres://app:***@127.0.0.1:{closed}/db: cannot reach the server"
        )),
        "{e}"
    );
    assert!(!e.contains("hunter2"), "{e}");
    // A wrong password.
    let e = search(&pg.url_of("postgres", "wrong-password", "postgres"), "g");
    assert!(
        e.contains("password authentication failed")
            && e.contains("fix: check the user and password"),
        "{e}"
    );
    assert!(!e.contains("wrong-password"), "{e}");
    // No such database, no such gallery.
    let e = search(&pg.url_of("postgres", PASSWORD, "nodb"), "g");
    assert!(
        e.contains("does not exist") && e.contains("createdb"),
        "{e}"
    );
    let e = search(&pg.url(), "nothing");
    assert!(
        e.contains("no tandem gallery `nothing` here (galleries: none)")
            && e.contains("tandem index push"),
        "{e}"
    );
    let e = search(&pg.url(), "Bad-Name");
    assert!(e.contains("lowercase letters, digits and `_`"), "{e}");
    // A role that may not create the extension, in a database without it.
    pg.psql("postgres", "CREATE ROLE app LOGIN PASSWORD 'app-pw'");
    pg.psql("postgres", "CREATE DATABASE appdb OWNER app");
    let e = stderr_of_failure(push(&index, &pg.url_of("app", "app-pw", "appdb"), "g", &[]));
    assert!(
        e.contains("the database has no `vector` extension")
            && e.contains("CREATE EXTENSION vector;"),
        "{e}"
    );
    // A statement timeout.
    let slow = format!("{}?options=-c%20statement_timeout%3D1", pg.url());
    let e = stderr_of_failure(push(
        &index,
        &slow,
        "g",
        &["--hnsw", "m=16,ef_construction=400"],
    ));
    assert!(
        e.contains("statement timeout") && e.contains("fix: the server's statement_timeout"),
        "{e}"
    );
    assert!(!e.contains(PASSWORD), "{e}");
    // A table of another dimension than its record.
    stdout_of_success(push(&index, &pg.url(), "g", &[]));
    pg.psql(
        "postgres",
        "DROP TABLE g_images; CREATE TABLE g_images (id bigint, emb vector(3))",
    );
    let e = search(&pg.url(), "g");
    assert!(
        e.contains("g_images holds vectors of 3 values, its record says 8"),
        "{e}"
    );
}
