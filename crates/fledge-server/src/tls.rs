//! TLS for the API and the proxy listeners: the certificate and key a config names,
//! read into a rustls server config (ring provider, TLS 1.2 and 1.3 only), and
//! [`TlsListener`], which gives the API's HTTP server connections whose handshake
//! is already done.
//!
//! Handshakes run in their own tasks, off the accept loop, each under the
//! listener's deadline: a client that connects and never sends a ClientHello holds
//! one bounded slot for at most `handshakeTimeout`, and never delays anyone else.
//!
//! A [`ListenerCert`] re-reads its files when they change ([`run_reloader`] looks
//! every [`RELOAD_POLL`]) or on SIGHUP, and a good new certificate is used from the
//! next connection on; a bad one is logged and the old one kept.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::Shared;
use crate::config::TlsConfig;

/// The ALPN name of HTTP/1.1.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";
/// The ALPN name of HTTP/2 over TLS.
pub const ALPN_H2: &[u8] = b"h2";

/// How often the certificate files of every TLS listener are checked for changes.
pub const RELOAD_POLL: Duration = Duration::from_secs(10);

/// Most handshakes one listener runs at once; connections beyond it are closed at
/// once, so a flood of silent connections costs bounded memory.
const MAX_HANDSHAKES: usize = 1024;

/// Reads `tls.cert` and `tls.key` and builds a server config offering `alpn`.
///
/// Errors name the file and what is wrong with it: unreadable, not PEM, no
/// certificate or key in it, a key type ring cannot sign with, or a key that is not
/// the certificate's.
pub fn server_config(tls: &TlsConfig, alpn: &[&[u8]]) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = read_chain(&tls.cert)?;
    let key = read_key(&tls.key)?;
    let signing_key = provider.key_provider.load_private_key(key).map_err(|e| {
        anyhow::anyhow!(
            "the TLS key file {} holds a key that cannot be used: {e} (supported: RSA, \
             ECDSA P-256 or P-384, Ed25519)",
            tls.key.display()
        )
    })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            anyhow::bail!(
                "the key in {} does not match the certificate in {} (the first \
                 certificate of the file must be the server's own, the one the key signs for)",
                tls.key.display(),
                tls.cert.display()
            )
        }
        Err(e) => anyhow::bail!(
            "the first certificate in {} cannot be used: {e}",
            tls.cert.display()
        ),
    }
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("the ring provider does not offer TLS 1.2 and 1.3")?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// What a certificate's files looked like: modification time and size of the
/// certificate and the key file; `None` when either cannot be looked at.
type FileStamp = Option<[(SystemTime, u64); 2]>;

fn stamp(tls: &TlsConfig) -> FileStamp {
    let look = |path: &Path| {
        let meta = std::fs::metadata(path).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    };
    Some([look(&tls.cert)?, look(&tls.key)?])
}

/// One listener's certificate: the rustls config made from its files, made again
/// when they change.
#[derive(Debug)]
pub struct ListenerCert {
    tls: TlsConfig,
    alpn: &'static [&'static [u8]],
    current: ArcSwap<rustls::ServerConfig>,
    loaded: Mutex<FileStamp>,
}

// === impl ListenerCert ===

impl ListenerCert {
    /// Reads `tls`'s files (see [`server_config`] for the errors).
    pub fn load(tls: &TlsConfig, alpn: &'static [&'static [u8]]) -> anyhow::Result<Self> {
        // Looked at before reading, so a change made during the read is seen later.
        let loaded = stamp(tls);
        let config = server_config(tls, alpn)?;
        Ok(Self {
            tls: tls.clone(),
            alpn,
            current: ArcSwap::new(config),
            loaded: Mutex::new(loaded),
        })
    }

    /// The config new connections get.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.current.load_full()
    }

    /// Reads the files again if they changed since the last look (always with
    /// `force`), and uses the result from the next connection on. `Ok(true)` when a
    /// new config is in use; an error leaves the old one in place, and the same
    /// broken files are not reported again until they change.
    pub fn reload(&self, force: bool) -> anyhow::Result<bool> {
        let now = stamp(&self.tls);
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        if !force && *loaded == now {
            return Ok(false);
        }
        *loaded = now;
        let config = server_config(&self.tls, self.alpn)?;
        self.current.store(config);
        Ok(true)
    }
}

