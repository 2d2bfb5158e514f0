//! Commit signature verification (SSH signatures, as `git verify-commit` checks them with
//! `gpg.ssh.allowedSignersFile`).
//!
//! With `verify.allowed_signers` the agent applies a head commit only when it carries an
//! SSH signature (`gpg.format=ssh`) by a key that the OpenSSH `allowed_signers` file
//! allows, and [`verify_commit`] gives the verdict `git verify-commit` gives with that
//! file as `gpg.ssh.allowedSignersFile` — in pure Rust, without `ssh-keygen`:
//!
//! - the signature is an SSHSIG over the commit object without its `gpgsig` header, in the
//!   `git` namespace, with SHA-256 or SHA-512;
//! - the signing key must be on a plain (not `cert-authority`) line of the file; like
//!   `ssh-keygen -Y find-principals` followed by `-Y verify -I principal`, the first such
//!   line valid at the commit's time names the principals, and one of them must be allowed,
//!   on a line with that key, to sign in the `git` namespace (`namespaces="…"` patterns)
//!   at that time (`valid-after="…"`, `valid-before="…"`);
//! - the time is the commit's committer date, as git passes it with `-Overify-time`: a key
//!   that has since expired still verifies the commits made while it was valid (git's
//!   graceful key rotation). Only a commit without a committer date is checked at `now`.
//!   The committer date is written by the signer, so retire a leaked key by removing its
//!   line, not with `valid-before`;
//! - the committer's e-mail need not match a principal: git does not require it either.
//!
//! Certificates are the one deliberate difference: berth verifies signatures by plain keys
//! only. `cert-authority` lines (and lines listing a certificate as the key) are accepted in
//! the file, so one file can serve git and berth, but they never allow anything here, and
//! a commit signed with an SSH certificate is refused with a message that says so (git
//! would accept it under a matching `cert-authority` line).

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use git2::{ErrorCode, Oid, Repository};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use ssh_key::{Algorithm, HashAlg, PublicKey, SshSig};

/// The namespace git signs commits and tags in (`ssh-keygen -Y sign -n git`).
pub const GIT_NAMESPACE: &str = "git";

/// Why a commit is refused, or why the allowed signers file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read the allowed signers file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} line {line}: {reason}", path.display())]
    Malformed {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("cannot read commit {commit}")]
    Repository {
        commit: String,
        #[source]
        source: git2::Error,
    },
    #[error("commit {commit} is not signed")]
    Unsigned { commit: String },
    #[error("commit {commit} is signed with {format}; berth verifies SSH signatures only")]
    NotSsh {
        commit: String,
        format: &'static str,
    },
    #[error(
        "commit {commit} carries a signature that is not an SSH signature; berth verifies SSH signatures only"
    )]
    Unrecognised { commit: String },
    #[error("commit {commit}'s SSH signature is malformed")]
    MalformedSignature {
        commit: String,
        #[source]
        source: ssh_key::Error,
    },
    #[error(
        "commit {commit} is signed with an SSH certificate ({algorithm}); berth verifies signatures by plain keys only and ignores cert-authority lines"
    )]
    Certificate { commit: String, algorithm: String },
    #[error(
        "commit {commit} is signed with a {algorithm} key ({fingerprint}), which berth cannot verify"
    )]
    UnsupportedKey {
        commit: String,
        algorithm: String,
        fingerprint: String,
    },
    #[error(
        "commit {commit}'s signature does not match its content (signed by {fingerprint}): the commit was changed after it was signed, or the signature was made for something else"
    )]
    BadSignature {
        commit: String,
        fingerprint: String,
        #[source]
        source: ssh_key::Error,
    },
    #[error(
        "commit {commit}'s signature was made in the \"{namespace}\" namespace, not \"git\": it is not a commit signature"
    )]
    WrongNamespace { commit: String, namespace: String },
    #[error("commit {commit} is signed by a key that is not in {} ({fingerprint})", path.display())]
    UnknownKey {
        commit: String,
        fingerprint: String,
        path: PathBuf,
    },
    #[error(
        "commit {commit} is signed by a key that {} line {line} lists only as a cert-authority ({fingerprint}); berth needs the signing key itself",
        path.display()
    )]
    CertAuthorityOnly {
        commit: String,
        fingerprint: String,
        path: PathBuf,
        line: usize,
    },
    #[error(
        "commit {commit} is signed by an expired key ({fingerprint}): {} line {line} allows it until {valid_before}, and the commit is dated {signed_at}",
        path.display()
    )]
    KeyExpired {
        commit: String,
        fingerprint: String,
        path: PathBuf,
        line: usize,
        valid_before: Timestamp,
        signed_at: Timestamp,
    },
    #[error(
        "commit {commit} is signed by a key that is not yet valid ({fingerprint}): {} line {line} allows it from {valid_after}, and the commit is dated {signed_at}",
        path.display()
    )]
    KeyNotYetValid {
        commit: String,
        fingerprint: String,
        path: PathBuf,
        line: usize,
        valid_after: Timestamp,
        signed_at: Timestamp,
    },
    #[error(
        "commit {commit} is signed by a key ({fingerprint}) that {} line {line} allows only for namespaces \"{namespaces}\", not for \"git\"",
        path.display()
    )]
    NamespaceNotAllowed {
        commit: String,
        fingerprint: String,
        path: PathBuf,
        line: usize,
        namespaces: String,
    },
    #[error(
        "commit {commit} is signed by a key ({fingerprint}) that {} line {line} lists, but none of that line's principals may sign commits with it",
        path.display()
    )]
    PrincipalNotAllowed {
        commit: String,
        fingerprint: String,
        path: PathBuf,
        line: usize,
    },
}

