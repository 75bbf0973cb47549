//! Every change to a rollout goes through here: creating one, an operator's command,
//! and the controller's judgement. Each is one engine step, persisted with the
//! store's revision check, then applied to the app's traffic.
//!
//! **Abort versus promote.** Both are engine steps on the state the caller read, and
//! the store accepts an update only at the revision that was read. So the first one
//! to commit wins, and the other is re-read and judged again against the committed
//! state: a promote after a committed abort is refused (409, the rollout is no longer
//! active), an abort after a committed stage promote still aborts. The app's stable
//! version changes only in the same transaction that moves the rollout to
//! `Succeeded`. An abort that was answered 200 therefore can never be followed by
//! the canary becoming stable.

use fledge_spec::RolloutSpec;
use fledge_store::{AppUpdate, NewEvent, NewRollout, RolloutRecord, RolloutUpdate, StoreError};

use super::Shared;
use super::auth::Principal;
use super::engine::{self, Command, Decision};
use super::error::ApiError;
use crate::config::StableConfig;
use crate::config::app_from_record;

/// How many times an operator's command is re-read and retried when the rollout
/// changed under it (the controller writes about once per second).
pub const MAX_ATTEMPTS: usize = 8;

/// Registers the config file's apps in the store. The stored stable version wins
/// over the config's when they differ, because a successful rollout changed it.
pub async fn register_config_apps(shared: &Shared) -> anyhow::Result<()> {
    for app in &shared.config.apps {
        let mut merged = app.clone();
        if let Some(record) = shared.store.get_app(&app.name).await? {
            let stored = app_from_record(&record)?;
            if stored.stable != app.stable {
                tracing::info!(
                    app = %app.name,
                    config = %app.stable.version,
                    stored = %stored.stable.version,
                    "keeping the stored stable version (a rollout promoted it); \
                     change it with PUT /apps/{{app}}"
                );
                merged.stable = stored.stable.clone();
            }
            merged.keep_previous_stable(&stored);
        }
        shared
            .store
            .put_app(&merged.name, &serde_json::to_value(&merged)?)
            .await?;
    }
    Ok(())
}

/// Starts a rollout of `app` back to its previous stable version (see
/// `previousStable`), with the stages of the app's latest spec, or with one stage
/// that switches all traffic at once when `now` (or when the app has no spec to
/// take them from). Its criteria, analysis and hooks are the latest spec's. The
/// rollout is created like any other, so it is judged, recorded and can be aborted;
/// its `Created` event says it is an undo, and why when `reason` is given.
pub async fn undo(
    shared: &Shared,
    app: &str,
    now: bool,
    reason: Option<&str>,
    principal: &Principal,
) -> Result<RolloutRecord, ApiError> {
    undo_for(shared, app, now, reason, principal, None).await
}

/// [`undo`], made for the group `group` (which rolls back a member that had
/// succeeded) when given.
pub async fn undo_for(
    shared: &Shared,
    app: &str,
    now: bool,
    reason: Option<&str>,
    principal: &Principal,
    group: Option<&str>,
) -> Result<RolloutRecord, ApiError> {
    let record = shared
        .store
        .get_app(app)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found(format!("no app `{app}`")).with_code("app_not_found"))?;
    let config = app_from_record(&record).map_err(internal)?;
    let Some(previous) = config.undo_target().cloned() else {
        return Err(ApiError::conflict(
            "nothing_to_undo",
            format!(
                "app `{app}` has no previous stable version other than its stable one: \
                 nothing was promoted since it was registered, or its `previousStable` was \
                 never set or is the stable version"
            ),
        ));
    };
    let latest = shared
        .store
        .latest_rollout_for_app(app)
        .await
        .map_err(store_error)?;
    let mut spec = match &latest {
        Some(r) => spec_of(r).map_err(internal)?,
        None => serde_json::from_value(serde_json::json!({
            "app": app,
            "version": previous.version,
            "stages": [],
        }))
        .map_err(|e| internal(e.into()))?,
    };
    spec.version = previous.version.clone();
    spec.canary = Some(fledge_spec::CanarySpec {
        endpoints: previous.endpoints.clone(),
    });
    if now || spec.stages.is_empty() {
        spec.stages = vec![
            serde_json::from_value(serde_json::json!({
                "traffic": 100, "final": true, "promote": true,
            }))
            .map_err(|e| internal(e.into()))?,
        ];
    }
    let text = serde_json::to_string_pretty(&spec).map_err(|e| internal(e.into()))?;
    let why = format!(
        "undo: back from {} to {}{}",
        config.stable.version,
        previous.version,
        reason.map(|r| format!(": {r}")).unwrap_or_default()
    );
    let membership = group.map(|group| Membership { group, hold: None });
    create_noting(
        shared,
        &text,
        &format!("undo of `{app}`"),
        principal,
        Some(&why),
        membership,
    )
    .await
}

