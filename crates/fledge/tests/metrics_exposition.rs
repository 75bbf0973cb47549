//! `/metrics` as scrapers read it: the server's page (with a rollout in flight, so
//! the per-rollout and per-criterion families are there) and the operator's, in
//! OpenMetrics and, when a client asks for `text/plain`, the Prometheus text format;
//! every family named in `docs/metrics.md`; the page accepted by a strict
//! OpenMetrics parser (Python's `prometheus_client`) and scraped by a real Prometheus.

mod support;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use fledge_k8s::telemetry::Telemetry;
use fledge_providers::testing::process::Prometheus;
use fledge_stats::exposition::Format;
use serde_json::Value;
use support::rollout::{create, until};
use support::{Load, Shop, spec, wait_for};

/// A stage that holds the rollout at 50% long enough to be scraped, judging two
/// criteria (one relative to stable).
const STAGES: &str = "  - traffic: 50\n    duration: 10m\n    successCriteria:\n      \
                      - error_rate < 50%\n      - latency_p95 < stable * 100\n  \
                      - traffic: 100\n    final: true\n    promote: true\n";

/// Shop with a rollout of v2 at 50% under load, judged at least once with data on
/// both arms; the load stops when it is dropped.
struct InFlight {
    shop: Shop,
    id: String,
    _load: Load,
}

impl InFlight {
    async fn start() -> InFlight {
        let shop = Shop::start(None).await;
        let load = Load::start(shop.proxy().await, 2);
        let id = create(&shop.api, &spec("shop", "v2", STAGES)).await;
        let what = "both criteria judged with canary data";
        until(&shop.api, &id, Duration::from_secs(30), what, |r| {
            r["analysis"]["criteria"]
                .as_array()
                .is_some_and(|c| c.len() == 2 && c.iter().all(|e| e["canary"]["value"].is_number()))
        })
        .await;
        InFlight {
            shop,
            id,
            _load: load,
        }
    }

    /// `/metrics` with this `Accept` (none when `None`): the content type and the page.
    async fn scrape(&self, accept: Option<&str>) -> (String, String) {
        let mut req = reqwest::Client::new().get(format!("{}/metrics", self.shop.api.base()));
        if let Some(accept) = accept {
            req = req.header("accept", accept);
        }
        let resp = req.send().await.expect("GET /metrics");
        assert_eq!(resp.status(), 200);
        let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
        (ct, resp.text().await.unwrap())
    }
}

/// The operator's page with one of each series.
fn operator_page(format: Format) -> String {
    let t = Telemetry::new();
    t.rollout("payments", "checkout", "Paused", 50);
    t.hooks_ran("beforePromotion", false);
    [true, false].into_iter().for_each(|ok| t.reconciled(ok));
    t.decided("StageAdvanced");
    t.encode(format)
}

/// The family names a page declares, with their types, in `# TYPE` order.
fn declared(page: &str) -> Vec<(String, String)> {
    page.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, ty) = l.split_once(' ').unwrap();
            (name.to_owned(), ty.to_owned())
        })
        .collect()
}

fn docs() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/metrics.md");
    std::fs::read_to_string(path).expect("docs/metrics.md")
}

