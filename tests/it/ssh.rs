//! SSH git remotes against a real `sshd` (common::sshd).

use std::process::Command;

use crate::common::sshd::Sshd;
use crate::common::*;

#[test]
fn experiment_libgit2_default() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let origin = dir.path().join("origin");
    std::fs::create_dir_all(&origin).unwrap();
    git(&origin, &["init", "-q", "-b", "main"]);
    git(&origin, &["commit", "-q", "--allow-empty", "-m", "x"]);
    let kh = dir.path().join("known_hosts");
    std::fs::write(&kh, format!("{}\n", sshd.known_hosts_line())).unwrap();
    let out = run(Command::new("git")
        .args(["clone", "-q", &sshd.url(&origin)])
        .arg(dir.path().join("clone"))
        .env(
            "GIT_SSH_COMMAND",
            format!(
                "ssh -i {} -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile={}",
                sshd.client_key().display(),
                kh.display()
            ),
        ));
    println!("{}\n{}", out.text(), sshd.log());
    out.assert_exit(0);

    for home in ["with", "empty"] {
        let h = dir.path().join(home);
        std::fs::create_dir_all(h.join(".ssh")).unwrap();
        if home == "with" {
            std::fs::copy(&kh, h.join(".ssh/known_hosts")).unwrap();
        }
        // SAFETY: experiment
        unsafe { std::env::set_var("HOME", &h) };
        let repo = git2::Repository::init_bare(dir.path().join(format!("m-{home}"))).unwrap();
        let mut remote = repo.remote_anonymous(&sshd.url(&origin)).unwrap();
        let mut cb = git2::RemoteCallbacks::new();
        let key = sshd.client_key();
        cb.credentials(move |_, u, _| git2::Cred::ssh_key(u.unwrap_or("root"), None, &key, None));
        let mut o = git2::FetchOptions::new();
        o.remote_callbacks(cb);
        let r = remote.fetch(&["+refs/heads/*:refs/heads/*"], Some(&mut o), None);
        println!("HOME {home}: {r:?}");
    }
    panic!("show");
}