/// Reloads the certificate of the API and of every app's proxy whose files changed
/// (every one with `force`, as on SIGHUP), logging what happened to each.
pub async fn reload_certificates(shared: &Shared, force: bool) {
    if let Some(cert) = &shared.api_cert {
        match cert.reload(force) {
            Ok(true) => tracing::info!(cert = %cert.tls.cert.display(), "API certificate reloaded"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %format!("{e:#}"),
                "cannot reload the API certificate; keeping the current one"),
        }
    }
    shared.apps.reload_certificates(force).await;
}

/// Checks every [`RELOAD_POLL`] whether certificate files changed, until `stop`.
pub async fn run_reloader(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(RELOAD_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        reload_certificates(&shared, false).await;
    }
}

/// The certificates of a PEM file, in order; at least one.
pub(crate) fn read_chain(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("cannot read the TLS certificate file {}", path.display()))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            anyhow::anyhow!(
                "the TLS certificate file {} is not valid PEM: {e}",
                path.display()
            )
        })?;
    if chain.is_empty() {
        anyhow::bail!(
            "the TLS certificate file {} holds no certificate (expected PEM blocks \
             `-----BEGIN CERTIFICATE-----`)",
            path.display()
        );
    }
    Ok(chain)
}

/// The first private key of a PEM file.
fn read_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("cannot read the TLS key file {}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => anyhow::anyhow!(
            "the TLS key file {} holds no private key (expected a PEM block \
             `-----BEGIN PRIVATE KEY-----`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`)",
            path.display()
        ),
        other => anyhow::anyhow!(
            "the TLS key file {} is not valid PEM: {other}",
            path.display()
        ),
    })
}

/// A TLS connection to the API, with the first request bytes read ahead.
pub type ApiStream = fledge_proxy::Replay<TlsStream<TcpStream>>;

/// A plain connection to the API, with the first request bytes read ahead.
pub type PlainApiStream = fledge_proxy::Replay<TcpStream>;

/// How long a plain-HTTP API client may take to send its first request bytes.
pub const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A listener whose connections come out ready for the HTTP server: their TLS
/// handshake done (for [`TlsListener`]) and their first request bytes in, within a
/// deadline, for `axum::serve` (which has no deadline of its own for a client that
/// connects and sends nothing). The waiting happens in tasks of its own, at most
/// [`MAX_HANDSHAKES`] at once. Dropping it stops accepting and abandons the waits.
#[derive(Debug)]
pub struct PreparedListener<Io> {
    local: SocketAddr,
    ready: mpsc::Receiver<(Io, SocketAddr)>,
    accept: JoinHandle<()>,
}

/// The API's listener with TLS.
pub type TlsListener = PreparedListener<ApiStream>;

/// The API's listener without TLS.
pub type PlainListener = PreparedListener<PlainApiStream>;

// === impl PreparedListener ===

impl TlsListener {
    /// Accepts on `listener`, handshaking with `cert`'s current config under its
    /// handshake timeout.
    pub fn new(listener: TcpListener, cert: Arc<ListenerCert>) -> io::Result<Self> {
        Self::with_max_handshakes(listener, cert, MAX_HANDSHAKES)
    }

    /// The same, running at most `max` handshakes at once.
    pub fn with_max_handshakes(
        listener: TcpListener,
        cert: Arc<ListenerCert>,
        max: usize,
    ) -> io::Result<Self> {
        let handshake_timeout = cert.tls.handshake_timeout;
        PreparedListener::start(listener, max, "TLS handshakes", move |stream, peer| {
            let acceptor = TlsAcceptor::from(cert.config());
            async move {
                let started = tokio::time::Instant::now();
                let mut tls =
                    match fledge_proxy::tls_handshake(&acceptor, stream, handshake_timeout).await {
                        Ok(tls) => tls,
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "TLS connection refused");
                            return None;
                        }
                    };
                // A client that finishes the handshake and then idles is held to
                // what is left of the same timeout.
                let left = handshake_timeout.saturating_sub(started.elapsed());
                match fledge_proxy::read_first_bytes(&mut tls, left).await {
                    Some(head) => Some(fledge_proxy::Replay::new(head, tls)),
                    None => {
                        tracing::debug!(%peer, "no request after the TLS handshake in time");
                        None
                    }
                }
            }
        })
    }
}

impl PlainListener {
    /// Accepts on `listener`; a client must send its first bytes within `timeout`.
    pub fn new(listener: TcpListener, timeout: Duration) -> io::Result<Self> {
        Self::with_max_waiting(listener, timeout, MAX_HANDSHAKES)
    }

