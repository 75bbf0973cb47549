//! fledge's proxy as a standalone process, for `bench/proxy.sh`.
//!
//! `bench_proxy LISTEN STABLE CANARY WEIGHT [THREADS [CERT KEY]]` splits LISTEN
//! between the STABLE and CANARY endpoints (host:port) with WEIGHT% to the canary,
//! until SIGTERM or Ctrl-C. THREADS = 1 (the default) runs on a current-thread
//! runtime: one core, like one nginx worker or one HAProxy thread. With CERT and KEY
//! (PEM files) the listener speaks TLS, as the server configures it: ring, TLS 1.2
//! and 1.3, ALPN h2 and http/1.1.

use std::error::Error;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use fledge_proxy::{ProxyConfig, ProxyHandle, Route, UpstreamGroup, serve};

// glibc's malloc showed up as about 8% of the proxy's CPU in `perf`; mimalloc's
// per-thread free lists make the many small per-request allocations cheap.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, stable, canary, weight, rest @ ..] = args.as_slice() else {
        return Err("usage: bench_proxy LISTEN STABLE CANARY WEIGHT [THREADS [CERT KEY]]".into());
    };
    let threads: usize = rest.first().map_or(Ok(1), |t| t.parse())?;
    let tls = match rest {
        [_, cert, key] => Some(tls_config(cert, key)?),
        [] | [_] => None,
        _ => return Err("give both CERT and KEY, or neither".into()),
    };
    let route = Route::split(
        UpstreamGroup::new("stable", vec![stable.clone()]),
        UpstreamGroup::new("canary", vec![canary.clone()]),
        weight.parse()?,
    );
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(async {
        let handle = ProxyHandle::new(ProxyConfig::new("bench"), route)?;
        handle.set_tls(tls);
        let listener = fledge_proxy::bind(listen.parse()?)?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        serve(listener, handle.clone(), async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        })
        .await?;
        let (s, c) = handle.stats_by_role();
        eprintln!(
            "bench_proxy: stable {} requests ({} errors), canary {} requests ({} errors)",
            s.requests, s.errors, c.requests, c.errors
        );
        Ok(())
    })
}

/// A TLS config for the certificate chain in `cert` and the key in `key`.
fn tls_config(cert: &str, key: &str) -> Result<Arc<rustls::ServerConfig>, Box<dyn Error>> {
    let chain = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
