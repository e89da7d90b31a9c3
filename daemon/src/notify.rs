//! Readiness notification for systemd (`Type=notify`): `READY=1` on `$NOTIFY_SOCKET`.

use std::os::unix::net::UnixDatagram;

/// Tells systemd the daemon is ready (or stopping); does nothing outside systemd.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let result = UnixDatagram::unbound().and_then(|socket| {
        let bytes = path.as_encoded_bytes();
        #[cfg(target_os = "linux")]
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            return socket.send_to_addr(state.as_bytes(), &addr).map(|_| ());
        }
        let _ = bytes;
        socket.send_to(state.as_bytes(), &path).map(|_| ())
    });
    if let Err(e) = result {
        tracing::warn!("could not notify systemd ({state}): {e}");
    }
}