/// A commit whose signature is good and by an allowed key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub commit: Oid,
    /// The principals the signature verified for (as `git verify-commit` names them in
    /// `Good "git" signature for PRINCIPAL`).
    pub principals: Vec<String>,
    /// The signing key's fingerprint, `SHA256:…` as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// The signing key's algorithm, e.g. `ssh-ed25519`.
    pub algorithm: String,
    /// The allowed signers line that allowed the key.
    pub line: usize,
    /// The time the key was checked at: the commit's committer date.
    pub signed_at: Timestamp,
}

impl fmt::Display for Verified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "commit {} is signed by {} ({} key {})",
            short(self.commit),
            self.principals.join(", "),
            self.algorithm,
            self.fingerprint
        )
    }
}

/// One key line of an allowed signers file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedSigner {
    /// 1-based line number in the file.
    pub line: usize,
    /// The comma-separated principals (patterns), as written.
    pub principals: String,
    /// `cert-authority`: berth never accepts a signature because of such a line.
    pub cert_authority: bool,
    /// `namespaces="…"`: the pattern list of namespaces the key may sign in.
    pub namespaces: Option<String>,
    /// `valid-after="…"`.
    pub valid_after: Option<Timestamp>,
    /// `valid-before="…"`.
    pub valid_before: Option<Timestamp>,
    pub key: PublicKey,
}

/// An OpenSSH allowed signers file (`ssh-keygen(1)`, ALLOWED SIGNERS):
/// `principals [options] keytype base64-key [comment]` per line, `#` comments and blank
/// lines ignored. Times without a `Z`/`UTC` suffix are in the host's local time zone, as
/// `ssh-keygen` reads them.
#[derive(Debug, Clone)]
pub struct AllowedSigners {
    path: PathBuf,
    entries: Vec<AllowedSigner>,
    ignored: Vec<(usize, String)>,
}

impl AllowedSigners {
    /// Reads and parses `path`; a malformed line is an error naming the file and line.
    pub fn load(path: &Path) -> Result<Self, VerifyError> {
        let text = std::fs::read_to_string(path).map_err(|source| VerifyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let signers = Self::parse_in(&text, path, &local_time_zone())?;
        for (line, why) in &signers.ignored {
            tracing::warn!("{} line {line}: {why}", path.display());
        }
        for e in signers.entries.iter().filter(|e| e.cert_authority) {
            tracing::warn!(
                "{} line {}: cert-authority keys are ignored; berth verifies signatures by plain keys only",
                path.display(),
                e.line
            );
        }
        if signers.entries.iter().all(|e| e.cert_authority) {
            tracing::warn!(
                "{} allows no key: every commit will be refused",
                path.display()
            );
        }
        Ok(signers)
    }

    /// Parses the text of an allowed signers file; errors name it `allowed_signers`.
    pub fn parse(text: &str) -> Result<Self, VerifyError> {
        Self::parse_in(text, Path::new("allowed_signers"), &local_time_zone())
    }

    /// Parses `text` as the file `path`, reading times without a suffix in `tz`.
    pub fn parse_in(text: &str, path: &Path, tz: &TimeZone) -> Result<Self, VerifyError> {
        let mut entries = Vec::new();
        let mut ignored = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let malformed = |reason: String| VerifyError::Malformed {
                path: path.to_path_buf(),
                line,
                reason,
            };
            match parse_line(raw, tz).map_err(malformed)? {
                Line::Blank => {}
                Line::Certificate(key_type) => ignored.push((
                    line,
                    format!(
                        "the key is an SSH certificate ({key_type}), which berth does not verify; this line is ignored"
                    ),
                )),
                Line::Key(mut entry) => {
                    entry.line = line;
                    entries.push(*entry);
                }
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            entries,
            ignored,
        })
    }

    /// The file the signers were read from (`allowed_signers` for [`AllowedSigners::parse`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The key lines, in file order (`cert-authority` lines included).
    pub fn entries(&self) -> &[AllowedSigner] {
        &self.entries
    }

    /// Lines that are valid for OpenSSH but that berth ignores, with why.
    pub fn ignored(&self) -> &[(usize, String)] {
        &self.ignored
    }
}

