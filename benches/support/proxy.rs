//! A counting proxy in front of the Docker engine's socket, so a test or the benchmark can
//! see every API call berth makes (berth promises one container list per pass).

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;

/// Listens on a socket of its own and forwards to the engine's, recording request lines.
pub struct Proxy {
    pub socket: PathBuf,
    seen: Arc<Mutex<Vec<String>>>,
}

fn upstream() -> PathBuf {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"))
}

impl Proxy {
    /// Starts listening on `dir/docker.sock`; runs until the process ends.
    pub fn start(dir: &Path) -> Proxy {
        let socket = dir.join("docker.sock");
        let listener = UnixListener::bind(&socket).expect("proxy socket binds");
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let record = Arc::clone(&seen);
        let target = upstream();
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let record = Arc::clone(&record);
                let target = target.clone();
                thread::spawn(move || forward(client, &target, &record));
            }
        });
        Proxy { socket, seen }
    }

    /// `DOCKER_HOST` value that routes through this proxy.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Request lines seen so far, e.g. `GET /v1.41/containers/json?all=true…`.
    pub fn requests(&self) -> Vec<String> {
        self.seen.lock().expect("proxy lock").clone()
    }

    /// How many requests went to a path containing `part`.
    pub fn count(&self, method: &str, part: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.starts_with(method) && r.contains(part))
            .count()
    }
}

fn forward(mut client: UnixStream, target: &Path, seen: &Mutex<Vec<String>>) {
    let Ok(mut server) = UnixStream::connect(target) else {
        return;
    };
    let (Ok(mut client_w), Ok(mut server_r)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    thread::spawn(move || {
        let _ = std::io::copy(&mut server_r, &mut client_w);
        let _ = client_w.shutdown(std::net::Shutdown::Write);
    });
    let mut line = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                let is_request = ["GET ", "POST ", "DELETE ", "PUT ", "HEAD "]
                    .iter()
                    .any(|m| text.starts_with(m))
                    && text.ends_with("HTTP/1.1");
                if is_request {
                    seen.lock().expect("proxy lock").push(text);
                }
                line.clear();
            } else if line.len() < 4096 {
                line.push(b);
            }
        }
        if server.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = server.shutdown(std::net::Shutdown::Write);
}