    /// The same, with at most `max` connections waiting for their first bytes.
    pub fn with_max_waiting(
        listener: TcpListener,
        timeout: Duration,
        max: usize,
    ) -> io::Result<Self> {
        PreparedListener::start(
            listener,
            max,
            "connections waiting for a first request",
            move |mut stream, peer| async move {
                match fledge_proxy::read_first_bytes(&mut stream, timeout).await {
                    Some(head) => Some(fledge_proxy::Replay::new(head, stream)),
                    None => {
                        tracing::debug!(%peer, "no request in time; connection closed");
                        None
                    }
                }
            },
        )
    }
}

impl<Io: Send + 'static> PreparedListener<Io> {
    fn start<F, Fut>(
        listener: TcpListener,
        max: usize,
        what: &'static str,
        prepare: F,
    ) -> io::Result<Self>
    where
        F: Fn(TcpStream, SocketAddr) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Option<Io>> + Send + 'static,
    {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let accept = tokio::spawn(accept_loop(listener, tx, max, what, prepare));
        Ok(Self {
            local,
            ready,
            accept,
        })
    }
}

impl<Io> Drop for PreparedListener<Io> {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl<Io> axum::serve::Listener for PreparedListener<Io>
where
    Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    type Io = Io;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Accepts connections and hands each one to `prepare` in its own task; what it
/// makes ready goes to `ready`.
async fn accept_loop<Io, F, Fut>(
    listener: TcpListener,
    ready: mpsc::Sender<(Io, SocketAddr)>,
    max_waiting: usize,
    what: &'static str,
    prepare: F,
) where
    Io: Send + 'static,
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: std::future::Future<Output = Option<Io>> + Send + 'static,
{
    let mut waiting = JoinSet::new();
    // Under a flood every refused connection would log: say it once a minute.
    let mut refused_since_warning = 0u64;
    let mut last_warning: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            Some(_) = waiting.join_next(), if !waiting.is_empty() => {}
            () = ready.closed() => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors or a reset in the backlog: back off
                        // briefly instead of spinning.
                        tracing::warn!(error = %e, "API accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if waiting.len() >= max_waiting {
                    refused_since_warning += 1;
                    if last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                        tracing::warn!(%peer, refused = refused_since_warning,
                            "{max_waiting} {what} in progress; closing new connections");
                        refused_since_warning = 0;
                        last_warning = Some(tokio::time::Instant::now());
                    }
                    continue;
                }
                let _ = stream.set_nodelay(true);
                let prepared = prepare(stream, peer);
                let ready = ready.clone();
                waiting.spawn(async move {
                    if let Some(io) = prepared.await {
                        let _ = ready.send((io, peer)).await;
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate and its key, written into `dir`.
    fn self_signed(dir: &Path, name: &str) -> TlsConfig {
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
        TlsConfig {
            cert,
            key,
            handshake_timeout: Duration::from_secs(10),
        }
    }

    fn error(tls: &TlsConfig) -> String {
        format!("{:#}", server_config(tls, &[ALPN_HTTP1]).unwrap_err())
    }

    #[test]
    fn a_matching_certificate_and_key_make_a_config_with_alpn() {
        let dir = tempfile::tempdir().unwrap();
        let tls = self_signed(dir.path(), "server");
        let config = server_config(&tls, &[ALPN_H2, ALPN_HTTP1]).unwrap();
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn errors_name_the_file_and_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let good = self_signed(dir.path(), "server");
        let other = self_signed(dir.path(), "other");

        let garbage = dir.path().join("garbage.key");
        std::fs::write(
            &garbage,
            "-----BEGIN PRIVATE KEY-----\nMAMCAQA=\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let with = |cert: &Path, key: &Path| TlsConfig {
            cert: cert.to_owned(),
            key: key.to_owned(),
            ..good.clone()
        };
        let (nope_crt, nope_key) = (dir.path().join("nope.crt"), dir.path().join("nope.key"));
        // (the files given, what the error must say)
        let cases: [(TlsConfig, &[&str]); 6] = [
            (
                with(&nope_crt, &good.key),
                &["cannot read the TLS certificate file", "nope.crt"],
            ),
            (
                with(&good.cert, &nope_key),
                &["cannot read the TLS key file", "nope.key"],
            ),
            // The key file given as the certificate: PEM, but no certificate in it.
            (
                with(&good.key, &good.key),
                &["server.key holds no certificate"],
            ),
            (
                with(&good.cert, &good.cert),
                &["server.crt holds no private key"],
            ),
            (
                with(&good.cert, &other.key),
                &["other.key does not match the certificate in", "server.crt"],
            ),
            (
                with(&good.cert, &garbage),
                &["garbage.key holds a key that cannot be used", "Ed25519"],
            ),
        ];
        for (tls, expected) in cases {
            let e = error(&tls);
            assert!(expected.iter().all(|part| e.contains(part)), "{e}");
        }
    }

    /// Writes `cert` and `key` over `to`'s files, dated `age_secs` after the epoch so that
    /// each rewrite is seen as a change whatever the file system's clock resolution.
    fn overwrite(to: &TlsConfig, cert: &[u8], key: &[u8], age_secs: u64) {
        let stamp = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + age_secs);
        for (path, bytes) in [(&to.cert, cert), (&to.key, key)] {
            std::fs::write(path, bytes).unwrap();
            std::fs::File::options()
                .write(true)
                .open(path)
                .unwrap()
                .set_modified(stamp)
                .unwrap();
        }
    }

    #[test]
    fn a_certificate_is_reloaded_when_its_files_change_and_only_if_good() {
        let dir = tempfile::tempdir().unwrap();
        let live = self_signed(dir.path(), "live");
        let renewed = self_signed(dir.path(), "renewed");
        let read = |p: &Path| std::fs::read(p).unwrap();
        let cert = ListenerCert::load(&live, &[ALPN_HTTP1]).unwrap();
        let first = cert.config();

        // Nothing changed: nothing done.
        assert!(!cert.reload(false).unwrap());
        assert!(Arc::ptr_eq(&first, &cert.config()));

        overwrite(&live, &read(&renewed.cert), &read(&renewed.key), 1);
        assert!(cert.reload(false).unwrap());
        let second = cert.config();
        assert!(!Arc::ptr_eq(&first, &second));

        // Half-way through a rotation: the certificate written, the key file still
        // empty. The error names the file; the working config stays, and the same
        // broken files are not reported again.
        overwrite(&live, &read(&renewed.cert), b"", 2);
        let e = format!("{:#}", cert.reload(false).unwrap_err());
        assert!(e.contains("live.key holds no private key"), "{e}");
        assert!(Arc::ptr_eq(&second, &cert.config()));
        assert!(!cert.reload(false).unwrap());

        // Forced (SIGHUP), with good files: reloaded even though they did not change.
        overwrite(&live, &read(&renewed.cert), &read(&renewed.key), 3);
        assert!(cert.reload(false).unwrap());
        assert!(cert.reload(true).unwrap());
    }

    #[tokio::test]
    async fn a_plain_client_that_sends_nothing_is_closed_and_others_are_served() {
        use axum::serve::Listener as _;
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let mut listener = PlainListener::new(tcp, Duration::from_millis(300)).unwrap();

        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut talker = TcpStream::connect(addr).await.unwrap();
        talker.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        // Only the client that sent something comes out, its bytes replayed.
        let (mut io, peer) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
            .await
            .expect("the talking client is handed over");
        assert_eq!(peer, talker.local_addr().unwrap());
        let mut head = [0u8; 14];
        io.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"GET / HTTP/1.1");

        // The silent one is closed once its time is up.
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
            .await
            .expect("the silent connection is closed");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }

    #[tokio::test]
    async fn connections_beyond_the_handshake_limit_are_closed_at_once() {
        use tokio::io::AsyncReadExt as _;

        let dir = tempfile::tempdir().unwrap();
        let cert =
            Arc::new(ListenerCert::load(&self_signed(dir.path(), "api"), &[ALPN_HTTP1]).unwrap());
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let _listener = TlsListener::with_max_handshakes(tcp, cert, 2).unwrap();

        // Two silent clients take both slots (and keep them: the timeout is 10s).
        let mut silent = Vec::new();
        for _ in 0..2 {
            silent.push(TcpStream::connect(addr).await.unwrap());
        }
        // The loop accepts in arrival order, so both are in their slots by the time
        // it takes the third.
        let mut third = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
            .await
            .expect("the third connection is closed at once");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        // The first two are still open.
        for mut s in silent {
            let r = tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await;
            assert!(r.is_err(), "a client within the limit was closed: {r:?}");
        }
    }
}
