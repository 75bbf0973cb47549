//! Leader election on a `coordination.k8s.io/v1` Lease: only the replica holding the
//! Lease reconciles. A replica takes the Lease when it is absent or its holder has not
//! renewed it for `leaseDurationSeconds`, renews it while it leads, and every write
//! carries the resourceVersion read, so two replicas racing for an expired Lease
//! cannot both win (the loser gets 409).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};

use crate::error::Error;

/// One replica's view of the election.
#[derive(Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    namespace: String,
    name: String,
    identity: String,
    lease_duration: Duration,
}

impl std::fmt::Debug for LeaderElector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderElector")
            .field("lease", &format!("{}/{}", self.namespace, self.name))
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl LeaderElector {
    /// An elector for Lease `namespace/name` as `identity` (the pod name).
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        lease_duration: Duration,
    ) -> Self {
        LeaderElector {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            identity: identity.to_owned(),
            lease_duration,
        }
    }

    /// How often to renew: a third of the lease, so two renewals can fail before the
    /// Lease expires.
    pub fn renew_period(&self) -> Duration {
        self.lease_duration / 3
    }

    fn lease_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn err(&self, message: impl Into<String>) -> Error {
        Error::Lease {
            lease: self.lease_name(),
            message: message.into(),
        }
    }

    /// Takes or renews the Lease at `now`; `Ok(true)` while this replica leads.
    pub async fn try_acquire_or_renew(&self, now: Timestamp) -> Result<bool, Error> {
        let seconds = i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let current = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.err(format!("read: {e}")))?;
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(self.err(format!("create: {e}"))),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let mine = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        if !mine {
            let held_for = spec.lease_duration_seconds.unwrap_or(seconds);
            // A released Lease (no holder) is free at once.
            let released = spec.holder_identity.as_deref().is_none_or(str::is_empty);
            let expired = released
                || match &spec.renew_time {
                    Some(MicroTime(renewed)) => {
                        *renewed + SignedDuration::from_secs(i64::from(held_for)) < now
                    }
                    None => true,
                };
            if !expired {
                return Ok(false);
            }
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(seconds);
        self.replace(&lease, "update").await
    }

    /// Writes `lease` back with the resourceVersion it was read at: `Ok(false)` when
    /// another replica wrote it meanwhile (409), which is then left alone.
    async fn replace(&self, lease: &Lease, what: &str) -> Result<bool, Error> {
        match self
            .api
            .replace(&self.name, &PostParams::default(), lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(self.err(format!("{what}: {e}"))),
        }
    }

    /// Gives the Lease up, if this replica holds it: clears the holder so that
    /// another replica takes it at its next try rather than after the lease
    /// duration. `Ok(false)` when another replica held it (nothing is changed).
    pub async fn release(&self) -> Result<bool, Error> {
        let Some(mut lease) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.err(format!("read: {e}")))?
        else {
            return Ok(false);
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(false);
        }
        spec.holder_identity = None;
        spec.acquire_time = None;
        spec.renew_time = None;
        self.replace(&lease, "release").await
    }
}