/// Verifies `commit`'s SSH signature against `signers`, giving the verdict of
/// `git -c gpg.ssh.allowedSignersFile=FILE verify-commit COMMIT`.
///
/// Key validity is checked at the commit's committer date, as git does; `now` is used only
/// for a commit that has none.
pub fn verify_commit(
    repo: &Repository,
    commit: Oid,
    signers: &AllowedSigners,
    now: Timestamp,
) -> Result<Verified, VerifyError> {
    let id = short(commit);
    let (signature, signed) = match repo.extract_signature(&commit, None) {
        Ok(found) => found,
        Err(e) if e.code() == ErrorCode::NotFound => {
            // Tell "not signed" from "no such commit".
            return match repo.find_commit(commit) {
                Ok(_) => Err(VerifyError::Unsigned { commit: id }),
                Err(source) => Err(VerifyError::Repository { commit: id, source }),
            };
        }
        Err(source) => return Err(VerifyError::Repository { commit: id, source }),
    };
    let armored = String::from_utf8_lossy(&signature);
    let armored = armored.trim_start();
    if let Some(format) = foreign_format(armored) {
        return Err(VerifyError::NotSsh { commit: id, format });
    }
    if !armored.starts_with("-----BEGIN SSH SIGNATURE-----") {
        return Err(VerifyError::Unrecognised { commit: id });
    }
    if let Some(algorithm) = peek_key_algorithm(armored).filter(|a| is_certificate_type(a)) {
        return Err(VerifyError::Certificate {
            commit: id,
            algorithm,
        });
    }
    let sig =
        SshSig::from_pem(armored.as_bytes()).map_err(|source| VerifyError::MalformedSignature {
            commit: id.clone(),
            source,
        })?;
    let key = PublicKey::from(sig.public_key().clone());
    let algorithm = key.algorithm().as_str().to_string();
    let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
    if is_certificate_type(&algorithm) {
        return Err(VerifyError::Certificate {
            commit: id,
            algorithm,
        });
    }
    if !verifiable(&key.algorithm()) {
        return Err(VerifyError::UnsupportedKey {
            commit: id,
            algorithm,
            fingerprint,
        });
    }
    // Integrity first, in the signature's own namespace: a signature that does not match
    // is reported as such whoever made it.
    if let Err(source) = key.verify(sig.namespace(), &signed, &sig) {
        return Err(VerifyError::BadSignature {
            commit: id,
            fingerprint,
            source,
        });
    }
    if sig.namespace() != GIT_NAMESPACE {
        return Err(VerifyError::WrongNamespace {
            commit: id,
            namespace: sig.namespace().to_string(),
        });
    }
    let signed_at = committer_time(&signed).unwrap_or(now);
    allow(signers, &key, signed_at)
        .map_err(|refusal| refusal.into_error(id, fingerprint.clone(), signers))
        .map(|(line, principals)| Verified {
            commit,
            principals,
            fingerprint,
            algorithm,
            line,
            signed_at,
        })
}

/// Why the allowed signers refuse a key, before it is dressed as a [`VerifyError`].
enum Refusal {
    Unknown,
    CertAuthorityOnly(usize),
    Expired(usize, Timestamp, Timestamp),
    NotYetValid(usize, Timestamp, Timestamp),
    Namespace(usize, String),
    Principal(usize),
}

impl Refusal {
    fn into_error(
        self,
        commit: String,
        fingerprint: String,
        signers: &AllowedSigners,
    ) -> VerifyError {
        let path = signers.path.clone();
        match self {
            Refusal::Unknown => VerifyError::UnknownKey {
                commit,
                fingerprint,
                path,
            },
            Refusal::CertAuthorityOnly(line) => VerifyError::CertAuthorityOnly {
                commit,
                fingerprint,
                path,
                line,
            },
            Refusal::Expired(line, valid_before, signed_at) => VerifyError::KeyExpired {
                commit,
                fingerprint,
                path,
                line,
                valid_before,
                signed_at,
            },
            Refusal::NotYetValid(line, valid_after, signed_at) => VerifyError::KeyNotYetValid {
                commit,
                fingerprint,
                path,
                line,
                valid_after,
                signed_at,
            },
            Refusal::Namespace(line, namespaces) => VerifyError::NamespaceNotAllowed {
                commit,
                fingerprint,
                path,
                line,
                namespaces,
            },
            Refusal::Principal(line) => VerifyError::PrincipalNotAllowed {
                commit,
                fingerprint,
                path,
                line,
            },
        }
    }
}

