//! A throwaway PostgreSQL server from the system binaries, for machines without one.
//!
//! It lives in `$KEEL_TESTDB_DIR` (set by `scripts/test` to its temp dir, which stops the
//! server at exit) or else `<tmp>/keel-testdb-pg-<uid>`, and is shared by every test process:
//! the first one to take the lock file starts it, the others find it running. It listens on
//! 127.0.0.1 only, on a free port, with trust auth and `fsync=off` (test data is disposable).

use std::{
    fs::{self, File},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::Command,
};

fn base_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("KEEL_TESTDB_DIR") {
        return PathBuf::from(dir);
    }
    let uid = fs::metadata("/proc/self").map_or(0, |m| m.uid());
    std::env::temp_dir().join(format!("keel-testdb-pg-{uid}"))
}

fn is_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `initdb` and `pg_ctl` refuse to run as root; as root they run as the `postgres` user.
fn pg_command(bin: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

/// Finds a PostgreSQL server binary on PATH or in Debian's versioned directories.
fn find_bin(name: &str) -> Result<PathBuf, String> {
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    let mut versions: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path().join("bin").join(name))
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions.pop().filter(|p| p.is_file()).ok_or_else(|| {
        format!("`{name}` not found (install PostgreSQL, e.g. apt-get install postgresql)")
    })
}

fn run(mut cmd: Command, what: &str) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn url(port: u16) -> String {
    format!("postgres://postgres@127.0.0.1:{port}/postgres")
}

/// Starts the shared throwaway server unless it already runs; returns its URL.
pub(crate) async fn ensure() -> Result<String, String> {
    let base = base_dir();
    fs::create_dir_all(&base).map_err(|e| format!("create {}: {e}", base.display()))?;
    let lock = File::create(base.join("lock")).map_err(|e| e.to_string())?;
    // Blocking lock held across the whole check-or-start, so exactly one process starts it.
    lock.lock().map_err(|e| e.to_string())?;
    let port_file = base.join("port");
    if let Some(port) = fs::read_to_string(&port_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        && super::can_connect(&url(port)).await.is_ok()
    {
        return Ok(url(port));
    }
    let initdb = find_bin("initdb")?;
    let pg_ctl = find_bin("pg_ctl")?;
    let data = base.join("data");
    let _ = fs::remove_dir_all(&data);
    if is_root() {
        run(
            {
                let mut c = Command::new("chown");
                c.arg("-R").arg("postgres:postgres").arg(&base);
                c
            },
            "chown the throwaway dir to postgres",
        )?;
    }
    let mut init = pg_command(&initdb);
    init.arg("-D").arg(&data).args([
        "-U",
        "postgres",
        "--auth=trust",
        "-E",
        "UTF8",
        "--no-sync",
        "--no-instructions",
    ]);
    run(init, "initdb")?;
    let port = free_port()?;
    let mut start = pg_command(&pg_ctl);
    start
        .arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(base.join("server.log"))
        .arg("-o")
        .arg(format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            base.display()
        ))
        .args(["-w", "-t", "60", "start"]);
    run(start, "pg_ctl start")?;
    fs::write(&port_file, port.to_string()).map_err(|e| e.to_string())?;
    super::can_connect(&url(port)).await?;
    Ok(url(port))
}
