//! The HTTP/1.1 accept loop: keel-server's router behind hyper, with the `[http]` limits.

/// Serves HTTP/1.1 until `stop` resolves, then lets open requests finish for up to 10 s.
///
/// hyper's own HTTP/1 connection, not `axum::serve`: that one detects HTTP/2 on every connection,
/// and its extra buffers cost an idle keep-alive connection (a watch subscriber) about 38 KiB
/// where this costs about 11 KiB (`keel bench watch` prints both). Also: TCP_NODELAY, so watch
/// lines are not held back by Nagle.
///
/// What an unauthenticated client can hold is bounded (`[http]`): connections at once (over the
/// cap a new one is closed at once, before any byte is read), the time to send headers, and the
/// time to send a body. The cap is far below the open-file limit keel raises at start, so a
/// flood of idle connections leaves room for `/healthz`, nginx's `/sso` and presence.
///
/// With `tls`, each connection is a TLS handshake first (within the header deadline), and its
/// requests carry [`keel_server::OverTls`].
pub(super) async fn serve_http(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: crate::config::HttpLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.max_buf_size(8192)
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let shares = super::shares::Shares::new(limits.clone());
    let write_timeout = limits.write_timeout;
    let mut stop = std::pin::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, usually: wait instead of spinning.
                    tracing::error!(%e, "cannot accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let slot = match shares.take(peer.ip()) {
            Ok(slot) => slot,
            Err(full) => {
                keel_limits::refused!(WARN, %peer, ?full, "connection closed: its share of [http] max_connections is held");
                continue; // dropped: closed at once
            }
        };
        let _ = stream.set_nodelay(true);
        let stream = super::shares::WriteDeadline::new(stream, write_timeout);
        // The peer's address, for presence (a machine speaks only for itself) and SSO's proxy
        // check; the body must arrive within its deadline.
        let over_tls = tls.is_some();
        let service = tower::ServiceBuilder::new()
            .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(limits.body_timeout))
            .map_request(
                move |mut req: hyper::Request<tower_http::timeout::TimeoutBody<hyper::body::Incoming>>| {
                    req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                    if over_tls {
                        req.extensions_mut().insert(keel_server::OverTls);
                    }
                    req.map(axum::body::Body::new)
                },
            )
            .service(app.clone());
        let service = hyper_util::service::TowerToHyperService::new(service);
        let (http, watcher, tls) = (http.clone(), graceful.watcher(), tls.clone());
        let handshake_deadline = limits.header_timeout;
        tokio::spawn(async move {
            let ended = match tls {
                None => {
                    watcher
                        .watch(http.serve_connection(TokioIo::new(stream), service))
                        .await
                }
                Some(acceptor) => match tokio::time::timeout(handshake_deadline, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => watcher.watch(http.serve_connection(TokioIo::new(tls), service)).await,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, %e, "TLS handshake failed");
                        Ok(())
                    }
                    Err(_) => Ok(()), // no handshake within the deadline: closed
                },
            };
            if let Err(e) = ended {
                tracing::debug!(%e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(std::time::Duration::from_secs(10)) => {
            tracing::warn!("stopped with requests still open after 10 s");
        }
    }
}

/// Raises the soft open-file limit to the hard one: systemd's default soft limit (1,024) is what
/// a flood of connections would otherwise exhaust before `[http] max_connections` does.
pub(super) fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum {
        let before = lim.current;
        lim.current = lim.maximum;
        match setrlimit(Resource::Nofile, lim) {
            Ok(()) => tracing::info!(?before, now = ?lim.current, "open-file limit raised"),
            Err(e) => tracing::warn!(%e, "cannot raise the open-file limit"),
        }
    }
}

/// Paths machines and scripts use on the plain listener: never redirected (prologin's clients
/// and iPXE do not follow redirects, or cannot speak TLS).
const MACHINE_PATHS: [&str; 11] = [
    "/api/",
    "/call/",
    "/mdb/",
    "/udb/",
    "/poll",
    "/boot",
    "/register",
    "/sso",
    "/healthz",
    "/metrics",
    "/map.json",
];

/// Whether a GET or HEAD of `path` on the plain listener goes to HTTPS (`[tls] redirect_web`).
pub(super) fn redirected(method: &hyper::Method, path: &str) -> bool {
    (method == hyper::Method::GET || method == hyper::Method::HEAD)
        && !MACHINE_PATHS.iter().any(|p| path.starts_with(p))
}

/// `[tls] redirect_web`: 308 to the same page on `https_port`, at the host the browser used.
pub(super) async fn redirect_web(
    https_port: u16,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if !redirected(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| {
            h.rsplit_once(':')
                .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
                .map_or(h, |(n, _)| n)
        })
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-[]:".contains(&b)))
        .unwrap_or("localhost")
        .to_owned();
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let to = format!("https://{host}:{https_port}{path}");
    (hyper::StatusCode::PERMANENT_REDIRECT, [(hyper::header::LOCATION, to)]).into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_pages_are_redirected() {
        use hyper::Method;
        for (m, p, yes) in [
            (Method::GET, "/", true),
            (Method::GET, "/machines/r01p01", true),
            (Method::HEAD, "/login", true),
            (Method::POST, "/login", false),
            (Method::GET, "/api/v1/machines", false),
            (Method::GET, "/call/query", false),
            (Method::GET, "/boot/52:54:00:00:00:01", false),
            (Method::GET, "/bootstrap", false),
            (Method::GET, "/sso", false),
            (Method::GET, "/poll", false),
        ] {
            assert_eq!(super::redirected(&m, p), yes, "{m} {p}");
        }
    }
}

