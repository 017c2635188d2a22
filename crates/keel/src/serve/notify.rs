//! systemd's readiness protocol (`Type=notify`): one datagram to `$NOTIFY_SOCKET` saying the
//! service is ready (database migrated, listeners bound, engine started) or stopping. Outside
//! systemd (no `$NOTIFY_SOCKET`) it does nothing.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. `READY=1`) to systemd, if keel runs under it. A failure is logged, never
/// fatal: systemd then times the start out and says so itself.
pub(crate) fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|sock| {
        let bytes = path.as_encoded_bytes();
        match bytes.strip_prefix(b"@") {
            // An abstract socket (systemd's usual choice in containers): `@` stands for the NUL.
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(state.as_bytes(), &addr)
            }
            None => sock.send_to(state.as_bytes(), &path),
        }
    });
    if let Err(e) = sent {
        tracing::warn!(%e, state, "cannot notify systemd");
    }
}
