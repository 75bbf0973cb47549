//! Measures how many rollout updates (each with one event) a store commits per
//! second, from one writer and from several writers on different rollouts.
//!
//! ```sh
//! cargo run --release -p fledge-store --example throughput -- sqlite:///tmp/t.db 2000
//! cargo run --release -p fledge-store --example throughput -- postgres://postgres@127.0.0.1:5432/postgres
//! ```

use std::time::Instant;

use fledge_store::{NewEvent, NewRollout, RolloutUpdate, Store};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().ok_or("usage: throughput URL [UPDATES]")?;
    let n: i64 = args.next().map_or(Ok(1000), |s| s.parse())?;
    let store = fledge_store::connect(&url).await?;
    let run = uuid::Uuid::new_v4().simple().to_string();

    let id = create(&*store, &format!("bench-{run}")).await?;
    let start = Instant::now();
    for rev in 1..=n {
        store.update_rollout(tick(&id, rev)).await?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}: 1 writer: {n} updates in {secs:.2}s = {:.0}/s ({:.2} ms each)",
        store.backend(),
        n as f64 / secs,
        secs * 1000.0 / n as f64
    );

    let writers = 8;
    let mut ids = Vec::new();
    for w in 0..writers {
        ids.push(create(&*store, &format!("bench-{run}-{w}")).await?);
    }
    let per = (n / writers).max(1);
    let start = Instant::now();
    let tasks: Vec<_> = ids
        .into_iter()
        .map(|id| {
            let store = store.clone();
            tokio::spawn(async move {
                for rev in 1..=per {
                    store.update_rollout(tick(&id, rev)).await?;
                }
                Ok::<_, fledge_store::StoreError>(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    let total = per * writers;
    println!(
        "{}: {writers} writers: {total} updates in {secs:.2}s = {:.0}/s",
        store.backend(),
        total as f64 / secs
    );
    store.close().await;
    Ok(())
}

async fn create(store: &dyn Store, app: &str) -> Result<String, fledge_store::StoreError> {
    let r = store
        .create_rollout(NewRollout {
            app: app.into(),
            version: "v2".into(),
            phase: "Progressing".into(),
            spec_text: String::new(),
            spec: json!({}),
            state: json!({}),
            events: vec![],
            group: None,
            fence: None,
        })
        .await?;
    Ok(r.id)
}

fn tick(id: &str, rev: i64) -> RolloutUpdate {
    RolloutUpdate {
        id: id.into(),
        expected_revision: rev,
        phase: "Progressing".into(),
        state: json!({"stage": 2, "weight": 25, "rev": rev}),
        events: vec![
            NewEvent::new("AnalysisPassed", "engine", "error rate within threshold")
                .with_evidence(json!({"canary": {"errors": 3, "requests": 1200}})),
        ],
        app_update: None,
        fence: None,
    }
}