/// The allowed signers' decision on `key` at `at`, as `ssh-keygen -Y find-principals` and
/// then `-Y verify -n git -I PRINCIPAL` for each principal found reach it: the allowing
/// line and the principals that verified.
fn allow(
    signers: &AllowedSigners,
    key: &PublicKey,
    at: Timestamp,
) -> Result<(usize, Vec<String>), Refusal> {
    let same_key = |e: &&AllowedSigner| e.key.key_data() == key.key_data();
    // A cert-authority line never matches a signature by a plain key.
    let candidates: Vec<&AllowedSigner> = signers
        .entries
        .iter()
        .filter(same_key)
        .filter(|e| !e.cert_authority)
        .collect();
    let Some(first) = candidates.first() else {
        return Err(match signers.entries.iter().find(same_key) {
            Some(ca) => Refusal::CertAuthorityOnly(ca.line),
            None => Refusal::Unknown,
        });
    };
    // find-principals: the first line with the key that is valid at `at`.
    let Some(found) = candidates.iter().find(|e| time_refusal(e, at).is_none()) else {
        return Err(time_refusal(first, at).expect("no candidate is valid"));
    };
    // verify -I: some line that lists the principal, with the key, the namespace and the time.
    let mut verified = Vec::new();
    let mut line = None;
    for principal in principal_list(&found.principals) {
        let allowing = candidates.iter().find(|e| {
            match_pattern_list(principal, &e.principals) == PatternMatch::Yes
                && namespace_allowed(e)
                && time_refusal(e, at).is_none()
        });
        if let Some(e) = allowing {
            line.get_or_insert(e.line);
            verified.push(principal.to_string());
        }
    }
    match line {
        Some(line) => Ok((line, verified)),
        None if !namespace_allowed(found) => Err(Refusal::Namespace(
            found.line,
            found.namespaces.clone().unwrap_or_default(),
        )),
        None => Err(Refusal::Principal(found.line)),
    }
}

fn namespace_allowed(e: &AllowedSigner) -> bool {
    e.namespaces
        .as_deref()
        .is_none_or(|ns| match_pattern_list(GIT_NAMESPACE, ns) == PatternMatch::Yes)
}

fn time_refusal(e: &AllowedSigner, at: Timestamp) -> Option<Refusal> {
    if let Some(after) = e.valid_after
        && at < after
    {
        return Some(Refusal::NotYetValid(e.line, after, at));
    }
    if let Some(before) = e.valid_before
        && at > before
    {
        return Some(Refusal::Expired(e.line, before, at));
    }
    None
}

/// The principals `ssh-keygen -Y find-principals` prints for a line, one per line: split
/// at commas, stopping at an empty one.
fn principal_list(principals: &str) -> impl Iterator<Item = &str> {
    principals.split(',').take_while(|p| !p.is_empty())
}

/// The format of a signature git would hand to gpg or gpgsm rather than ssh-keygen.
fn foreign_format(armored: &str) -> Option<&'static str> {
    if armored.starts_with("-----BEGIN PGP SIGNATURE-----")
        || armored.starts_with("-----BEGIN PGP MESSAGE-----")
    {
        Some("GPG")
    } else if armored.starts_with("-----BEGIN SIGNED MESSAGE-----") {
        Some("X.509 (gpgsm)")
    } else {
        None
    }
}

fn is_certificate_type(algorithm: &str) -> bool {
    algorithm.ends_with("-cert-v01@openssh.com")
}

/// Whether this build can check signatures by keys of `algorithm`.
fn verifiable(algorithm: &Algorithm) -> bool {
    matches!(
        algorithm,
        Algorithm::Ed25519
            | Algorithm::Ecdsa { .. }
            | Algorithm::Rsa { .. }
            | Algorithm::SkEd25519
            | Algorithm::SkEcdsaSha2NistP256
    )
}

/// The algorithm name of the public key inside an armored SSHSIG, read without decoding
/// the key (which fails for certificates).
fn peek_key_algorithm(armored: &str) -> Option<String> {
    let body: String = armored
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("-----BEGIN SSH SIGNATURE-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END SSH SIGNATURE-----"))
        .collect();
    let blob = base64::engine::general_purpose::STANDARD
        .decode(body)
        .ok()?;
    let rest = blob.strip_prefix(b"SSHSIG")?.get(4..)?; // magic, version
    let (key, _) = ssh_string(rest)?;
    let (name, _) = ssh_string(key)?;
    String::from_utf8(name.to_vec()).ok()
}

/// An SSH wire-format `string`: a big-endian u32 length and that many bytes.
fn ssh_string(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_be_bytes(data.get(..4)?.try_into().ok()?) as usize;
    let rest = data.get(4..)?;
    Some((rest.get(..len)?, rest.get(len..)?))
}

/// The committer date of a commit object (without its signature), as git reads it for
/// `-Overify-time`; none when it is missing or zero.
fn committer_time(object: &[u8]) -> Option<Timestamp> {
    let header_end = object
        .windows(2)
        .position(|w| w == b"\n\n")
        .map_or(object.len(), |i| i + 1);
    let ident = object[..header_end]
        .split(|&b| b == b'\n')
        .find_map(|l| l.strip_prefix(b"committer "))?;
    let after = &ident[ident.iter().rposition(|&b| b == b'>')? + 1..];
    let digits: Vec<u8> = after
        .iter()
        .skip_while(|&&b| b == b' ')
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    let seconds: i64 = std::str::from_utf8(&digits).ok()?.parse().ok()?;
    if seconds == 0 {
        return None;
    }
    Timestamp::from_second(seconds).ok()
}

fn short(commit: Oid) -> String {
    let mut s = commit.to_string();
    s.truncate(7);
    s
}

// ---- The allowed signers file format (OpenSSH sshsig.c) ----

