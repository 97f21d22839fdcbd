//! moto's server as a child process that cannot outlive us.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{DevResult, free_port, repo_root};

/// The pinned version installed into `.venv` when `moto_server` is not on the machine.
pub const MOTO_PIN: &str = "moto[server]==5.2.1";

pub struct MotoServer {
    child: Child,
    pub endpoint: String,
}

/// `MOTO_SERVER`, else the project venv's, else the one on PATH.
pub fn moto_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("MOTO_SERVER") {
        return Some(PathBuf::from(path));
    }
    let local = repo_root().join(".venv/bin/moto_server");
    if local.exists() {
        return Some(local);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("moto_server"))
        .find(|candidate| candidate.exists())
}

impl MotoServer {
    /// Starts moto on a free loopback port and waits until it answers.
    pub fn start() -> DevResult<Self> {
        Self::start_on(free_port()?)
    }

    pub fn start_on(port: u16) -> DevResult<Self> {
        let binary = moto_binary().ok_or(
            "moto_server not found: run `cargo xtask dev` or `cargo xtask test` once to install it",
        )?;
        let mut command = Command::new(binary);
        command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        die_with_parent(&mut command);
        let child = command.spawn()?;
        let server = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        server.wait_ready(port)?;
        Ok(server)
    }

    fn wait_ready(&self, port: u16) -> DevResult<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err("moto_server did not start within 30 s".into())
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Linux: the child gets SIGTERM when the thread that spawned it exits, so a crashed or killed
/// test run leaves no moto behind. Spawn from a thread that lives as long as the process.
fn die_with_parent(command: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec here.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

/// One moto per process, started on first use from a thread that never exits (see above).
pub fn shared() -> DevResult<&'static str> {
    use std::sync::OnceLock;
    static ENDPOINT: OnceLock<Result<String, String>> = OnceLock::new();
    let result = ENDPOINT.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || match MotoServer::start() {
            Ok(server) => {
                let _ = tx.send(Ok(server.endpoint.clone()));
                // Keep `server` (and this thread) alive for the life of the process.
                loop {
                    std::thread::park();
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e.to_string()));
            }
        });
        rx.recv()
            .unwrap_or_else(|_| Err("moto thread ended".to_string()))
    });
    match result {
        Ok(endpoint) => Ok(endpoint.as_str()),
        Err(e) => Err(e.clone().into()),
    }
}
