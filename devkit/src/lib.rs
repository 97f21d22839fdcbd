//! Local platform for development and tests (never linked into a Lambda binary):
//! moto (real AWS APIs on loopback), a dev OIDC issuer, provisioning of what template.yaml
//! defines, and every function's router merged on one URL.

pub mod google;
pub mod issuer;
pub mod local;
pub mod moto;
pub mod provision;
pub mod proxy;
pub mod runtime_api;

pub use issuer::DevIssuer;
pub use local::{LocalApi, local_router};
pub use moto::MotoServer;
pub use provision::{LocalNames, provision};

/// Errors of the local platform; the dev command prints them and exits.
pub type DevResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The repository root (devkit lives one level below it).
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| std::path::PathBuf::from("."))
}

/// A free TCP port on loopback (bound then released; the small race is acceptable locally).
pub fn free_port() -> DevResult<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