/// Every family of a Prometheus text page (the names Prometheus stores and queries
/// use) is named in `docs/metrics.md`.
fn assert_documented(page: &str, docs: &str) {
    let missing: Vec<String> = declared(page)
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| !docs.contains(&format!("`{name}`")))
        .collect();
    assert!(missing.is_empty(), "not in docs/metrics.md: {missing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_negotiated_and_every_family_is_documented() {
    let w = InFlight::start().await;
    let (ct, om) = w.scrape(None).await;
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    assert!(om.ends_with("# EOF\n"), "{om}");
    let types: BTreeMap<String, String> = declared(&om).into_iter().collect();
    for (family, ty) in [
        ("fledge_build", "info"),
        ("fledge_proxy_requests", "counter"),
        ("fledge_decisions", "counter"),
        ("fledge_canary_weight_ratio", "gauge"),
        ("fledge_controller_tick_lag_seconds", "histogram"),
        ("fledge_controller_tick_duration_seconds", "histogram"),
        ("fledge_rollout", "info"),
        ("fledge_rollout_phase", "gauge"),
        ("fledge_criterion_value", "gauge"),
        ("fledge_criterion_limit", "gauge"),
    ] {
        assert_eq!(types.get(family).map(String::as_str), Some(ty), "{family}");
    }
    assert!(!types.keys().any(|n| n.ends_with("_total")), "{types:?}");
    assert!(!om.contains("_percent"), "{om}");
    assert_eq!(om.matches("# TYPE fledge_canary_weight").count(), 1);
    let id = &w.id;
    for line in [
        format!(
            "fledge_rollout_info{{app=\"shop\",rollout=\"{id}\",stable=\"v1\",canary=\"v2\"}} 1"
        ),
        format!("fledge_rollout_phase{{app=\"shop\",rollout=\"{id}\",phase=\"Progressing\"}} 1"),
        format!("fledge_rollout_phase{{app=\"shop\",rollout=\"{id}\",phase=\"Failed\"}} 0"),
        format!(
            "fledge_criterion_limit{{app=\"shop\",rollout=\"{id}\",metric=\"error_rate\",\
             criterion=\"error_rate < 50%\"}} 0.5"
        ),
        format!(
            "fledge_criterion_value{{app=\"shop\",rollout=\"{id}\",metric=\"error_rate\",\
             criterion=\"error_rate < 50%\",arm=\"canary\"}} 0"
        ),
        "fledge_canary_weight_ratio{app=\"shop\"} 0.5".to_owned(),
        format!(
            "fledge_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        ),
    ] {
        assert!(om.contains(&format!("{line}\n")), "{line} not in:\n{om}");
    }
    // The relative limit is resolved against stable's latency.
    assert!(
        om.contains("criterion=\"latency_p95 < stable * 100\",arm=\"stable\"} "),
        "{om}"
    );

    let (ct, text) = w.scrape(Some("text/plain;version=0.0.4")).await;
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    assert!(!text.contains("# EOF"));
    assert!(
        text.contains("# TYPE fledge_proxy_requests_total counter\n"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE fledge_rollout_info gauge\n"),
        "{text}"
    );
    // What Prometheus asks for: OpenMetrics first.
    let (ct, _) = w
        .scrape(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        ))
        .await;
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");

    let docs = docs();
    assert_documented(&text, &docs);
    assert_documented(&operator_page(Format::PrometheusText), &docs);
}

/// The Grafana dashboard and the alert rules in `deploy/` query only series that
/// `docs/metrics.md` lists (a histogram's `_bucket`, `_sum` and `_count` by its name).
#[test]
fn the_dashboard_and_the_alerts_use_documented_series() {
    let docs = docs();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../");
    for file in [
        "deploy/grafana/fledge.json",
        "deploy/prometheus/fledge-alerts.yml",
    ] {
        let text = std::fs::read_to_string(format!("{root}{file}")).expect(file);
        if file.ends_with(".json") {
            serde_json::from_str::<Value>(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        }
        let mut used = 0;
        for (i, _) in text.match_indices("fledge_") {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let series = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|base| base.ends_with("_seconds"))
                .unwrap_or(&name);
            assert!(
                docs.contains(&format!("`{series}`")),
                "{file} uses {name}, which docs/metrics.md does not list"
            );
            used += 1;
        }
        assert!(used > 5, "{file} uses {used} fledge series");
    }
}

// === a strict OpenMetrics parser ===

/// The Python with `prometheus_client`: `$FLEDGE_TEST_PYTHON`, else the tools
/// virtualenv scripts/test installs it into.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("FLEDGE_TEST_PYTHON") {
        return p.into();
    }
    let cache = std::env::var_os("FLEDGE_TOOLS_CACHE")
        .map_or_else(|| PathBuf::from("/var/cache/fledge/tools"), PathBuf::from);
    cache.join("schemathesis-venv/bin/python")
}