/// Issue 31: the TLS listener against what a LAN can send it — any bytes, a real ClientHello cut,
/// flipped or followed by junk — and a flood of handshakes that never finish.
#[cfg(test)]
mod fuzz {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use proptest::prelude::*;
    use proptest::strategy::ValueTree as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use crate::config::HttpLimits;

    const DEADLINE: Duration = Duration::from_secs(2);

    fn limits() -> HttpLimits {
        HttpLimits {
            max_connections: 64,
            header_timeout: DEADLINE,
            body_timeout: DEADLINE,
            write_timeout: DEADLINE,
            max_per_source: 16,
            max_per_proxy: 16,
            reserve: 8,
            proxies: Vec::new(),
        }
    }

    /// keel's HTTPS listener on its own site CA, serving `/healthz`; its address and the client
    /// configuration that trusts it.
    async fn listener(dir: &std::path::Path) -> (SocketAddr, Arc<rustls::ClientConfig>) {
        let cfg = crate::config::Tls {
            listen: "127.0.0.1:0".parse().unwrap(),
            files: None,
            names: Some(vec!["127.0.0.1".into()]),
            redirect_web: false,
        };
        let tls = super::super::tls::load(&cfg, dir).unwrap();
        let ca = keel_client::tls::Trust::CaFile(dir.join("tls/ca.pem"));
        let client = Arc::new(keel_client::tls::client_config(&ca).unwrap());
        let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let app = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
        tokio::spawn(super::serve_http(
            socket,
            app,
            limits(),
            Some(tls.acceptor),
            std::future::pending(),
        ));
        (addr, client)
    }

    async fn connect_from(source: [u8; 4], to: SocketAddr) -> tokio::net::TcpStream {
        keel_testkit::flood::connect_from(source, to).await.unwrap()
    }

    /// A real client's GET /healthz over TLS from `source`: its status line.
    async fn healthz(source: [u8; 4], to: SocketAddr, client: &Arc<rustls::ClientConfig>) -> String {
        let tcp = connect_from(source, to).await;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(client.clone())
            .connect(name, tcp)
            .await
            .unwrap();
        tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut back = String::new();
        let _ = tls.read_to_string(&mut back).await;
        back.lines().next().unwrap_or_default().to_owned()
    }

    /// The first flight of a real TLS client.
    fn client_hello(client: &Arc<rustls::ClientConfig>) -> Vec<u8> {
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut c = rustls::ClientConnection::new(client.clone(), name).unwrap();
        let mut out = Vec::new();
        c.write_tls(&mut out).unwrap();
        out
    }

    fn flight(hello: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
        let len = hello.len();
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..600),
            (0..len, 1u8..=255).prop_map({
                let h = hello.clone();
                move |(i, x)| {
                    let mut h = h.clone();
                    h[i] ^= x;
                    h
                }
            }),
            (0..len).prop_map({
                let h = hello.clone();
                move |n| h[..n].to_vec()
            }),
            proptest::collection::vec(any::<u8>(), 1..300).prop_map(move |junk| [&hello[..], &junk[..]].concat()),
            // A record header claiming a handshake of any length, then bytes.
            (any::<u16>(), proptest::collection::vec(any::<u8>(), 0..300)).prop_map(|(n, b)| [
                &[0x16, 0x03, 0x01][..],
                &n.to_be_bytes()[..],
                &b[..]
            ]
            .concat()),
        ]
    }

    #[tokio::test]
    async fn fuzz_tls_handshakes() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, client) = listener(dir.path()).await;
        assert!(
            healthz([127, 0, 0, 1], addr, &client).await.contains("200"),
            "a real client first"
        );
        let mut runner = proptest::test_runner::TestRunner::default();
        let strategy = flight(client_hello(&client));
        for i in 0..runner.config().cases {
            let bytes = strategy.new_tree(&mut runner).unwrap().current();
            // Each case closes its side first (TIME_WAIT for a minute): the sources take turns
            // over 127.1.0.0/16 so that a million cases do not use up one address's ports.
            let [_, _, hi, lo] = i.to_be_bytes();
            let mut c = connect_from([127, 1, hi, lo], addr).await;
            let _ = c.write_all(&bytes).await;
            let _ = c.shutdown().await;
            let mut back = Vec::new();
            let read = tokio::time::timeout(DEADLINE * 3, c.read_to_end(&mut back)).await;
            assert!(
                read.is_ok(),
                "keel held a connection past its handshake deadline: {bytes:?}"
            );
        }
        assert!(
            healthz([127, 0, 0, 1], addr, &client).await.contains("200"),
            "and after"
        );
    }

    /// One address opens its whole share of connections and sends half a ClientHello on each:
    /// another address is served meanwhile; each stalled one is closed at the handshake deadline,
    /// and the flooding address is served again.
    #[tokio::test]
    async fn a_flood_of_unfinished_handshakes_is_cut_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, client) = listener(dir.path()).await;
        let hello = client_hello(&client);
        let mut stalled = Vec::new();
        for _ in 0..limits().max_per_source {
            let mut c = connect_from([127, 0, 0, 1], addr).await;
            c.write_all(&hello[..hello.len() / 2]).await.unwrap();
            stalled.push(c);
        }
        let mut over = connect_from([127, 0, 0, 1], addr).await;
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(DEADLINE, over.read(&mut buf)).await;
        assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "over its share: closed at once");
        assert!(
            healthz([127, 0, 0, 2], addr, &client).await.contains("200"),
            "another address meanwhile"
        );
        for mut c in stalled {
            let closed = tokio::time::timeout(DEADLINE * 3, c.read(&mut buf)).await;
            assert!(
                matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
                "a stalled handshake outlived its deadline"
            );
        }
        assert!(
            healthz([127, 0, 0, 1], addr, &client).await.contains("200"),
            "its share is free again"
        );
    }
}