pub use crate::engine::spec_of;

pub use crate::routes::{active_rollout, desired_route, route_for, route_of, rules_of};

/// Finds a rollout by id, or by app name (its active rollout, else its latest).
pub async fn resolve(shared: &Shared, key: &str) -> Result<RolloutRecord, ApiError> {
    if let Some(r) = shared.store.get_rollout(key).await.map_err(store_error)? {
        return Ok(r);
    }
    if let Some(r) = active_rollout(shared, key).await.map_err(store_error)? {
        return Ok(r);
    }
    if let Some(r) = shared
        .store
        .latest_rollout_for_app(key)
        .await
        .map_err(store_error)?
    {
        return Ok(r);
    }
    Err(ApiError::not_found(format!(
        "no rollout with id `{key}`, and no app `{key}` with a rollout"
    )))
}

/// Maps store errors onto API errors.
pub fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound { .. } => ApiError::not_found(e.to_string()),
        StoreError::ActiveRolloutExists { .. } => {
            ApiError::conflict("active_rollout", e.to_string())
        }
        StoreError::Conflict { .. } => ApiError::conflict("conflict", e.to_string()),
        StoreError::Unavailable { .. } => ApiError::unavailable(e.to_string()),
        other => ApiError::internal(other.to_string()),
    }
}

#[allow(clippy::needless_pass_by_value)] // used as `map_err(internal)`
fn internal(e: anyhow::Error) -> ApiError {
    ApiError::internal(format!("{e:#}"))
}

/// Parses and starts a rollout. `origin` names the spec in error messages.
pub async fn create(
    shared: &Shared,
    text: &str,
    origin: &str,
    principal: &Principal,
) -> Result<RolloutRecord, ApiError> {
    create_noting(shared, text, origin, principal, None, None).await
}

/// The group a rollout is made for: its id, and for a lock-step group the stage
/// it is held at from the start.
#[derive(Debug, Clone, Copy)]
pub struct Membership<'a> {
    /// The group's id.
    pub group: &'a str,
    /// The first hold (lock step), if any.
    pub hold: Option<usize>,
}

/// A spec refused by the parser, as the API's `invalid_spec` answer with each
/// problem in its details.
pub fn invalid_spec(e: &fledge_spec::SpecError) -> ApiError {
    let details = e
        .issues
        .iter()
        .map(|i| serde_json::to_value(i).unwrap_or_default())
        .collect();
    ApiError::bad_request("invalid_spec", e.to_string()).with_details(details)
}

/// Starts a rollout of an already parsed `spec` as a member of a group; the
/// stored spec text is its JSON.
pub async fn create_member(
    shared: &Shared,
    spec: &RolloutSpec,
    principal: &Principal,
    why: &str,
    membership: Membership<'_>,
) -> Result<RolloutRecord, ApiError> {
    let text = serde_json::to_string_pretty(spec).map_err(|e| internal(e.into()))?;
    let origin = format!("rollout of `{}` in group {}", spec.app, membership.group);
    create_noting(
        shared,
        &text,
        &origin,
        principal,
        Some(why),
        Some(membership),
    )
    .await
}

