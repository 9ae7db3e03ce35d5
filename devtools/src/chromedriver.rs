//! A private chromedriver for the browser tests: Debian's `chromedriver` (package
//! `chromium-driver`) on a free loopback port, in its own process group ([`ProcessGroup`]), so
//! that the Chromium processes it starts stop with it when it is dropped.
//!
//! `cargo xtask test` installs the packages where [`missing`] names something. The sessions' own
//! settings (the browser binary [`CHROMIUM`], headless, the profile folder) are the client's
//! business: see `tests/src/browser.rs`.

use crate::ProcessGroup;
use std::io::{self, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Debian's Chromium (package `chromium`).
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's chromedriver (package `chromium-driver`), of the same version as [`CHROMIUM`].
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long [`ChromeDriver::start`] waits for `GET /status` to answer `"ready": true`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Which of [`CHROMIUM`] and [`CHROMEDRIVER`] are not installed (empty when both are).
pub fn missing() -> Vec<&'static str> {
    [CHROMIUM, CHROMEDRIVER].into_iter().filter(|path| !Path::new(path).exists()).collect()
}

/// A running chromedriver, listening on 127.0.0.1 only. Dropping it stops its whole process
/// group (chromedriver and every browser it started): SIGTERM, then SIGKILL.
#[derive(Debug)]
pub struct ChromeDriver {
    group: ProcessGroup,
    port: u16,
    log: PathBuf,
}

impl ChromeDriver {
    /// Starts [`CHROMEDRIVER`] on a free loopback port as the leader of a new process group, its
    /// output in a new file `log`, and waits (at most [`READY_TIMEOUT`]) until `GET /status`
    /// answers that it is ready for new sessions. The error says why it is not, with its log.
    pub fn start(log: &Path) -> io::Result<Self> {
        if !missing().is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{} missing: install Debian's chromium and chromium-driver (`cargo xtask test` does)",
                    missing().join(" and ")
                ),
            ));
        }
        let port = crate::free_port()?;
        let mut command = Command::new(CHROMEDRIVER);
        command.arg(format!("--port={port}"));
        let group = ProcessGroup::spawn_logged(&mut command, log)?;
        let mut driver = Self { group, port, log: log.to_path_buf() };
        driver.wait_until_ready()?;
        Ok(driver)
    }

    /// The WebDriver endpoint, `http://127.0.0.1:PORT`, for a WebDriver client.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its log file (chromedriver's standard output and error).
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Everything it has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops its whole process group (see [`ProcessGroup::stop`]); only the first call signals.
    pub fn stop(&mut self) {
        self.group.stop();
    }

    /// Polls `GET /status` every 20 ms until it answers ready, chromedriver exits, or
    /// [`READY_TIMEOUT`] passes.
    fn wait_until_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.group.try_wait()? {
                return Err(io::Error::other(format!(
                    "chromedriver exited ({status}) before it was ready; its log ({}):\n{}",
                    self.log.display(),
                    self.log_text()
                )));
            }
            let last = match status(self.port) {
                Ok(answer) if is_ready(&answer) => return Ok(()),
                Ok(answer) => format!("not ready: {answer}"),
                Err(error) => error.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "chromedriver on port {} was not ready within {READY_TIMEOUT:?} (last: {last}); its log ({}):\n{}",
                        self.port,
                        self.log.display(),
                        self.log_text()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `GET /status` on 127.0.0.1:`port`: the whole answer (status line, headers and body), at most
/// 2 s for each step. Read up to its `Content-Length`: chromedriver keeps the connection open
/// although it answers `Connection: close`.
fn status(port: u16) -> io::Result<String> {
    let limit = Duration::from_secs(2);
    let mut stream = TcpStream::connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)), limit)?;
    stream.set_read_timeout(Some(limit))?;
    stream.set_write_timeout(Some(limit))?;
    write!(stream, "GET /status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")?;
    let mut answer = Vec::new();
    let mut chunk = [0; 4096];
    loop {
        if let Some(end) = answer.windows(4).position(|window| window == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&answer[..end]);
            let length = head.lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.trim().eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
            });
            if length.is_some_and(|length| answer.len() >= end + 4 + length) {
                break;
            }
        }
        let read = stream.read(&mut chunk)?;
        if read == 0 {
            break;
        }
        answer.extend_from_slice(&chunk[..read]);
    }
    String::from_utf8(answer).map_err(|_| io::Error::other("the status is not UTF-8"))
}

/// True for a `200` answer whose JSON body has `"ready": true` in its `value` (the W3C
/// WebDriver status: `{"value": {"ready": true, "message": ...}}`).
fn is_ready(answer: &str) -> bool {
    let Some((head, body)) = answer.split_once("\r\n\r\n") else {
        return false;
    };
    let ok = head.lines().next().is_some_and(|line| line.split_whitespace().nth(1) == Some("200"));
    ok && serde_json::from_str::<serde_json::Value>(body)
        .is_ok_and(|status| status["value"]["ready"] == serde_json::Value::Bool(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_with_200_and_ready_true() {
        let answer =
            |status: &str, body: &str| format!("HTTP/1.1 {status}\r\nContent-Type: application/json\r\n\r\n{body}");
        assert!(is_ready(&answer(
            "200 OK",
            r#"{"value":{"message":"ChromeDriver ready for new sessions.","ready":true}}"#
        )));
        assert!(!is_ready(&answer("200 OK", r#"{"value":{"ready":false}}"#)));
        assert!(!is_ready(&answer("200 OK", r#"{"value":{"message":"\"ready\":true"}}"#)));
        assert!(!is_ready(&answer("500 Internal Server Error", r#"{"value":{"ready":true}}"#)));
        assert!(!is_ready("HTTP/1.1 200 OK\r\n"));
    }

    /// Starts chromedriver, finds it ready, and finds its port closed after [`ChromeDriver::stop`].
    /// Skipped (with a line saying so) where it is not installed; `cargo xtask test` installs it.
    #[test]
    fn starts_ready_and_stops() {
        if !missing().is_empty() {
            eprintln!("{} missing: skipped", missing().join(" and "));
            return;
        }
        let dir = std::env::temp_dir().join(format!("devtools-chromedriver-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp folder");
        let mut driver = ChromeDriver::start(&dir.join("chromedriver.log")).expect("chromedriver starts");
        assert!(driver.url().starts_with("http://127.0.0.1:"));
        assert!(is_ready(&status(driver.port()).expect("GET /status")));
        driver.stop();
        assert!(status(driver.port()).is_err(), "chromedriver still answers after stop()");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
