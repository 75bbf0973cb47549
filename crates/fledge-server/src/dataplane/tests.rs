//! A data plane in this test process, driven over its socket as a control process
//! drives it: routes, counters, metrics, fencing, adoption, and a takeover.

use std::net::SocketAddr;
use std::time::Duration;

use fledge_proxy::{Route, UpstreamGroup};

use super::process::{self, Options};
use super::remote::Remote;
use super::wire::Start;
use crate::builtin::ProxySettings;

/// An upstream answering its name to every request.
async fn upstream(name: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let app = axum::Router::new().fallback(move || async move { name });
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// One request through the proxy on its own connection: the body, or `None` when
/// nothing listens.
async fn get(addr: SocketAddr) -> Option<String> {
    let answer = crate::builtin::tests::get(addr, "/").await?;
    Some(answer.rsplit("\r\n\r\n").next()?.to_owned())
}

fn route(stable: SocketAddr, canary: SocketAddr, weight: u8) -> Route {
    Route {
        canary: Some(UpstreamGroup {
            version: "v2".into(),
            endpoints: vec![canary.to_string()],
        }),
        canary_weight: weight,
        ..Route::stable_only("v1", vec![stable.to_string()])
    }
}

fn start(route: Route) -> Start {
    Start {
        app: "shop".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        settings: ProxySettings {
            timeouts: Default::default(),
            tls: None,
            upstream: Default::default(),
        },
        route,
    }
}

/// Runs a data plane on `socket` in a task, waiting until it answers.
async fn data_plane(
    socket: &std::path::Path,
    take_over: bool,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let opts = Options {
        socket: socket.to_owned(),
        workers: 1,
        take_over,
    };
    let before = std::fs::metadata(socket).ok().map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.ino()
    });
    let task = tokio::spawn(process::run(opts));
    for _ in 0..500 {
        let now = std::fs::metadata(socket).ok().map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.ino()
        });
        if now.is_some() && now != before {
            return task;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the data plane did not bind {}", socket.display());
}

/// A data plane in a task, serving app `shop` (upstreams v1 and v2, the canary at
/// `weight`) as a control process asked it to.
struct Serving {
    _dir: tempfile::TempDir,
    socket: std::path::PathBuf,
    plane: tokio::task::JoinHandle<anyhow::Result<()>>,
    v1: SocketAddr,
    v2: SocketAddr,
    control: Remote,
    addr: SocketAddr,
}

