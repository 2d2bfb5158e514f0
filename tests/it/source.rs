//! The manifest repo as the source of truth: what the agent takes from git, and what CI
//! checks on it. Every test makes its own repositories, keys and commits in a temporary
//! directory with the real `git`, `ssh-keygen` and `gpg`, never touching the user's
//! configuration.

// ---- Commit signature verification (`verify.allowed_signers`) ----
//
// berth's verdict on a commit must be `git verify-commit`'s with the same file as
// `gpg.ssh.allowedSignersFile`: every case below asks both, on real signed commits and on
// commit objects rewritten by hand.
mod signed_commits {
    use std::io::Write as _;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output, Stdio};

    use berth::source::verify::{AllowedSigners, Verified, VerifyError, verify_commit};
    use git2::Oid;

    /// A key made with `ssh-keygen`.
    struct Key {
        /// The private key file (`.pub` next to it).
        path: PathBuf,
        /// `type base64 comment`, as it goes into an allowed signers line.
        public: String,
        /// `SHA256:…`.
        fingerprint: String,
    }

    /// A scratch home, a repository and the keys of a few signers.
    struct Lab {
        dir: tempfile::TempDir,
        keys: Vec<(&'static str, Key)>,
        gpg_used: std::cell::Cell<bool>,
        seq: std::cell::Cell<usize>,
    }

    /// What a case's commit carries, for [`Lab::commit`].
    enum Sign<'a> {
        Unsigned,
        /// With the key of this name.
        Ssh(&'a str),
        /// With this key file (a certificate, say).
        SshFile(&'a Path),
        Gpg,
    }

    impl Lab {
        fn new(keys: &[(&'static str, &[&str])]) -> Lab {
            let dir = tempfile::Builder::new()
                .prefix("berth-verify-")
                .tempdir()
                .expect("temp dir");
            for sub in ["home", "repo", "keys", "gnupg", "gnupg-verify"] {
                std::fs::create_dir_all(dir.path().join(sub)).unwrap();
            }
            #[cfg(unix)]
            for sub in ["gnupg", "gnupg-verify"] {
                use std::os::unix::fs::PermissionsExt;
                let p = dir.path().join(sub);
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
            }
            let mut lab = Lab {
                dir,
                keys: Vec::new(),
                gpg_used: false.into(),
                seq: 0.into(),
            };
            lab.git(&["init", "-q", "-b", "main", "."], &[]);
            for (name, args) in keys {
                let key = lab.keygen(name, args);
                lab.keys.push((name, key));
            }
            lab
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }

        fn repo(&self) -> PathBuf {
            self.path("repo")
        }

        fn key(&self, name: &str) -> &Key {
            &self
                .keys
                .iter()
                .find(|(n, _)| *n == name)
                .unwrap_or_else(|| panic!("no key {name}"))
                .1
        }

        /// `principal [options] key` for the allowed signers file.
        fn line(&self, principals: &str, options: &str, key: &str) -> String {
            let sep = if options.is_empty() { "" } else { " " };
            format!("{principals}{sep}{options} {}\n", self.key(key).public)
        }

        /// A command with a scratch `HOME` and no user or system git configuration.
        fn command(&self, program: &str) -> Command {
            let mut cmd = Command::new(program);
            cmd.current_dir(self.repo())
                .env("HOME", self.path("home"))
                .env("XDG_CONFIG_HOME", self.path("home/.config"))
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_GLOBAL", self.path("home/.gitconfig"))
                .env("GNUPGHOME", self.path("gnupg"))
                .env("LC_ALL", "C")
                .env_remove("GIT_DIR")
                .env_remove("GIT_WORK_TREE")
                .env_remove("GIT_INDEX_FILE")
                .env_remove("SSH_AUTH_SOCK");
            cmd
        }

        fn run(&self, mut cmd: Command, stdin: Option<&[u8]>) -> Output {
            let shown = format!("{cmd:?}");
            cmd.stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
            let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{shown}: {e}"));
            if let Some(data) = stdin {
                child.stdin.take().unwrap().write_all(data).unwrap();
            }
            child.wait_with_output().unwrap()
        }

        fn ok(&self, cmd: Command, stdin: Option<&[u8]>) -> String {
            let shown = format!("{cmd:?}");
            let out = self.run(cmd, stdin);
            assert!(
                out.status.success(),
                "{shown} failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        }

        fn git(&self, args: &[&str], env: &[(&str, &str)]) -> String {
            let mut cmd = self.command("git");
            cmd.args(args).envs(env.iter().copied());
            self.ok(cmd, None)
        }

        fn keygen(&self, name: &str, args: &[&str]) -> Key {
            let path = self.path(&format!("keys/{name}"));
            let mut cmd = self.command("ssh-keygen");
            cmd.args(args)
                .args(["-N", "", "-q", "-C", name, "-f"])
                .arg(&path);
            self.ok(cmd, None);
            let public = std::fs::read_to_string(path.with_extension("pub"))
                .unwrap()
                .trim()
                .to_string();
            let mut cmd = self.command("ssh-keygen");
            cmd.arg("-lf").arg(path.with_extension("pub"));
            let listed = self.ok(cmd, None);
            let fingerprint = listed.split_whitespace().nth(1).unwrap().to_string();
            Key {
                path,
                public,
                fingerprint,
            }
        }

        /// Signs a certificate for key `name` with key `ca` (`name-cert.pub`).
        fn certify(&self, ca: &str, name: &str, principal: &str) -> PathBuf {
            let mut cmd = self.command("ssh-keygen");
            cmd.arg("-s")
                .arg(&self.key(ca).path)
                .args(["-q", "-I", name, "-n", principal, "-V", "-1d:+1d"])
                .arg(self.key(name).path.with_extension("pub"));
            self.ok(cmd, None);
            self.path(&format!("keys/{name}-cert.pub"))
        }

        /// A GPG key in the signing keyring only: the verifying side's keyring is empty.
        fn gpg_key(&self) {
            if self.gpg_used.replace(true) {
                return;
            }
            let mut cmd = self.command("gpg");
            cmd.args([
                "--batch",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
                "--quick-gen-key",
                "Tester <tester@example.org>",
                "ed25519",
                "sign",
                "never",
            ]);
            self.ok(cmd, None);
        }

        /// A new commit on `main`, made by `git commit`.
        fn commit(&self, sign: Sign, date: Option<&str>) -> Oid {
            let n = self.seq.get() + 1;
            self.seq.set(n);
            let message = format!("change {n}");
            let mut args: Vec<String> = [
                "-c",
                "user.name=Tester",
                "-c",
                "user.email=tester@example.org",
                "-c",
                "commit.gpgsign=false",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            match sign {
                Sign::Unsigned => {}
                Sign::Ssh(key) => args.extend([
                    "-c".into(),
                    "gpg.format=ssh".into(),
                    "-c".into(),
                    format!("user.signingkey={}", self.key(key).path.display()),
                ]),
                Sign::SshFile(path) => args.extend([
                    "-c".into(),
                    "gpg.format=ssh".into(),
                    "-c".into(),
                    format!("user.signingkey={}", path.display()),
                ]),
                Sign::Gpg => {
                    self.gpg_key();
                    args.extend([
                        "-c".into(),
                        "gpg.format=openpgp".into(),
                        "-c".into(),
                        "user.signingkey=tester@example.org".into(),
                    ]);
                }
            }
            args.extend(["commit", "-q", "--allow-empty", "-m", &message].map(String::from));
            if !matches!(sign, Sign::Unsigned) {
                args.push("-S".into());
            }
            let env: Vec<(&str, &str)> = date
                .map(|d| vec![("GIT_COMMITTER_DATE", d), ("GIT_AUTHOR_DATE", d)])
                .unwrap_or_default();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            self.git(&args, &env);
            self.head()
        }

        fn head(&self) -> Oid {
            Oid::from_str(self.git(&["rev-parse", "HEAD"], &[]).trim()).unwrap()
        }

        fn cat(&self, commit: Oid) -> String {
            self.git(&["cat-file", "commit", &commit.to_string()], &[])
        }

        /// Writes a commit object as is and points branch `name` at it, as a fetch would.
        fn write(&self, name: &str, object: &str) -> Oid {
            let mut cmd = self.command("git");
            cmd.args(["hash-object", "-t", "commit", "-w", "--stdin"]);
            let oid = Oid::from_str(self.ok(cmd, Some(object.as_bytes())).trim()).unwrap();
            self.git(
                &[
                    "update-ref",
                    &format!("refs/heads/{name}"),
                    &oid.to_string(),
                ],
                &[],
            );
            oid
        }

        /// `ssh-keygen -Y sign` over `data`.
        fn sign(&self, key: &str, namespace: &str, extra: &[&str], data: &str) -> String {
            let mut cmd = self.command("ssh-keygen");
            cmd.args(["-Y", "sign", "-n", namespace, "-f"])
                .arg(&self.key(key).path)
                .args(extra);
            self.ok(cmd, Some(data.as_bytes()))
        }

        /// git's verdict, and on success the principal and fingerprint it names.
        fn git_verdict(&self, signers: &Path, commit: Oid) -> (bool, String) {
            self.git_verdict_in(signers, commit, &[])
        }

        fn git_verdict_in(
            &self,
            signers: &Path,
            commit: Oid,
            env: &[(&str, &str)],
        ) -> (bool, String) {
            let mut cmd = self.command("git");
            cmd.envs(env.iter().copied());
            cmd.arg("-c")
                .arg(format!("gpg.ssh.allowedSignersFile={}", signers.display()))
                .args(["verify-commit", &commit.to_string()])
                .env("GNUPGHOME", self.path("gnupg-verify"));
            let out = self.run(cmd, None);
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            (out.status.success(), said)
        }
    }

    impl Drop for Lab {
        fn drop(&mut self) {
            // gpg starts an agent per home; stop the ones this lab started.
            if self.gpg_used.get() {
                for home in ["gnupg", "gnupg-verify"] {
                    let _ = Command::new("gpgconf")
                        .arg("--homedir")
                        .arg(self.path(home))
                        .args(["--kill", "all"])
                        .output();
                }
            }
        }
    }

    /// Splits a commit object into the object without its `gpgsig` header and the
    /// signature.
    fn unsign(object: &str) -> (String, String) {
        let mut payload = String::new();
        let mut sig = String::new();
        let mut in_sig = false;
        let mut in_headers = true;
        for line in object.split_inclusive('\n') {
            if in_headers && line == "\n" {
                in_headers = false;
            }
            if in_headers && line.starts_with("gpgsig ") {
                in_sig = true;
                sig.push_str(&line["gpgsig ".len()..]);
            } else if in_headers && in_sig && line.starts_with(' ') {
                sig.push_str(&line[1..]);
            } else {
                in_sig = false;
                payload.push_str(line);
            }
        }
        (payload, sig)
    }

    /// Adds a `gpgsig` header carrying `sig` at the end of the headers of `payload`.
    fn resign(payload: &str, sig: &str) -> String {
        let (headers, message) = payload.split_once("\n\n").expect("a commit object");
        format!(
            "{headers}\ngpgsig {}\n\n{message}",
            sig.trim_end().replace('\n', "\n ")
        )
    }

    type Make = fn(&Lab) -> Oid;
    type Signers = fn(&Lab) -> String;

    enum Expect {
        /// Both accept; git and berth name this principal.
        Good(&'static str),
        /// Both refuse; berth's message contains this, where `{fp}` is the signing key's
        /// fingerprint and `{file}` the allowed signers file.
        Refused(&'static str),
        /// A deliberate difference: git accepts, berth refuses with this message.
        OnlyBerthRefuses(&'static str),
    }

    struct Case {
        name: &'static str,
        /// The key that made the signature, if any.
        by: Option<&'static str>,
        commit: Make,
        signers: Signers,
        expect: Expect,
    }

    fn alice_allowed(lab: &Lab) -> String {
        lab.line("alice@example.org", "", "alice")
    }

    fn alice_signs(lab: &Lab) -> Oid {
        lab.commit(Sign::Ssh("alice"), None)
    }

    fn cases() -> Vec<Case> {
        use Expect::*;
        vec![
            Case {
                name: "good: ed25519 key in allowed_signers",
                by: Some("alice"),
                commit: alice_signs,
                signers: alice_allowed,
                expect: Good("alice@example.org"),
            },
            Case {
                name: "good: ecdsa-sha2-nistp256 key",
                by: Some("bob"),
                commit: |lab| lab.commit(Sign::Ssh("bob"), None),
                signers: |lab| lab.line("bob@example.org", "", "bob"),
                expect: Good("bob@example.org"),
            },
            Case {
                name: "good: ecdsa-sha2-nistp521 key",
                by: Some("dave"),
                commit: |lab| lab.commit(Sign::Ssh("dave"), None),
                signers: |lab| lab.line("dave@example.org", "", "dave"),
                expect: Good("dave@example.org"),
            },
            Case {
                name: "good: rsa key (rsa-sha2-512)",
                by: Some("carol"),
                commit: |lab| lab.commit(Sign::Ssh("carol"), None),
                signers: |lab| lab.line("carol@example.org", "", "carol"),
                expect: Good("carol@example.org"),
            },
            Case {
                name: "good: among other signers, comments and blank lines",
                by: Some("bob"),
                commit: |lab| lab.commit(Sign::Ssh("bob"), None),
                signers: |lab| {
                    format!(
                        "# release signers\n\n{}{}  # bob's laptop\n{}",
                        lab.line("alice@example.org", "", "alice"),
                        lab.line("bob@example.org", "namespaces=\"git\"", "bob"),
                        lab.line("carol@example.org", "", "carol"),
                    )
                },
                expect: Good("bob@example.org"),
            },
            Case {
                name: "good: the principal need not be the committer's e-mail",
                by: Some("alice"),
                commit: alice_signs,
                signers: |lab| lab.line("release-manager", "", "alice"),
                expect: Good("release-manager"),
            },
            Case {
                name: "good: several principals on the line",
                by: Some("alice"),
                commit: alice_signs,
                signers: |lab| lab.line("ops@example.org,alice@example.org", "", "alice"),
                expect: Good("ops@example.org"),
            },
            Case {
                name: "good: namespaces pattern allows git",
                by: Some("alice"),
                commit: alice_signs,
                signers: |lab| lab.line("alice@example.org", "namespaces=\"file,g*\"", "alice"),
                expect: Good("alice@example.org"),
            },
            Case {
                name: "good: signed with sha256 rather than sha512",
                by: Some("alice"),
                commit: |lab| {
                    let (payload, _) = unsign(&lab.cat(lab.commit(Sign::Unsigned, None)));
                    let sig = lab.sign("alice", "git", &["-O", "hashalg=sha256"], &payload);
                    lab.write("sha256", &resign(&payload, &sig))
                },
                signers: alice_allowed,
                expect: Good("alice@example.org"),
            },
            Case {
                name: "good: key expired since, commit made while it was valid",
                by: Some("alice"),
                commit: |lab| lab.commit(Sign::Ssh("alice"), Some("2019-06-01T12:00:00Z")),
                signers: |lab| lab.line("alice@example.org", "valid-before=\"20200101Z\"", "alice"),
                expect: Good("alice@example.org"),
            },
            Case {
                name: "good: key listed twice, the first line expired",
                by: Some("alice"),
                commit: alice_signs,
                signers: |lab| {
                    format!(
                        "{}{}",
                        lab.line("old@example.org", "valid-before=\"20200101\"", "alice"),
                        lab.line("alice@example.org", "valid-after=\"20200101\"", "alice"),
                    )
                },
                expect: Good("alice@example.org"),
            },
            Case {
                name: "good: commit without a committer date is checked now",
                by: Some("alice"),
                commit: |lab| {
                    let (payload, _) = unsign(&lab.cat(lab.commit(Sign::Unsigned, None)));
                    let payload: String = payload
                        .lines()
                        .map(|l| match l.strip_prefix("committer ") {
                            Some(_) => "committer Tester <tester@example.org> 0 +0000\n".into(),
                            None => format!("{l}\n"),
                        })
                        .collect();
                    let sig = lab.sign("alice", "git", &[], &payload);
                    lab.write("dateless", &resign(&payload, &sig))
                },
                signers: |lab| lab.line("alice@example.org", "valid-after=\"20000101Z\"", "alice"),
                expect: Good("alice@example.org"),
            },
            Case {
                name: "refused: unsigned commit",
                by: None,
                commit: |lab| lab.commit(Sign::Unsigned, None),
                signers: alice_allowed,
                expect: Refused("is not signed"),
            },
            Case {
                name: "refused: GPG signature",
                by: None,
                commit: |lab| lab.commit(Sign::Gpg, None),
                signers: alice_allowed,
                expect: Refused("is signed with GPG; berth verifies SSH signatures only"),
            },
            Case {
                name: "refused: X.509 signature",
                by: None,
                commit: |lab| {
                    let (payload, _) = unsign(&lab.cat(lab.commit(Sign::Unsigned, None)));
                    let sig = "-----BEGIN SIGNED MESSAGE-----\nMIAGCSqGSIb3DQEHAqCAMIACAQEx\n-----END SIGNED MESSAGE-----\n";
                    lab.write("x509", &resign(&payload, sig))
                },
                signers: alice_allowed,
                expect: Refused("is signed with X.509 (gpgsm); berth verifies SSH signatures only"),
            },
            Case {
                name: "refused: a gpgsig header that is no signature",
                by: None,
                commit: |lab| {
                    let (payload, _) = unsign(&lab.cat(lab.commit(Sign::Unsigned, None)));
                    lab.write("not-a-signature", &resign(&payload, "trust me\n"))
                },
                signers: alice_allowed,
                expect: Refused("carries a signature that is not an SSH signature"),
            },
            Case {
                name: "refused: malformed SSH signature",
                by: None,
                commit: |lab| {
                    let (payload, _) = unsign(&lab.cat(lab.commit(Sign::Unsigned, None)));
                    let sig = "-----BEGIN SSH SIGNATURE-----\nU1NIU0lHAAAAAQAAAA==\n-----END SSH SIGNATURE-----\n";
                    lab.write("garbled", &resign(&payload, sig))
                },
                signers: alice_allowed,
                expect: Refused("SSH signature is malformed"),
            },
            Case {
                name: "refused: key not in allowed_signers",
                by: Some("eve"),
                commit: |lab| lab.commit(Sign::Ssh("eve"), None),
                signers: alice_allowed,
                expect: Refused("is signed by a key that is not in {file} ({fp})"),
            },
            Case {
                name: "refused: empty allowed_signers",
                by: Some("alice"),
                commit: alice_signs,
                signers: |_| "# nobody yet\n".into(),
                expect: Refused("is signed by a key that is not in {file} ({fp})"),
            },
            Case {
                name: "refused: tampered (message rewritten, old gpgsig kept)",
                by: Some("alice"),
                commit: |lab| {
                    let object = lab.cat(alice_signs(lab));
                    let (headers, message) = object.split_once("\n\n").unwrap();
                    let forged = format!("{headers}\n\n{}", message.replace("change", "deploy"));
                    lab.write("tampered", &forged)
                },
                signers: alice_allowed,
                expect: Refused("'s signature does not match its content (signed by {fp})"),
            },
            Case {
                name: "refused: tampered (tree swapped, old gpgsig kept)",
                by: Some("alice"),
                commit: |lab| {
                    let object = lab.cat(alice_signs(lab));
                    let mut cmd = lab.command("git");
                    cmd.args(["hash-object", "-t", "blob", "-w", "--stdin"]);
                    let blob = lab.ok(cmd, Some(b"evil\n"));
                    let mut cmd = lab.command("git");
                    cmd.arg("mktree");
                    let tree = lab.ok(
                        cmd,
                        Some(format!("100644 blob {}\tx\n", blob.trim()).as_bytes()),
                    );
                    let old = object.lines().next().unwrap().to_string();
                    let forged = object.replacen(&old, &format!("tree {}", tree.trim()), 1);
                    lab.write("tree-swapped", &forged)
                },
                signers: alice_allowed,
                expect: Refused("'s signature does not match its content"),
            },
            Case {
                name: "refused: signature taken from another commit",
                by: Some("alice"),
                commit: |lab| {
                    let (_, sig) = unsign(&lab.cat(alice_signs(lab)));
                    let (payload, _) = unsign(&lab.cat(lab.commit(Sign::Unsigned, None)));
                    lab.write("borrowed", &resign(&payload, &sig))
                },
                signers: alice_allowed,
                expect: Refused("'s signature does not match its content (signed by {fp})"),
            },
            Case {
                name: "refused: signed in the file namespace, not git",
                by: Some("alice"),
                commit: |lab| {
                    let (payload, _) = unsign(&lab.cat(lab.commit(Sign::Unsigned, None)));
                    let sig = lab.sign("alice", "file", &[], &payload);
                    lab.write("namespace-file", &resign(&payload, &sig))
                },
                signers: alice_allowed,
                expect: Refused("'s signature was made in the \"file\" namespace, not \"git\""),
            },
            Case {
                name: "refused: key allowed only for another namespace",
                by: Some("alice"),
                commit: alice_signs,
                signers: |lab| lab.line("alice@example.org", "namespaces=\"file\"", "alice"),
                expect: Refused(
                    "is signed by a key ({fp}) that {file} line 1 allows only for namespaces \"file\", not for \"git\"",
                ),
            },
            Case {
                name: "refused: namespaces pattern excludes git",
                by: Some("alice"),
                commit: alice_signs,
                signers: |lab| lab.line("alice@example.org", "namespaces=\"*,!git\"", "alice"),
                expect: Refused("allows only for namespaces \"*,!git\", not for \"git\""),
            },
            Case {
                name: "refused: key expired (valid-before in the past)",
                by: Some("alice"),
                commit: alice_signs,
                signers: |lab| lab.line("alice@example.org", "valid-before=\"20200101\"", "alice"),
                expect: Refused(
                    "is signed by an expired key ({fp}): {file} line 1 allows it until ",
                ),
            },
            Case {
                name: "refused: key expired (valid-before in UTC, with a time)",
                by: Some("alice"),
                commit: alice_signs,
                signers: |lab| {
                    lab.line(
                        "alice@example.org",
                        "valid-after=\"20190101\",valid-before=\"20200101120000Z\"",
                        "alice",
                    )
                },
                expect: Refused("allows it until 2020-01-01T12:00:00Z"),
            },
            Case {
                name: "refused: key not yet valid (valid-after in the future)",
                by: Some("alice"),
                commit: alice_signs,
                signers: |lab| lab.line("alice@example.org", "valid-after=\"20990101Z\"", "alice"),
                expect: Refused(
                    "is signed by a key that is not yet valid ({fp}): {file} line 1 allows it from 2099-01-01T00:00:00Z",
                ),
            },
            Case {
                name: "refused: signing key listed only as a cert-authority",
                by: Some("alice"),
                commit: alice_signs,
                signers: |lab| lab.line("alice@example.org", "cert-authority", "alice"),
                expect: Refused("lists only as a cert-authority ({fp})"),
            },
            Case {
                name: "berth refuses, git accepts: commit signed with an SSH certificate",
                by: None,
                commit: |lab| {
                    let cert = lab.certify("ca", "frank", "frank@example.org");
                    lab.commit(Sign::SshFile(&cert), None)
                },
                signers: |lab| lab.line("*@example.org", "cert-authority", "ca"),
                expect: OnlyBerthRefuses(
                    "is signed with an SSH certificate (ssh-ed25519-cert-v01@openssh.com); berth verifies signatures by plain keys only",
                ),
            },
        ]
    }

    /// git's `Good "git" signature for PRINCIPAL with TYPE key SHA256:…`.
    fn git_names(said: &str) -> Option<(String, String)> {
        let line = said
            .lines()
            .find_map(|l| l.strip_prefix("Good \"git\" signature for "))?;
        let (principal, rest) = line.rsplit_once(" with ")?;
        let fingerprint = rest.rsplit_once(" key ")?.1.trim().to_string();
        Some((principal.to_string(), fingerprint))
    }

    #[test]
    fn berth_and_git_verify_commit_agree() {
        let lab = Lab::new(&[
            ("alice", &["-t", "ed25519"]),
            ("bob", &["-t", "ecdsa", "-b", "256"]),
            ("carol", &["-t", "rsa", "-b", "3072"]),
            ("dave", &["-t", "ecdsa", "-b", "521"]),
            ("eve", &["-t", "ed25519"]),
            ("frank", &["-t", "ed25519"]),
            ("ca", &["-t", "ed25519"]),
        ]);
        let repo = git2::Repository::open(lab.repo()).unwrap();
        let mut failures = Vec::new();
        for (i, case) in cases().into_iter().enumerate() {
            let commit = (case.commit)(&lab);
            let file = lab.path(&format!("allowed_signers.{i}"));
            std::fs::write(&file, (case.signers)(&lab)).unwrap();
            let signers = AllowedSigners::load(&file).unwrap();
            let berth = verify_commit(&repo, commit, &signers, jiff::Timestamp::now());
            let (git_good, git_said) = lab.git_verdict(&file, commit);
            let fp = case.by.map(|k| lab.key(k).fingerprint.as_str());
            let problem = judge(&case, commit, &file, fp, &berth, git_good, &git_said);
            eprintln!(
                "{:<70} git: {:<8} berth: {}",
                case.name,
                if git_good { "good" } else { "refused" },
                match &berth {
                    Ok(v) => format!("good: {v}"),
                    Err(e) => format!("refused: {e}"),
                }
            );
            if let Some(problem) = problem {
                failures.push(format!(
                    "{}:\n  {problem}\n  berth: {}\n  git ({}): {}",
                    case.name,
                    match &berth {
                        Ok(v) => format!("good: {v}"),
                        Err(e) => format!("refused: {e}"),
                    },
                    if git_good { "good" } else { "refused" },
                    git_said.trim().replace('\n', "\n       ")
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "{} case(s) failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    /// What is wrong with the verdicts of one case, if anything.
    fn judge(
        case: &Case,
        commit: Oid,
        file: &Path,
        fp: Option<&str>,
        berth: &Result<Verified, VerifyError>,
        git_good: bool,
        git_said: &str,
    ) -> Option<String> {
        let short = &commit.to_string()[..7];
        let (want_git_good, says) = match case.expect {
            Expect::Good(principal) => {
                if !git_good {
                    return Some("git refuses a commit expected to be good".into());
                }
                let v = match berth {
                    Ok(v) => v,
                    Err(_) => return Some("berth refuses where git accepts".into()),
                };
                let Some((git_principal, git_fp)) = git_names(git_said) else {
                    return Some("git does not name the principal and key".into());
                };
                if git_principal != principal || v.principals.first() != Some(&git_principal) {
                    return Some(format!(
                        "principal: expected {principal}, git names {git_principal}, berth {:?}",
                        v.principals
                    ));
                }
                if Some(v.fingerprint.as_str()) != fp || v.fingerprint != git_fp {
                    return Some(format!(
                        "fingerprint: key {fp:?}, git {git_fp}, berth {}",
                        v.fingerprint
                    ));
                }
                return (v.commit != commit).then(|| "verified another commit".into());
            }
            Expect::Refused(says) => (false, says),
            Expect::OnlyBerthRefuses(says) => (true, says),
        };
        if git_good != want_git_good {
            return Some(format!(
                "git {} (expected {})",
                if git_good { "accepts" } else { "refuses" },
                if want_git_good { "accept" } else { "refuse" }
            ));
        }
        let message = match berth {
            Ok(_) => return Some("berth accepts a commit it must refuse".into()),
            Err(e) => e.to_string(),
        };
        let mut says = says.replace("{file}", &file.display().to_string());
        if let Some(fp) = fp {
            says = says.replace("{fp}", fp);
        }
        if !message.contains(&says) {
            return Some(format!("berth's message does not say {says:?}"));
        }
        if !message.contains(&format!("commit {short}")) {
            return Some(format!("berth's message does not name commit {short}"));
        }
        None
    }

    /// `valid-before="203001010200"` read in UTC+3 (a POSIX zone, so no zoneinfo is needed)
    /// ends at 2029-12-31T23:00:00Z, not at 02:00Z as in UTC: git (through ssh-keygen) and
    /// berth must both draw the line there.
    #[test]
    fn times_without_a_suffix_are_read_in_the_host_time_zone_like_ssh_keygen() {
        let lab = Lab::new(&[("alice", &["-t", "ed25519"])]);
        let zone = jiff::tz::TimeZone::posix("EAT-3").unwrap();
        let file = lab.path("allowed_signers");
        let text = lab.line(
            "alice@example.org",
            "valid-before=\"203001010200\"",
            "alice",
        );
        std::fs::write(&file, &text).unwrap();
        let signers = AllowedSigners::parse_in(&text, &file, &zone).unwrap();
        let repo = git2::Repository::open(lab.repo()).unwrap();
        for (date, good) in [
            ("2029-12-31T22:59:59Z", true),
            ("2029-12-31T23:00:00Z", true),
            ("2029-12-31T23:00:01Z", false),
            ("2029-12-31T23:30:00Z", false),
        ] {
            let commit = lab.commit(Sign::Ssh("alice"), Some(date));
            let (git_good, git_said) = lab.git_verdict_in(&file, commit, &[("TZ", "EAT-3")]);
            let berth = verify_commit(&repo, commit, &signers, jiff::Timestamp::now());
            assert_eq!(git_good, good, "git on a commit dated {date}: {git_said}");
            match berth {
                Ok(_) => assert!(good, "berth accepts a commit dated {date}"),
                Err(e) => {
                    assert!(!good, "berth refuses a commit dated {date}: {e}");
                    assert!(
                        e.to_string().contains(
                            "allows it until 2029-12-31T23:00:00Z, and the commit is dated"
                        ),
                        "{e}"
                    );
                }
            }
        }
    }

    #[test]
    fn an_allowed_signers_file_that_cannot_be_used_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let err = AllowedSigners::load(&missing).unwrap_err().to_string();
        assert_eq!(
            err,
            format!("cannot read the allowed signers file {}", missing.display())
        );
        let bad = dir.path().join("allowed_signers");
        std::fs::write(
            &bad,
            "# signers\nalice@example.org valid-before=\"tomorrow\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGNN4jOIN3RaCpOtlKK1V3qB/czX+5+opJeYp1hl/ZQ1\n",
        )
        .unwrap();
        let err = AllowedSigners::load(&bad).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{} line 2: invalid \"valid-before\" time \"tomorrow\"",
                bad.display()
            )
        );
    }

    #[test]
    fn a_commit_that_is_not_in_the_repository_is_an_error_naming_it() {
        let lab = Lab::new(&[("alice", &["-t", "ed25519"])]);
        lab.commit(Sign::Unsigned, None);
        let repo = git2::Repository::open(lab.repo()).unwrap();
        let signers = AllowedSigners::parse(&alice_allowed(&lab)).unwrap();
        let missing = Oid::from_str("1234567890abcdef1234567890abcdef12345678").unwrap();
        let err = verify_commit(&repo, missing, &signers, jiff::Timestamp::now()).unwrap_err();
        assert!(matches!(err, VerifyError::Repository { .. }), "{err:?}");
        assert!(
            err.to_string().starts_with("cannot read commit 1234567"),
            "{err}"
        );
    }
}

// ---- `berth lock` and `berth diff`: what CI runs on a pull request ----
mod lock_and_diff {
    use std::path::Path;

    use crate::common::registry::Registry;
    use crate::common::*;

    /// `berth <subcommand> args… REPO`.
    fn berth(args: &[&str], repo: &Path) -> Run {
        Berth::new(args[0]).args(&args[1..]).arg(repo).run()
    }

    fn oci(host: &str, versions: &str) -> Setup {
        Setup {
            versions: Some(versions.into()),
            image: Some(format!(
                "  source: oci\n  registry: {host}\n  repository: gh/svc\n"
            )),
            ..Setup::default()
        }
    }

    #[test]
    fn lock_pins_and_check_says_what_went_stale() {
        let registry = Registry::start();
        registry.push(&format!("{IMAGE_REPO}:1.0.0"), "gh/svc", "1.0.0");
        let host = Host::new("lock");
        host.write(&oci(&registry.host(), "^1"));

        let missing = berth(&["lock", "--check"], &host.repo());
        missing.assert_exit(1);
        assert!(
            missing.text().contains("berth.lock is missing"),
            "{}",
            missing.text()
        );

        berth(&["lock"], &host.repo()).assert_exit(0);
        let lock = std::fs::read_to_string(host.repo().join("berth.lock")).unwrap();
        let digest = registry.digest("gh/svc", "1.0.0");
        let line = format!(
            "    svc: {{ version: \"1.0.0\", digest: \"{digest}\", image: \"{}/gh/svc\" }}\n",
            registry.host()
        );
        assert!(
            lock.contains(&format!("  {}:\n{line}", host.partner)),
            "{lock}"
        );
        assert_stable_snapshot!("berth_lock", &lock);
        berth(&["lock", "--check"], &host.repo()).assert_exit(0);
        berth(&["validate"], &host.repo()).assert_exit(0);

        // The registry now offers a newer version in range: stale.
        registry.push(&format!("{IMAGE_REPO}:1.1.0"), "gh/svc", "1.1.0");
        let stale = berth(&["lock", "--check"], &host.repo());
        stale.assert_exit(1);
        assert!(
            stale.text().contains(&format!(
                "{}/svc: locked at 1.0.0, resolves to 1.1.0",
                host.partner
            )),
            "{}",
            stale.text()
        );
        assert_eq!(
            std::fs::read_to_string(host.repo().join("berth.lock")).unwrap(),
            lock,
            "--check changes nothing"
        );

        // A manifest change: the script is no longer declared.
        berth(&["lock"], &host.repo()).assert_exit(0);
        host.write(&Setup {
            opted_in: false,
            ..oci(&registry.host(), "^1")
        });
        let gone = berth(&["lock", "--check"], &host.repo());
        gone.assert_exit(1);
        assert!(
            gone.text()
                .contains("locked at 1.1.0 but no longer declared"),
            "{}",
            gone.text()
        );
    }

    #[test]
    fn lock_refuses_to_write_what_it_cannot_resolve() {
        let host = Host::new("lockdown");
        host.write(&oci(&format!("127.0.0.1:{}", free_port()), "^1"));
        let out = berth(&["lock"], &host.repo());
        out.assert_exit(3);
        assert!(
            out.text().contains("berth.lock was not written"),
            "{}",
            out.text()
        );
        assert!(!host.repo().join("berth.lock").exists());
    }

    #[test]
    fn diff_shows_what_each_partner_will_change() {
        let host = Host::new("diff");
        // The manifests live in a subdirectory of the git repository, as in many fleets.
        let top = host.dir.path();
        host.write(&Setup {
            versions: Some("=1.0.0".into()),
            ..Setup::default()
        });
        git(top, &["init", "-q", "-b", "main"]);
        git(top, &["add", "repo"]);
        git(top, &["commit", "-q", "-m", "base"]);

        let unchanged = berth(&["diff", "--base", "HEAD", "--exit-code"], &host.repo());
        unchanged.assert_exit(0);
        assert!(
            unchanged.text().contains("0 partner(s) change"),
            "{}",
            unchanged.text()
        );

        host.write(&Setup {
            versions: Some("^1".into()),
            env: vec![("MODE".into(), "fast".into())],
            windows: Some("  - days: [sun]\n    start: \"01:00\"\n    end: \"03:00\"\n".into()),
            idle: false,
            ..Setup::default()
        });
        let out = berth(&["diff", "--base", "HEAD", "--exit-code"], &host.repo());
        out.assert_exit(2);
        let t = out.text();
        assert!(t.contains(&format!("{}:\n", host.partner)), "{t}");
        assert!(t.contains("~ svc 1.0.0 -> 1.1.0"), "{t}");
        assert!(t.contains("~ svc: container env changed (replaced)"), "{t}");
        assert!(
            t.contains(
                "~ windows: UTC; mon,tue,wed,thu,fri,sat,sun 00:00-24:00 -> UTC; sun 01:00-03:00"
            ),
            "{t}"
        );
        assert!(t.contains("~ idle gate: http://127.0.0.1:"), "{t}");
        assert_stable_snapshot!("diff_text", out.stdout());

        let md = berth(
            &["diff", "--base", "HEAD", "--format", "markdown"],
            &host.repo(),
        );
        md.assert_exit(0);
        assert!(
            md.text()
                .contains(&format!("| `{}` | ~ svc 1.0.0 -> 1.1.0 |", host.partner)),
            "{}",
            md.text()
        );
        assert_stable_snapshot!("diff_markdown", md.stdout());

        let json = berth(
            &["diff", "--base", "HEAD", "--format", "json"],
            &host.repo(),
        );
        let v = json.json();
        let changes = &v["partners"][0]["changes"];
        assert!(
            changes
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["kind"] == "version" && c["from"] == "1.0.0" && c["to"] == "1.1.0"),
            "{v:#}"
        );
        assert_stable_snapshot!("diff_json", json.stdout());

        // Between two commits; a script that is dropped.
        git(top, &["add", "repo"]);
        git(top, &["commit", "-q", "-m", "bump"]);
        host.write(&Setup {
            opted_in: false,
            ..Setup::default()
        });
        git(top, &["add", "repo"]);
        git(top, &["commit", "-q", "-m", "drop"]);
        let between = berth(
            &["diff", "--base", "HEAD~1", "--head", "HEAD"],
            &host.repo(),
        );
        between.assert_exit(0);
        assert!(between.text().contains("- svc 1.1.0"), "{}", between.text());
        assert_stable_snapshot!("diff_text_dropped", between.stdout());

        // A head that does not validate fails the check with path:line:col.
        std::fs::write(
            host.repo().join("scripts/svc.yaml"),
            "apiVersion: berth/v1\nkind: Script\nname: svc\nbogus: 1\n",
        )
        .unwrap();
        let invalid = berth(&["diff", "--base", "HEAD"], &host.repo());
        invalid.assert_exit(1);
        assert!(
            invalid.text().contains("scripts/svc.yaml:4:1"),
            "{}",
            invalid.text()
        );
    }
}

// ---- The CI examples for manifest repos ----
mod ci_examples {
    /// The shipped workflows parse as YAML and run the three checks the README promises.
    #[test]
    fn workflows_run_validate_lock_check_and_diff() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ci");
        for (file, validate) in [
            ("github-actions.yml", "berth validate --format github"),
            ("gitlab-ci.yml", "berth validate"),
        ] {
            let text = std::fs::read_to_string(dir.join(file)).unwrap();
            let parsed: Result<serde_json::Value, _> = berth::manifest::parse(&text);
            assert!(parsed.is_ok(), "{file}: {:?}", parsed.err());
            for needle in [
                validate,
                "berth lock --check",
                "berth diff --base",
                "--format markdown",
            ] {
                assert!(text.contains(needle), "{file} lacks `{needle}`");
            }
        }
    }
}
