//! A front for a registry whose blob downloads crawl or stall: the bad link a partner's
//! host can sit behind. Everything else passes through at full speed, so berth resolves the
//! version at once and only the engine's pull meets the slow link.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use super::{IMAGE_REPO, docker, run};

/// How blob downloads behave.
#[derive(Clone, Copy)]
pub enum Link {
    /// At most this many bytes a second.
    Throttled(usize),
    /// The answer's head and its first bytes, then nothing, the connection held open.
    Stalled,
}

pub struct SlowFront {
    pub port: u16,
}

impl SlowFront {
    pub fn start(upstream: u16, link: Link) -> SlowFront {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                std::thread::spawn(move || forward(client, upstream, link));
            }
        });
        SlowFront { port }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn forward(mut client: TcpStream, upstream: u16, link: Link) {
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let end = line == "\r\n";
        if !line.to_ascii_lowercase().starts_with("connection:") {
            head.push_str(&line);
        }
        if end {
            break;
        }
    }
    let blob = head
        .split(' ')
        .nth(1)
        .is_some_and(|p| p.contains("/blobs/"));
    let head = head.replacen("\r\n", "\r\nConnection: close\r\n", 1);
    let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    if up.write_all(head.as_bytes()).is_err() {
        return;
    }
    if !blob {
        let _ = std::io::copy(&mut up, &mut client);
        return;
    }
    match link {
        Link::Throttled(per_second) => {
            let slice = (per_second / 10).max(1);
            let mut buf = vec![0u8; slice];
            loop {
                match up.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if client.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Link::Stalled => {
            let mut buf = vec![0u8; 2048];
            let n = up.read(&mut buf).unwrap_or(0);
            if client.write_all(&buf[..n]).is_err() {
                return;
            }
            // Hold the connection until the client gives up (or two minutes pass).
            let _ = client.set_read_timeout(Some(Duration::from_millis(500)));
            let end = Instant::now() + Duration::from_secs(120);
            let mut probe = [0u8; 1];
            while Instant::now() < end {
                match client.read(&mut probe) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => return,
                }
            }
        }
    }
}

/// A local image no one has pulled before: the test service plus `pad_bytes` of random
/// data in its layer, so a pull of it has to download that layer. Returns its reference.
pub fn unique_image(tag: &str, pad_bytes: usize) -> String {
    let dir = tempfile::tempdir().unwrap();
    let base = format!("{IMAGE_REPO}:1.1.0");
    let id = docker(&["create", &base]);
    docker(&[
        "cp",
        &format!("{id}:/serve"),
        &dir.path().join("serve").display().to_string(),
    ]);
    docker(&["rm", &id]);
    let mut pad = vec![0u8; pad_bytes];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut pad)
        .unwrap();
    std::fs::write(dir.path().join("pad.bin"), pad).unwrap();
    let name = format!("berth-test/slow:{tag}");
    run(std::process::Command::new("sh").arg("-c").arg(format!(
        "tar -C {} -c serve pad.bin | docker import --change 'CMD [\"/serve\"]' --change 'ENV VERSION=1.1.0' --change 'LABEL berth.test=partner-service' - {name}",
        dir.path().display()
    )))
    .assert_exit(0);
    name
}