enum Line {
    Blank,
    Key(Box<AllowedSigner>),
    Certificate(String),
}

const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

fn is_key_type(token: &str) -> bool {
    KEY_TYPES.contains(&token) || is_certificate_type(token)
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Splits off the next blank-delimited token; a token starting with `"` runs to the
/// closing quote.
fn next_token(s: &str) -> Result<(&str, &str), String> {
    let s = s.trim_start_matches(is_blank);
    if let Some(quoted) = s.strip_prefix('"') {
        let end = quoted
            .find('"')
            .ok_or("the quoted principals have no closing quote")?;
        return Ok((&quoted[..end], &quoted[end + 1..]));
    }
    let end = s.find(is_blank).unwrap_or(s.len());
    Ok((&s[..end], &s[end..]))
}

/// The options field: up to the first blank outside double quotes.
fn options_token(s: &str) -> Result<(&str, &str), String> {
    let s = s.trim_start_matches(is_blank);
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if is_blank(c) && !quoted => return Ok((&s[..i], &s[i..])),
            _ => {}
        }
    }
    if quoted {
        return Err("an option's quoted value has no closing quote".into());
    }
    Ok((s, ""))
}

fn parse_line(raw: &str, tz: &TimeZone) -> Result<Line, String> {
    let rest = raw.trim_start_matches(is_blank);
    if rest.is_empty() || rest.starts_with('#') {
        return Ok(Line::Blank);
    }
    let (principals, rest) = next_token(rest)?;
    if principals.is_empty() {
        return Err("no principals".into());
    }
    let (token, _) = next_token(rest)?;
    if token.is_empty() {
        return Err("no key after the principals".into());
    }
    let (options, rest) = if is_key_type(token) {
        (Options::default(), rest)
    } else {
        let (text, rest) = options_token(rest)?;
        (parse_options(text, tz)?, rest)
    };
    let (key_type, rest) = next_token(rest)?;
    if key_type.is_empty() {
        return Err("no key after the options".into());
    }
    let (blob, _comment) = next_token(rest)?;
    if !is_key_type(key_type) {
        return Err(format!("unknown key type \"{key_type}\""));
    }
    if blob.is_empty() {
        return Err(format!("the {key_type} key has no data"));
    }
    if is_certificate_type(key_type) {
        return Ok(Line::Certificate(key_type.to_string()));
    }
    let key = PublicKey::from_openssh(&format!("{key_type} {blob}"))
        .map_err(|e| format!("invalid {key_type} key: {e}"))?;
    Ok(Line::Key(Box::new(AllowedSigner {
        line: 0,
        principals: principals.to_string(),
        cert_authority: options.cert_authority,
        namespaces: options.namespaces,
        valid_after: options.valid_after,
        valid_before: options.valid_before,
        key,
    })))
}

#[derive(Default)]
struct Options {
    cert_authority: bool,
    namespaces: Option<String>,
    valid_after: Option<Timestamp>,
    valid_before: Option<Timestamp>,
}

/// `sshsigopt_parse`: comma-separated, names case-insensitive, values double-quoted.
fn parse_options(mut opts: &str, tz: &TimeZone) -> Result<Options, String> {
    let mut out = Options::default();
    while !opts.is_empty() {
        let name_end = opts.find(['=', ',']).unwrap_or(opts.len());
        let name = &opts[..name_end];
        let has_value = opts[name_end..].starts_with('=');
        opts = &opts[name_end..];
        match (name.to_ascii_lowercase().as_str(), has_value) {
            ("cert-authority", false) => out.cert_authority = true,
            ("namespaces", true) => {
                let (value, rest) = dequote(&opts[1..], name)?;
                if out.namespaces.replace(value).is_some() {
                    return Err("more than one \"namespaces\" option".into());
                }
                opts = rest;
            }
            (which @ ("valid-after" | "valid-before"), true) => {
                let (value, rest) = dequote(&opts[1..], name)?;
                let time = parse_absolute_time(&value, tz)
                    .ok_or_else(|| format!("invalid \"{which}\" time \"{value}\""))?;
                let slot = if which == "valid-after" {
                    &mut out.valid_after
                } else {
                    &mut out.valid_before
                };
                if slot.replace(time).is_some() {
                    return Err(format!("more than one \"{which}\" option"));
                }
                opts = rest;
            }
            _ => return Err(format!("unknown option \"{name}\"")),
        }
        if opts.is_empty() {
            break;
        }
        opts = opts
            .strip_prefix(',')
            .ok_or_else(|| format!("unexpected text after the \"{name}\" option"))?;
        if opts.is_empty() {
            return Err("the options end with a comma".into());
        }
    }
    if let (Some(after), Some(before)) = (out.valid_after, out.valid_before)
        && before <= after
    {
        return Err("\"valid-before\" is not after \"valid-after\"".into());
    }
    Ok(out)
}

