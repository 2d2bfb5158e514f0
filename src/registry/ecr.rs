//! Amazon ECR through aws-sdk-ecr: tags and digests by `DescribeImages`, pull credentials by
//! `GetAuthorizationToken`, cached and refreshed before they expire.
//!
//! The registry host names the account and the region
//! (`<account>.dkr.ecr.<region>.amazonaws.com`); credentials come from the standard AWS chain
//! (environment, profile, web identity, container, instance metadata) and `AWS_ENDPOINT_URL`
//! points the SDK elsewhere (tests use `moto_server`). One SDK client per region, built on
//! first use. Calls are bounded by `BERTH_REGISTRY_TIMEOUT` (seconds, default 30) per attempt,
//! with at most two attempts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_ecr::Client;
use aws_sdk_ecr::config::Region;
use aws_sdk_ecr::config::http::HttpResponse;
use aws_sdk_ecr::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ecr::types::{DescribeImagesFilter, TagStatus};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use base64::Engine as _;
use tokio::sync::OnceCell;

use crate::image::{Credentials, TagRef};
use crate::manifest::syntax::parse_ecr_host;

/// A cached pull token is refreshed once it expires within this margin, so a pull never
/// starts with a token about to lapse (ECR tokens live 12 hours).
pub const REFRESH_MARGIN: Duration = Duration::from_secs(30 * 60);

/// Attempts per API call, the first included.
const MAX_ATTEMPTS: u32 = 2;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum EcrError {
    #[error("invalid ECR registry {registry}: {why}")]
    Registry { registry: String, why: String },
    #[error("cannot reach the ECR API for {registry} to {what}")]
    Unreachable {
        registry: String,
        what: String,
        #[source]
        source: BoxError,
    },
    #[error("the ECR API for {registry} did not answer in time to {what}")]
    Timeout {
        registry: String,
        what: String,
        #[source]
        source: BoxError,
    },
    #[error(
        "no usable AWS credentials to {what} in {registry}; berth finds them as the AWS CLI does \
         (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, web identity, container or instance role)"
    )]
    NoCredentials {
        registry: String,
        what: String,
        #[source]
        source: BoxError,
    },
    #[error(
        "ECR refused to {what} in {registry}; check that the AWS credentials berth uses may do so"
    )]
    Denied {
        registry: String,
        what: String,
        #[source]
        source: BoxError,
    },
    #[error("ECR registry {registry} has no repository {repository}")]
    NotFound {
        registry: String,
        repository: String,
        #[source]
        source: BoxError,
    },
    #[error("ECR is throttling berth for {registry} ({what})")]
    Throttled {
        registry: String,
        what: String,
        #[source]
        source: BoxError,
    },
    #[error("ECR failed to {what} for {registry}")]
    Failed {
        registry: String,
        what: String,
        #[source]
        source: BoxError,
    },
    /// The token itself is never shown.
    #[error("ECR gave a malformed authorization token for {registry}: {why}")]
    MalformedToken { registry: String, why: &'static str },
}

/// A pull token and when ECR says it expires.
#[derive(Clone)]
struct Token {
    credentials: Credentials,
    expires_at: SystemTime,
}

/// ECR registries, one client per region, with their pull tokens.
pub struct EcrRegistry {
    /// Endpoint and credentials that replace the environment's (tools and tests).
    endpoint_url: Option<String>,
    static_credentials: Option<aws_sdk_ecr::config::Credentials>,
    /// Per region; the cell is shared so a client is built once even by concurrent callers.
    clients: Mutex<HashMap<String, Arc<OnceCell<Client>>>>,
    /// Per registry host.
    tokens: Mutex<HashMap<String, Token>>,
}

impl Default for EcrRegistry {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether a token that expires at `expires_at` may still be handed out at `now`: only while
/// more than [`REFRESH_MARGIN`] of its life is left.
pub fn token_usable(expires_at: SystemTime, now: SystemTime) -> bool {
    now.checked_add(REFRESH_MARGIN)
        .is_some_and(|deadline| deadline < expires_at)
}

/// `AWS:<password>` from the base64 token ECR hands out.
fn decode_token(token: &str) -> Result<(String, String), &'static str> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .map_err(|_| "it is not base64")?;
    let text = String::from_utf8(raw).map_err(|_| "it is not UTF-8")?;
    let (user, password) = text.split_once(':').ok_or("it is not `user:password`")?;
    if user.is_empty() || password.is_empty() {
        return Err("its user or password is empty");
    }
    Ok((user.to_owned(), password.to_owned()))
}

/// Account id and region of `<account>.dkr.ecr.<region>.amazonaws.com`.
fn account_and_region(registry: &str) -> Result<(&str, String), EcrError> {
    let bad = |why: String| EcrError::Registry {
        registry: registry.to_owned(),
        why,
    };
    let region = parse_ecr_host(registry).map_err(bad)?;
    let account = registry
        .split_once('.')
        .map(|(a, _)| a)
        .ok_or_else(|| bad("no account id".into()))?;
    Ok((account, region))
}

