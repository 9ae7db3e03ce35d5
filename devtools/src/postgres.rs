//! A private PostgreSQL server for the tests and the benchmarks: a new cluster in a temporary
//! folder, listening on a free loopback port only, stopped and deleted when dropped.
//!
//! PostgreSQL refuses to run as root, so as root every server command runs as the `postgres`
//! user (Debian's package creates it) through `runuser`, and the folder belongs to that user.
//! The server keeps PostgreSQL's durable defaults (`fsync`, `synchronous_commit`): the benchmarks
//! measure what production would do.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where Debian installs each major version's server programs (`<version>/bin`).
const DEBIAN_SERVER_DIR: &str = "/usr/lib/postgresql";

/// The folder with `initdb` and `pg_ctl`: `$PORTCULLIS_PG_BIN` if set, else the newest version
/// under `/usr/lib/postgresql`. `None` when PostgreSQL's server is not installed.
pub fn server_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PORTCULLIS_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir(DEBIAN_SERVER_DIR)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// True when this process runs as root (the owner of `/proc/self` is the effective user).
pub fn is_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|metadata| metadata.uid() == 0)
}

/// A running private PostgreSQL server. Dropping it stops it (fast shutdown) and deletes its folder.
#[derive(Debug)]
pub struct PostgresServer {
    bin: PathBuf,
    folder: PathBuf,
    as_postgres: bool,
    port: u16,
    stopped: bool,
}

impl PostgresServer {
    /// Creates a cluster in a new folder under the system's temporary folder (trust
    /// authentication for the `postgres` user, on 127.0.0.1 only, its socket in that folder) and
    /// starts it, waiting until it accepts connections.
    pub fn start(bin: &Path) -> io::Result<Self> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_nanos());
        let folder = std::env::temp_dir().join(format!("portcullis-pg-{}-{nanos:x}", std::process::id()));
        fs::create_dir(&folder)?;
        fs::set_permissions(&folder, fs::Permissions::from_mode(0o700))?;
        let as_postgres = is_root();
        if as_postgres {
            let (uid, gid) = postgres_user()?;
            std::os::unix::fs::chown(&folder, Some(uid), Some(gid))?;
        }
        let port = crate::free_port()?;
        let mut server = Self { bin: bin.to_path_buf(), folder, as_postgres, port, stopped: true };
        let data = server.data().to_string_lossy().into_owned();
        // `--no-sync`: initdb's own flushes of the new, empty cluster (the server still syncs).
        server.run("initdb", &["-D", &data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])?;
        let options = format!("-p {port} -k {} -c listen_addresses=127.0.0.1", server.folder.to_string_lossy());
        let log = server.folder.join("server.log").to_string_lossy().into_owned();
        server.stopped = false;
        server.run("pg_ctl", &["-D", &data, "-l", &log, "-o", &options, "-w", "-t", "60", "start"])?;
        Ok(server)
    }

    /// The server's URL without a database (`postgres://postgres@127.0.0.1:PORT`): append
    /// `/NAME` for a database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    /// The server's log file.
    pub fn log(&self) -> PathBuf {
        self.folder.join("server.log")
    }

    fn data(&self) -> PathBuf {
        self.folder.join("data")
    }

    /// Runs one of the server's programs, as `postgres` when this process is root.
    fn run(&self, program: &str, args: &[&str]) -> io::Result<Output> {
        let program = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&program);
            command
        } else {
            Command::new(&program)
        };
        let output = command.args(args).current_dir(&self.folder).output()?;
        if !output.status.success() {
            return Err(io::Error::other(format!(
                "{} {} failed ({}): {}{}",
                program.display(),
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
            )));
        }
        Ok(output)
    }

    /// Stops the server (fast shutdown: connections are closed) and deletes its folder. Only the
    /// first call does anything.
    pub fn stop(&mut self) {
        if !std::mem::replace(&mut self.stopped, true) {
            let data = self.data().to_string_lossy().into_owned();
            if let Err(error) = self.run("pg_ctl", &["-D", &data, "-m", "fast", "-w", "-t", "30", "stop"]) {
                eprintln!("PostgreSQL did not stop cleanly: {error}");
            }
        }
        let _ = fs::remove_dir_all(&self.folder);
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The variable that gives the tests a PostgreSQL server (`postgres://user@host:port`, no
/// database); `cargo xtask test` sets it to its private server.
pub const TEST_SERVER_ENV: &str = "PORTCULLIS_TEST_POSTGRES";

/// A new, empty database for one test on the server of [`TEST_SERVER_ENV`], dropped (with the
/// connections still open to it) when this is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    server: String,
    name: String,
}

impl TestDatabase {
    /// Creates `<prefix>_<pid>_<time>` with `psql`; `None` when [`TEST_SERVER_ENV`] is not set.
    /// Panics when the server cannot create it (the test cannot run).
    pub fn create(prefix: &str) -> Option<Self> {
        let server = std::env::var(TEST_SERVER_ENV).ok()?;
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_nanos());
        let database = Self { server, name: format!("{prefix}_{}_{nanos:x}", std::process::id()) };
        if let Err(error) = database.psql(&format!("CREATE DATABASE {}", database.name)) {
            panic!("{TEST_SERVER_ENV}: {error}");
        }
        Some(database)
    }

    /// The database's URL.
    pub fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }

    /// Runs one SQL command on the server's `postgres` database.
    fn psql(&self, sql: &str) -> io::Result<()> {
        let psql = server_bin_dir().map_or_else(|| PathBuf::from("psql"), |bin| bin.join("psql"));
        let output = Command::new(&psql)
            .args(["--no-psqlrc", "--quiet", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(format!("{}/postgres", self.server))
            .args(["-c", sql])
            .output()
            .map_err(|error| io::Error::other(format!("{}: {error}", psql.display())))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!("{sql}: {}", String::from_utf8_lossy(&output.stderr).trim())))
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Err(error) = self.psql(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)) {
            eprintln!("the test database was not dropped: {error}");
        }
    }
}

/// The `postgres` user's uid and gid, from `/etc/passwd`.
fn postgres_user() -> io::Result<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd")?;
    passwd
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            (fields.next() == Some("postgres")).then_some(())?;
            let mut ids = fields.skip(1).take(2).map(str::parse::<u32>);
            Some((ids.next()?.ok()?, ids.next()?.ok()?))
        })
        .ok_or_else(|| io::Error::other("no postgres user in /etc/passwd (is PostgreSQL's server package installed?)"))
}

/// A loopback port that nothing listens on now.
#[cfg(test)]
mod tests {
    use super::*;

    /// Starts a server, runs a query with `psql` over TCP, stops it, and finds the folder gone.
    /// Skipped (with a line saying so) where PostgreSQL's server is not installed; `cargo xtask
    /// test` installs it first.
    #[test]
    fn a_private_server_starts_answers_and_is_removed() {
        let Some(bin) = server_bin_dir() else {
            eprintln!("PostgreSQL's server is not installed: skipped");
            return;
        };
        let mut server = PostgresServer::start(&bin).expect("starts");
        let folder = server.folder.clone();
        let output = Command::new(bin.join("psql"))
            .args([&format!("{}/postgres", server.url()), "-tAc", "SHOW fsync"])
            .output()
            .expect("psql runs");
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "on", "{output:?}");
        server.stop();
        assert!(!folder.exists());
    }
}
