//! The operator process: elect a leader on a Lease, and run the controller only
//! while this replica leads.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::controller::{self, Context, PrometheusFactory, SystemClock};
use crate::leader::LeaderElector;

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
}

/// Runs until the process is stopped: waits for the Lease, reconciles while it holds
/// it, stops reconciling as soon as a renewal fails, and tries again.
pub async fn run(client: kube::Client, opts: OperatorOptions) -> Result<(), crate::Error> {
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
        metrics: Arc::new(PrometheusFactory),
        identity: opts.identity.clone(),
    });
    let period = elector.renew_period().max(Duration::from_secs(1));
    loop {
        match elector
            .try_acquire_or_renew(k8s_openapi::jiff::Timestamp::now())
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tokio::time::sleep(period).await;
                continue;
            }
            Err(e) => {
                warn!(error = %e, "leader election");
                tokio::time::sleep(period).await;
                continue;
            }
        }
        info!(identity = %opts.identity, "leading: reconciling CanaryRollouts");
        let (stop, stopped) = oneshot::channel::<()>();
        let running = tokio::spawn(controller::run(ctx.clone(), async move {
            let _ = stopped.await;
        }));
        loop {
            tokio::time::sleep(period).await;
            match elector
                .try_acquire_or_renew(k8s_openapi::jiff::Timestamp::now())
                .await
            {
                Ok(true) => continue,
                Ok(false) => warn!("lost the leader Lease: stopping the controller"),
                Err(e) => {
                    warn!(error = %e, "could not renew the leader Lease: stopping the controller")
                }
            }
            break;
        }
        let _ = stop.send(());
        let _ = running.await;
    }
}
