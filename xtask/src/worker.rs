//! The edge Worker's build: the tools it needs, installed by the project itself on a fresh
//! machine, and the worker-build run that puts the Worker in `edge/build/`.
//!
//! - the `wasm32-unknown-unknown` target (rustup);
//! - wasm-bindgen-cli at exactly the version of `wasm-bindgen` in `Cargo.lock`, and worker-build
//!   [`WORKER_BUILD_VERSION`], built with `cargo install` into [`tools_dir`];
//! - wrangler, esbuild and binaryen's wasm-opt from npm (`package-lock.json`), with `npm ci`.
//!
//! worker-build would otherwise download wasm-bindgen, esbuild and wasm-opt from GitHub and npm
//! at build time; `WASM_BINDGEN_BIN`, `ESBUILD_BIN` and `WASM_OPT_BIN` point it at these instead.

use anyhow::{Context as _, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The worker-build release that matches the `worker` crate (0.8.x).
pub(crate) const WORKER_BUILD_VERSION: &str = "0.8.7";

/// Where the Worker is built, relative to `edge/`.
pub(crate) const OUT_DIR: &str = "build";

/// Where the benchmark Worker (feature `bench`) is built, relative to `edge/`.
pub(crate) const BENCH_OUT_DIR: &str = "build-bench";

/// The tools the Worker build and `wrangler dev` use.
#[derive(Debug, Clone)]
pub(crate) struct Tools {
    /// wasm-bindgen, at the version of the `wasm-bindgen` crate in `Cargo.lock`.
    pub(crate) wasm_bindgen: PathBuf,
    /// worker-build.
    pub(crate) worker_build: PathBuf,
    /// esbuild, from npm.
    pub(crate) esbuild: PathBuf,
    /// binaryen's wasm-opt, from npm.
    pub(crate) wasm_opt: PathBuf,
    /// wrangler, from npm.
    pub(crate) wrangler: PathBuf,
}

/// `${PORTCULLIS_TOOLS:-$HOME/.cache/portcullis/tools}`: where built tools are kept between runs.
pub(crate) fn tools_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PORTCULLIS_TOOLS").filter(|dir| !dir.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    home.join(".cache/portcullis/tools")
}

/// Installs what is missing or at another version, and says where everything is.
pub(crate) fn ensure_tools(root: &Path) -> Result<Tools> {
    ensure_wasm_target()?;
    let dir = tools_dir();
    let bin = dir.join("bin");

    let bindgen_version = locked_version(root, "wasm-bindgen")?;
    let wasm_bindgen = bin.join("wasm-bindgen");
    if !reports_version(&wasm_bindgen, &bindgen_version) {
        cargo_install(&dir, "wasm-bindgen-cli", &bindgen_version)?;
    }
    let worker_build = bin.join("worker-build");
    if !reports_version(&worker_build, WORKER_BUILD_VERSION) {
        cargo_install(&dir, "worker-build", WORKER_BUILD_VERSION)?;
    }
    for (tool, version) in [(&wasm_bindgen, bindgen_version.as_str()), (&worker_build, WORKER_BUILD_VERSION)] {
        if !reports_version(tool, version) {
            bail!("{} does not report version {version} after installing it", tool.display());
        }
    }

    ensure_npm_packages(root)?;
    let npm_bin = root.join("node_modules/.bin");
    let tools = Tools {
        wasm_bindgen,
        worker_build,
        esbuild: npm_bin.join("esbuild"),
        wasm_opt: npm_bin.join("wasm-opt"),
        wrangler: npm_bin.join("wrangler"),
    };
    for tool in [&tools.esbuild, &tools.wasm_opt, &tools.wrangler] {
        if !tool.exists() {
            bail!("{} is missing after `npm ci`; is package.json intact?", tool.display());
        }
    }
    Ok(tools)
}

/// Builds the Worker into `edge/build/` (`worker-build --release`).
pub(crate) fn build_worker(root: &Path, tools: &Tools) -> Result<()> {
    run_worker_build(root, tools, OUT_DIR, &[])
}

/// Builds the benchmark Worker (feature `bench`, with the `/_portcullis/bench` route) into
/// `edge/build-bench/`. Never deployed.
pub(crate) fn build_bench_worker(root: &Path, tools: &Tools) -> Result<()> {
    run_worker_build(root, tools, BENCH_OUT_DIR, &["--features", "bench"])
}

