//! The crate's error type.

/// What went wrong in the operator. Every variant names the object or field.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The CanaryRollout's spec cannot be run as written; fixing the spec is the
    /// only cure, so the controller waits for a change instead of retrying.
    #[error("invalid CanaryRollout: {0}")]
    InvalidSpec(String),
    /// An operator command (the `fledge.dev/command` annotation) that does not exist.
    #[error("unknown command: {0}")]
    InvalidCommand(String),
    /// An object the rollout needs does not exist (yet); retried.
    #[error("{what} not found")]
    Missing {
        /// Which object, `Kind namespace/name`.
        what: String,
    },
    /// The API server refused a call for want of permission (HTTP 403): the
    /// caller's RBAC does not grant the verb on the resource.
    #[error("{what}: forbidden by the cluster's RBAC: {message}")]
    Forbidden {
        /// What was being done, `verb Kind namespace/name`.
        what: String,
        /// The API server's message, naming the user, verb and resource.
        message: String,
    },
    /// No cluster to talk to: no kubeconfig (`$KUBECONFIG`, `~/.kube/config`) and
    /// no in-cluster service account.
    #[error("cannot find a Kubernetes cluster to talk to: {0}")]
    NoCluster(String),
    /// A call to the API server failed; retried.
    #[error("{what}: {source}")]
    Kube {
        /// What was being done.
        what: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// Someone else changed the CanaryRollout between our read and our status write
    /// (HTTP 409); the reconcile runs again on the fresh object.
    #[error("CanaryRollout {0} changed while reconciling (409 conflict); retrying")]
    Conflict(String),
    /// Another field manager set a field of the canary Deployment that fledge sets,
    /// to another value (a server-side apply conflict, e.g. after `kubectl scale`).
    /// fledge leaves their value, reports it (a Warning Event) and retries later.
    #[error(
        "{object}: {message}; fledge does not override another manager's value: undo the change (or apply it with --field-manager=fledge) to hand the field back"
    )]
    FieldConflict {
        /// The object, `Kind namespace/name`.
        object: String,
        /// The API server's message, naming the fields and their manager.
        message: String,
    },
    /// The rollout engine refused an input.
    #[error("engine: {0}")]
    Engine(#[from] fledge_engine::EngineError),
    /// A value could not be turned into JSON.
    #[error("serialize: {0}")]
    Serialize(String),
    /// Leader election could not read or write its Lease.
    #[error("leader election on Lease {lease}: {message}")]
    Lease {
        /// The Lease, `namespace/name`.
        lease: String,
        /// What failed.
        message: String,
    },
}

impl Error {
    /// A [`Error::Kube`], or [`Error::Conflict`] for a 409, or [`Error::Forbidden`]
    /// for a 403.
    pub fn kube(what: impl Into<String>, source: kube::Error) -> Error {
        let what = what.into();
        match &source {
            kube::Error::Api(status) if status.code == 409 => Error::Conflict(what),
            kube::Error::Api(status) if status.code == 403 => Error::Forbidden {
                what,
                message: status.message.clone(),
            },
            _ => Error::Kube { what, source },
        }
    }
}
