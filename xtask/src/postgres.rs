//! PostgreSQL for the test command: Debian's server package installed where it is missing, and a
//! private server ([`devtools::postgres::PostgresServer`]) for the suites that run on it.

use anyhow::{Context as _, Result, bail};
use devtools::postgres::{PostgresServer, server_bin_dir};
use std::path::PathBuf;

/// The folder of PostgreSQL's server programs, installing Debian's `postgresql` package first if
/// there is none (as root with apt-get, otherwise through `sudo -n`).
pub(crate) fn ensure_installed() -> Result<PathBuf> {
    if let Some(bin) = server_bin_dir() {
        return Ok(bin);
    }
    println!("PostgreSQL's server is not installed: installing Debian's postgresql package");
    crate::apt_install(&["postgresql"])?;
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
