//! A Python with PyJWT, for the tests that check tokens with an independent verifier (the issuer's
//! tokens, the edge's assertions): one virtual environment under the target folder, pinned, made
//! on first use and reused.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The pinned packages.
pub const PYJWT_PACKAGES: &[&str] = &["PyJWT==2.10.1", "cryptography==44.0.0"];

/// True when `python` can `import jwt, cryptography`.
fn ready(python: &Path) -> bool {
    Command::new(python).args(["-c", "import jwt, cryptography"]).output().is_ok_and(|output| output.status.success())
}

fn run(command: &mut Command) -> io::Result<()> {
    let shown = format!("{command:?}");
    let output = command.output()?;
    if output.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{shown} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )))
}

/// The interpreter of `dir/pyjwt-venv`, made there first if needed with `python3` (or
/// `$PORTCULLIS_PYTHON`) and pip (network access on the first run). A new environment is built
/// under a name of its own and renamed into place, so that test binaries setting it up at once
/// never see, or break, each other's half-made one.
pub fn with_pyjwt(dir: &Path) -> io::Result<PathBuf> {
    let venv = dir.join("pyjwt-venv");
    let python = venv.join("bin").join("python");
    if ready(&python) {
        return Ok(python);
    }
    let building = dir.join(format!("pyjwt-venv.{}", std::process::id()));
    let base = std::env::var("PORTCULLIS_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    run(Command::new(base).args(["-m", "venv", "--clear"]).arg(&building))?;
    let pip = ["-m", "pip", "install", "--quiet", "--disable-pip-version-check"];
    run(Command::new(building.join("bin").join("python")).args(pip).args(PYJWT_PACKAGES))?;
    if venv.exists() && !ready(&python) {
        // A stale one (its interpreter gone): moved aside under our name first, so that two
        // processes never delete each other's good one.
        let stale = dir.join(format!("pyjwt-venv.stale.{}", std::process::id()));
        if std::fs::rename(&venv, &stale).is_ok() {
            std::fs::remove_dir_all(&stale)?;
        }
    }
    // Another process may have put a good one in place meanwhile: then keep that one.
    if std::fs::rename(&building, &venv).is_err() {
        std::fs::remove_dir_all(&building)?;
    }
    if ready(&python) { Ok(python) } else { Err(io::Error::other("PyJWT is not importable after installing it")) }
}