/// The most the deployed Worker may weigh gzip-compressed, in KiB (1024 bytes), the unit of
/// wrangler's `Total Upload: X KiB / gzip: Y KiB`; both `cargo xtask test` and `cargo xtask
/// bench-edge` hold it against the production upload ([`worker_upload_size`]). Cloudflare's own
/// limits are far above (3 MiB gzip on the free plan, 10 MiB paid); this one catches a dependency or
/// a feature that quietly makes every cold start slower.
pub(crate) const WORKER_GZIP_BUDGET_KIB: f64 = 200.0;
// Within what Cloudflare accepts at all (3 MiB gzip on the free plan).
const _: () = assert!(WORKER_GZIP_BUDGET_KIB > 0.0 && WORKER_GZIP_BUDGET_KIB < 3.0 * 1024.0);

/// Where [`WORKER_GZIP_BUDGET_KIB`] is set, for the message that a Worker is over it.
const BUDGET_SET_IN: &str = "WORKER_GZIP_BUDGET_KIB in xtask/src/worker.rs";

/// The wrangler.toml environment that `npx wrangler deploy --env production` uploads.
pub(crate) const PRODUCTION_ENV: &str = "production";

/// `cargo xtask bench-edge`: builds both Workers, prints the deployed Worker's size as wrangler
/// counts it (raw and gzip, against [`WORKER_GZIP_BUDGET_KIB`]), then runs the benchmark inside
/// workerd (`bench_inside_workerd` in tests/tests/edge.rs): the cost of a verified request with
/// warm keys next to a plain `crypto.subtle.verify` loop. `PORTCULLIS_BENCH_N` sets the iterations
/// per round (default 500).
pub(crate) fn bench(root: &Path) -> Result<()> {
    let tools = ensure_tools(root)?;
    build_worker(root, &tools)?;
    build_bench_worker(root, &tools)?;
    let size = worker_upload_size(root, &tools)?;
    if let Err(over) = size.check_budget(WORKER_GZIP_BUDGET_KIB) {
        // Measured here, enforced by `cargo xtask test`.
        println!("warning: {over:#}");
    }
    crate::run_command(
        Command::new("cargo")
            .args(["test", "-p", "tests", "--test", "edge", "--", "--ignored", "--nocapture", "bench_inside_workerd"])
            .current_dir(root),
    )
}

/// `cargo xtask worker-size` and the test step: the production upload's size, failing when its
/// gzip size is over [`WORKER_GZIP_BUDGET_KIB`].
pub(crate) fn check_worker_size(root: &Path, tools: &Tools) -> Result<()> {
    worker_upload_size(root, tools)?.check_budget(WORKER_GZIP_BUDGET_KIB)
}

/// The Worker's size as Cloudflare counts it, from wrangler's `Total Upload: X KiB / gzip: Y KiB`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct UploadSize {
    /// Every module of the upload (the JavaScript entry point and `index_bg.wasm`), in KiB.
    pub(crate) raw_kib: f64,
    /// The same, gzip-compressed, in KiB: what the size limits count.
    pub(crate) gzip_kib: f64,
}

impl UploadSize {
    /// Finds and parses wrangler's `Total Upload: X KiB / gzip: Y KiB` line in its output (colours
    /// and all), failing with what wrangler printed when there is no such line or it does not parse.
    pub(crate) fn parse(output: &str) -> Result<Self> {
        let plain = strip_ansi(output);
        let Some(line) = plain.lines().find(|line| line.contains("Total Upload:")) else {
            bail!("wrangler printed no `Total Upload: X KiB / gzip: Y KiB` line:\n{output}");
        };
        let parsed = line.split_once("Total Upload:").and_then(|(_, sizes)| {
            let (raw, gzip) = sizes.split_once("/ gzip:")?;
            let kib = |text: &str| {
                text.trim()
                    .strip_suffix("KiB")?
                    .trim_end()
                    .parse::<f64>()
                    .ok()
                    .filter(|kib| kib.is_finite() && *kib >= 0.0)
            };
            Some(Self { raw_kib: kib(raw)?, gzip_kib: kib(gzip)? })
        });
        parsed.with_context(|| {
            format!("wrangler's size line does not parse as `Total Upload: X KiB / gzip: Y KiB`: {:?}", line.trim())
        })
    }

    /// Fails when the gzip size is over `budget_kib`, naming the budget and where it is set.
    pub(crate) fn check_budget(self, budget_kib: f64) -> Result<()> {
        if self.gzip_kib > budget_kib {
            bail!(
                "the Worker is {:.2} KiB gzip, over its budget of {budget_kib} KiB gzip ({BUDGET_SET_IN}): make it smaller, or raise the budget there with a reason",
                self.gzip_kib
            );
        }
        println!("within the budget: {:.2} of {budget_kib} KiB gzip ({BUDGET_SET_IN})", self.gzip_kib);
        Ok(())
    }
}