/// A double-quoted option value (`\"` inside stands for `"`) and what follows it.
fn dequote<'a>(s: &'a str, name: &str) -> Result<(String, &'a str), String> {
    let Some(body) = s.strip_prefix('"') else {
        return Err(format!("the value of \"{name}\" must be in double quotes"));
    };
    let mut value = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' if body[i + 1..].starts_with('"') => {
                value.push('"');
                chars.next();
            }
            '"' => return Ok((value, &body[i + 1..])),
            c => value.push(c),
        }
    }
    Err(format!("the value of \"{name}\" has no closing quote"))
}

/// `parse_absolute_time`: `YYYYMMDD`, `YYYYMMDDHHMM` or `YYYYMMDDHHMMSS`, in `tz` unless
/// suffixed with `Z` or `UTC`; it must be after the epoch.
fn parse_absolute_time(s: &str, tz: &TimeZone) -> Option<Timestamp> {
    let (digits, utc) = if let Some(d) = s.strip_suffix(['Z', 'z']).filter(|d| !d.is_empty()) {
        (d, true)
    } else if let Some(at) = s
        .len()
        .checked_sub(3)
        // The cut may fall inside a multi-byte character: then there is no `UTC` suffix.
        .filter(|&at| at > 0 && s.is_char_boundary(at) && s[at..].eq_ignore_ascii_case("utc"))
    {
        (&s[..at], true)
    } else {
        (s, false)
    };
    if !matches!(digits.len(), 8 | 12 | 14) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let field = |from: usize, to: usize| -> Option<i8> {
        match digits.get(from..to) {
            Some(f) => f.parse().ok(),
            None => Some(0),
        }
    };
    let civil = jiff::civil::DateTime::new(
        digits[..4].parse().ok()?,
        field(4, 6)?,
        field(6, 8)?,
        field(8, 10)?,
        field(10, 12)?,
        field(12, 14)?,
        0,
    )
    .ok()?;
    let zone = if utc { TimeZone::UTC } else { tz.clone() };
    let time = civil.to_zoned(zone).ok()?.timestamp();
    (time > Timestamp::UNIX_EPOCH).then_some(time)
}

/// The host's time zone as the C library finds it (`TZ`, else `/etc/localtime`, else
/// UTC): `ssh-keygen` reads allowed-signer times without a suffix in it.
pub fn local_time_zone() -> TimeZone {
    match std::env::var("TZ") {
        Ok(tz) => {
            let name = tz.strip_prefix(':').unwrap_or(&tz);
            if name.is_empty() {
                TimeZone::UTC
            } else if name.starts_with('/') {
                std::fs::read(name)
                    .ok()
                    .and_then(|data| TimeZone::tzif(name, &data).ok())
                    .unwrap_or(TimeZone::UTC)
            } else {
                TimeZone::get(name)
                    .or_else(|_| TimeZone::posix(name))
                    .unwrap_or(TimeZone::UTC)
            }
        }
        Err(_) => std::fs::read("/etc/localtime")
            .ok()
            .and_then(|data| TimeZone::tzif("Local", &data).ok())
            .unwrap_or(TimeZone::UTC),
    }
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum PatternMatch {
    No,
    Yes,
    Negated,
}

/// OpenSSH `match_pattern_list`: comma-separated `*`/`?` patterns, `!` negating one; a
/// negated match wins.
fn match_pattern_list(s: &str, list: &str) -> PatternMatch {
    let mut found = PatternMatch::No;
    for pattern in list.split(',') {
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pattern),
        };
        if match_pattern(s.as_bytes(), pattern.as_bytes()) {
            if negated {
                return PatternMatch::Negated;
            }
            found = PatternMatch::Yes;
        }
    }
    found
}

