//! Rollout groups end to end, through the real `fledge serve` and its built-in
//! proxies on loopback, under load on both apps: a lock-step group whose second
//! member fails rolls the first back; an ordered group undoes a member that had
//! already succeeded (`rollbackSucceeded`); a healthy group promotes both, never
//! letting one member run a stage ahead; and `fledge apply` / `fledge group` drive
//! a group from the command line.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::StatusCode;
use serde_json::Value;
use support::rollout::{get as get_rollout, kinds, member_of};
use support::serve::{Serve, free_addr};
use support::{Backend, Http, Load, backend, wait_for};

/// Two apps, `api` and `web`, each with its own proxy and its two versions' fake
/// upstreams, on one `fledge serve`.
struct Two {
    serve: Serve,
    api_proxy: SocketAddr,
    web_proxy: SocketAddr,
    api_v2: Backend,
    web_v2: Backend,
    _api_v1: Backend,
    _web_v1: Backend,
    dir: tempfile::TempDir,
}

impl Two {
    /// Starts the server; `web`'s new version fails every `web_fail_every`-th
    /// request when set.
    async fn start(web_fail_every: Option<u64>) -> Two {
        let dir = tempfile::tempdir().unwrap();
        let api_v1 = backend("api-v1", None).await;
        let api_v2 = backend("api-v2", None).await;
        let web_v1 = backend("web-v1", None).await;
        let web_v2 = backend("web-v2", web_fail_every).await;
        let (api_proxy, web_proxy) = (free_addr(), free_addr());
        let app = |name: &str, listen: SocketAddr, v1: &Backend, v2: &Backend| {
            format!(
                "  - name: {name}\n    listen: {listen}\n    stable:\n      version: v1\n      endpoints: [\"{}\"]\n    canary:\n      endpoints: [\"{}\"]\n",
                v1.endpoint(),
                v2.endpoint()
            )
        };
        let text = format!(
            "listen: {api}\nstore: sqlite://{db}\ncontroller:\n  tick: 200ms\napps:\n{a}{w}",
            api = free_addr(),
            db = dir.path().join("fledge.db").display(),
            a = app("api", api_proxy, &api_v1, &api_v2),
            w = app("web", web_proxy, &web_v1, &web_v2),
        );
        let api_addr: SocketAddr = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("listen: "))
            .and_then(|a| a.parse().ok())
            .unwrap();
        let serve = Serve::with_config(dir.path(), "serve", api_addr, &text).await;
        Two {
            serve,
            api_proxy,
            web_proxy,
            api_v2,
            web_v2,
            _api_v1: api_v1,
            _web_v1: web_v1,
            dir,
        }
    }

    /// Starts the server and `concurrency` load loops on each app's proxy.
    async fn loaded(web_fail_every: Option<u64>, concurrency: usize) -> (Two, Load, Load) {
        let two = Two::start(web_fail_every).await;
        let api_load = Load::start(two.api_proxy, concurrency);
        let web_load = Load::start(two.web_proxy, concurrency);
        (two, api_load, web_load)
    }

    fn api(&self) -> &Http {
        &self.serve.api
    }

    /// Creates a group from a YAML document, asserting `201 Created`; returns it
    /// and its id.
    async fn create(&self, doc: &str) -> (Value, String) {
        let r = self.api().post_yaml("/groups", doc).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let id = r.body["id"].as_str().unwrap().to_owned();
        (r.body, id)
    }

    async fn group(&self, id: &str) -> Value {
        self.api().get(&format!("/groups/{id}")).await.body
    }

    /// Waits until the group has ended; returns it then.
    async fn ended(&self, id: &str, limit: Duration) -> Value {
        wait_for(limit, "the group to end", || async {
            let g = self.group(id).await;
            match g["phase"].as_str() {
                Some("Progressing" | "Paused") | None => Err(members_line(&g)),
                Some(_) => Ok(g),
            }
        })
        .await
    }

    /// Which version of `app` answers a request through its proxy now.
    async fn serving(&self, proxy: SocketAddr) -> String {
        Http::new(proxy).get("/").await.text
    }

    /// Asserts, `times` requests in a row, that `api` and `web` answer through their
    /// proxies with the versions named.
    async fn assert_serving(&self, (api, web): (&str, &str), times: usize) {
        for _ in 0..times {
            assert_eq!(self.serving(self.api_proxy).await, api);
            assert_eq!(self.serving(self.web_proxy).await, web);
        }
    }
}

