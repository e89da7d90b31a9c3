//! Everything printed: human text or JSON on stdout, sizes and durations for humans,
//! tables and `key: value` blocks. Writes never panic: a closed stdout (`hyperctl … |
//! head`) ends the command quietly, other write errors are reported.

use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::time::Duration;

use hyperd_proto::v1::{core_event, peer_event, CoreEvent, CoreInfo, PeerEvent, PeerInfo};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

/// Stdout was closed by its reader; the command stops and exits successfully.
#[derive(Debug)]
pub struct BrokenPipe;

impl fmt::Display for BrokenPipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stdout closed")
    }
}

impl std::error::Error for BrokenPipe {}

fn stdout_error(e: io::Error) -> anyhow::Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        anyhow::Error::new(BrokenPipe)
    } else {
        anyhow::anyhow!("writing to stdout: {e}")
    }
}

/// Prints `text` and a newline on stdout.
pub fn print(text: impl fmt::Display) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(stdout_error)
}

/// Prints a JSON value on one line.
pub fn print_json(value: &Value) -> anyhow::Result<()> {
    print(value)
}

/// Writes bytes to stdout as they are (block contents).
pub fn write_raw(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(stdout_error)
}

/// Writes a line to stderr, ignoring failure (there is nowhere left to report it).
pub fn note(text: impl fmt::Display) {
    let _ = writeln!(io::stderr().lock(), "{text}");
}

/// `label: value` lines with the values aligned.
pub fn fields(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("{:<width$} {v}", format!("{k}:")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A table with a header row; columns are left-aligned and separated by two spaces.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let width = widths.get(i).copied().unwrap_or(0);
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        text.trim_end().to_string()
    };
    let mut lines = vec![line(header.to_vec())];
    lines.extend(
        rows.iter()
            .map(|r| line(r.iter().map(String::as_str).collect())),
    );
    lines.join("\n")
}

/// 1536 → "1.5 KiB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let precision = if value < 10.0 { 1 } else { 0 };
    format!("{value:.precision$} {}", UNITS[unit])
}

/// A duration for humans, two units at most: "3d 4h", "5m 2s", "12s", "340ms".
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    let (days, hours, minutes, seconds) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {minutes}m")
    } else if minutes > 0 {
        format!("{minutes}m {seconds}s")
    } else {
        format!("{seconds}s")
    }
}

/// The first 8 hex characters of a key, for tables.
pub fn short_key(key: &str) -> String {
    match key.get(..8) {
        Some(prefix) if key.len() > 8 => format!("{prefix}…"),
        _ => key.to_string(),
    }
}

/// "yes" / "no".
pub fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

/// A progress bar on stderr when stderr is a terminal, hidden otherwise. `total` 0
/// means not known yet.
pub fn progress_bar(total: u64, in_bytes: bool) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    let template = if in_bytes {
        "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
    } else {
        "{bar:40} {pos}/{len} blocks {msg} eta {eta}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

/// A progress bar for transfers of many entries (the message shows bytes and the
/// current entry), on stderr when it is a terminal.
pub fn transfer_bar() -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} {wide_msg}") {
        bar.set_style(style);
    }
    bar
}

/// A core as camelCase JSON.
pub fn core_json(core: &CoreInfo) -> Value {
    json!({
        "key": core.key,
        "discoveryKey": core.discovery_key,
        "length": core.length,
        "byteLength": core.byte_length,
        "downloadedBlocks": core.downloaded_blocks,
        "peers": core.peers,
        "writable": core.writable,
        "name": core.name,
        "uploadedBytes": core.uploaded_bytes,
        "downloadedBytes": core.downloaded_bytes,
        "peerLength": core.peer_length,
    })
}

/// A core's name, or `-` for a core without one.
pub fn name_or_dash(name: &str) -> String {
    if name.is_empty() {
        "-".into()
    } else {
        name.to_string()
    }
}

/// A core for humans: `hyper://<key>` and aligned details.
pub fn core_text(core: &CoreInfo) -> String {
    let details = fields(&[
        ("discovery key", core.discovery_key.clone()),
        ("name", name_or_dash(&core.name)),
        ("writable", yes_no(core.writable)),
        ("length", format!("{} blocks", core.length)),
        (
            "size",
            format!("{} ({} bytes)", bytes(core.byte_length), core.byte_length),
        ),
        (
            "stored",
            format!("{} of {} blocks", core.downloaded_blocks, core.length),
        ),
        (
            "peers",
            if core.peers > 0 {
                format!(
                    "{} (the longest has {} blocks)",
                    core.peers, core.peer_length
                )
            } else {
                "0".to_string()
            },
        ),
        ("uploaded", bytes(core.uploaded_bytes)),
        ("downloaded", bytes(core.downloaded_bytes)),
    ]);
    format!("hyper://{}\n{details}", core.key)
}