/// Whether the credential chain failed (nothing was sent): somewhere in the error's sources.
fn is_credentials_error(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if e.is::<CredentialsError>() {
            return true;
        }
        cur = e.source();
    }
    false
}

/// What an SDK failure means to a person: which registry, what berth was doing, and why.
fn classify<E>(
    err: SdkError<E, HttpResponse>,
    registry: &str,
    repository: Option<&str>,
    what: String,
) -> EcrError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let registry = registry.to_owned();
    match &err {
        SdkError::TimeoutError(_) => {
            return EcrError::Timeout {
                registry,
                what,
                source: err.into(),
            };
        }
        SdkError::DispatchFailure(d) if d.is_timeout() => {
            return EcrError::Timeout {
                registry,
                what,
                source: err.into(),
            };
        }
        SdkError::DispatchFailure(d) if d.is_io() => {
            return EcrError::Unreachable {
                registry,
                what,
                source: err.into(),
            };
        }
        _ if is_credentials_error(&err) => {
            return EcrError::NoCredentials {
                registry,
                what,
                source: err.into(),
            };
        }
        _ => {}
    }
    let code = err.code().unwrap_or_default().to_owned();
    // What ECR said, when it said something: its error code and message read better than
    // the SDK's rendering of them.
    let source: BoxError = match (err.code(), err.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}").into(),
        (Some(code), None) => code.to_owned().into(),
        _ => err.into(),
    };
    match code.as_str() {
        "RepositoryNotFoundException" => EcrError::NotFound {
            registry,
            repository: repository.unwrap_or_default().to_owned(),
            source,
        },
        "AccessDeniedException"
        | "AccessDenied"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "ExpiredTokenException"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch" => EcrError::Denied {
            registry,
            what,
            source,
        },
        "ThrottlingException" | "TooManyRequestsException" | "LimitExceededException" => {
            EcrError::Throttled {
                registry,
                what,
                source,
            }
        }
        _ => EcrError::Failed {
            registry,
            what,
            source,
        },
    }
}

