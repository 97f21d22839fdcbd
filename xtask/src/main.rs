//! `cargo xtask dev`  — the whole API locally on one URL (moto + dev issuer + every function).
//! `cargo xtask test` — every check CI runs: fmt, clippy, unit + integration tests, template checks.
//!
//! Each installs what it needs (pinned, project-local under `.venv*`) when it is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use devkit::{DevIssuer, LocalApi, LocalNames, MotoServer, repo_root};

type Result<T> = devkit::DevResult<T>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("dev") => dev(&args[1..]),
        Some("test") => test(),
        Some("coldstart") => coldstart(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask dev [--config FILE] | cargo xtask test | cargo xtask coldstart BINARY [RUNS]"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: &mut Command) -> Result<()> {
    eprintln!("+ {command:?}");
    let status = command.status()?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} failed with {status}").into())
    }
}

/// A project-local Python venv with `packages` installed (pinned), created on first use.
fn ensure_venv(dir: &str, probe: &str, packages: &[&str]) -> Result<PathBuf> {
    let venv = repo_root().join(dir);
    let bin = venv.join("bin");
    if bin.join(probe).exists() {
        return Ok(bin);
    }
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    run(Command::new(bin.join("pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(packages))?;
    Ok(bin)
}

/// A Python that can run moto's server: the machine's if it has moto, else a pinned `.venv`.
fn ensure_moto() -> Result<PathBuf> {
    if let Some(found) = devkit::moto::moto_python() {
        return Ok(found);
    }
    ensure_venv(".venv", "moto_server", &[devkit::moto::MOTO_PIN])?;
    devkit::moto::moto_python().ok_or_else(|| "moto installed but not importable".into())
}

// ---------------------------------------------------------------- dev

fn dev(args: &[String]) -> Result<()> {
    let moto_python = ensure_moto()?;
    // SAFETY: single-threaded here, before the runtime starts.
    unsafe { std::env::set_var("MOTO_PYTHON", &moto_python) };
    let config_file = match args {
        [flag, path] if flag == "--config" => Some(PathBuf::from(path)),
        [] => {
            let default = repo_root().join("dev.config.json");
            default.exists().then_some(default)
        }
        _ => return Err("usage: cargo xtask dev [--config FILE]".into()),
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(dev_async(config_file))
}

fn env_port(name: &str, default: u16) -> Result<u16> {
    match std::env::var(name) {
        Ok(value) => Ok(value
            .parse()
            .map_err(|_| format!("{name} must be a port"))?),
        Err(_) => Ok(default),
    }
}

async fn dev_async(config_file: Option<PathBuf>) -> Result<()> {
    app_telemetry::init();
    let port = env_port("DEV_PORT", 3000)?;
    let issuer_port = env_port("DEV_ISSUER_PORT", 3001)?;
    let moto = MotoServer::start_on(env_port("DEV_MOTO_PORT", devkit::free_port()?)?)?;
    let issuer = DevIssuer::start(issuer_port, devkit::issuer::DEFAULT_AUDIENCE).await?;
    let google = devkit::google::GoogleStandIn::start(env_port("DEV_GOOGLE_PORT", 3002)?).await?;

    let mut config =
        devkit::provision::local_config(issuer.issuer(), issuer.audience(), &issuer.jwks_url());
    config["google"] = google.config(
        &format!("http://127.0.0.1:{port}"),
        &std::env::var("DEV_FRONTEND_URL")
            .unwrap_or_else(|_| "http://localhost:5173/settings/integrations".into()),
    );
    if let Some(path) = &config_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let patch: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
        json_merge(&mut config, &patch);
    }
    if let Ok(text) = std::env::var("APP_CONFIG_PATCH") {
        let patch: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("APP_CONFIG_PATCH is not JSON: {e}"))?;
        json_merge(&mut config, &patch);
    }
    // Fail here, with the loader's own message, rather than at the first request.
    app_config::parse_and_validate(&config.to_string())?;

    let sdk = devkit::provision::moto_sdk_config(&moto.endpoint).await;
    let provisioned = devkit::provision(&sdk, &LocalNames::for_stage("local"), &config).await?;
    let platform = app_platform::Platform::new(provisioned.resources(), sdk).await?;
    let api = LocalApi::serve(devkit::local_router(&platform), port).await?;

    print_banner(&api, &issuer, &moto, &provisioned, config_file.as_deref());
    println!(
        "  Google stand-in {} (switches: POST {}/__admin/switches)",
        google.url, google.url
    );
    wait_for_shutdown().await;
    eprintln!("stopping: local API, issuer, moto");
    drop(moto);
    Ok(())
}

/// RFC 7396 merge, so a config file or `APP_CONFIG_PATCH` overrides any value.
fn json_merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
    if let (Some(target), Some(patch)) = (target.as_object_mut(), patch.as_object()) {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                json_merge(
                    target.entry(key.clone()).or_insert(serde_json::Value::Null),
                    value,
                );
            }
        }
    } else {
        *target = patch.clone();
    }
}