/// A peer connection as camelCase JSON.
pub fn peer_json(peer: &PeerInfo) -> Value {
    json!({
        "address": peer.address,
        "remoteKey": peer.remote_key,
        "initiator": peer.initiator,
        "foundBy": peer.found_by,
        "transport": peer.transport,
        "cores": peer.cores,
        "bytesUp": peer.bytes_up,
        "bytesDown": peer.bytes_down,
        "connectedMs": peer.connected_ms,
    })
}

/// A core event as camelCase JSON with a `type` field.
pub fn core_event_json(event: &CoreEvent) -> Value {
    use core_event::Event;
    match &event.event {
        Some(Event::Appended(e)) => {
            json!({"type": "appended", "length": e.length, "byteLength": e.byte_length})
        }
        Some(Event::Downloaded(e)) => {
            json!({"type": "downloaded", "index": e.index, "bytes": e.bytes})
        }
        Some(Event::Uploaded(e)) => json!({"type": "uploaded", "index": e.index, "bytes": e.bytes}),
        Some(Event::PeerAdded(e)) => json!({"type": "peerAdded", "remoteKey": e.remote_key}),
        Some(Event::PeerRemoved(e)) => json!({"type": "peerRemoved", "remoteKey": e.remote_key}),
        Some(Event::Cleared(e)) => json!({"type": "cleared", "start": e.start, "end": e.end}),
        None => json!({"type": "unknown"}),
    }
}

/// A core event on one line: a fixed-width label, then the details.
pub fn core_event_text(event: &CoreEvent) -> String {
    use core_event::Event;
    let (label, details) = match &event.event {
        Some(Event::Appended(e)) => (
            "appended",
            format!("length {} ({})", e.length, bytes(e.byte_length)),
        ),
        Some(Event::Downloaded(e)) => (
            "downloaded",
            format!("block {} ({})", e.index, bytes(e.bytes)),
        ),
        Some(Event::Uploaded(e)) => (
            "uploaded",
            format!("block {} ({})", e.index, bytes(e.bytes)),
        ),
        Some(Event::PeerAdded(e)) => ("peer-added", e.remote_key.clone()),
        Some(Event::PeerRemoved(e)) => ("peer-removed", e.remote_key.clone()),
        Some(Event::Cleared(e)) => ("cleared", format!("blocks {}..{}", e.start, e.end)),
        None => ("unknown", "(is hyperctl older than hyperd?)".to_string()),
    };
    format!("{label:<12} {details}")
}

/// A peer event as camelCase JSON with a `type` field.
pub fn peer_event_json(event: &PeerEvent) -> Value {
    use peer_event::Event;
    match &event.event {
        Some(Event::Joined(peer)) => json!({"type": "joined", "peer": peer_json(peer)}),
        Some(Event::Left(left)) => json!({
            "type": "left",
            "peer": left.peer.as_ref().map(peer_json),
            "reason": left.reason,
        }),
        None => json!({"type": "unknown"}),
    }
}

/// A peer event on one line.
pub fn peer_event_text(event: &PeerEvent) -> String {
    use peer_event::Event;
    match &event.event {
        Some(Event::Joined(peer)) => format!("joined  {} {}", peer.address, peer.remote_key),
        Some(Event::Left(left)) => {
            let (address, key) = left
                .peer
                .as_ref()
                .map(|p| (p.address.as_str(), p.remote_key.as_str()))
                .unwrap_or(("?", ""));
            if left.reason.is_empty() {
                format!("left    {address} {key}")
            } else {
                format!("left    {address} {key} ({})", left.reason)
            }
        }
        None => "unknown (is hyperctl older than hyperd?)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_for_humans() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(200 * 1024), "200 KiB");
        assert_eq!(bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
        assert_eq!(bytes(u64::MAX), "16 EiB");
    }

    #[test]
    fn durations_for_humans() {
        assert_eq!(duration(Duration::from_millis(340)), "340ms");
        assert_eq!(duration(Duration::from_secs(12)), "12s");
        assert_eq!(duration(Duration::from_secs(302)), "5m 2s");
        assert_eq!(duration(Duration::from_secs(3 * 3600 + 60)), "3h 1m");
        assert_eq!(
            duration(Duration::from_secs(3 * 86_400 + 4 * 3600)),
            "3d 4h"
        );
    }

    #[test]
    fn aligned_fields_and_tables() {
        let text = fields(&[("a", "1".into()), ("long name", "2".into())]);
        assert_eq!(text, "a:         1\nlong name: 2");
        let text = table(
            &["KEY", "N"],
            &[
                vec!["abc".into(), "1".into()],
                vec!["a".into(), "22".into()],
            ],
        );
        assert_eq!(text, "KEY  N\nabc  1\na    22");
    }

    #[test]
    fn short_keys() {
        assert_eq!(short_key("0123456789abcdef"), "01234567…");
        assert_eq!(short_key("abc"), "abc");
        assert_eq!(short_key(""), "");
    }
}
