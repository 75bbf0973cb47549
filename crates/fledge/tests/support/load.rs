//! A bounded load loop that survives the server being down: every request has a
//! timeout, and answers and failures are counted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::Http;

/// `concurrency` clients, each sending GET / over its own keep-alive connections
/// until stopped (or five minutes pass).
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Requests answered 2xx or 5xx (the proxy answered them).
    pub ok: Arc<AtomicU64>,
    /// Requests that got no answer, or an answer that was not a success.
    pub failed: Arc<AtomicU64>,
    /// Requests answered 2xx.
    pub succeeded: Arc<AtomicU64>,
}

impl Load {
    /// Starts the clients.
    pub fn start(addr: SocketAddr, concurrency: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let [ok, failed, succeeded] = [(); 3].map(|()| Arc::new(AtomicU64::new(0)));
        let tasks = (0..concurrency)
            .map(|_| {
                let (stop, http) = (stop.clone(), Http::new(addr));
                let (ok, failed, succeeded) = (ok.clone(), failed.clone(), succeeded.clone());
                tokio::spawn(async move {
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
                    while !stop.load(Ordering::SeqCst) && tokio::time::Instant::now() < deadline {
                        let answer =
                            tokio::time::timeout(Duration::from_secs(2), http.try_get("/")).await;
                        if let Ok(Some(s)) = answer
                            && s.is_success()
                        {
                            succeeded.fetch_add(1, Ordering::SeqCst);
                        } else {
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                        match answer {
                            Ok(Some(s)) if s.is_success() || s.is_server_error() => {
                                ok.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(3)).await;
                            }
                            _ => tokio::time::sleep(Duration::from_millis(20)).await,
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            tasks,
            ok,
            failed,
            succeeded,
        }
    }

    /// Stops the clients and waits for them.
    pub async fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
