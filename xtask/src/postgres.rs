//! PostgreSQL for the test command: Debian's server package installed where it is missing, and a
//! private server ([`devtools::postgres::PostgresServer`]) for the suites that run on it.

use anyhow::{Context as _, Result, bail};
use devtools::postgres::{PostgresServer, is_root, server_bin_dir};
use std::path::PathBuf;
use std::process::Command;

/// The folder of PostgreSQL's server programs, installing Debian's `postgresql` package first if
/// there is none (as root with apt-get, otherwise through `sudo -n`).
pub(crate) fn ensure_installed() -> Result<PathBuf> {
    if let Some(bin) = server_bin_dir() {
        return Ok(bin);
    }
    println!("PostgreSQL's server is not installed: installing Debian's postgresql package");
    let apt = |args: &[&str]| {
        let mut command = if is_root() {
            Command::new("apt-get")
        } else {
            let mut sudo = Command::new("sudo");
            sudo.args(["-n", "apt-get"]);
            sudo
        };
        command.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        crate::run_command(&mut command)
    };
    apt(&["update", "-q"])?;
    apt(&["install", "-y", "-q", "--no-install-recommends", "postgresql"])?;
    let Some(bin) = server_bin_dir() else {
        bail!("PostgreSQL's server is still missing after installing the postgresql package");
    };
    Ok(bin)
}

/// Installs PostgreSQL if needed and starts a private server.
pub(crate) fn start() -> Result<PostgresServer> {
    let bin = ensure_installed()?;
    PostgresServer::start(&bin).with_context(|| format!("cannot start PostgreSQL from {}", bin.display()))
}