/// Checks a parsed spec against the server as a create would, without creating
/// anything: the app is registered, the version is new, the router can express
/// its rules, its alerts can be read, and the canary has endpoints. Returns the
/// spec with the canary's endpoints filled in.
pub async fn admit(
    shared: &Shared,
    mut spec: RolloutSpec,
    origin: &str,
) -> Result<RolloutSpec, ApiError> {
    let Some(app) = shared.apps.get(&spec.app).await else {
        return Err(ApiError::not_found(format!(
            "{origin}: app `{}` is not registered: add it to the server's config or PUT /apps/{}",
            spec.app, spec.app
        ))
        .with_code("app_not_found"));
    };
    let app_config = app.config().await;
    if spec.version == app_config.stable.version {
        return Err(ApiError::bad_request(
            "invalid_spec",
            format!(
                "{origin}: version: `{}` is already the stable version of `{}`",
                spec.version, spec.app
            ),
        ));
    }
    // A rule the app's router cannot express is refused now, never dropped later.
    if let Err(e) = app.router().await.supports(&rules_of(&spec)) {
        return Err(ApiError::bad_request(
            "invalid_spec",
            format!("{origin}: {e}"),
        ));
    }
    if !spec.alerts.is_empty() && shared.alertmanager.is_none() {
        return Err(ApiError::bad_request(
            "invalid_spec",
            format!(
                "{origin}: alerts: this server reads no Alertmanager, so the alerts could never \
                 fire: add `alertmanager: {{url: …}}` to its config, or remove `alerts`"
            ),
        ));
    }
    let endpoints = match &spec.canary {
        Some(c) if !c.endpoints.is_empty() => c.endpoints.clone(),
        _ => app_config.canary_endpoints().to_vec(),
    };
    if endpoints.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_spec",
            format!(
                "{origin}: canary.endpoints: app `{}` has no canary endpoints configured, so \
                 the spec must say where version {} runs",
                spec.app, spec.version
            ),
        ));
    }
    // The stored spec records where the canary runs, so a restart or a later change
    // of the app's config does not move a running rollout.
    spec.canary = Some(fledge_spec::CanarySpec { endpoints });
    Ok(spec)
}

/// [`create`], with why the rollout was made in its `Created` event, and the group
/// it belongs to.
async fn create_noting(
    shared: &Shared,
    text: &str,
    origin: &str,
    principal: &Principal,
    why: Option<&str>,
    membership: Option<Membership<'_>>,
) -> Result<RolloutRecord, ApiError> {
    let spec = fledge_spec::parse_spec(text, origin).map_err(|e| invalid_spec(&e))?;
    let spec = admit(shared, spec, origin).await?;

    // Created as Pending first, so the store's one-active-rollout-per-app rule holds
    // even for a spec that would finish in its first step; then started like any
    // other engine step, so a promotion at start updates the app in the same
    // transaction.
    let pending = engine::pending_state().map_err(internal)?;
    let new = NewRollout {
        app: spec.app.clone(),
        version: spec.version.clone(),
        phase: "Pending".to_owned(),
        spec_text: text.to_owned(),
        spec: serde_json::to_value(&spec).map_err(|e| internal(e.into()))?,
        state: pending,
        group: membership.map(|m| m.group.to_owned()),
        events: vec![
            NewEvent::new(
                "Created",
                principal.name.clone(),
                format!(
                    "rollout of {} {} created by {}{}",
                    spec.app,
                    spec.version,
                    principal.name,
                    why.map(|w| format!(" ({w})")).unwrap_or_default()
                ),
            )
            .at(shared.timestamp()),
        ],
        fence: None,
    };
    let created = shared
        .store
        .create_rollout(new)
        .await
        .map_err(|e| match e {
            StoreError::ActiveRolloutExists { .. } => ApiError::conflict(
                "active_rollout",
                format!(
                    "app `{}` already has an active rollout; abort it or wait for it to finish",
                    spec.app
                ),
            ),
            other => store_error(other),
        })?;
    // The built-in proxy's counters as the rollout starts: its first stage is
    // judged on what comes after them, from the first look on.
    let baseline = match shared.apps.get(&spec.app).await {
        Some(app) => app.live_observation(&spec.version).await,
        None => None,
    };
    // The controller of another replica may already have read the pending rollout
    // (its first read is a baseline): start it again from the revision it wrote.
    let mut pending = created;
    let mut attempt = 1;
    let record = loop {
        let decision = engine::start(
            &spec,
            shared.clock.now(),
            baseline.clone(),
            membership.and_then(|m| m.hold),
        )
        .map_err(internal)?;
        match persist(shared, &pending, &spec, decision).await {
            Ok(record) => break record,
            Err(StoreError::Conflict { .. }) if attempt < MAX_ATTEMPTS => {
                attempt += 1;
                pending = resolve(shared, &pending.id).await?;
                // Aborted meanwhile by an operator: that is what it is now.
                if pending.phase != "Pending" {
                    break pending;
                }
            }
            Err(e) => return Err(store_error(e)),
        }
    };
    tracing::info!(rollout = %record.id, app = %record.app, version = %record.version,
        actor = %principal.name, "rollout created");
    after_write(shared, &record).await;
    Ok(record)
}

