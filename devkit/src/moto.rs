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

/// moto's own server program, run single-threaded (see [`MotoServer::start_on`]).
const LAUNCHER: &str = "import sys\n\
from werkzeug.serving import run_simple\n\
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app\n\
app = DomainDispatcherApplication(create_backend_app)\n\
run_simple(sys.argv[1], int(sys.argv[2]), app, threaded=False)\n";

/// A Python interpreter that can import moto's server: `MOTO_PYTHON`, else the project venv's,
/// else `python3` from PATH.
pub fn moto_python() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("MOTO_PYTHON").map(PathBuf::from),
        Some(repo_root().join(".venv/bin/python")),
        Some(PathBuf::from("python3")),
    ];
    candidates.into_iter().flatten().find(|python| {
        Command::new(python)
            .args(["-c", "import moto.server, werkzeug"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

impl MotoServer {
    /// Starts moto on a free loopback port and waits until it answers.
    pub fn start() -> DevResult<Self> {
        Self::start_on(free_port()?)
    }

    /// moto runs its server single-threaded here: DynamoDB evaluates a condition and applies the
    /// write atomically, and threaded moto does not (two conditional writes racing on one item
    /// can both succeed). One request at a time restores DynamoDB's per-item atomicity, which the
    /// concurrency tests rely on.
    pub fn start_on(port: u16) -> DevResult<Self> {
        let python = moto_python().ok_or(
            "moto is not installed: run `cargo xtask dev` or `cargo xtask test` once to install it",
        )?;
        let mut command = Command::new(python);
        command
            .args(["-c", LAUNCHER, "127.0.0.1", &port.to_string()])
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
