//! The OCI distribution API: tag listing with pagination, manifest digests, and the
//! authentication a registry asks for in `WWW-Authenticate` (anonymous or with the user's
//! Docker credentials, Basic or Bearer token). HTTPS unless the registry is on loopback or
//! the script says `insecure: true`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, LINK, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use serde::Deserialize;

use super::docker_config::DockerConfig;
use crate::image::{Credentials, ImageRepo, TagRef};

/// The manifest types berth accepts, so a registry answers with the digest the engine pulls.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// At most this many pages of tags; a registry that links on forever is broken.
const MAX_PAGES: usize = 1000;

/// What berth reads of each answer: a page of 1,000 tags is some tens of KiB, a token a
/// few KiB, and registries refuse manifests over 4 MiB themselves.
const MAX_TAG_PAGE: usize = 4 << 20;
const MAX_TOKEN: usize = 64 << 10;
const MAX_MANIFEST: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("cannot reach registry {registry}")]
    Unreachable {
        registry: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("registry {registry} did not answer in time")]
    Timeout { registry: String },
    #[error("registry {registry} is rate limiting berth (HTTP 429){}", retry_after.map(|s| format!("; it asks to retry after {s}s")).unwrap_or_default())]
    RateLimited {
        registry: String,
        retry_after: Option<u64>,
    },
    #[error(
        "registry {registry} refused access to {repository} (HTTP {status}); check the credentials in Docker's config.json"
    )]
    Denied {
        registry: String,
        repository: String,
        status: u16,
    },
    #[error("registry {registry} has no repository {repository}")]
    NotFound {
        registry: String,
        repository: String,
    },
    #[error("registry {registry} answered HTTP {status} to {what}")]
    Status {
        registry: String,
        what: String,
        status: u16,
    },
    #[error("registry {registry} answered {what} with something that is not a tag list")]
    Garbage {
        registry: String,
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("registry {registry} gave no digest for {repository}:{tag}")]
    NoDigest {
        registry: String,
        repository: String,
        tag: String,
    },
    #[error("registry {registry} asks for an authentication berth does not speak: {challenge}")]
    Challenge { registry: String, challenge: String },
    #[error(transparent)]
    Body(crate::http::BodyError),
    #[error(
        "registry {registry} links the tag list of {repository} back to a page it already sent ({url}): a pagination loop"
    )]
    LinkLoop {
        registry: String,
        repository: String,
        url: String,
    },
    #[error("registry {registry} answered {what} with something that is not an image manifest")]
    BadManifest {
        registry: String,
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the image index {repository}@{digest} in {registry} has no manifest for {platform}")]
    NoPlatform {
        registry: String,
        repository: String,
        digest: String,
        platform: String,
    },
    #[error(
        "registry {registry} gave {digest:?} as the digest of {repository}:{tag}, which is not sha256:<64 hex digits>"
    )]
    BadDigest {
        registry: String,
        repository: String,
        tag: String,
        digest: String,
    },
}

/// How a registry wants to be authenticated, learned from its first 401.
#[derive(Debug, Clone)]
enum Auth {
    Basic(Credentials),
    Bearer(String),
}

/// A client for OCI registries.
pub struct OciRegistry {
    http: reqwest::Client,
    /// Per request, body included: a registry slower than this is unreachable for the pass.
    timeout: Duration,
    config: DockerConfig,
    /// Per registry and repository: what to send.
    auth: Mutex<HashMap<(String, String), Auth>>,
}