fn print_banner(
    api: &LocalApi,
    issuer: &DevIssuer,
    moto: &MotoServer,
    provisioned: &devkit::provision::Provisioned,
    config_file: Option<&Path>,
) {
    let url = &api.url;
    println!("\nLocal API ready: {url}");
    for group in ["dashboards", "ga", "analytics"] {
        println!("  health      {url}/v1/{group}/health");
    }
    println!("  OpenAPI     {url}/v1/openapi.json");
    println!(
        "  issuer      {} (JWKS {})",
        issuer.issuer(),
        issuer.jwks_url()
    );
    println!("  moto (AWS)  {}", moto.endpoint);
    println!(
        "  table {} · secret {} · bucket {}",
        provisioned.names.table, provisioned.names.secret, provisioned.names.bucket
    );
    if let Some(path) = config_file {
        println!("  config overrides from {}", path.display());
    }
    println!("\nBearer tokens (12 h), tenant `demo`:");
    for (role, roles) in [
        ("viewer", &["viewer"][..]),
        ("editor", &["editor"][..]),
        ("admin", &["admin"][..]),
    ] {
        let claims = issuer.claims(&devkit::issuer::UserToken {
            sub: &format!("demo-{role}"),
            tenant: Some("demo"),
            roles,
            ttl_secs: 12 * 3600,
        });
        println!(
            "  {role:<7} export {}_TOKEN={}",
            role.to_uppercase(),
            issuer.sign(&claims)
        );
    }
    let other = issuer.claims(&devkit::issuer::UserToken {
        sub: "other-admin",
        tenant: Some("other"),
        roles: &["admin"],
        ttl_secs: 12 * 3600,
    });
    println!(
        "  tenant `other` (admin): export OTHER_TOKEN={}",
        issuer.sign(&other)
    );
    println!(
        "\nTry: curl -H \"Authorization: Bearer $VIEWER_TOKEN\" {url}/v1/dashboards\nCtrl-C stops everything."
    );
}

async fn wait_for_shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

// ---------------------------------------------------------------- test

/// Pinned infrastructure tools. checkov and SAM pin conflicting boto3 versions: two venvs.
const SAM_PINS: &[&str] = &[
    "aws-sam-cli==1.170.0",
    "cfn-lint==1.58.0",
    "cargo-lambda==1.9.2",
];
const CHECKOV_PINS: &[&str] = &["checkov==3.3.30"];

/// cfn-lint, `sam validate --lint` and checkov on template.yaml (offline, dummy credentials).
fn check_template(root: &Path, sam_bin: &Path, checkov_bin: &Path) -> Result<()> {
    run(Command::new(sam_bin.join("cfn-lint"))
        .current_dir(root)
        .arg("template.yaml"))?;
    run(Command::new(sam_bin.join("sam"))
        .current_dir(root)
        .args(["validate", "--lint"])
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("SAM_CLI_TELEMETRY", "0"))?;
    run(Command::new(checkov_bin.join("checkov"))
        .current_dir(root)
        .args([
            "-f",
            "template.yaml",
            "--framework",
            "cloudformation",
            "--compact",
            "--quiet",
            "--skip-download",
        ]))
}

