//! Chromium for the test command: the browser tests (`tests/tests/browser.rs`) drive Debian's
//! headless Chromium through its chromedriver ([`devtools::chromedriver`]), installed here where
//! either is missing.

use anyhow::{Result, bail};
use devtools::chromedriver::{CHROMEDRIVER, CHROMIUM, missing};

/// Installs Debian's `chromium` and `chromium-driver` packages unless both `/usr/bin/chromium` and
/// `/usr/bin/chromedriver` are there (as root with apt-get, otherwise through `sudo -n`), without
/// what they only recommend (the setuid sandbox, fonts, desktop services: headless and, as root,
/// `--no-sandbox` need none of them).
pub(crate) fn ensure_installed() -> Result<()> {
    let lacking = missing();
    if lacking.is_empty() {
        return Ok(());
    }
    println!("{} missing: installing Debian's chromium and chromium-driver packages", lacking.join(" and "));
    crate::apt_install(&["chromium", "chromium-driver"])?;
    let lacking = missing();
    if !lacking.is_empty() {
        bail!(
            "{} still missing after installing chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER})",
            lacking.join(" and ")
        );
    }
    Ok(())
}