#[derive(Deserialize)]
pub struct TagList {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

#[derive(Deserialize)]
pub struct TokenAnswer {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

/// Whether plain HTTP is allowed: loopback registries, or an explicit `insecure: true`.
pub fn plain_http(registry: &str, insecure: bool) -> bool {
    let host = match registry.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => registry,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    insecure
        || host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `key="value"` pairs of a `WWW-Authenticate` challenge.
pub fn challenge_params(header: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = header.split_once(' ').map_or("", |(_, r)| r);
    while let Some((key, after)) = rest.split_once('=') {
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            quoted.split_once('"').unwrap_or((quoted, ""))
        } else {
            after.split_once(',').unwrap_or((after, ""))
        };
        out.insert(key, value.to_owned());
        rest = tail.trim_start_matches(',');
    }
    out
}

/// The `rel="next"` target of a `Link` header.
pub fn next_link(headers: &HeaderMap) -> Option<String> {
    headers.get_all(LINK).iter().find_map(|v| {
        let v = v.to_str().ok()?;
        v.split(',').find_map(|part| {
            let (target, params) = part.split_once(';')?;
            params.contains("rel=\"next\"").then(|| {
                target
                    .trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_owned()
            })
        })
    })
}

impl OciRegistry {
    pub fn new(config: DockerConfig) -> Self {
        OciRegistry {
            http: crate::http::client().clone(),
            timeout: super::registry_timeout(),
            config,
            auth: Mutex::new(HashMap::new()),
        }
    }

    fn base(repo: &ImageRepo, registry: &str) -> String {
        let scheme = if plain_http(registry, repo.insecure) {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{registry}")
    }

    /// Credentials for pulls: whatever the user's Docker config holds for the registry.
    pub async fn credentials(&self, registry: &str) -> Result<Option<Credentials>, OciError> {
        Ok(self.config.credentials(registry))
    }

    /// Sends a request, answering an authentication challenge once, with `creds` when
    /// given (ECR's pull token) and else the user's Docker credentials.
    async fn send(
        &self,
        repo: &ImageRepo,
        registry: &str,
        creds: Option<&Credentials>,
        request: (Method, &str),
        what: &str,
    ) -> Result<reqwest::Response, OciError> {
        let (method, url) = request;
        let key = (registry.to_owned(), repo.repository.clone());
        for attempt in 0..2 {
            let mut request = self
                .http
                .request(method.clone(), url)
                .timeout(self.timeout)
                .header(ACCEPT, MANIFEST_TYPES);
            let known = self.auth.lock().expect("auth cache").get(&key).cloned();
            request = match known {
                Some(Auth::Basic(c)) => request.basic_auth(c.username, Some(c.password)),
                Some(Auth::Bearer(t)) => request.header(AUTHORIZATION, format!("Bearer {t}")),
                None => request,
            };
            let response = request
                .send()
                .await
                .map_err(|e| self.transport(registry, e))?;
            match response.status() {
                StatusCode::UNAUTHORIZED if attempt == 0 => {
                    let challenge = response
                        .headers()
                        .get(WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let auth = self.answer(repo, registry, creds, &challenge).await?;
                    self.auth
                        .lock()
                        .expect("auth cache")
                        .insert(key.clone(), auth);
                }
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    return Err(OciError::Denied {
                        registry: registry.to_owned(),
                        repository: repo.repository.clone(),
                        status: response.status().as_u16(),
                    });
                }
                StatusCode::TOO_MANY_REQUESTS => {
                    let retry_after = response
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse().ok());
                    return Err(OciError::RateLimited {
                        registry: registry.to_owned(),
                        retry_after,
                    });
                }
                StatusCode::NOT_FOUND => {
                    return Err(OciError::NotFound {
                        registry: registry.to_owned(),
                        repository: repo.repository.clone(),
                    });
                }
                s if s.is_success() => return Ok(response),
                s => {
                    return Err(OciError::Status {
                        registry: registry.to_owned(),
                        what: what.to_owned(),
                        status: s.as_u16(),
                    });
                }
            }
        }
        unreachable!("the second attempt returns")
    }