/// The members' phases and stages, for timeout messages.
fn members_line(g: &Value) -> String {
    let members: Vec<String> = g["members"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .map(|m| {
                    format!(
                        "{} {} stage {}",
                        m["app"], m["rollout"]["phase"], m["rollout"]["stageIndex"]
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    format!("{} [{}]", g["phase"], members.join(", "))
}

/// A member of a group document: `app` v2 through `stages` (YAML list items
/// indented for a member), judged every 200 ms.
fn member(app: &str, stages: &str) -> String {
    format!(
        "  - app: {app}\n    version: v2\n    analysis:\n      interval: 200ms\n      minRequests: 20\n    stages:\n{stages}"
    )
}

/// Two stages: 20% for `secs` seconds judged on `error_rate < 1%`, then 100%.
fn two_stages(secs: u32) -> String {
    format!(
        "      - traffic: 20\n        duration: {secs}s\n        successCriteria:\n          - error_rate < 1%\n      - traffic: 100\n        final: true\n        promote: true\n"
    )
}

fn group_doc(name: &str, order: &str, rollback_succeeded: bool, members: &[String]) -> String {
    format!(
        "name: {name}\norder: {order}\nrollbackSucceeded: {rollback_succeeded}\nrollouts:\n{}",
        members.concat()
    )
}

/// A group document whose members each run [`two_stages`] with their first stage
/// lasting the given seconds.
fn two_stage_group(
    name: &str,
    order: &str,
    rollback_succeeded: bool,
    members: &[(&str, u32)],
) -> String {
    let members: Vec<String> = members
        .iter()
        .map(|&(app, secs)| member(app, &two_stages(secs)))
        .collect();
    group_doc(name, order, rollback_succeeded, &members)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the fledge binary (runs `fledge serve`)"]
async fn a_lock_step_group_whose_second_member_fails_rolls_the_first_back() {
    let (two, api_load, web_load) = Two::loaded(Some(10), 4).await;
    let doc = two_stage_group("checkout", "together", false, &[("api", 30), ("web", 30)]);
    let (created, id) = two.create(&doc).await;
    assert_eq!(created["phase"], "Progressing", "{created}");
    // Both members started at once, each held at its first stage.
    for app in ["api", "web"] {
        assert_eq!(member_of(&created, app)["rollout"]["stageIndex"], 0);
    }
    let g = two.ended(&id, Duration::from_secs(30)).await;
    api_load.stop().await;
    web_load.stop().await;

    assert_eq!(g["phase"], "Failed", "{g}");
    let web = &member_of(&g, "web")["rollout"];
    let api = &member_of(&g, "api")["rollout"];
    assert_eq!(web["phase"], "Failed", "{g}");
    assert_eq!(
        api["phase"], "Aborted",
        "the healthy member is rolled back: {g}"
    );
    assert_eq!(
        api["stageIndex"], 0,
        "it never went past the group's stage: {g}"
    );
    assert!(
        g["message"]
            .as_str()
            .unwrap()
            .contains("member web v2 failed"),
        "{}",
        g["message"]
    );
    assert_eq!(
        kinds(&g),
        [
            "Created",
            "MemberStarted",
            "MemberStarted",
            "MemberAborted",
            "Failed"
        ],
        "{g}"
    );
    // The member's own history says why it was aborted.
    let api_history = get_rollout(two.api(), api["id"].as_str().unwrap()).await;
    let abort = api_history["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "Aborted")
        .unwrap_or_else(|| panic!("{api_history}"));
    assert!(
        abort["message"]
            .as_str()
            .unwrap()
            .contains("member web v2 failed"),
        "{abort}"
    );
    // Both apps serve their stable version only.
    let (api_hits, web_hits) = (two.api_v2.hits(), two.web_v2.hits());
    two.assert_serving(("api-v1", "web-v1"), 20).await;
    assert_eq!((two.api_v2.hits(), two.web_v2.hits()), (api_hits, web_hits));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the fledge binary (runs `fledge serve`)"]
async fn an_ordered_group_undoes_a_succeeded_member_when_the_next_one_fails() {
    let (two, api_load, web_load) = Two::loaded(Some(10), 4).await;
    let doc = two_stage_group("checkout", "[api, web]", true, &[("web", 30), ("api", 2)]);
    let (created, id) = two.create(&doc).await;
    // Only the first in the order starts.
    assert!(member_of(&created, "web")["rollout"].is_null(), "{created}");
    assert_eq!(member_of(&created, "api")["rollout"]["stageIndex"], 0);

    // api succeeds first: v2 serves all of api's users while web has not started.
    wait_for(
        Duration::from_secs(20),
        "api to succeed and web to start",
        || async {
            let g = two.group(&id).await;
            let started = !member_of(&g, "web")["rollout"].is_null();
            if member_of(&g, "api")["rollout"]["phase"] == "Succeeded" && started {
                Ok(())
            } else {
                Err(members_line(&g))
            }
        },
    )
    .await;
    let g = two.ended(&id, Duration::from_secs(30)).await;
    api_load.stop().await;
    web_load.stop().await;

    assert_eq!(g["phase"], "Failed", "{g}");
    assert_eq!(member_of(&g, "web")["rollout"]["phase"], "Failed");
    assert_eq!(member_of(&g, "api")["rollout"]["phase"], "Succeeded");
    let undo = member_of(&g, "api")["undoRolloutId"]
        .as_str()
        .unwrap_or_else(|| panic!("api was not undone: {g}"))
        .to_owned();
    assert!(kinds(&g).contains(&"MemberUndone"), "{g}");
    // The undo is a rollout of its own, back to v1, and it finishes.
    let back = wait_for(Duration::from_secs(10), "the undo to succeed", || async {
        let r = get_rollout(two.api(), &undo).await;
        if r["phase"] == "Succeeded" {
            Ok(r)
        } else {
            Err(r["phase"].to_string())
        }
    })
    .await;
    assert_eq!(back["version"], "v1", "{back}");
    two.assert_serving(("api-v1", "web-v1"), 20).await;
    let app = two.api().get("/apps/api").await.body;
    assert_eq!(app["stable"]["version"], "v1", "{app}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the fledge binary (runs `fledge serve`)"]
async fn a_healthy_group_moves_in_lock_step_and_promotes_every_member_from_the_cli() {
    let (two, api_load, web_load) = Two::loaded(None, 4).await;
    // web's first stage is longer: api has to wait for it at the end of its own.
    let stages = |first: u32| {
        format!(
            "      - traffic: 20\n        duration: {first}s\n        successCriteria:\n          - error_rate < 1%\n      - traffic: 50\n        duration: 1s\n      - traffic: 100\n        final: true\n        promote: true\n"
        )
    };
    let doc = group_doc(
        "checkout",
        "together",
        false,
        &[member("api", &stages(1)), member("web", &stages(4))],
    );
    let file = two.dir.path().join("group.yaml");
    std::fs::write(&file, &doc).unwrap();
    let server = two.api().base().to_owned();
    let fledge = move |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_fledge"))
            .args(args)
            .env("FLEDGE_SERVER", &server)
            .output()
            .expect("the fledge binary runs")
    };
    let watcher = {
        let api = two.api().clone();
        tokio::spawn(async move {
            // While the group runs, a member is in a later stage than the other only
            // once the other has passed its own (it waits for the group, and moves in
            // the same pass). Returns what broke that, and how many looks saw the group.
            let (mut ahead, mut looks) = (Vec::new(), 0);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while tokio::time::Instant::now() < deadline {
                let groups = api.get("/groups?active=true").await.body;
                match groups.as_array().and_then(|gs| gs.first()).cloned() {
                    Some(g) => {
                        looks += 1;
                        let stage = |app| member_of(&g, app)["rollout"]["stageIndex"].as_u64();
                        for (front, back) in [("api", "web"), ("web", "api")] {
                            let behind = member_of(&g, back);
                            if let (Some(f), Some(b)) = (stage(front), stage(back))
                                && f > b
                                && (f > b + 1
                                    || (behind["rollout"]["phase"] == "Progressing"
                                        && behind["waitingForGroup"] != true))
                            {
                                ahead.push(members_line(&g));
                            }
                        }
                    }
                    // Not created yet, or over.
                    None if looks == 0 => {}
                    None => break,
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (ahead, looks)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let out = tokio::task::spawn_blocking({
        let file = file.clone();
        let fledge = fledge.clone();
        move || {
            fledge(&[
                "apply",
                "-f",
                file.to_str().unwrap(),
                "--wait",
                "--timeout",
                "60s",
            ])
        }
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("checkout") && stdout.contains("Succeeded"),
        "{stdout}"
    );
    assert!(stderr.contains("every member passed stage 1"), "{stderr}");
    let (ahead, looks) = watcher.await.unwrap();
    assert!(looks >= 20, "the watcher saw the group only {looks} times");
    assert!(
        ahead.is_empty(),
        "a member ran ahead of its group: {ahead:?}"
    );
    api_load.stop().await;
    let failed = web_load.failed.load(Ordering::SeqCst);
    web_load.stop().await;
    assert_eq!(failed, 0, "no user request failed");

    two.assert_serving(("api-v2", "web-v2"), 10).await;
    // The CLI shows the group by name, and refuses to act on one that has ended.
    let shown = fledge(&["group", "get", "checkout"]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("api") && text.contains("web") && text.contains("Succeeded"),
        "{text}"
    );
    let refused = fledge(&["group", "abort", "checkout"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("cannot abort group"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the fledge binary (runs `fledge serve`)"]
async fn an_operator_pauses_and_aborts_a_group() {
    let (two, api_load, web_load) = Two::loaded(None, 2).await;
    let doc = two_stage_group("checkout", "[api, web]", false, &[("api", 60), ("web", 60)]);
    let (created, id) = two.create(&doc).await;
    let allowed = |g: &Value| g["allowedActions"].clone();
    assert_eq!(
        allowed(&created),
        serde_json::json!(["promote", "abort", "pause"])
    );

    let paused = two.api().post(&format!("/groups/{id}/pause"), None).await;
    assert_eq!(paused.status, StatusCode::OK, "{}", paused.text);
    assert_eq!(paused.body["phase"], "Paused");
    assert_eq!(member_of(&paused.body, "api")["rollout"]["phase"], "Paused");
    let again = two.api().post(&format!("/groups/{id}/pause"), None).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text);

    let aborted = two
        .api()
        .post(
            &format!("/groups/{id}/abort"),
            Some(r#"{"reason": "bad migration"}"#),
        )
        .await;
    assert_eq!(aborted.status, StatusCode::OK, "{}", aborted.text);
    let g = aborted.body;
    assert_eq!(g["phase"], "Aborted", "{g}");
    assert_eq!(member_of(&g, "api")["rollout"]["phase"], "Aborted");
    assert!(
        member_of(&g, "web")["rollout"].is_null(),
        "web never starts: {g}"
    );
    assert!(
        g["message"].as_str().unwrap().contains("bad migration"),
        "{g}"
    );
    api_load.stop().await;
    web_load.stop().await;
    for _ in 0..10 {
        assert_eq!(two.serving(two.api_proxy).await, "api-v1");
    }
    // An unknown group, and a document that names an app the server does not know.
    let missing = two.api().get("/groups/nope").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let unknown = two_stage_group("other", "together", false, &[("api", 1), ("shop", 1)]);
    let bad = two.api().post_yaml("/groups", &unknown).await;
    assert_eq!(bad.status, StatusCode::NOT_FOUND, "{}", bad.text);
    assert!(
        bad.text.contains("rollouts[1]") && bad.text.contains("shop"),
        "{}",
        bad.text
    );
}
