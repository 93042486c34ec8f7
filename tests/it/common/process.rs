//! Process control: config files for the real binary, starting it on free loopback ports,
//! reading its log and metrics, signalling it, and running its other commands.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;

/// The base config. `extra` is inserted in the `[listener]` table's position-independent
/// way: it is appended, so it may add keys to `[client_auth]` only through a
/// `[client_auth.allow]`-style table; to change listener or client_auth keys, use
/// `listener_extra`/`client_auth_extra` via [`config_with`].
pub fn base_config(upstream: &str, extra: &str) -> String {
    config_with(upstream, "", "", extra)
}

/// A config with extra keys in `[listener]` and `[client_auth]`, and extra tables appended.
pub fn config_with(
    upstream: &str,
    listener_extra: &str,
    client_auth_extra: &str,
    tables: &str,
) -> String {
    format!(
        r#"[listener]
address = "127.0.0.1:0"
certificate = "server.pem"
private_key = "server.key"
handshake_timeout = "5s"
{listener_extra}

[client_auth]
truststore = "truststore.pem"
{client_auth_extra}

[upstream]
url = "{upstream}"
connect_timeout = "2s"
response_timeout = "5s"

[admin]
address = "127.0.0.1:0"

[log]
level = "info"
format = "text"

{tables}
"#
    )
}

/// A running `mtls-shield run` process.
pub struct Proxy {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub logs: Arc<Mutex<Vec<String>>>,
    pub config: PathBuf,
}

impl Proxy {
    /// Starts the binary with `config` and waits until it logs its bound addresses.
    pub fn start(config: &Path) -> Proxy {
        Self::try_start(config).unwrap_or_else(|logs| panic!("proxy did not start:\n{logs}"))
    }

    /// Like `start`, but returns the logs if the process exits or never listens.
    pub fn try_start(config: &Path) -> Result<Proxy, String> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mtls-shield"))
            .args(["run", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mtls-shield");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let end = Instant::now() + DEADLINE;
        let mut addr = None;
        let mut admin = None;
        while Instant::now() < end {
            for line in logs.lock().unwrap().iter() {
                if let Some(a) = field(line, "address") {
                    if line.contains("admin listening") {
                        admin = a.parse().ok();
                    } else if line.contains(" listening ") {
                        addr = a.parse().ok();
                    }
                }
            }
            if let Some(addr) = addr {
                return Ok(Proxy {
                    child,
                    addr,
                    admin,
                    logs,
                    config: config.to_owned(),
                });
            }
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        // Let the reader thread drain what is left.
        std::thread::sleep(Duration::from_millis(100));
        let text = logs.lock().unwrap().join("\n");
        Err(text)
    }

    /// All log lines so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Waits for a log line containing every needle.
    pub fn wait_log(&self, needles: &[&str]) -> String {
        let mut found = None;
        wait_until(&format!("log line with {needles:?}"), DEADLINE, || {
            found = self
                .logs()
                .into_iter()
                .find(|l| needles.iter().all(|n| l.contains(n)));
            found.is_some()
        });
        found.unwrap()
    }

    /// Sends a signal (`HUP`, `TERM`, `INT`) with kill(1).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// GET on the admin listener: (status, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        let admin = self.admin.expect("admin listener configured");
        http_get_plain(admin, path)
    }

    /// The value of a metric line that starts with `prefix` (e.g. a name with labels), or 0.
    pub fn metric(&self, prefix: &str) -> f64 {
        let (_, body) = self.admin_get("/metrics");
        body.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// Waits for the process to exit, returning its status.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + deadline;
        while Instant::now() < end {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Extracts `key=value` (value unquoted) from a text log line.
pub fn field(line: &str, key: &str) -> Option<String> {
    let needle = format!(" {key}=");
    let start = line.find(&needle)? + needle.len();
    let rest = &line[start..];
    if let Some(q) = rest.strip_prefix('"') {
        Some(q[..q.find('"')?].to_owned())
    } else {
        Some(rest.split_whitespace().next()?.to_owned())
    }
}

/// Runs the binary with `args` to completion (for commands that exit on their own). A command
/// that has not exited by [`DEADLINE`] (say, `run` with a config that was meant to be refused
/// but starts) is killed and fails the test, instead of hanging the suite.
pub fn shield_cmd(args: &[&std::ffi::OsStr]) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mtls-shield"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mtls-shield");
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            let err = String::from_utf8_lossy(&stderr.join().unwrap()).into_owned();
            panic!("mtls-shield {args:?} did not exit within {DEADLINE:?}; stderr:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    std::process::Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// VmRSS of a process in KiB, from /proc/<pid>/status.
pub fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

// ---- Keep-alive connections (issue 4 tests) ----

/// The `address` of a start-up line, text (`address=…`) or JSON (`"address":"…"`), and
/// whether it is the admin listener's.
pub fn listening_address(line: &str) -> Option<(bool, SocketAddr)> {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
        let msg = v.get("message")?.as_str()?;
        let addr = v.get("address")?.as_str()?.parse().ok()?;
        return match msg {
            "admin listening" => Some((true, addr)),
            "listening" => Some((false, addr)),
            _ => None,
        };
    }
    let addr = field(line, "address")?.parse().ok()?;
    if line.contains("admin listening") {
        Some((true, addr))
    } else if line.contains(" listening ") {
        Some((false, addr))
    } else {
        None
    }
}

/// Like [`Proxy::start`], with extra environment variables (such as `RUST_LOG`; it is
/// removed otherwise), and reading the bound addresses from text or JSON log lines.
pub fn start_proxy_env(config: &Path, env: &[(&str, &str)]) -> Proxy {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mtls-shield"));
    cmd.args(["run", "--config"])
        .arg(config)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    start_proxy_cmd(cmd, config)
}

/// Starts `cmd`, which must end up exec-ing the shield with `config` (e.g. through `sh -c
/// '…; exec "$0" run --config "$1"'`), and waits until it logs its bound addresses.
pub fn start_proxy_cmd(mut cmd: Command, config: &Path) -> Proxy {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn mtls-shield");
    let logs = Arc::new(Mutex::new(Vec::new()));
    let stderr = child.stderr.take().unwrap();
    let sink = logs.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let end = Instant::now() + DEADLINE;
    while Instant::now() < end {
        let (mut addr, mut admin) = (None, None);
        for line in logs.lock().unwrap().iter() {
            match listening_address(line) {
                Some((true, a)) => admin = Some(a),
                Some((false, a)) => addr = Some(a),
                None => {}
            }
        }
        if let Some(addr) = addr {
            return Proxy {
                child,
                addr,
                admin,
                logs,
                config: config.to_owned(),
            };
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "proxy exited ({status}):\n{}",
                logs.lock().unwrap().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!(
        "proxy did not log its address:\n{}",
        logs.lock().unwrap().join("\n")
    );
}
