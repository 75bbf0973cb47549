//! What the control process and the data-plane process say to each other over the
//! data plane's Unix socket: one JSON [`Request`] per frame, answered by one JSON
//! [`Reply`]; a frame is a 4-byte big-endian length and that many bytes.

use std::net::SocketAddr;

use fledge_proxy::Route;
use fledge_stats::ArmCounters;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::builtin::ProxySettings;

/// The largest frame either side accepts (a metrics page of many apps fits).
pub const MAX_FRAME: usize = 16 << 20;

/// A request to the data plane.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Request {
    /// Who is there: answered by [`Reply::Hello`]. With `control`, a control
    /// process introduces itself, and from then on only its requests change
    /// anything (an older control process still connected is told it is
    /// superseded).
    Hello {
        #[serde(default)]
        control: bool,
    },
    /// Serve an app: keep its running listener when `listen` and the settings are
    /// the ones it runs with (only the route then changes), else (re)start it.
    /// Answered by [`Reply::Started`].
    Start(Start),
    /// Serve `route` for `app` from the next request on.
    Route { app: String, route: Route },
    /// The route `app` serves: [`Reply::Route`].
    Current { app: String },
    /// The cumulative counters of each version in `versions`: [`Reply::Counts`].
    Counts { app: String, versions: Vec<String> },
    /// The counters of the canary `app` serves now: [`Reply::Canary`].
    CanaryCounts { app: String },
    /// Read the TLS certificates again if they changed (all with `force`).
    ReloadCertificates { force: bool },
    /// Every proxy's metric families: [`Reply::Text`].
    Metrics { openmetrics: bool },
    /// Stop serving `app`, draining its requests.
    Stop { app: String },
    /// Stop serving every app not named (apps removed while no control process
    /// was there to say so).
    Retain { apps: Vec<String> },
    /// Stop every proxy, draining, and exit (asked by an operator: no `Hello`
    /// needed).
    Shutdown,
    /// A new data-plane process takes over: answered by [`Reply::Handover`] and
    /// the listening sockets, in that order.
    Handover,
    /// The new data-plane process serves every handed socket and owns the control
    /// socket: the old one lets its clients move over and exits.
    TakenOver,
}

/// How an app's proxy is started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Start {
    pub app: String,
    /// The address asked for (port 0: any), not the one bound.
    pub listen: SocketAddr,
    pub settings: ProxySettings,
    pub route: Route,
}

/// The data plane's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "camelCase")]
pub enum Reply {
    Hello(Hello),
    Started {
        addr: SocketAddr,
    },
    Done,
    Route {
        route: Route,
    },
    Counts {
        counts: Vec<ArmCounters>,
    },
    Canary {
        counts: Option<ArmCounters>,
    },
    Text {
        text: String,
    },
    /// The apps whose listening sockets follow, in this order.
    Handover {
        apps: Vec<Start>,
    },
    /// The request was not carried out, and why.
    Error {
        message: String,
    },
}

/// Who the data plane is and what it serves.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hello {
    pub pid: u32,
    /// The build it runs ([`build_id`]); another build is upgraded by handover.
    pub build: String,
    pub workers: usize,
    /// The apps it serves, with the address each listens on.
    pub apps: Vec<Serving>,
    /// Whether a control process (`fledge serve`) is connected: one that would
    /// start a new data plane on the socket should this one stop. Absent from
    /// older builds.
    #[serde(default)]
    pub controlled: bool,
}

/// One app a data plane serves.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Serving {
    pub app: String,
    pub addr: SocketAddr,
}

/// This binary's identity: its version and the size and modification time of its
/// file when the process started, so a rebuilt or replaced binary differs.
pub fn build_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let file = std::env::current_exe()
            .and_then(std::fs::metadata)
            .ok()
            .map(|m| {
                let modified = m
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                format!("{}-{modified}", m.len())
            })
            .unwrap_or_default();
        format!("{}+{file}", env!("CARGO_PKG_VERSION"))
    })
}

/// Sends `request` and reads its answer.
pub async fn exchange(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    request: &Request,
) -> anyhow::Result<Reply> {
    write_frame(stream, request).await?;
    read_frame(stream)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the data plane closed its socket without answering"))
}

/// Writes `value` as one frame.
pub async fn write_frame<T: Serialize>(
    io: &mut (impl AsyncWrite + Unpin),
    value: &T,
) -> std::io::Result<()> {
    let body = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    let len = u32::try_from(body.len()).map_err(std::io::Error::other)?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    io.write_all(&frame).await?;
    io.flush().await
}

/// Reads one frame; `Ok(None)` at a clean end of the stream.
pub async fn read_frame<T: for<'de> Deserialize<'de>>(
    io: &mut (impl AsyncRead + Unpin),
) -> std::io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match io.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!(
            "a frame of {len} bytes is over the {MAX_FRAME}-byte limit"
        )));
    }
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_a_huge_one_is_refused() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let req = Request::Counts {
            app: "shop".into(),
            versions: vec!["v1".into(), "v2".into()],
        };
        write_frame(&mut a, &req).await.unwrap();
        let got: Request = read_frame(&mut b).await.unwrap().unwrap();
        assert!(
            matches!(got, Request::Counts { app, versions } if app == "shop" && versions.len() == 2)
        );
        a.write_all(&(u32::MAX).to_be_bytes()).await.unwrap();
        let err = read_frame::<Request>(&mut b).await.unwrap_err();
        assert!(err.to_string().contains("over the"), "{err}");
        drop(a);
        assert!(read_frame::<Request>(&mut b).await.unwrap().is_none());
    }
}
