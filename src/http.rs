//! The process's one HTTP client, shared by the registries and the probes so connections
//! and TLS roots are set up once, not per pass. Each request sets its own timeout.

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
