//! `fledge serve` from a config file whose apps speak HTTP/2 to their upstreams: h2
//! over TLS with a private CA, h2c, and TLS to an upstream whose certificate the
//! configured CA does not vouch for. The upstreams are one real nginx on loopback
//! that answers with the protocol and scheme it saw.

mod support;

use fledge_providers::testing::pki::TestPki;
use fledge_providers::testing::process::{Nginx, temp_dir};
use hyper::StatusCode;
use support::Http;
use support::serve::{Serve, free_addr};

#[tokio::test]
#[ignore = "needs nginx: run scripts/test"]
async fn serve_speaks_the_configured_protocol_to_each_apps_upstreams() {
    let nginx_dir = temp_dir("nginx").unwrap();
    let pki = TestPki::new(nginx_dir.path());
    let stranger_dir = tempfile::tempdir().unwrap();
    let stranger = TestPki::new(stranger_dir.path());
    let (tls_h2, h2c) = (free_addr(), free_addr());
    let answer =
        "default_type text/plain; location / { return 200 \"$server_protocol $scheme\\n\"; }";
    let servers = format!(
        "server {{ listen {tls_h2} ssl http2; ssl_certificate {cert}; ssl_certificate_key {key}; {answer} }}\n\
         server {{ listen {h2c} http2; {answer} }}\n",
        cert = pki.cert.display(),
        key = pki.key.display(),
    );
    let _nginx = Nginx::serve(nginx_dir, &servers, tls_h2).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let (api, shop, cart, bad) = (free_addr(), free_addr(), free_addr(), free_addr());
    let app = |name: &str, listen, endpoint, upstream: String| {
        format!(
            "  - name: {name}\n    listen: {listen}\n    \
             stable: {{version: v1, endpoints: [\"{endpoint}\"]}}\n    upstream: {upstream}\n"
        )
    };
    let config = format!(
        "listen: {api}\nstore: \"sqlite://{db}\"\napps:\n{}{}{}",
        app(
            "shop",
            shop,
            tls_h2,
            format!(
                "{{protocol: tls, tls: {{ca: \"{}\", serverName: localhost}}}}",
                pki.ca.display()
            )
        ),
        app("cart", cart, h2c, "{protocol: h2c}".into()),
        app(
            "bad",
            bad,
            tls_h2,
            format!(
                "{{protocol: tls, tls: {{ca: \"{}\"}}}}",
                stranger.ca.display()
            )
        ),
        db = dir.path().join("fledge.db").display(),
    );
    let serve = Serve::with_config(dir.path(), "serve", api, &config).await;

    for _ in 0..5 {
        let got = Http::new(shop).get("/").await;
        assert_eq!(got.text, "HTTP/2.0 https\n", "{got:?}");
        let got = Http::new(cart).get("/").await;
        assert_eq!(got.text, "HTTP/2.0 http\n", "{got:?}");
    }
    let got = Http::new(bad).get("/").await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY);
    assert_eq!(got.text, "fledge: upstream TLS handshake failed\n");

    // Counted per version as over HTTP/1.1; the failure is the version's error.
    let metrics = serve.api.get("/metrics").await.text;
    for (app, requests) in [("shop", 5), ("cart", 5), ("bad", 1)] {
        let line = format!(
            "fledge_proxy_requests_total{{app=\"{app}\",version=\"v1\",role=\"stable\"}} {requests}\n"
        );
        assert!(metrics.contains(&line), "{line} not in\n{metrics}");
    }
    assert!(
        metrics.contains(
            "fledge_proxy_errors_total{app=\"bad\",version=\"v1\",role=\"stable\",kind=\"connect\"} 1\n"
        ),
        "{metrics}"
    );
    // Why, in the server's log.
    let log = serve.log();
    assert!(
        log.contains("upstream TLS handshake failed") && log.contains("invalid peer certificate"),
        "{log}"
    );
}
