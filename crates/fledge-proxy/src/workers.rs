//! The proxy's threads: [`Workers`], a fixed set of OS threads each running its own
//! current-thread tokio runtime, and [`Serving`], one listener served by all of them.
//!
//! A client connection is accepted, parsed, routed and forwarded on one thread, and
//! the upstream connection it borrows was dialled by that thread too (the pools keep
//! one idle list per worker): no request wakes another thread. Every worker accepts
//! from the same listening socket (each through its own descriptor, registered with
//! its own runtime): whichever is free takes the next connection, and the port stays
//! exclusively the proxy's (unlike `SO_REUSEPORT`, which would let another process of
//! the same user bind it too and silently take a share of the traffic).
//!
//! The control plane (API, controller) runs elsewhere; it reaches the proxy through
//! [`ProxyHandle`], whose route swaps and counters are lock-free for the workers.

use std::io;
use std::sync::mpsc;
use std::thread;

use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::sync::{oneshot, watch};

use crate::error::ProxyError;
use crate::server::{ProxyHandle, serve};

/// A fixed set of proxy worker threads. Dropping it stops them: what they were
/// serving is cut off, so stop every [`Serving`] first.
#[derive(Debug)]
pub struct Workers {
    workers: Vec<Worker>,
}

#[derive(Debug)]
struct Worker {
    runtime: Handle,
    /// Dropped to stop the thread.
    _stop: oneshot::Sender<()>,
}

/// One listener served by every worker, until [`Serving::stop`].
#[derive(Debug)]
#[must_use = "dropping it leaves the listener serving until the workers stop"]
pub struct Serving {
    app: String,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<Result<(), ProxyError>>>,
}

// === impl Workers ===

impl Workers {
    /// Starts `count` worker threads (at least one), named `fledge-proxy-N`.
    pub fn start(count: usize) -> io::Result<Self> {
        let mut workers = Vec::with_capacity(count.max(1));
        for index in 0..count.max(1) {
            let (ready_tx, ready_rx) = mpsc::channel();
            let (stop, stopped) = oneshot::channel::<()>();
            thread::Builder::new()
                .name(format!("fledge-proxy-{index}"))
                .spawn(move || {
                    crate::pool::set_worker_index(index);
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(runtime.handle().clone()));
                    // Runs the tasks spawned onto this runtime until the set is
                    // dropped; dropping the runtime then cancels what is left.
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                })?;
            let runtime = ready_rx
                .recv()
                .map_err(|_| io::Error::other("a proxy worker thread died while starting"))??;
            workers.push(Worker {
                runtime,
                _stop: stop,
            });
        }
        Ok(Self { workers })
    }

    /// How many worker threads there are.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Always `false`: there is at least one worker.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Serves `handle`'s proxy on `listener` from every worker, until
    /// [`Serving::stop`]. The handle's `config.workers` should be [`len`](Self::len).
    pub fn serve(
        &self,
        listener: std::net::TcpListener,
        handle: &ProxyHandle,
    ) -> io::Result<Serving> {
        listener.set_nonblocking(true)?;
        let (shutdown, rx) = watch::channel(false);
        let mut tasks = Vec::with_capacity(self.workers.len());
        for worker in &self.workers {
            let own = listener.try_clone()?;
            let handle = handle.clone();
            let mut rx = rx.clone();
            tasks.push(worker.runtime.spawn(async move {
                // Registered with this worker's runtime, from inside it.
                let listener =
                    TcpListener::from_std(own).map_err(|source| ProxyError::Listener {
                        app: handle.app().to_owned(),
                        source,
                    })?;
                serve(listener, handle, async move {
                    let _ = rx.wait_for(|stop| *stop).await;
                })
                .await
            }));
        }
        // Only the workers' descriptors keep the port open from here on.
        drop(listener);
        Ok(Serving {
            app: handle.app().to_owned(),
            shutdown,
            tasks,
        })
    }
}

// === impl Serving ===

impl Serving {
    /// Stops accepting on every worker, lets requests in flight finish (up to the
    /// proxy's `timeouts.drain`), and waits until every worker has let go of the
    /// listener. The first error a worker ended with is returned.
    pub async fn stop(self) -> Result<(), ProxyError> {
        let _ = self.shutdown.send(true);
        self.wait().await
    }

    /// Waits until every worker has stopped serving (after [`stop`](Self::stop),
    /// or after an error).
    async fn wait(self) -> Result<(), ProxyError> {
        let mut first = Ok(());
        for task in self.tasks {
            let result = match task.await {
                Ok(r) => r,
                // Cancelled: the workers were dropped under it.
                Err(e) if e.is_cancelled() => Ok(()),
                Err(e) => Err(ProxyError::Listener {
                    app: self.app.clone(),
                    source: io::Error::other(format!("a proxy worker panicked: {e}")),
                }),
            };
            if first.is_ok() {
                first = result;
            }
        }
        first
    }
}