    /// An answer's body, at most `cap` bytes of it.
    async fn read(
        &self,
        registry: &str,
        response: reqwest::Response,
        cap: usize,
        what: &str,
    ) -> Result<Vec<u8>, OciError> {
        crate::http::body(response, cap, &format!("registry {registry}"), what)
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    OciError::Timeout {
                        registry: registry.to_owned(),
                    }
                } else {
                    OciError::Body(e)
                }
            })
    }

    fn transport(&self, registry: &str, e: reqwest::Error) -> OciError {
        if e.is_timeout() {
            OciError::Timeout {
                registry: registry.to_owned(),
            }
        } else {
            OciError::Unreachable {
                registry: registry.to_owned(),
                source: e,
            }
        }
    }

    /// Meets a `WWW-Authenticate` challenge: Basic with the user's credentials, or a Bearer
    /// token from the realm (anonymous, or with the credentials when there are some).
    async fn answer(
        &self,
        repo: &ImageRepo,
        registry: &str,
        given: Option<&Credentials>,
        challenge: &str,
    ) -> Result<Auth, OciError> {
        let creds = given.cloned().or_else(|| self.config.credentials(registry));
        let denied = || OciError::Denied {
            registry: registry.to_owned(),
            repository: repo.repository.clone(),
            status: 401,
        };
        let scheme = challenge
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        match scheme.as_str() {
            "basic" => creds
                .filter(|c| c.identity_token().is_none())
                .map(Auth::Basic)
                .ok_or_else(denied),
            "bearer" => {
                let params = challenge_params(challenge);
                let realm = params.get("realm").ok_or_else(|| OciError::Challenge {
                    registry: registry.to_owned(),
                    challenge: challenge.to_owned(),
                })?;
                let scope = params
                    .get("scope")
                    .cloned()
                    .unwrap_or_else(|| format!("repository:{}:pull", repo.repository));
                let mut query = vec![("scope", scope)];
                if let Some(service) = params.get("service") {
                    query.push(("service", service.clone()));
                }
                // An identity token is an OAuth2 refresh token, exchanged by POST.
                let request = match creds.as_ref().map(|c| (c, c.identity_token())) {
                    Some((_, Some(token))) => {
                        query.extend([
                            ("grant_type", "refresh_token".to_owned()),
                            ("refresh_token", token.to_owned()),
                            ("client_id", "berth".to_owned()),
                        ]);
                        self.http.post(realm).form(&query)
                    }
                    Some((c, None)) => self
                        .http
                        .get(realm)
                        .query(&query)
                        .basic_auth(&c.username, Some(&c.password)),
                    None => self.http.get(realm).query(&query),
                };
                let request = request.timeout(self.timeout);
                let response = request
                    .send()
                    .await
                    .map_err(|e| self.transport(registry, e))?;
                if !response.status().is_success() {
                    return Err(denied());
                }
                let body = self
                    .read(registry, response, MAX_TOKEN, "the token answer")
                    .await?;
                let answer: TokenAnswer =
                    serde_json::from_slice(&body).map_err(|source| OciError::Garbage {
                        registry: registry.to_owned(),
                        what: "the token request".into(),
                        source,
                    })?;
                answer
                    .token
                    .or(answer.access_token)
                    .map(Auth::Bearer)
                    .ok_or_else(denied)
            }
            _ => Err(OciError::Challenge {
                registry: registry.to_owned(),
                challenge: challenge.to_owned(),
            }),
        }
    }

    /// Every tag of a repository, following `Link` pagination.
    pub async fn tags(&self, repo: &ImageRepo, registry: &str) -> Result<Vec<TagRef>, OciError> {
        let base = Self::base(repo, registry);
        let mut url = format!("{base}/v2/{}/tags/list?n=1000", repo.repository);
        let mut tags = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..MAX_PAGES {
            if !seen.insert(url.clone()) {
                return Err(OciError::LinkLoop {
                    registry: registry.to_owned(),
                    repository: repo.repository.clone(),
                    url,
                });
            }
            let what = format!("the tag list of {}", repo.repository);
            let response = self
                .send(repo, registry, None, (Method::GET, &url), &what)
                .await?;
            let next = next_link(response.headers());
            let body = self.read(registry, response, MAX_TAG_PAGE, &what).await?;
            let page: TagList =
                serde_json::from_slice(&body).map_err(|source| OciError::Garbage {
                    registry: registry.to_owned(),
                    what: what.clone(),
                    source,
                })?;
            tags.extend(
                page.tags
                    .unwrap_or_default()
                    .into_iter()
                    .map(|tag| TagRef { tag, digest: None }),
            );
            match next {
                Some(n) if n.starts_with("http://") || n.starts_with("https://") => url = n,
                Some(n) => url = format!("{base}{n}"),
                None => return Ok(tags),
            }
        }
        Err(OciError::Status {
            registry: registry.to_owned(),
            what: format!("more than {MAX_PAGES} pages of tags of {}", repo.repository),
            status: 200,
        })
    }

    /// The manifest digest of a tag, by `HEAD` (falling back to hashing a `GET`'s body when
    /// the registry does not send `Docker-Content-Digest`).
    pub async fn digest(
        &self,
        repo: &ImageRepo,
        registry: &str,
        tag: &str,
    ) -> Result<String, OciError> {
        let url = format!(
            "{}/v2/{}/manifests/{tag}",
            Self::base(repo, registry),
            repo.repository
        );
        let what = format!("the manifest of {}:{tag}", repo.repository);
        let header = |r: &reqwest::Response| -> Result<Option<String>, OciError> {
            let Some(d) = r
                .headers()
                .get("docker-content-digest")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            else {
                return Ok(None);
            };
            if crate::image::is_digest(&d) {
                Ok(Some(d))
            } else {
                Err(OciError::BadDigest {
                    registry: registry.to_owned(),
                    repository: repo.repository.clone(),
                    tag: tag.to_owned(),
                    digest: d,
                })
            }
        };
        let head = self
            .send(repo, registry, None, (Method::HEAD, &url), &what)
            .await?;
        if let Some(d) = header(&head)? {
            return Ok(d);
        }
        let get = self
            .send(repo, registry, None, (Method::GET, &url), &what)
            .await?;
        if let Some(d) = header(&get)? {
            return Ok(d);
        }
        let body = self.read(registry, get, MAX_MANIFEST, &what).await?;
        if body.is_empty() {
            return Err(OciError::NoDigest {
                registry: registry.to_owned(),
                repository: repo.repository.clone(),
                tag: tag.to_owned(),
            });
        }
        use sha2::Digest;
        let hash = sha2::Sha256::digest(&body);
        Ok(format!(
            "sha256:{}",
            hash.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ))
    }
}