/// Parses `page` with `prometheus_client.openmetrics.parser`; returns each family's
/// name and type, or the parser's error.
fn strict_parse(page: &str) -> Result<BTreeMap<String, String>, String> {
    const SCRIPT: &str = "import sys\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
        for f in text_string_to_metric_families(sys.stdin.read()):\n\
        \x20   print(f.name, f.type, len(f.samples))\n";
    let python = python();
    let mut child = Command::new(&python)
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e} (run scripts/test)", python.display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let mut parts = l.split(' ');
            let name = parts.next().unwrap().to_owned();
            (name, parts.next().unwrap().to_owned())
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs prometheus_client: run scripts/test"]
async fn a_strict_openmetrics_parser_accepts_both_pages() {
    let w = InFlight::start().await;
    let (_, page) = w.scrape(None).await;
    let families = strict_parse(&page).unwrap_or_else(|e| panic!("{e}\n{page}"));
    for (family, ty) in [
        ("fledge_proxy_requests", "counter"),
        ("fledge_proxy_request_duration_seconds", "histogram"),
        ("fledge_controller_tick_duration_seconds", "histogram"),
        ("fledge_build", "info"),
        ("fledge_rollout", "info"),
        ("fledge_rollout_phase", "gauge"),
        ("fledge_criterion_value", "gauge"),
        ("fledge_criterion_limit", "gauge"),
    ] {
        assert_eq!(
            families.get(family).map(String::as_str),
            Some(ty),
            "{family}: {families:?}"
        );
    }
    assert_eq!(families.len(), declared(&page).len(), "{families:?}");

    let operator = operator_page(Format::OpenMetrics);
    let families = strict_parse(&operator).unwrap_or_else(|e| panic!("{e}\n{operator}"));
    assert_eq!(
        families
            .get("fledge_operator_reconciles")
            .map(String::as_str),
        Some("counter")
    );
    assert_eq!(
        families.get("fledge_operator_build").map(String::as_str),
        Some("info")
    );

    // The parser is strict: the page as it was before (counters declared with
    // `_total`) is refused.
    let old = page.replace(
        "# TYPE fledge_proxy_requests counter",
        "# TYPE fledge_proxy_requests_total counter",
    );
    assert!(strict_parse(&old).is_err());
}

// === a real Prometheus ===

/// The result vector of an instant query.
async fn query(prometheus: &str, q: &str) -> Vec<Value> {
    let url = format!("{prometheus}/api/v1/query");
    let body: Value = reqwest::Client::new()
        .get(url)
        .query(&[("query", q)])
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .expect("Prometheus answers")
        .json()
        .await
        .expect("JSON");
    body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs prometheus: run scripts/test"]
async fn prometheus_scrapes_every_family() {
    let w = InFlight::start().await;
    let prometheus = Prometheus::start(&[w.shop.server.api_addr()], Duration::from_millis(200))
        .await
        .expect("Prometheus starts");
    let url = prometheus.url.clone();
    let id = w.id.clone();
    for q in [
        format!("fledge_rollout_info{{rollout=\"{id}\",stable=\"v1\",canary=\"v2\"}}"),
        format!("fledge_rollout_phase{{rollout=\"{id}\",phase=\"Progressing\"}} == 1"),
        "fledge_criterion_value{metric=\"error_rate\",arm=\"canary\"}".to_owned(),
        "fledge_criterion_limit{metric=\"error_rate\"} == 0.5".to_owned(),
        "fledge_build_info".to_owned(),
        "fledge_canary_weight_ratio{app=\"shop\"} == 0.5".to_owned(),
        "fledge_proxy_requests_total{role=\"canary\"} > 0".to_owned(),
        "histogram_quantile(0.9, rate(fledge_controller_tick_duration_seconds_bucket[5s]))"
            .to_owned(),
        "rate(fledge_proxy_request_duration_seconds_count{role=\"stable\"}[5s]) > 0".to_owned(),
    ] {
        let what = format!("Prometheus to answer {q}");
        wait_for(Duration::from_secs(30), &what, || {
            let (url, q) = (url.clone(), q.clone());
            async move {
                let result = query(&url, &q).await;
                if result.is_empty() {
                    Err("no series".to_owned())
                } else {
                    Ok(())
                }
            }
        })
        .await;
    }
    // Prometheus read the types from the page: the counter's family is `counter`.
    let meta: Value = reqwest::get(format!("{url}/api/v1/metadata"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        meta["data"]["fledge_proxy_requests"][0]["type"], "counter",
        "{meta}"
    );
    assert_eq!(
        meta["data"]["fledge_controller_tick_lag_seconds"][0]["type"], "histogram",
        "{meta}"
    );
    drop(prometheus);
}
