//! A minimal fast HTTP/1.1 backend for `bench/proxy.sh`.
//!
//! `bench_backend ADDR NAME [ADDR NAME]...` answers every request on each ADDR with
//! `200 hello from NAME`, keep-alive, on a two-worker runtime.

use std::convert::Infallible;
use std::error::Error;

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || !args.len().is_multiple_of(2) {
        return Err("usage: bench_backend ADDR NAME [ADDR NAME]...".into());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut servers = Vec::new();
        for pair in args.chunks(2) {
            // A queue as long as the proxy's: a proxy that dials many upstream
            // connections at once must not have some dropped here, as the usual 128
            // would.
            let listener = fledge_proxy::bind(pair[0].parse()?)?;
            let body = Bytes::from(format!("hello from {}\n", pair[1]));
            servers.push(tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let body = body.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |_req| {
                            let body = body.clone();
                            async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
                        });
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .http1_only()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            }));
        }
        for s in servers {
            let _ = s.await;
        }
        Ok(())
    })
}
