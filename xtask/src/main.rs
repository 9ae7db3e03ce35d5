//! Project tasks, run as `cargo xtask <task>` from anywhere in the repository.
//!
//! - `dev`: the whole stack locally (issuer, demo origin, the Worker under `wrangler dev`).
//! - `test`: every check CI runs, installing what a fresh machine lacks first.
//! - `build-worker`: builds the edge Worker into `edge/build/` (what wrangler's build runs).
//! - `worker-size`: builds the Worker and checks the production upload's size (a dry run) against
//!   its budget, `worker::WORKER_GZIP_BUDGET_KIB`.
//! - `bench-edge`: the Worker's size and its cost per verified request inside workerd.
//! - `fuzz [SECONDS]`: runs each fuzz target of `jwks` for SECONDS (default 60).

mod chromium;
mod dev;
mod postgres;
mod worker;

use anyhow::{Context as _, Result, bail};
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

const USAGE: &str = "usage: cargo xtask <dev | test | build-worker | worker-size | bench-edge | fuzz [SECONDS]>";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = devtools::workspace_root();
    let result = match args.first().map(String::as_str) {
        Some("dev") => dev::dev(&root),
        Some("test") => test(&root),
        Some("build-worker") => worker::ensure_tools(&root).and_then(|tools| worker::build_worker(&root, &tools)),
        Some("worker-size") => worker::ensure_tools(&root).and_then(|tools| {
            worker::build_worker(&root, &tools)?;
            worker::check_worker_size(&root, &tools)
        }),
        Some("bench-edge") => worker::bench(&root),
        Some("fuzz") => fuzz(&root, args.get(1).map(String::as_str)),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `program args...` in `dir`, failing when it fails.
pub(crate) fn run(dir: &Path, program: &str, args: &[&str]) -> Result<()> {
    run_command(Command::new(program).args(args).current_dir(dir))
}

/// Runs a prepared command, failing when it fails.
pub(crate) fn run_command(command: &mut Command) -> Result<()> {
    let shown = format!("{command:?}");
    let status = command.status().with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

/// Installs Debian `packages` and what they depend on (not what they only recommend): `apt-get
/// update`, then `apt-get install`, as root or through `sudo -n`, never asking.
pub(crate) fn apt_install(packages: &[&str]) -> Result<()> {
    let apt = |args: &[&str]| {
        let mut command = if devtools::postgres::is_root() {
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
    apt(&[&["install", "-y", "-q", "--no-install-recommends"][..], packages].concat())
}

/// Builds the workspace's binaries (the issuer, the demo origin) for `cargo xtask dev`.
///
/// `cargo xtask test` builds them with the tests instead ([`TEST_BUILD`]): a build that selects
/// test targets resolves features with the dev-dependencies (proptest turns on more of
/// regex-syntax's, under tracing-subscriber and so the issuer), so its binaries are other artifacts.
/// Both stay in `target/` side by side; neither rebuilds the other.
pub(crate) fn build_binaries(root: &Path) -> Result<()> {
    run(root, "cargo", &["build", "--workspace", "--all-features", "--bins"])
}

/// Everything `cargo test --workspace --all-features` compiles, in one cargo run: the libraries,
/// the binaries the end-to-end tests start (tests/tests/e2e.rs finds them beside itself) and the
/// test targets, with the features the test run resolves, so that the run compiles nothing but
/// the doctests.
const TEST_BUILD: &[&str] = &["build", "--workspace", "--all-features", "--lib", "--bins", "--tests"];

/// `libfuzzer-sys` compiles libFuzzer's C++ in its build script unless `CUSTOM_LIBFUZZER_PATH`
/// names a library to link instead. A `cargo check` links nothing, so the fuzz targets' check
/// names one that is never read: the C++ (about a third of that step) is only for `cargo xtask fuzz`.
const FUZZ_CHECK_LIBFUZZER: (&str, &str) = ("CUSTOM_LIBFUZZER_PATH", "/nonexistent/libfuzzer-not-linked-by-check.a");

/// Times named steps and prints a summary at the end.
struct Steps {
    done: Vec<(&'static str, Duration)>,
}

impl Steps {
    fn run(&mut self, name: &'static str, step: impl FnOnce() -> Result<()>) -> Result<()> {
        println!("\n==> {name}");
        let start = Instant::now();
        let result = step().with_context(|| format!("step '{name}'"));
        self.done.push((name, start.elapsed()));
        result
    }

    fn summary(&self) {
        println!("\n==> time by step");
        for (name, took) in &self.done {
            println!("{:>8.1} s  {name}", took.as_secs_f64());
        }
        let total: Duration = self.done.iter().map(|(_, took)| *took).sum();
        println!("{:>8.1} s  total", total.as_secs_f64());
    }
}

fn test(root: &Path) -> Result<()> {
    let mut steps = Steps { done: Vec::new() };
    let result = test_steps(root, &mut steps);
    steps.summary();
    result
}

fn test_steps(root: &Path, steps: &mut Steps) -> Result<()> {
    let cargo = |args: &[&str]| run(root, "cargo", args);
    steps.run("format", || cargo(&["fmt", "--all", "--", "--check"]))?;
    let tools = {
        let mut tools = None;
        steps.run("install tools", || {
            tools = Some(worker::ensure_tools(root)?);
            Ok(())
        })?;
        tools.context("tools were not installed")?
    };
    steps.run("clippy (native)", || {
        cargo(&["clippy", "--workspace", "--all-targets", "--all-features", "--", "-D", "warnings"])
    })?;
    steps.run("clippy (wasm32)", || {
        cargo(&["clippy", "-p", "edge", "--target", "wasm32-unknown-unknown", "--", "-D", "warnings"])?;
        let jwks_wasm = ["clippy", "-p", "jwks", "--target", "wasm32-unknown-unknown"];
        cargo(&[&jwks_wasm[..], &["--no-default-features", "--features", "toml", "--", "-D", "warnings"]].concat())?;
        cargo(&[&jwks_wasm[..], &["--test", "wasm", "--", "-D", "warnings"]].concat())
    })?;
    steps.run("jwks tests under wasm32 (wasm-bindgen-test, Node)", || {
        let runner = worker::tools_dir().join("bin/wasm-bindgen-test-runner");
        run_command(
            Command::new("cargo")
                .args(["test", "-p", "jwks", "--target", "wasm32-unknown-unknown", "--lib", "--test", "wasm"])
                .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER", runner)
                .current_dir(root),
        )
    })?;
    // Also the core for wasm32 as the edge builds it (no p256, no toml), in full: a separate
    // `cargo build` of the core for wasm32 would only repeat what clippy (wasm32) checks and this
    // compiles.
    steps.run("build the Worker", || worker::build_worker(root, &tools))?;
    // What `npx wrangler deploy --env production` would upload, built offline, against its budget.
    steps.run("Worker upload (production, dry run)", || worker::check_worker_size(root, &tools))?;
    steps.run("build the binaries and the tests", || cargo(TEST_BUILD))?;
    let server = {
        let mut server = None;
        steps.run("PostgreSQL (a private server)", || {
            server = Some(postgres::start()?);
            Ok(())
        })?;
        server.context("PostgreSQL did not start")?
    };
    // Debian's Chromium and chromedriver, for the browser tests (tests/tests/browser.rs and
    // tests/tests/signin_browser.rs), which start their own chromedriver.
    steps.run("Chromium and chromedriver (Debian's packages)", chromium::ensure_installed)?;
    // Everything, with the suites that need a PostgreSQL server on this one; the issuer's
    // integration suite runs on it here, and on SQLite files in the next step.
    let tests = steps.run("tests (the issuer's integration suite on PostgreSQL)", || {
        run_command(
            Command::new("cargo")
                .args(["test", "--workspace", "--all-features", "--no-fail-fast"])
                .env(devtools::postgres::TEST_SERVER_ENV, server.url())
                .current_dir(root),
        )
    });
    let sqlite = steps.run("the issuer's integration suite on SQLite", || {
        run_command(
            Command::new("cargo")
                // `--workspace`, not `-p issuer`: the features resolved for the whole workspace, as
                // the build step compiled them (`-p issuer` alone rebuilt 30 s of dependencies).
                .args(["test", "--workspace", "--all-features", "--test", "integration"])
                .env_remove(devtools::postgres::TEST_SERVER_ENV)
                .current_dir(root),
        )
    });
    drop(server);
    tests.and(sqlite)?;
    steps.run("fuzz targets build", || {
        run_command(
            Command::new("cargo")
                .args(["check", "--manifest-path", "jwks/fuzz/Cargo.toml", "--bins"])
                .env(FUZZ_CHECK_LIBFUZZER.0, FUZZ_CHECK_LIBFUZZER.1)
                .current_dir(root),
        )
    })?;
    Ok(())
}

/// Runs each fuzz target for `seconds` with cargo-fuzz (installed into the tools folder). The
/// machine has only a stable toolchain, so the sanitizer flags are allowed with RUSTC_BOOTSTRAP.
fn fuzz(root: &Path, seconds: Option<&str>) -> Result<()> {
    let seconds: u64 = seconds.unwrap_or("60").parse().context("SECONDS must be a whole number")?;
    let tools = worker::tools_dir();
    let cargo_fuzz = tools.join("bin/cargo-fuzz");
    if !cargo_fuzz.exists() {
        run(root, "cargo", &["install", "cargo-fuzz", "--root", &tools.to_string_lossy()])?;
    }
    for target in ["parse_token", "parse_jwks"] {
        run_command(
            Command::new(&cargo_fuzz)
                .args(["fuzz", "run", target, "--", &format!("-max_total_time={seconds}")])
                .current_dir(root.join("jwks"))
                .env("RUSTC_BOOTSTRAP", "1"),
        )?;
    }
    Ok(())
}
