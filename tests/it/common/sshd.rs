//! A real SSH server for tests: Debian's `openssh-server` (`/usr/sbin/sshd -D -e`) with a
//! config, host key and authorized client key of its own, on a free loopback port. Git
//! reaches repos through it as partners reach theirs: `git-upload-pack` and
//! `git-receive-pack` run as the logged-in user (root: the tests run as root), found on
//! the `PATH` the config pins to Debian's git.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, run};

/// The server, killed (by its pid) when dropped; its files live in a temp dir.
pub struct Sshd {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Sshd {
    /// Starts sshd with a fresh ed25519 host key, accepting only the fresh client key
    /// [`Sshd::client_key`], by public key only.
    pub fn start() -> Sshd {
        for (path, package) in [
            ("/usr/sbin/sshd", "openssh-server"),
            ("/usr/bin/ssh-keygen", "openssh-client"),
            ("/usr/bin/git-upload-pack", "git"),
            ("/usr/bin/git-receive-pack", "git"),
        ] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: script/test installs Debian's {package} (apt-get install {package})"
            );
        }
        // Privilege separation needs it; Debian's unit makes it at boot, and none runs here.
        std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        let dir = tempfile::tempdir().expect("temp dir");
        let host_key = keygen(dir.path(), "host_ed25519");
        let client_key = keygen(dir.path(), "client_ed25519");
        std::fs::copy(
            client_key.with_extension("pub"),
            dir.path().join("authorized_keys"),
        )
        .expect("authorized_keys");
        let port = free_port();
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\n\
                 ListenAddress 127.0.0.1\n\
                 HostKey {host}\n\
                 AuthorizedKeysFile {dir}/authorized_keys\n\
                 PubkeyAuthentication yes\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 UsePAM no\n\
                 PermitRootLogin prohibit-password\n\
                 StrictModes no\n\
                 PidFile none\n\
                 X11Forwarding no\n\
                 AllowAgentForwarding no\n\
                 AllowTcpForwarding no\n\
                 PermitTTY no\n\
                 PrintMotd no\n\
                 LogLevel VERBOSE\n\
                 SetEnv PATH=/usr/bin:/bin\n",
                host = host_key.display(),
                dir = dir.path().display(),
            ),
        )
        .expect("sshd_config");
        let log = std::fs::File::create(dir.path().join("sshd.log")).expect("sshd.log");
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("sshd starts");
        let mut sshd = Sshd { child, port, dir };
        sshd.wait_for_banner();
        sshd
    }

    /// Waits until the port answers with an SSH banner; fails with sshd's log otherwise.
    fn wait_for_banner(&mut self) {
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut banner = [0u8; 8];
                if s.read_exact(&mut banner).is_ok() && banner.starts_with(b"SSH-2.0") {
                    return;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("sshd exited ({status}) before answering:\n{}", self.log());
            }
            assert!(
                Instant::now() < end,
                "sshd did not answer on {} within 15 s:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The private key the server accepts (for root).
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client_ed25519")
    }

    /// The server's public host key line (`ssh-ed25519 AAAA… comment`).
    pub fn host_public_key(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("host_ed25519.pub"))
            .expect("host key")
            .trim()
            .to_owned()
    }

    /// A known_hosts line for this server as OpenSSH writes it for a non-default port.
    pub fn known_hosts_line(&self) -> String {
        format!("[127.0.0.1]:{} {}", self.port, self.host_public_key())
    }

    /// The host key's OpenSSH fingerprint, `SHA256:…`.
    pub fn fingerprint(&self) -> String {
        let out = run(Command::new("ssh-keygen")
            .arg("-lf")
            .arg(self.dir.path().join("host_ed25519.pub")));
        out.assert_exit(0);
        out.stdout()
            .split_whitespace()
            .nth(1)
            .expect("a fingerprint")
            .to_owned()
    }

    /// `ssh://root@127.0.0.1:PORT<path>`: an absolute path on this machine, over SSH.
    pub fn url(&self, path: &Path) -> String {
        format!("ssh://root@127.0.0.1:{}{}", self.port, path.display())
    }

    /// What sshd logged so far (connections, accepted and refused keys).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh passphrase-less ed25519 key pair `dir/name` (+ `.pub`).
pub fn keygen(dir: &Path, name: &str) -> PathBuf {
    let key = dir.join(name);
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key))
    .assert_exit(0);
    key
}