impl EcrRegistry {
    /// Configured from the environment, as the AWS CLI is. Cheap: nothing is built or asked
    /// until the first call.
    pub fn new() -> Self {
        EcrRegistry {
            endpoint_url: None,
            static_credentials: None,
            clients: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// Talks to `endpoint_url` instead of AWS (or `AWS_ENDPOINT_URL`), and, when given, with
    /// fixed credentials instead of the standard chain.
    pub fn with_endpoint(
        endpoint_url: impl Into<String>,
        credentials: Option<aws_sdk_ecr::config::Credentials>,
    ) -> Self {
        EcrRegistry {
            endpoint_url: Some(endpoint_url.into()),
            static_credentials: credentials,
            ..Self::new()
        }
    }

    /// The SDK client for a region, built on first use.
    async fn client(&self, region: &str) -> Client {
        let cell = {
            let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(clients.entry(region.to_owned()).or_default())
        };
        cell.get_or_init(|| self.build_client(region)).await.clone()
    }

    async fn build_client(&self, region: &str) -> Client {
        let t = super::registry_timeout();
        // The SDK's own HTTPS client is compiled out (it would pull in aws-lc): rustls+ring,
        // with the platform's root certificates, as berth's other HTTP clients use.
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.to_owned()))
            .http_client(http)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(t.min(Duration::from_secs(5)))
                    .operation_attempt_timeout(t)
                    .operation_timeout(t * MAX_ATTEMPTS + Duration::from_secs(1))
                    .build(),
            )
            .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS));
        if let Some(url) = &self.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some(c) = &self.static_credentials {
            loader = loader.credentials_provider(c.clone());
        }
        Client::new(&loader.load().await)
    }

    /// Every tag of every image in the repository, with the image's digest: one listing,
    /// as many `DescribeImages` pages as it takes.
    pub async fn tags(&self, registry: &str, repository: &str) -> Result<Vec<TagRef>, EcrError> {
        let (account, region) = account_and_region(registry)?;
        let client = self.client(&region).await;
        let what = || format!("list the images of {repository}");
        let mut pages = client
            .describe_images()
            .registry_id(account)
            .repository_name(repository)
            .filter(
                DescribeImagesFilter::builder()
                    .tag_status(TagStatus::Tagged)
                    .build(),
            )
            .into_paginator()
            .send();
        let mut out = Vec::new();
        let mut n_pages = 0usize;
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify(e, registry, Some(repository), what()))?;
            n_pages += 1;
            for image in page.image_details() {
                let Some(digest) = image.image_digest() else {
                    continue;
                };
                out.extend(image.image_tags().iter().map(|tag| TagRef {
                    tag: tag.clone(),
                    digest: Some(digest.to_owned()),
                }));
            }
        }
        tracing::debug!(
            registry,
            repository,
            tags = out.len(),
            pages = n_pages,
            "listed ECR images"
        );
        Ok(out)
    }

    /// The cached token for a registry, if it is still good at `now`.
    fn cached(&self, registry: &str, now: SystemTime) -> Option<Credentials> {
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens
            .get(registry)
            .filter(|t| token_usable(t.expires_at, now))
            .map(|t| t.credentials.clone())
    }

    /// Pull credentials for a registry: a cached token while it has more than
    /// [`REFRESH_MARGIN`] left, else a fresh one from `GetAuthorizationToken`.
    pub async fn credentials(&self, registry: &str) -> Result<Credentials, EcrError> {
        if let Some(c) = self.cached(registry, SystemTime::now()) {
            return Ok(c);
        }
        let (_, region) = account_and_region(registry)?;
        let client = self.client(&region).await;
        // No registry id: the field is deprecated, and the token is good for every registry
        // the principal may read.
        let out = client
            .get_authorization_token()
            .send()
            .await
            .map_err(|e| classify(e, registry, None, "get a pull token".into()))?;
        let malformed = |why| EcrError::MalformedToken {
            registry: registry.to_owned(),
            why,
        };
        let data = out
            .authorization_data()
            .first()
            .ok_or_else(|| malformed("the answer holds no authorization data"))?;
        let token = data
            .authorization_token()
            .ok_or_else(|| malformed("the answer holds no token"))?;
        let (username, password) = decode_token(token).map_err(malformed)?;
        let credentials = Credentials {
            username,
            password,
            server: registry.to_owned(),
        };
        let expires_at = data
            .expires_at()
            .and_then(|d| SystemTime::try_from(*d).ok());
        match expires_at {
            Some(expires_at) if token_usable(expires_at, SystemTime::now()) => {
                tracing::debug!(registry, ?expires_at, "fetched an ECR pull token");
                self.tokens
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(
                        registry.to_owned(),
                        Token {
                            credentials: credentials.clone(),
                            expires_at,
                        },
                    );
            }
            // Too close to its end (or no end given) to keep: used once, asked for again.
            _ => tracing::debug!(
                registry,
                ?expires_at,
                "fetched an ECR pull token too short-lived to cache"
            ),
        }
        Ok(credentials)
    }

    /// Drops the cached token, after the registry refused it.
    pub fn forget(&self, registry: &str) {
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(registry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    const NOW: u64 = 1_700_000_000;
    const HOUR: u64 = 3600;

    #[test]
    fn token_is_used_while_more_than_the_margin_is_left() {
        // Fresh from ECR: 12 hours left.
        assert!(token_usable(at(NOW + 12 * HOUR), at(NOW)));
        // 31 minutes left: still good.
        assert!(token_usable(at(NOW + 31 * 60), at(NOW)));
    }

    #[test]
    fn token_is_refreshed_within_the_margin_and_after_expiry() {
        // Exactly the margin left, then less: refresh.
        assert!(!token_usable(at(NOW + 30 * 60), at(NOW)));
        assert!(!token_usable(at(NOW + 29 * 60), at(NOW)));
        assert!(!token_usable(at(NOW + 1), at(NOW)));
        // Expired, long ago (moto answers 2015-01-01).
        assert!(!token_usable(at(NOW), at(NOW)));
        assert!(!token_usable(at(1_420_070_400), at(NOW)));
    }

    #[test]
    fn tokens_decode_to_user_and_password() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert_eq!(
            decode_token(&b64("AWS:secret:with:colons")),
            Ok(("AWS".into(), "secret:with:colons".into()))
        );
        assert!(decode_token("not base64!").is_err());
        assert!(decode_token(&b64("no-colon")).is_err());
        assert!(decode_token(&b64("AWS:")).is_err());
    }

    #[test]
    fn registry_names_account_and_region() {
        let (account, region) =
            account_and_region("123456789012.dkr.ecr.eu-west-1.amazonaws.com").unwrap();
        assert_eq!((account, region.as_str()), ("123456789012", "eu-west-1"));
        let err = account_and_region("ghcr.io").unwrap_err();
        assert!(err.to_string().contains("ghcr.io"), "{err}");
    }

    #[test]
    fn malformed_token_errors_do_not_show_it() {
        let e = EcrError::MalformedToken {
            registry: "123456789012.dkr.ecr.eu-west-1.amazonaws.com".into(),
            why: "it is not base64",
        };
        assert_eq!(
            e.to_string(),
            "ECR gave a malformed authorization token for \
             123456789012.dkr.ecr.eu-west-1.amazonaws.com: it is not base64"
        );
    }
}