/// `text` without ANSI colour sequences (`ESC [ ... letter`).
fn strip_ansi(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                chars.by_ref().find(char::is_ascii_alphabetic);
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

/// The production upload's size, as `npx wrangler deploy --env production` would upload it:
/// wrangler's own figure from a dry run (`wrangler deploy --dry-run --env production`, which runs
/// the `[build]` of wrangler.toml, bundles, and stops before it would talk to Cloudflare: no
/// account, no network), printed with the size of `index_bg.wasm`.
pub(crate) fn worker_upload_size(root: &Path, tools: &Tools) -> Result<UploadSize> {
    let out_dir = std::env::temp_dir().join(format!("portcullis-dry-run-{}", std::process::id()));
    let output = Command::new(&tools.wrangler)
        .args(["deploy", "--dry-run", "--env", PRODUCTION_ENV, "--outdir"])
        .arg(&out_dir)
        .envs(devtools::WRANGLER_ENV)
        .current_dir(root)
        .output()
        .context("cannot run wrangler deploy --dry-run");
    let _ = std::fs::remove_dir_all(&out_dir);
    let output = output?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!("wrangler deploy --dry-run --env {PRODUCTION_ENV} failed ({}):\n{stdout}\n{stderr}", output.status);
    }
    let size = UploadSize::parse(&stdout).with_context(|| format!("wrangler's stderr:\n{stderr}"))?;
    let wasm = std::fs::metadata(root.join("edge").join(OUT_DIR).join("index_bg.wasm")).map_or(0, |meta| meta.len());
    println!(
        "Worker upload (--env {PRODUCTION_ENV}): Total Upload: {:.2} KiB / gzip: {:.2} KiB (of which index_bg.wasm {wasm} bytes raw)",
        size.raw_kib, size.gzip_kib
    );
    Ok(size)
}

fn run_worker_build(root: &Path, tools: &Tools, out_dir: &str, cargo_args: &[&str]) -> Result<()> {
    if is_up_to_date(root, out_dir) {
        println!("edge/{out_dir} is up to date");
        return Ok(());
    }
    let mut command = Command::new(&tools.worker_build);
    command
        .args(["--release", "--out-dir", out_dir])
        .args(cargo_args)
        .current_dir(root.join("edge"))
        .env("WASM_BINDGEN_BIN", &tools.wasm_bindgen)
        .env("ESBUILD_BIN", &tools.esbuild)
        .env("WASM_OPT_BIN", &tools.wasm_opt);
    crate::run_command(&mut command)?;
    let entry = root.join("edge").join(out_dir).join("index.js");
    if !entry.is_file() {
        bail!("worker-build finished but {} is missing", entry.display());
    }
    Ok(())
}

/// The files a Worker build reads (besides the toolchain and the registry's crates).
const BUILD_INPUTS: &[&str] =
    &["Cargo.toml", "Cargo.lock", "edge/Cargo.toml", "edge/src", "jwks/Cargo.toml", "jwks/src", "package-lock.json"];

/// True when `edge/<out_dir>` was built after the last change to any of [`BUILD_INPUTS`], so
/// that `wrangler dev` (which runs the build on start and again when its watcher is ready) does
/// not wait on worker-build for nothing.
fn is_up_to_date(root: &Path, out_dir: &str) -> bool {
    fn newest(path: &Path) -> Option<std::time::SystemTime> {
        let meta = std::fs::metadata(path).ok()?;
        if !meta.is_dir() {
            return meta.modified().ok();
        }
        let mut latest = meta.modified().ok();
        for entry in std::fs::read_dir(path).ok()?.flatten() {
            latest = latest.max(newest(&entry.path()));
        }
        latest
    }
    let out = root.join("edge").join(out_dir);
    let built = ["index.js", "index_bg.wasm"].iter().map(|file| newest(&out.join(file))).min().flatten();
    let changed = BUILD_INPUTS.iter().map(|input| newest(&root.join(input))).max().flatten();
    matches!((built, changed), (Some(built), Some(changed)) if built > changed)
}

/// `rustup target add wasm32-unknown-unknown` unless it is installed.
fn ensure_wasm_target() -> Result<()> {
    let output = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("cannot run rustup (needed for the wasm32-unknown-unknown target)")?;
    let installed = String::from_utf8_lossy(&output.stdout);
    if output.status.success() && installed.lines().any(|line| line.trim() == "wasm32-unknown-unknown") {
        return Ok(());
    }
    crate::run_command(Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]))
}