impl Serving {
    async fn start(weight: u8) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("dp.sock");
        let plane = data_plane(&socket, false).await;
        let (v1, v2) = (upstream("v1").await, upstream("v2").await);
        let control = Remote::connect(socket.clone(), 1).await.unwrap();
        let addr = control.start(start(route(v1, v2, weight))).await.unwrap();
        Self {
            _dir: dir,
            socket,
            plane,
            v1,
            v2,
            control,
            addr,
        }
    }

    /// Asks the data plane to shut down, and waits until it has.
    async fn shut_down(self) {
        let mut stream = tokio::net::UnixStream::connect(&self.socket).await.unwrap();
        super::wire::exchange(&mut stream, &super::wire::Request::Shutdown)
            .await
            .unwrap();
        self.plane.await.unwrap().unwrap();
        assert!(!self.socket.exists(), "the socket is removed on shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_process_drives_the_data_plane_and_a_newer_one_fences_it_off() {
    let served = Serving::start(0).await;
    let (socket, v1, v2, addr) = (served.socket.clone(), served.v1, served.v2, served.addr);
    let control = &served.control;
    assert_eq!(get(addr).await.as_deref(), Some("v1"));
    control.set_route("shop", route(v1, v2, 100)).await.unwrap();
    assert_eq!(get(addr).await.as_deref(), Some("v2"));
    let counts = control.counts("shop", &["v1", "v2"]).await.unwrap();
    assert_eq!((counts[0].requests, counts[1].requests), (1, 1));
    assert_eq!(control.route("shop").await.unwrap().canary_weight, 100);
    let metrics = control.metrics(false).await.unwrap();
    assert!(
        metrics
            .contains("fledge_proxy_requests_total{app=\"shop\",version=\"v2\",role=\"canary\"} 1"),
        "{metrics}"
    );
    assert!(!metrics.contains("# EOF"));

    // A restarted control process adopts the running listener: same port, and the
    // route it brings (read from its store) replaces the one served.
    let newer = Remote::connect(socket.clone(), 1).await.unwrap();
    assert_eq!(newer.start(start(route(v1, v2, 0))).await.unwrap(), addr);
    assert_eq!(get(addr).await.as_deref(), Some("v1"));
    let err = control
        .set_route("shop", route(v1, v2, 100))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("superseded"), "{err:#}");
    assert_eq!(
        get(addr).await.as_deref(),
        Some("v1"),
        "the older process changed nothing"
    );
    // Reads stay open to it.
    assert!(control.counts("shop", &["v1"]).await.is_ok());

    // Apps no longer registered stop.
    newer.retain(Vec::new()).await.unwrap();
    assert_eq!(get(addr).await, None);
    assert!(newer.counts("shop", &["v1"]).await.is_err());
    served.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_the_data_plane_cannot_start_leaves_the_app_serving_as_it_was() {
    let served = Serving::start(0).await;
    let (v1, v2, control, addr) = (served.v1, served.v2, &served.control, served.addr);
    let dir = tempfile::tempdir().unwrap();

    // New settings on the same address that cannot start (a CA file that is not
    // there): refused before the listener is touched, which serves as it did.
    let mut bad = start(route(v1, v2, 100));
    bad.listen = addr;
    bad.settings.upstream = serde_json::from_value(serde_json::json!(
        {"protocol": "tls", "tls": {"ca": dir.path().join("missing.pem")}}
    ))
    .unwrap();
    let err = control.start(bad).await.unwrap_err();
    assert!(format!("{err:#}").contains("missing.pem"), "{err:#}");
    assert_eq!(get(addr).await.as_deref(), Some("v1"));
    assert_eq!(control.route("shop").await.unwrap().canary_weight, 0);

    // A new address that cannot be bound: refused, and the old one never closed.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut moved = start(route(v1, v2, 100));
    moved.listen = taken.local_addr().unwrap();
    assert!(control.start(moved).await.is_err());
    assert_eq!(get(addr).await.as_deref(), Some("v1"));

    // A change that can start still does.
    let mut good = start(route(v1, v2, 100));
    good.listen = addr;
    good.settings.timeouts.response = Duration::from_secs(5);
    assert_eq!(control.start(good).await.unwrap(), addr);
    assert_eq!(get(addr).await.as_deref(), Some("v2"));
    served.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_data_plane_takes_the_ports_and_routes_over_and_the_old_one_exits() {
    let Serving {
        _dir,
        socket,
        plane: old,
        v1,
        v2,
        control,
        addr,
    } = Serving::start(100).await;
    assert_eq!(get(addr).await.as_deref(), Some("v2"));

    let new = data_plane(&socket, true).await;
    tokio::time::timeout(Duration::from_secs(15), old)
        .await
        .expect("the old data plane exits once taken over")
        .unwrap()
        .unwrap();
    // Same port, same route, served by the new process; the control process
    // finds it on the same socket and drives it.
    assert_eq!(get(addr).await.as_deref(), Some("v2"));
    control.set_route("shop", route(v1, v2, 0)).await.unwrap();
    assert_eq!(get(addr).await.as_deref(), Some("v1"));
    assert_eq!(control.hello().await.unwrap().apps.len(), 1);

    // A second data plane on a served socket is refused, naming the first.
    let err = process::run(Options {
        socket: socket.clone(),
        workers: 1,
        take_over: false,
    })
    .await
    .unwrap_err();
    assert!(format!("{err:#}").contains("already serves"), "{err:#}");
    new.abort();
}