/// OpenSSH `match_pattern`: `*` any run, `?` any one byte.
fn match_pattern(s: &[u8], p: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| match_pattern(&s[i..], rest)),
        Some((b'?', rest)) => !s.is_empty() && match_pattern(&s[1..], rest),
        Some((c, rest)) => s.first() == Some(c) && match_pattern(&s[1..], rest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGNN4jOIN3RaCpOtlKK1V3qB/czX+5+opJeYp1hl/ZQ1";
    const ECDSA: &str = "ecdsa-sha2-nistp521 AAAAE2VjZHNhLXNoYTItbmlzdHA1MjEAAAAIbmlzdHA1MjEAAACFBAGcmdEAmn4/8bTBIbGaEaN35ZR18g2PzoYwbYxkKzHpB2nO/EukOAWOyWQxI9yPoKJkRIIwaxOO+SOwQHY1qVUWjAAfTuK2DjS9m1HZSN5NBLq4j1aNPHrTFifmocMhBD17WETSzwbvwahEgmdUAkasCFXAqr6DjGEp4s5ZvMFZPFy5tA==";

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn parse(text: &str) -> Result<AllowedSigners, VerifyError> {
        AllowedSigners::parse_in(
            text,
            Path::new("/etc/berth/allowed_signers"),
            &TimeZone::UTC,
        )
    }

    #[test]
    fn a_time_ending_in_a_multibyte_character_is_an_error_not_a_panic() {
        for time in ["éaa", "aéa", "20261201é", "€UT"] {
            let text = format!("a valid-before=\"{time}\" {ED25519}\n");
            assert!(parse(&text).is_err(), "{time}");
        }
    }

    /// What a good line parses to.
    #[derive(Debug, PartialEq)]
    struct Parsed<'a> {
        principals: &'a str,
        ca: bool,
        namespaces: Option<&'a str>,
        after: Option<Timestamp>,
        before: Option<Timestamp>,
        algorithm: &'a str,
    }

    const PLAIN: Parsed<'static> = Parsed {
        principals: "alice@example.org",
        ca: false,
        namespaces: None,
        after: None,
        before: None,
        algorithm: "ssh-ed25519",
    };

    #[test]
    fn good_lines() {
        let cases: Vec<(String, Parsed<'static>)> = vec![
            (format!("alice@example.org {ED25519}"), PLAIN),
            (format!("alice@example.org {ED25519} alice's laptop"), PLAIN),
            (format!("  alice@example.org\t{ED25519}  "), PLAIN),
            (format!("\"alice@example.org\" {ED25519}"), PLAIN),
            (
                format!("alice@example.org,*@ops.example.org {ED25519}"),
                Parsed {
                    principals: "alice@example.org,*@ops.example.org",
                    ..PLAIN
                },
            ),
            (
                format!("\"Alice Smith\" {ED25519}"),
                Parsed {
                    principals: "Alice Smith",
                    ..PLAIN
                },
            ),
            (
                format!("alice@example.org namespaces=\"git\" {ED25519}"),
                Parsed {
                    namespaces: Some("git"),
                    ..PLAIN
                },
            ),
            (
                format!("alice@example.org NAMESPACES=\"git,file\" {ED25519}"),
                Parsed {
                    namespaces: Some("git,file"),
                    ..PLAIN
                },
            ),
            (
                format!("alice@example.org namespaces=\"a b\",cert-authority {ED25519}"),
                Parsed {
                    namespaces: Some("a b"),
                    ca: true,
                    ..PLAIN
                },
            ),
            (
                format!("alice@example.org cert-authority {ED25519}"),
                Parsed { ca: true, ..PLAIN },
            ),
            (
                format!(
                    "alice@example.org valid-after=\"20240101\",valid-before=\"20250630123456\" {ED25519}"
                ),
                Parsed {
                    after: Some(ts("2024-01-01T00:00:00Z")),
                    before: Some(ts("2025-06-30T12:34:56Z")),
                    ..PLAIN
                },
            ),
            (
                format!("alice@example.org valid-before=\"202506301234Z\" {ED25519}"),
                Parsed {
                    before: Some(ts("2025-06-30T12:34:00Z")),
                    ..PLAIN
                },
            ),
            (
                format!("alice@example.org valid-before=\"20250630UTC\" {ED25519}"),
                Parsed {
                    before: Some(ts("2025-06-30T00:00:00Z")),
                    ..PLAIN
                },
            ),
            (
                format!("bob@example.org {ECDSA} bob"),
                Parsed {
                    principals: "bob@example.org",
                    algorithm: "ecdsa-sha2-nistp521",
                    ..PLAIN
                },
            ),
        ];
        for (line, want) in cases {
            let signers = parse(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
            let [e] = signers.entries() else {
                panic!("{line:?}: {:?}", signers.entries());
            };
            let algorithm = e.key.algorithm();
            let got = Parsed {
                principals: &e.principals,
                ca: e.cert_authority,
                namespaces: e.namespaces.as_deref(),
                after: e.valid_after,
                before: e.valid_before,
                algorithm: algorithm.as_str(),
            };
            assert_eq!(got, want, "{line:?}");
            assert_eq!(e.line, 1);
        }
    }

    #[test]
    fn malformed_lines_name_the_file_and_line() {
        let cases: &[(&str, &str)] = &[
            ("alice@example.org", "no key after the principals"),
            (
                "alice@example.org namespaces=\"git\"",
                "no key after the options",
            ),
            ("alice@example.org ssh-ed25519", "has no data"),
            (
                "alice@example.org ssh-ed25519 !!!notbase64",
                "invalid ssh-ed25519 key",
            ),
            (
                "alice@example.org ssh-foo AAAA",
                "unknown option \"ssh-foo\"",
            ),
            (
                "alice@example.org restrict KEY",
                "unknown option \"restrict\"",
            ),
            (
                "alice@example.org namespaces=git KEY",
                "must be in double quotes",
            ),
            ("alice@example.org namespaces=\"git KEY", "no closing quote"),
            (
                "alice@example.org namespaces=\"a\",namespaces=\"b\" KEY",
                "more than one \"namespaces\"",
            ),
            (
                "alice@example.org valid-after=\"2024\" KEY",
                "invalid \"valid-after\" time \"2024\"",
            ),
            (
                "alice@example.org valid-before=\"20241301\" KEY",
                "invalid \"valid-before\" time",
            ),
            (
                "alice@example.org valid-before=\"19700101\" KEY",
                "invalid \"valid-before\" time",
            ),
            (
                "alice@example.org valid-before=\"2024010x\" KEY",
                "invalid \"valid-before\" time",
            ),
            (
                "alice@example.org valid-after=\"20250101\",valid-before=\"20240101\" KEY",
                "\"valid-before\" is not after \"valid-after\"",
            ),
            ("alice@example.org cert-authority, KEY", "end with a comma"),
            (
                "alice@example.org cert-authority=\"yes\" KEY",
                "unknown option \"cert-authority\"",
            ),
            (
                "alice@example.org namespaces=\"git\"x KEY",
                "unexpected text after the \"namespaces\"",
            ),
            ("\"alice@example.org ssh-ed25519 KEY", "no closing quote"),
        ];
        for (line, reason) in cases {
            let text = format!("# allowed signers\n\n{}\n", line.replace("KEY", ED25519));
            let err = parse(&text).expect_err(line).to_string();
            assert!(
                err.starts_with("/etc/berth/allowed_signers line 3: ") && err.contains(reason),
                "{line}: {err}"
            );
        }
    }

    #[test]
    fn comments_blank_lines_and_certificates() {
        let text = format!(
            "# team\n\n   \t\n  # indented comment\nalice@example.org {ED25519}\r\n\
             carol@example.org ssh-ed25519-cert-v01@openssh.com AAAAIHNzaC1lZDI1NTE5LWNlcnQ= carol\n\
             *@example.org cert-authority {ECDSA}\n"
        );
        let signers = parse(&text).unwrap();
        let lines: Vec<(usize, bool)> = signers
            .entries()
            .iter()
            .map(|e| (e.line, e.cert_authority))
            .collect();
        assert_eq!(lines, [(5, false), (7, true)]);
        assert_eq!(signers.ignored().len(), 1);
        assert_eq!(signers.ignored()[0].0, 6);
        assert!(signers.ignored()[0].1.contains("certificate"));
        assert!(parse("").unwrap().entries().is_empty());
    }

    #[test]
    fn times_without_a_suffix_are_local() {
        let nairobi = TimeZone::get("Africa/Nairobi").unwrap();
        let cases = [
            ("20250101", "2024-12-31T21:00:00Z"),
            ("20250101Z", "2025-01-01T00:00:00Z"),
            ("20250101utc", "2025-01-01T00:00:00Z"),
            ("202501011230", "2025-01-01T09:30:00Z"),
            ("20250101123045", "2025-01-01T09:30:45Z"),
        ];
        for (text, want) in cases {
            assert_eq!(
                parse_absolute_time(text, &nairobi),
                Some(ts(want)),
                "{text}"
            );
        }
        for bad in [
            "",
            "Z",
            "2025010",
            "202501011",
            "2025-01-01",
            "20250230",
            "20250101250000",
        ] {
            assert_eq!(parse_absolute_time(bad, &nairobi), None, "{bad}");
        }
    }

    #[test]
    fn pattern_lists_match_like_openssh() {
        use PatternMatch::*;
        let cases = [
            ("git", "git", Yes),
            ("git", "file", No),
            ("git", "file,git", Yes),
            ("git", "g*", Yes),
            ("git", "g?t", Yes),
            ("git", "g?", No),
            ("git", "*,!git", Negated),
            ("git", "!file", No),
            ("git", "!file,*", Yes),
            ("git", "", No),
            ("alice@example.org", "*@example.org", Yes),
            ("alice@example.org", "*@example.com", No),
            ("alice@example.org,bob", "alice@example.org,bob", No),
        ];
        for (s, list, want) in cases {
            assert_eq!(match_pattern_list(s, list), want, "{s} against {list}");
        }
    }

    #[test]
    fn committer_time_is_read_like_git() {
        let cases: &[(&str, Option<&str>)] = &[
            (
                "tree 0\nauthor A <a@x> 1 +0000\ncommitter C <c@x> 1700000000 +0300\n\nmsg\n",
                Some("2023-11-14T22:13:20Z"),
            ),
            ("tree 0\ncommitter C <c@x> 0 +0000\n\nmsg\n", None),
            ("tree 0\ncommitter C <c@x>\n\nmsg\n", None),
            (
                "tree 0\nauthor A <a@x> 5 +0000\n\ncommitter C <c@x> 9 +0000\n",
                None,
            ),
            (
                "tree 0\ncommitter C <c> x> 1700000000 +0000\n\n",
                Some("2023-11-14T22:13:20Z"),
            ),
        ];
        for (object, want) in cases {
            assert_eq!(
                committer_time(object.as_bytes()),
                want.map(ts),
                "{object:?}"
            );
        }
    }

    #[test]
    fn principals_are_listed_as_find_principals_prints_them() {
        let cases: &[(&str, &[&str])] = &[
            ("a", &["a"]),
            ("a,b", &["a", "b"]),
            ("a,,b", &["a"]),
            ("*@x", &["*@x"]),
        ];
        for (line, want) in cases {
            assert_eq!(principal_list(line).collect::<Vec<_>>(), *want, "{line}");
        }
    }
}