/// The version of `package` in `Cargo.lock` (the first entry, if several).
fn locked_version(root: &Path, package: &str) -> Result<String> {
    let path = root.join("Cargo.lock");
    let lock = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let wanted = format!("name = \"{package}\"");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == wanted {
            let version = lines
                .next()
                .and_then(|line| line.trim().strip_prefix("version = \""))
                .and_then(|rest| rest.strip_suffix('"'));
            if let Some(version) = version {
                return Ok(version.to_owned());
            }
        }
    }
    bail!("{package} is not in {}", path.display())
}

/// True when `tool --version` runs and its output names `version`.
fn reports_version(tool: &Path, version: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok_and(|output| {
        output.status.success()
            && String::from_utf8_lossy(&output.stdout).split_whitespace().any(|word| word == version)
    })
}

/// `cargo install <krate> --version <version> --root <dir>` (exactly that version).
fn cargo_install(dir: &Path, krate: &str, version: &str) -> Result<()> {
    println!("installing {krate} {version} into {}", dir.display());
    crate::run_command(
        Command::new("cargo")
            .args(["install", krate, "--version", version, "--force", "--root"])
            .arg(dir)
            // Not the workspace's target dir: an install must not wait on (or evict) its builds.
            .env_remove("CARGO_TARGET_DIR"),
    )
}

/// `npm ci` when `node_modules` is missing or older than `package-lock.json`.
fn ensure_npm_packages(root: &Path) -> Result<()> {
    let lock = root.join("package-lock.json");
    let installed = root.join("node_modules/.package-lock.json");
    let modified = |path: &Path| std::fs::metadata(path).and_then(|meta| meta.modified()).ok();
    let up_to_date = match (modified(&installed), modified(&lock)) {
        (Some(installed), Some(lock)) => installed >= lock,
        _ => false,
    };
    if up_to_date {
        return Ok(());
    }
    crate::run_command(Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(root))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What wrangler 4.86 prints for `deploy --dry-run --env production` (the bindings cut short).
    const DRY_RUN: &str = "\
Total Upload: 390.45 KiB / gzip: 152.46 KiB
Your Worker has access to the following bindings:
Binding                                                            Resource
env.ISSUER (\"https://auth.example.com\")                            Environment Variable

--dry-run: exiting now.
";

    #[test]
    fn parses_the_size_line_of_a_dry_run() {
        let size = UploadSize::parse(DRY_RUN).expect("parses");
        assert_eq!(size, UploadSize { raw_kib: 390.45, gzip_kib: 152.46 });
    }

    #[test]
    fn parses_a_coloured_size_line() {
        // Wrangler colours the figures (green, yellow over 70% of the 3 MiB limit, red over 90%)
        // when its output is a terminal or FORCE_COLOR is set.
        let line = "Total Upload: \u{1b}[31m2900.10 KiB / gzip: 2800.00 KiB\u{1b}[39m\n";
        assert_eq!(UploadSize::parse(line).expect("parses"), UploadSize { raw_kib: 2900.10, gzip_kib: 2800.0 });
        let line = "\u{1b}[33mTotal Upload: 0.50 KiB / gzip: 0.31 KiB\u{1b}[39m";
        assert_eq!(UploadSize::parse(line).expect("parses"), UploadSize { raw_kib: 0.5, gzip_kib: 0.31 });
    }

    #[test]
    fn a_size_line_that_does_not_parse_is_a_clear_error() {
        for line in [
            "Total Upload: 390.45 KiB",
            "Total Upload: 0.38 MiB / gzip: 0.15 MiB",
            "Total Upload: 390.45 KiB / gzip: ? KiB",
            "Total Upload: 390.45 KiB / gzip: NaN KiB",
        ] {
            let error = format!("{:#}", UploadSize::parse(line).expect_err(line));
            assert!(error.contains("does not parse as `Total Upload: X KiB / gzip: Y KiB`"), "{error}");
            assert!(error.contains(line), "the error quotes the line: {error}");
        }
        let error = format!("{:#}", UploadSize::parse("✘ [ERROR] Missing entry-point\n").expect_err("no line"));
        assert!(error.contains("printed no `Total Upload") && error.contains("Missing entry-point"), "{error}");
    }

    #[test]
    fn the_budget_fails_only_above_it_and_says_where_it_is_set() {
        let size = UploadSize { raw_kib: 390.45, gzip_kib: 152.46 };
        size.check_budget(200.0).expect("below the budget");
        size.check_budget(152.46).expect("at the budget is within it");
        let error = format!("{:#}", size.check_budget(100.0).expect_err("over"));
        assert!(error.contains("152.46 KiB gzip, over its budget of 100 KiB gzip"), "{error}");
        assert!(error.contains("WORKER_GZIP_BUDGET_KIB in xtask/src/worker.rs"), "{error}");
    }
}