fn test() -> Result<()> {
    let root = repo_root();
    // The three Python environments install side by side.
    let (moto, sam, checkov) = std::thread::scope(|scope| {
        let moto = scope.spawn(|| ensure_moto().map_err(|e| e.to_string()));
        let sam =
            scope.spawn(|| ensure_venv(".venv-sam", "sam", SAM_PINS).map_err(|e| e.to_string()));
        let checkov = scope.spawn(|| {
            ensure_venv(".venv-checkov", "checkov", CHECKOV_PINS).map_err(|e| e.to_string())
        });
        (moto.join(), sam.join(), checkov.join())
    });
    let joined = |r: std::thread::Result<std::result::Result<PathBuf, String>>| -> Result<PathBuf> {
        r.map_err(|_| "installer thread panicked")?
            .map_err(Into::into)
    };
    let (moto_python, sam_bin, checkov_bin) = (joined(moto)?, joined(sam)?, joined(checkov)?);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(&cargo)
        .current_dir(&root)
        .args(["fmt", "--all", "--check"]))?;
    check_template(&root, &sam_bin, &checkov_bin)?;
    run(Command::new(&cargo).current_dir(&root).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(Command::new(&cargo)
        .current_dir(&root)
        .env("MOTO_PYTHON", &moto_python)
        .args(["test", "--workspace"]))?;
    eprintln!("xtask test: all checks passed");
    Ok(())
}

// ---------------------------------------------------------------- coldstart

/// Cold starts of a real function binary against a local Runtime API and moto: time to the first
/// `GET /next` (init), to the first response (cold), and peak RSS. docs/performance.md.
fn coldstart(args: &[String]) -> Result<()> {
    let (binary, runs) = match args {
        [binary] => (PathBuf::from(binary), 10),
        [binary, runs] => (
            PathBuf::from(binary),
            runs.parse().map_err(|_| "RUNS must be a number")?,
        ),
        _ => return Err("usage: cargo xtask coldstart BINARY [RUNS]".into()),
    };
    let moto_python = ensure_moto()?;
    // SAFETY: single-threaded here, before the runtime starts.
    unsafe { std::env::set_var("MOTO_PYTHON", &moto_python) };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(coldstart_async(binary, runs))
}

async fn coldstart_async(binary: PathBuf, runs: usize) -> Result<()> {
    let moto = MotoServer::start()?;
    let sdk = devkit::provision::moto_sdk_config(&moto.endpoint).await;
    let config = devkit::provision::local_config(
        "http://localhost:1",
        "coldstart",
        "http://127.0.0.1:1/jwks",
    );
    let provisioned = devkit::provision(&sdk, &LocalNames::for_stage("coldstart"), &config).await?;
    let event = std::fs::read_to_string(repo_root().join("events/dashboards-health.json"))?;
    let mut init_ms = Vec::new();
    let mut cold_ms = Vec::new();
    let mut rss_kb = Vec::new();
    for _ in 0..runs {
        let api = devkit::runtime_api::RuntimeApi::start(event.clone()).await?;
        let resources = provisioned.resources();
        let started = std::time::Instant::now();
        let mut child = tokio::process::Command::new(&binary)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_LAMBDA_RUNTIME_API", &api.address)
            .env("AWS_LAMBDA_FUNCTION_NAME", "coldstart")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "coldstart")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", "coldstart")
            .env("AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH", "true")
            .env("AWS_ENDPOINT_URL", &moto.endpoint)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("STAGE", &resources.stage)
            .env("CONFIG_SECRET_ID", &resources.config_secret_id)
            .env("TABLE_NAME", &resources.table_name)
            .env("KMS_KEY_ID", resources.kms_key_id.unwrap_or_default())
            .env(
                "REPORTS_BUCKET",
                resources.reports_bucket.unwrap_or_default(),
            )
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let deadline = started + std::time::Duration::from_secs(15);
        let timings = loop {
            let timings = api.timings();
            if timings.responded.is_some() || std::time::Instant::now() > deadline {
                break timings;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        };
        if let Some(pid) = child.id()
            && let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status"))
            && let Some(line) = status.lines().find(|l| l.starts_with("VmHWM:"))
        {
            rss_kb.push(
                line.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or_default(),
            );
        }
        let _ = child.kill().await;
        if let Some(error) = timings.error {
            return Err(format!("function failed: {error}").into());
        }
        let (Some(init), Some(responded)) = (timings.init_done, timings.responded) else {
            return Err("the function did not answer within 15 s".into());
        };
        if !timings
            .response_body
            .unwrap_or_default()
            .contains("\"statusCode\":200")
        {
            return Err("the first invocation did not answer 200".into());
        }
        init_ms.push((init - started).as_secs_f64() * 1000.0);
        cold_ms.push((responded - started).as_secs_f64() * 1000.0);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    println!(
        "{} runs of {}: init median {:.1} ms, cold (init + first response) median {:.1} ms, peak RSS median {:.1} MB",
        runs,
        binary.display(),
        median(&mut init_ms),
        median(&mut cold_ms),
        median(&mut rss_kb) / 1024.0
    );
    Ok(())
}
