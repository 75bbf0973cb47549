//! The operator process: elect a leader on a Lease, and run the controller only
//! while this replica leads.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::controller::{self, Context, Effects, SourceFactory, SystemClock};
use crate::leader::LeaderElector;
use crate::telemetry::Telemetry;

/// How the operator runs.
#[derive(Clone, Debug)]
pub struct OperatorOptions {
    /// This replica's identity (the pod name).
    pub identity: String,
    /// The namespace of the leader Lease.
    pub lease_namespace: String,
    /// The leader Lease's name.
    pub lease_name: String,
    /// How long a Lease stays valid without renewal.
    pub lease_duration: Duration,
    /// The only namespace whose CanaryRollouts are reconciled; `None` for all.
    pub namespace: Option<String>,
    /// Whether specs may run exec hooks, which run inside the operator's pod with
    /// its credentials.
    pub allow_exec_hooks: bool,
    /// Where the operator's metrics and readiness are kept.
    pub telemetry: Arc<Telemetry>,
}

/// Runs until `shutdown` resolves: waits for the Lease, reconciles while it holds
/// it, stops reconciling as soon as a renewal fails, and tries again. On shutdown
/// the controller stops and a held Lease is released, so another replica takes
/// over at once instead of after the lease duration.
pub async fn run(
    client: kube::Client,
    opts: OperatorOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), crate::Error> {
    let elector = LeaderElector::new(
        client.clone(),
        &opts.lease_namespace,
        &opts.lease_name,
        &opts.identity,
        opts.lease_duration,
    );
    let ctx = Arc::new(Context {
        client,
        clock: Arc::new(SystemClock),
        metrics: Arc::new(SourceFactory),
        identity: opts.identity.clone(),
        effects: Arc::new(Effects::start(opts.allow_exec_hooks)),
        telemetry: opts.telemetry.clone(),
    });
    let telemetry = opts.telemetry.clone();
    // The API server answered a Lease call (whoever holds it).
    let answered = |r: &Result<bool, crate::Error>| {
        if r.is_ok() {
            telemetry.api_answered();
        }
    };
    let period = elector.renew_period().max(Duration::from_secs(1));
    tokio::pin!(shutdown);
    loop {
        let leading = tokio::select! {
            r = elector.try_acquire_or_renew(k8s_openapi::jiff::Timestamp::now()) => r,
            () = &mut shutdown => return Ok(()),
        };
        answered(&leading);
        if let Err(e) = &leading {
            warn!(error = %e, "leader election");
        }
        if !matches!(leading, Ok(true)) {
            tokio::select! {
                () = tokio::time::sleep(period) => continue,
                () = &mut shutdown => return Ok(()),
            }
        }
        info!(identity = %opts.identity, "leading: reconciling CanaryRollouts");
        telemetry.set_leader(true);
        let (stop, stopped) = oneshot::channel::<()>();
        let running = tokio::spawn(controller::run(
            ctx.clone(),
            opts.namespace.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        let shutting_down = loop {
            tokio::select! {
                () = tokio::time::sleep(period) => {}
                () = &mut shutdown => break true,
            }
            let renewed = elector
                .try_acquire_or_renew(k8s_openapi::jiff::Timestamp::now())
                .await;
            answered(&renewed);
            match renewed {
                Ok(true) => continue,
                Ok(false) => warn!("lost the leader Lease: stopping the controller"),
                Err(e) => {
                    warn!(error = %e, "could not renew the leader Lease: stopping the controller")
                }
            }
            break false;
        };
        let _ = stop.send(());
        let _ = running.await;
        telemetry.set_leader(false);
        if shutting_down {
            match elector.release().await {
                Ok(true) => info!("released the leader Lease"),
                Ok(false) => {}
                Err(e) => warn!(error = %e, "could not release the leader Lease"),
            }
            return Ok(());
        }
    }
}
