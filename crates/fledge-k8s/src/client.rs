//! What `fledge get|status|wait|promote|… --kube` does with CanaryRollouts: find the
//! cluster and namespace the kubeconfig names, read and list the resources, watch
//! one, and send it a command, with errors that name the object and the verb.
//!
//! The binary turns what it reads here into the views it shows for the server's
//! rollouts; this module knows nothing of those views.

use std::time::{SystemTime, UNIX_EPOCH};

use futures::Stream;
use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::{WatchStreamExt, watcher};

use crate::controller::{send_command, target_version};
use crate::crd::CanaryRollout;
use crate::error::Error;

/// A client for the cluster of the kubeconfig (`$KUBECONFIG`, else
/// `~/.kube/config`, else the in-cluster service account), and the namespace the
/// commands work in.
#[derive(Clone)]
pub struct Cluster {
    client: kube::Client,
    namespace: String,
}

// === impl Cluster ===

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects as the kubeconfig says; `namespace` overrides the context's (whose
    /// default is `default`).
    pub async fn connect(namespace: Option<&str>) -> Result<Cluster, Error> {
        // kube and reqwest both link rustls: choose ring before any TLS is made.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = kube::Config::infer().await.map_err(|e| {
            Error::NoCluster(format!(
                "{e} (set KUBECONFIG to a kubeconfig file, or run inside a cluster)"
            ))
        })?;
        let namespace = namespace.map_or_else(|| config.default_namespace.clone(), str::to_owned);
        let client = kube::Client::try_from(config)
            .map_err(|e| Error::NoCluster(format!("cannot use the kubeconfig: {e}")))?;
        Ok(Cluster::new(client, namespace))
    }

    /// A cluster reached through `client`, working in `namespace`.
    pub fn new(client: kube::Client, namespace: String) -> Cluster {
        Cluster { client, namespace }
    }

    /// The namespace the commands work in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn api(&self) -> Api<CanaryRollout> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The CanaryRollout `name`; [`Error::Missing`] names it when it does not exist.
    pub async fn get(&self, name: &str) -> Result<CanaryRollout, Error> {
        let ns = &self.namespace;
        self.api()
            .get_opt(name)
            .await
            .map_err(|e| Error::kube(format!("get CanaryRollout {ns}/{name}"), e))?
            .ok_or_else(|| Error::Missing {
                what: format!("CanaryRollout {ns}/{name}"),
            })
    }

    /// The CanaryRollouts of the namespace, or of every namespace, by namespace and
    /// name.
    pub async fn list(&self, all_namespaces: bool) -> Result<Vec<CanaryRollout>, Error> {
        let (api, scope) = if all_namespaces {
            (Api::all(self.client.clone()), "all namespaces".to_owned())
        } else {
            (self.api(), format!("namespace {}", self.namespace))
        };
        let mut items = api
            .list(&ListParams::default())
            .await
            .map_err(|e| Error::kube(format!("list CanaryRollouts in {scope}"), e))?
            .items;
        items.sort_by_key(|r| (r.namespace(), r.name_any()));
        Ok(items)
    }

    /// The version the stable Deployment of `rollout` runs (its `fledge.dev/version`
    /// label, as the controller reads it); `None` when it cannot be read.
    pub async fn stable_version(&self, rollout: &CanaryRollout) -> Option<String> {
        let ns = rollout
            .namespace()
            .unwrap_or_else(|| self.namespace.clone());
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &ns);
        let target = api.get_opt(&rollout.spec.target_ref.name).await.ok()??;
        Some(target_version(&target))
    }

    /// Every change of the CanaryRollout `name`, as a watch (re-listed after a
    /// dropped connection or an expired resourceVersion, with backoff).
    pub fn watch(
        &self,
        name: &str,
    ) -> impl Stream<Item = Result<watcher::Event<CanaryRollout>, watcher::Error>> + Send + use<>
    {
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        watcher(self.api(), config).default_backoff()
    }

    /// Sends `command` (`promote`, `promote-full`, `abort`, `pause`, `resume`,
    /// `retry`) to the CanaryRollout `name` on behalf of `actor`, as
    /// `fledge operator command` does; gives the command's id, which the status's
    /// `lastCommandId` takes once the operator has run it.
    pub async fn send(&self, name: &str, command: &str, actor: &str) -> Result<String, Error> {
        let id = command_id();
        send_command(&self.client, &self.namespace, name, command, actor, &id).await?;
        Ok(id)
    }
}

/// A command id unique to this process and moment.
fn command_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos}-{}", std::process::id())
}

/// Whether a watch error will not pass by itself: the caller may not read the
/// resource (401, 403) or the resource type is not there (404).
pub fn is_permanent(err: &watcher::Error) -> bool {
    let source = match err {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => e,
        watcher::Error::WatchError(status) => return matches!(status.code, 401 | 403 | 404),
        watcher::Error::NoResourceVersion => return true,
    };
    matches!(source, kube::Error::Api(status) if matches!(status.code, 401 | 403 | 404))
}