/// A retry starts the rollout's version as a canary again, which is pointless once
/// that version is the app's stable one (another rollout promoted it since):
/// refused, as creating such a rollout is.
async fn refuse_retry_of_stable(shared: &Shared, record: &RolloutRecord) -> Result<(), ApiError> {
    let stables = super::view::Stables::of(shared, &record.app).await;
    if !stables.is_stable(&record.app, &record.version) {
        return Ok(());
    }
    Err(ApiError::conflict(
        "already_stable",
        format!(
            "cannot retry rollout {}: `{}` is already the stable version of `{}`",
            record.id, record.version, record.app
        ),
    ))
}

/// Applies an operator's command to the rollout `key` (an id or an app name),
/// re-reading and retrying when the rollout changed under it.
pub async fn command(
    shared: &Shared,
    key: &str,
    command: Command,
    principal: &Principal,
) -> Result<RolloutRecord, ApiError> {
    for _ in 0..MAX_ATTEMPTS {
        let record = resolve(shared, key).await?;
        let spec = spec_of(&record).map_err(internal)?;
        // Only a retry the phase allows: any other is the engine's `invalid_phase`.
        if matches!(command, Command::Retry)
            && matches!(record.phase.as_str(), "Failed" | "Aborted")
        {
            refuse_retry_of_stable(shared, &record).await?;
        }
        let decision = engine::command(
            &spec,
            &record.state,
            &command,
            &principal.name,
            shared.clock.now(),
        )
        .map_err(internal)?
        .map_err(|refused| {
            ApiError::conflict(
                "invalid_phase",
                format!(
                    "cannot {} rollout {} in phase {}: {refused}",
                    command.name(),
                    record.id,
                    record.phase
                ),
            )
        })?;
        let mut decision = decision;
        if !decision.events.iter().any(|e| e.actor == principal.name) {
            let reason = match &command {
                Command::Abort { reason: Some(r) } => format!(": {r}"),
                _ => String::new(),
            };
            decision.events.insert(
                0,
                NewEvent::new(
                    format!("{}Requested", capitalise(command.name())),
                    principal.name.clone(),
                    format!("{} by {}{reason}", command.name(), principal.name),
                )
                .at(shared.timestamp()),
            );
        }
        match persist(shared, &record, &spec, decision).await {
            Ok(updated) => {
                tracing::info!(rollout = %updated.id, command = command.name(),
                    actor = %principal.name, phase = %updated.phase, "operator command applied");
                shared.metrics.count_command(command.name());
                return Ok(updated);
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(StoreError::ActiveRolloutExists { .. }) => {
                return Err(ApiError::conflict(
                    "active_rollout",
                    format!(
                        "cannot {} rollout {}: app `{}` has another active rollout",
                        command.name(),
                        record.id,
                        record.app
                    ),
                ));
            }
            Err(e) => return Err(store_error(e)),
        }
    }
    Err(ApiError::conflict(
        "conflict",
        format!("rollout `{key}` kept changing; try again"),
    ))
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Writes a decision at the revision it was made from (with the app's new stable
/// version when it promotes), then makes the world match.
pub async fn persist(
    shared: &Shared,
    record: &RolloutRecord,
    spec: &RolloutSpec,
    decision: Decision,
) -> Result<RolloutRecord, StoreError> {
    persist_fenced(shared, record, spec, decision, None).await
}

/// [`persist`], refused with [`StoreError::Fenced`] when `fence` is given and its
/// lease has passed to another replica (the controller's writes, see `leader`).
pub async fn persist_fenced(
    shared: &Shared,
    record: &RolloutRecord,
    spec: &RolloutSpec,
    decision: Decision,
    fence: Option<fledge_store::Fence>,
) -> Result<RolloutRecord, StoreError> {
    let app_update = if decision.promote {
        promoted_app(shared, record, spec).await?
    } else {
        None
    };
    let hooks = decision.hooks.clone();
    let notices =
        super::notify::Pending::before_write(shared, record, spec, &decision.events).await;
    // Counted and logged once written: a decision the store refused is taken again
    // (from the stored state) when it takes writes.
    let decided: Vec<(String, String, String)> = decision
        .events
        .iter()
        .map(|e| (e.kind.clone(), e.actor.clone(), e.message.clone()))
        .collect();
    let result = shared
        .store
        .update_rollout(RolloutUpdate {
            id: record.id.clone(),
            expected_revision: record.revision,
            phase: decision.phase,
            state: decision.state,
            events: decision.events,
            app_update,
            fence,
        })
        .await;
    shared.store_health.wrote(&result);
    let updated = result?;
    for (kind, actor, message) in decided {
        shared.metrics.count_decision(&kind);
        tracing::info!(rollout = %record.id, app = %record.app, kind = %kind,
            actor = %actor, "{message}");
    }
    for (point, attempt) in hooks {
        shared.hooks.push(crate::hook_queue::HookJob {
            rollout_id: updated.id.clone(),
            point,
            attempt,
        });
    }
    notices.written(shared, &updated, spec);
    after_write(shared, &updated).await;
    Ok(updated)
}

/// The app's config with the canary as its stable version.
async fn promoted_app(
    shared: &Shared,
    record: &RolloutRecord,
    spec: &RolloutSpec,
) -> Result<Option<AppUpdate>, StoreError> {
    let Some(app) = shared.store.get_app(&record.app).await? else {
        return Ok(None);
    };
    let Ok(mut config) = app_from_record(&app) else {
        return Ok(None);
    };
    let promoted = StableConfig {
        version: spec.version.clone(),
        endpoints: spec
            .canary
            .as_ref()
            .map(|c| c.endpoints.clone())
            .unwrap_or_default(),
    };
    // What `undo` goes back to.
    config.previous_stable = Some(std::mem::replace(&mut config.stable, promoted));
    Ok(Some(AppUpdate {
        name: record.app.clone(),
        config: serde_json::to_value(&config).unwrap_or_default(),
    }))
}

/// After any write: apply the app's route and wake the live-event stream.
async fn after_write(shared: &Shared, record: &RolloutRecord) {
    if let Some(app) = shared.apps.get(&record.app).await
        && let Err(e) = app.reconcile(shared, false).await
    {
        tracing::warn!(app = %record.app, error = %format!("{e:#}"),
            "could not apply the route now; the controller retries every tick");
    }
    shared.note_write();
}
