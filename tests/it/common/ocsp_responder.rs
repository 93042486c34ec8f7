//! An OCSP responder: `openssl ocsp` over an index the tests write.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use rcgen::SerialNumber;
use time::OffsetDateTime;

use super::*;

/// `openssl ocsp` answering for `ca`, signing with `signer` (the CA itself, or a delegated
/// responder certificate), from an index file; revoking rewrites it and restarts the responder.
pub struct OcspResponder {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
    entries: Mutex<Vec<(String, Option<String>)>>,
}

impl OcspResponder {
    /// Starts a responder on loopback `port`; `valid` are the certificates it knows.
    pub fn start_on(
        port: u16,
        ca: &Ca,
        signer: (&str, &str),
        valid: &[&SerialNumber],
    ) -> OcspResponder {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("signer.pem"), signer.0).unwrap();
        std::fs::write(dir.path().join("signer.key"), signer.1).unwrap();
        let entries: Vec<(String, Option<String>)> =
            valid.iter().map(|sn| (index_serial(sn), None)).collect();
        write_index(dir.path(), &entries);
        let child = spawn_ocsp(dir.path(), port);
        OcspResponder {
            port,
            dir,
            child,
            entries: Mutex::new(entries),
        }
    }

    /// The responder's URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// Marks `cert` revoked from now on (the responder re-reads its index when it changes).
    pub fn revoke(&mut self, serial: &SerialNumber) {
        let serial = index_serial(serial);
        let mut entries = self.entries.lock().unwrap();
        for e in entries.iter_mut().filter(|e| e.0 == serial) {
            e.1 = Some(openssl_time(
                OffsetDateTime::now_utc() - time::Duration::minutes(1),
            ));
        }
        write_index(self.dir.path(), &entries);
        // `openssl ocsp` 3.0 reads its index once: start it again, on the same port.
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn_ocsp(self.dir.path(), self.port);
    }
}

impl Drop for OcspResponder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A serial as `openssl ca` writes it in its index: upper-case hex, no leading zero bytes.
fn index_serial(serial: &SerialNumber) -> String {
    let bytes = serial.to_bytes();
    let first = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len() - 1);
    hex::encode_upper(&bytes[first..])
}

fn openssl_time(t: OffsetDateTime) -> String {
    format!(
        "{:02}{:02}{:02}{:02}{:02}{:02}Z",
        t.year() % 100,
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Starts `openssl ocsp` in `dir` on `port` and waits until it says it is listening.
fn spawn_ocsp(dir: &Path, port: u16) -> Child {
    let mut child = Command::new("openssl")
        .args([
            "ocsp",
            "-index",
            "index.txt",
            "-CA",
            "ca.pem",
            "-rsigner",
            "signer.pem",
        ])
        .args(["-rkey", "signer.key", "-nmin", "10", "-ignore_err"])
        .args(["-port", &port.to_string()])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is installed (apt-get install -y openssl)");
    // Wait for its own word, not a probe connection: `openssl ocsp` serves one connection
    // at a time and would sit on a probe that sends nothing.
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stderr = child.stderr.take().unwrap();
    let flag = ready.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("waiting for OCSP client connections") {
                flag.store(true, Ordering::SeqCst);
            }
        }
    });
    wait_until("the OCSP responder to listen", DEADLINE, || {
        ready.load(Ordering::SeqCst)
    });
    child
}

/// An `openssl ca` index: V(alid) or R(evoked) lines, written through a rename.
fn write_index(dir: &Path, entries: &[(String, Option<String>)]) {
    let expiry = openssl_time(OffsetDateTime::now_utc() + time::Duration::days(365));
    let mut text = String::new();
    for (serial, revoked) in entries {
        match revoked {
            None => text.push_str(&format!("V\t{expiry}\t\t{serial}\tunknown\t/CN=x\n")),
            Some(at) => text.push_str(&format!("R\t{expiry}\t{at}\t{serial}\tunknown\t/CN=x\n")),
        }
    }
    let tmp = dir.join("index.txt.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join("index.txt")).unwrap();
}
