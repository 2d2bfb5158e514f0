//! The process's one HTTP client, shared by the registries and the probes so connections
//! and TLS roots are set up once, not per pass, and the one way berth reads an answer's
//! body: capped. Each request sets its own timeout.

use std::sync::OnceLock;
use std::time::Duration;

/// The shared client (cheap to clone: clones share one connection pool).
pub fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client builds")
    })
}

/// An answer that went on past what berth reads of it.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("{peer} sent more than {} KiB for {what}: refused", cap / 1024)]
    TooLarge {
        peer: String,
        what: String,
        cap: usize,
    },
    #[error("{peer} broke off {what}")]
    Read {
        peer: String,
        what: String,
        #[source]
        source: reqwest::Error,
    },
}

impl BodyError {
    /// Whether reading stopped on the request's timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, BodyError::Read { source, .. } if source.is_timeout())
    }
}

/// Reads an answer's body, at most `cap` bytes of it: a peer that streams on (a broken or
/// hostile registry, or a container answering its own health check) costs berth no more
/// memory than the protocol needs.
pub async fn body(
    mut response: reqwest::Response,
    cap: usize,
    peer: &str,
    what: &str,
) -> Result<Vec<u8>, BodyError> {
    let mut body = Vec::new();
    loop {
        let chunk = response.chunk().await.map_err(|source| BodyError::Read {
            peer: peer.to_owned(),
            what: what.to_owned(),
            source,
        })?;
        let Some(chunk) = chunk else {
            return Ok(body);
        };
        if body.len() + chunk.len() > cap {
            return Err(BodyError::TooLarge {
                peer: peer.to_owned(),
                what: what.to_owned(),
                cap,
            });
        }
        body.extend_from_slice(&chunk);
    }
}
