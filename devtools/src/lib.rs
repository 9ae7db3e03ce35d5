//! What `xtask` (`cargo xtask dev`, the builds) and the `tests` crate (the suites that start real
//! processes) share to run the project's processes:
//!
//! - [`workspace_root`]: the repository's root folder;
//! - [`free_port`]: a loopback port for a server started next;
//! - [`WRANGLER_ENV`]: the environment wrangler runs with here;
//! - [`ProcessGroup`]: a child process in its own process group, stopped with its whole group
//!   (SIGTERM, then SIGKILL), exactly once, at the latest when it is dropped;
//! - [`postgres::PostgresServer`]: a private PostgreSQL server in a temporary folder;
//! - [`chromedriver::ChromeDriver`]: a private chromedriver (WebDriver for headless Chromium).
//!
//! Only std, nix's `killpg` (the one call std lacks) and serde_json (which `xtask` already
//! uses, to read chromedriver's status), so `xtask` stays light.

pub mod chromedriver;
pub mod postgres;
pub mod python;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The repository root: the parent of this crate's folder.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// The ports [`free_port`] picks from: below Linux's ephemeral range (32768–60999 by default),
/// from which the kernel gives local ports to outgoing connections and to `bind(…:0)`. A port
/// picked there can be taken by another test's connection (or a wrangler's own internal port)
/// before the server meant to have it binds it: workerd then fails with "Address already in use".
const PICKED_PORTS: std::ops::Range<u16> = 20_000..32_768;

/// A port on 127.0.0.1 that was free a moment ago, for a server started next: a random one of
/// [`PICKED_PORTS`] that binds.
pub fn free_port() -> io::Result<u16> {
    use std::hash::{BuildHasher as _, RandomState};
    let span = u64::from(PICKED_PORTS.end - PICKED_PORTS.start);
    for attempt in 0..200u64 {
        let random = RandomState::new().hash_one((attempt, std::process::id(), Instant::now()));
        let port = PICKED_PORTS.start + u16::try_from(random % span).unwrap_or(0);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(io::Error::other(format!("no free port in {PICKED_PORTS:?} after 200 tries")))
}

/// The environment wrangler runs with here: no metrics, no error reports, and no fetch of
/// Cloudflare's `cf` object (the local stack and the tests only talk to 127.0.0.1).
pub const WRANGLER_ENV: [(&str, &str); 3] = [
    ("WRANGLER_SEND_METRICS", "false"),
    ("WRANGLER_SEND_ERROR_REPORTS", "false"),
    ("CLOUDFLARE_CF_FETCH_ENABLED", "false"),
];

/// How long [`ProcessGroup::stop`] waits after SIGTERM before it sends SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// A child process that leads its own process group (so a terminal's Ctrl-C does not reach it, and
/// whatever it starts, such as workerd under wrangler, can be stopped with it).
///
/// [`stop`](Self::stop) signals the whole group once; dropping it stops it if that has not happened.
#[derive(Debug)]
pub struct ProcessGroup {
    child: Child,
    /// Set once the group has been stopped, so that it is never signalled again (its id could by
    /// then belong to another group).
    stopped: bool,
}

impl ProcessGroup {
    /// Starts `command` as the leader of a new process group.
    pub fn spawn(command: &mut Command) -> io::Result<Self> {
        let child = command.process_group(0).spawn()?;
        Ok(Self { child, stopped: false })
    }

    /// Starts `command` as the leader of a new process group, with stdin closed and stdout and
    /// stderr to a new file `log`.
    pub fn spawn_logged(command: &mut Command, log: &Path) -> io::Result<Self> {
        let output = File::create(log)?;
        command.stdin(Stdio::null()).stdout(output.try_clone()?).stderr(output);
        Self::spawn(command)
    }

    /// The leader's process id, which is also the group's id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The leader's exit status if it has exited (`Ok(None)` while it runs).
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// True while the leader runs (an error asking counts as not running).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops the whole group: SIGTERM, up to [`STOP_GRACE`] for the leader to exit, then SIGKILL
    /// for whatever is left of the group (the leader may be gone while others of its group live
    /// on). Returns how the leader ended. Only the first call signals; later ones only report.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if std::mem::replace(&mut self.stopped, true) {
            return self.child.try_wait().ok().flatten();
        }
        let group = i32::try_from(self.child.id()).ok().map(Pid::from_raw);
        // ESRCH (the group is already empty) is fine: there is nothing left to stop.
        let signal = |signal: Signal| {
            if let Some(group) = group {
                let _ = killpg(group, signal);
            }
        };
        signal(Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline && self.is_running() {
            std::thread::sleep(Duration::from_millis(20));
        }
        signal(Signal::SIGKILL);
        self.child.wait().ok()
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// True while some process of group `id` exists (signal 0 checks without signalling). A killed
    /// grandchild counts until its new parent (init) reaps it, which may take a moment.
    fn group_alive(id: u32) -> bool {
        killpg(Pid::from_raw(i32::try_from(id).expect("a pid")), None).is_ok()
    }

    #[test]
    fn stop_ends_the_whole_group_once() {
        // A leader that starts a grandchild in its group (as wrangler starts workerd) and ignores
        // SIGTERM in neither; the grandchild outlives a leader that exits at once.
        let mut group = ProcessGroup::spawn(Command::new("sh").args(["-c", "sleep 60 & sleep 60"])).expect("sh starts");
        let id = group.id();
        assert!(group.is_running());
        assert!(group_alive(id));
        let status = group.stop().expect("an exit status");
        assert!(!status.success(), "stopped by a signal: {status}");
        let deadline = Instant::now() + Duration::from_secs(5);
        while group_alive(id) {
            assert!(Instant::now() < deadline, "the group outlived stop()");
            std::thread::sleep(Duration::from_millis(20));
        }
        // A second stop signals nothing and reports the same status.
        assert_eq!(group.stop(), Some(status));
    }

    #[test]
    fn a_grandchild_dies_with_its_group_after_the_leader_exits() {
        let mut group =
            ProcessGroup::spawn(Command::new("sh").args(["-c", "trap '' TERM; (trap '' TERM; sleep 60) & exit 0"]))
                .expect("sh starts");
        let id = group.id();
        let deadline = Instant::now() + Duration::from_secs(5);
        while group.is_running() {
            assert!(Instant::now() < deadline, "the leader did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(group_alive(id), "the grandchild lives on without its leader");
        assert_eq!(group.stop().map(|status| status.success()), Some(true));
        let deadline = Instant::now() + Duration::from_secs(5);
        while group_alive(id) {
            assert!(Instant::now() < deadline, "SIGKILL did not reach the grandchild");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn spawn_logged_writes_the_output_to_the_log() {
        let dir = std::env::temp_dir().join(format!("devtools-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp folder");
        let log = dir.join("echo.log");
        let mut group = ProcessGroup::spawn_logged(Command::new("sh").args(["-c", "echo out; echo err >&2"]), &log)
            .expect("sh starts");
        let deadline = Instant::now() + Duration::from_secs(5);
        while group.is_running() {
            assert!(Instant::now() < deadline, "sh did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(group.stop().map(|status| status.success()), Some(true));
        assert_eq!(std::fs::read_to_string(&log).expect("the log"), "out\nerr\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_root_holds_the_workspace_manifest() {
        let manifest = std::fs::read_to_string(workspace_root().join("Cargo.toml")).expect("Cargo.toml");
        assert!(manifest.contains("[workspace]"));
    }
}
