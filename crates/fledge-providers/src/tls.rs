//! The one place that builds HTTP clients.
//!
//! reqwest is compiled with `rustls-no-provider`: building a client (even one that only
//! ever speaks plain `http://`) panics unless a rustls crypto provider is installed
//! for the process. fledge uses the ring provider everywhere (see DEPENDENCIES.md), so
//! every client of this crate is built through [`http_client`], which installs ring
//! first when nothing else has been installed. The binary may install it itself at the
//! start of `main`; a second install is a harmless no-op here.

use std::time::Duration;

/// Installs rustls' ring crypto provider as the process default, unless a provider is
/// already installed.
pub fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing the race to another thread that installs one is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// A reqwest client with `timeout` per request, for metric sources, hooks and
/// notifiers. Fails only when the TLS configuration cannot be built.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    ensure_crypto_provider();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .user_agent(concat!("fledge/", env!("CARGO_PKG_VERSION")))
        .build()
}