/// What a manifest tells of a pull's size.
#[derive(Debug, PartialEq, Eq)]
pub enum Listed {
    /// An image manifest: its config and layers, compressed, in bytes.
    Bytes(u64),
    /// An index: the digest of the platform's manifest, if it lists one.
    Index(Option<String>),
}

#[derive(Deserialize)]
struct ManifestDoc {
    #[serde(default)]
    manifests: Option<Vec<IndexEntry>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

#[derive(Deserialize)]
struct IndexEntry {
    digest: String,
    #[serde(default)]
    platform: Option<PlatformDoc>,
}

#[derive(Deserialize)]
struct PlatformDoc {
    os: String,
    architecture: String,
}

#[derive(Deserialize)]
struct Descriptor {
    size: u64,
}

/// Reads an image manifest or index (OCI or Docker's), choosing `platform` (os,
/// architecture) in an index.
pub fn read_manifest(body: &[u8], platform: (&str, &str)) -> Result<Listed, serde_json::Error> {
    let doc: ManifestDoc = serde_json::from_slice(body)?;
    if let Some(entries) = doc.manifests {
        return Ok(Listed::Index(entries.into_iter().find_map(|e| {
            e.platform
                .filter(|p| p.os == platform.0 && p.architecture == platform.1)
                .map(|_| e.digest)
        })));
    }
    let layers = doc.layers.unwrap_or_default();
    Ok(Listed::Bytes(
        doc.config
            .iter()
            .chain(&layers)
            .fold(0u64, |sum, d| sum.saturating_add(d.size)),
    ))
}

impl OciRegistry {
    /// The compressed size of pulling `repository@digest` on this host's platform: the
    /// manifest's config and layers, through an index if the digest names one.
    pub async fn pull_size(
        &self,
        repo: &ImageRepo,
        registry: &str,
        digest: &str,
        creds: Option<&Credentials>,
    ) -> Result<u64, OciError> {
        let platform = crate::image::host_platform();
        let mut current = digest.to_owned();
        // An index names image manifests; one that names another index is followed once.
        for _ in 0..3 {
            let url = format!(
                "{}/v2/{}/manifests/{current}",
                Self::base(repo, registry),
                repo.repository
            );
            let what = format!("the manifest of {}@{current}", repo.repository);
            let response = self
                .send(repo, registry, creds, (Method::GET, &url), &what)
                .await?;
            let body = self.read(registry, response, MAX_MANIFEST, &what).await?;
            let listed =
                read_manifest(&body, platform).map_err(|source| OciError::BadManifest {
                    registry: registry.to_owned(),
                    what: what.clone(),
                    source,
                })?;
            match listed {
                Listed::Bytes(n) => return Ok(n),
                Listed::Index(Some(d)) if crate::image::is_digest(&d) => current = d,
                Listed::Index(_) => {
                    return Err(OciError::NoPlatform {
                        registry: registry.to_owned(),
                        repository: repo.repository.clone(),
                        digest: current,
                        platform: format!("{}/{}", platform.0, platform.1),
                    });
                }
            }
        }
        Err(OciError::Status {
            registry: registry.to_owned(),
            what: format!("indexes nested too deep under {}@{digest}", repo.repository),
            status: 200,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_plain_http_and_the_rest_https() {
        assert!(plain_http("127.0.0.1:5000", false));
        assert!(plain_http("localhost:5000", false));
        assert!(plain_http("[::1]:5000", false));
        assert!(!plain_http("ghcr.io", false));
        assert!(!plain_http("10.0.0.1:5000", false));
        assert!(plain_http("registry.lan:5000", true));
    }

    #[test]
    fn parses_challenges() {
        let p = challenge_params(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
        );
        assert_eq!(p["realm"], "https://auth.example/token");
        assert_eq!(p["service"], "registry.example");
        assert_eq!(p["scope"], "repository:a/b:pull");
    }

    #[test]
    fn follows_next_links() {
        let mut h = HeaderMap::new();
        h.insert(
            LINK,
            r#"</v2/a/tags/list?last=x&n=2>; rel="next""#.parse().unwrap(),
        );
        assert_eq!(next_link(&h).as_deref(), Some("/v2/a/tags/list?last=x&n=2"));
        assert_eq!(next_link(&HeaderMap::new()), None);
    }

    #[test]
    fn sums_a_manifests_config_and_layers() {
        let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
            "config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":1000,"digest":"sha256:aa"},
            "layers":[{"size":2000000,"digest":"sha256:bb"},{"size":3000,"digest":"sha256:cc"}]}"#;
        assert_eq!(
            read_manifest(body, ("linux", "amd64")).unwrap(),
            Listed::Bytes(2_004_000)
        );
    }

    #[test]
    fn picks_the_platform_of_an_index() {
        let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {"digest":"sha256:arm","size":500,"platform":{"os":"linux","architecture":"arm64","variant":"v8"}},
            {"digest":"sha256:att","size":500,"platform":{"os":"unknown","architecture":"unknown"}},
            {"digest":"sha256:amd","size":500,"platform":{"os":"linux","architecture":"amd64"}}]}"#;
        assert_eq!(
            read_manifest(body, ("linux", "amd64")).unwrap(),
            Listed::Index(Some("sha256:amd".into()))
        );
        assert_eq!(
            read_manifest(body, ("linux", "riscv64")).unwrap(),
            Listed::Index(None)
        );
        assert!(read_manifest(b"[1,2]", ("linux", "amd64")).is_err());
    }
}
