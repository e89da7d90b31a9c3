//! `hyperctl core …`: creating, following, reading and writing hypercores.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use hyperd_proto::v1::{
    AppendRequest, AppendResponse, AppendStreamRequest, AuditRequest, ClearRequest, CoreInfo,
    CreateRequest, DownloadRequest, FollowRequest, GetRequest, InfoRequest, ListRequest,
    ReadRequest, RemoveRequest, Seeding, WatchRequest,
};
use indicatif::ProgressBar;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;

use crate::connect::Client;
use crate::key::Key;
use crate::output;

/// Blocks of a streamed file are sent in messages of about this size.
const MESSAGE_BYTES: usize = 1 << 20;
/// `--block-size` unless given.
pub const DEFAULT_BLOCK_SIZE: usize = 64 << 10;
/// The largest `--block-size`: the wire protocol's 8 MiB block limit (hyperd accepts
/// requests of up to 16 MiB, so such a block fits in one message).
pub const MAX_BLOCK_SIZE: usize = 8 << 20;

fn print_core(core: &CoreInfo, json: bool) -> anyhow::Result<()> {
    if json {
        output::print_json(&output::core_json(core))
    } else {
        output::print(output::core_text(core))
    }
}

/// `core create [--name N] [--force]`.
pub async fn create(
    client: &Client,
    name: Option<String>,
    force: bool,
    seeding: Option<Seeding>,
    json: bool,
) -> anyhow::Result<()> {
    if force {
        output::note(
            "warning: --force re-creates a removed core with a new history under its old key; peers that hold the old history will refuse it",
        );
    }
    let request = CreateRequest {
        name: name.unwrap_or_default(),
        force,
        seeding,
    };
    let core = client
        .unary(client.cores().create(client.request(request)))
        .await?;
    print_core(&core, json)
}

/// `core follow KEY [--all]`.
pub async fn follow(
    client: &Client,
    key: Key,
    all: bool,
    seeding: Option<Seeding>,
    json: bool,
) -> anyhow::Result<()> {
    let request = FollowRequest {
        key: key.hex(),
        download_all: all,
        seeding,
    };
    let core = client
        .unary(client.cores().follow(client.request(request)))
        .await?;
    print_core(&core, json)
}

/// `core info KEY`.
pub async fn info(client: &Client, key: Key, json: bool) -> anyhow::Result<()> {
    let request = InfoRequest { key: key.hex() };
    let core = client
        .unary(client.cores().info(client.request(request)))
        .await?;
    print_core(&core, json)
}

/// `core list`.
pub async fn list(client: &Client, json: bool) -> anyhow::Result<()> {
    let cores = client
        .unary(client.cores().list(client.request(ListRequest {})))
        .await?
        .cores;
    if json {
        let array = cores.iter().map(output::core_json).collect();
        return output::print_json(&serde_json::Value::Array(array));
    }
    if cores.is_empty() {
        return output::print("no cores (create one with `hyperctl core create`)");
    }
    let rows: Vec<Vec<String>> = cores
        .iter()
        .map(|c| {
            vec![
                c.key.clone(),
                output::name_or_dash(&c.name),
                c.length.to_string(),
                output::bytes(c.byte_length),
                format!("{}/{}", c.downloaded_blocks, c.length),
                c.peers.to_string(),
                output::yes_no(c.writable),
            ]
        })
        .collect();
    output::print(output::table(
        &[
            "KEY", "NAME", "LENGTH", "SIZE", "STORED", "PEERS", "WRITABLE",
        ],
        &rows,
    ))
}

fn print_appended(key: Key, result: &AppendResponse, json: bool) -> anyhow::Result<()> {
    if json {
        return output::print_json(&json!({
            "key": key.hex(),
            "firstIndex": result.first_index,
            "appended": result.appended,
            "length": result.length,
            "byteLength": result.byte_length,
        }));
    }
    output::print(format!(
        "appended {} block{} at index {} (length {}, {})",
        result.appended,
        if result.appended == 1 { "" } else { "s" },
        result.first_index,
        result.length,
        output::bytes(result.byte_length)
    ))
}

/// `core append KEY DATA...`: each argument is one block, appended in one batch.
pub async fn append(
    client: &Client,
    key: Key,
    data: Vec<String>,
    json: bool,
) -> anyhow::Result<()> {
    let request = AppendRequest {
        key: key.hex(),
        blocks: data.into_iter().map(|d| d.into_bytes().into()).collect(),
    };
    let result = client
        .unary(client.cores().append(client.request(request)))
        .await?;
    print_appended(key, &result, json)
}

/// What the file reader did: blocks and bytes read, or why it stopped.
type ReadOutcome = Result<(u64, u64), String>;

/// `core append KEY --file F` (`-` for stdin): streams the file in blocks of
/// `block_size`, committed as they arrive.
pub async fn append_file(
    client: &Client,
    key: Key,
    file: &Path,
    block_size: usize,
    json: bool,
) -> anyhow::Result<()> {
    let stdin = file == Path::new("-");
    let name = if stdin {
        "stdin".to_string()
    } else {
        file.display().to_string()
    };
    let (reader, size): (Box<dyn Read + Send>, Option<u64>) = if stdin {
        (Box::new(io::stdin()), None)
    } else {
        let f = File::open(file).with_context(|| format!("cannot open {name}"))?;
        let size = f.metadata().ok().filter(|m| m.is_file()).map(|m| m.len());
        (Box::new(f), size)
    };
    let bar = match size {
        Some(size) => output::progress_bar(size, true),
        None => ProgressBar::hidden(),
    };

    // A thread reads (stdin may block for as long as it likes) and hands messages over.
    let (messages, mut received) = mpsc::channel::<AppendStreamRequest>(4);
    let (done, outcome) = oneshot::channel::<ReadOutcome>();
    let thread_bar = bar.clone();
    let key_hex = key.hex();
    std::thread::spawn(move || {
        let result = read_blocks(reader, block_size, key_hex, &messages, &thread_bar);
        let _ = done.send(result);
    });

    // Nothing to append is an error, found before a stream is opened.
    let Some(first) = received.recv().await else {
        bar.finish_and_clear();
        return match outcome.await {
            Ok(Err(e)) => Err(anyhow::anyhow!("reading {name}: {e}")),
            _ => Err(anyhow::anyhow!("nothing to append: {name} is empty")),
        };
    };
    let stream =
        tokio_stream::once(first).chain(tokio_stream::wrappers::ReceiverStream::new(received));
    // Streams have no total deadline: a large file takes as long as it takes. hyperd
    // acknowledges every committed batch, so whatever happens, we know what was kept.
    let acks = client.cores().append_stream(stream).await;
    let mut acks = match acks {
        Ok(acks) => acks.into_inner(),
        Err(status) => {
            bar.finish_and_clear();
            return Err(client.status_error(status));
        }
    };
    let mut committed: Option<AppendResponse> = None;
    let failure = loop {
        match acks.message().await {
            Ok(Some(ack)) => committed = Some(ack),
            Ok(None) => break None,
            Err(status) => break Some(status),
        }
    };
    bar.finish_and_clear();
    let kept = |committed: &Option<AppendResponse>| match committed {
        Some(c) => format!(
            "{} block{} of {name} were committed (the core's length is {})",
            c.appended,
            if c.appended == 1 { "" } else { "s" },
            c.length
        ),
        None => format!("no block of {name} was acknowledged"),
    };
    if let Some(status) = failure {
        let error = client.status_error(status);
        anyhow::bail!("{error}; {}", kept(&committed));
    }
    let Some(result) = committed else {
        anyhow::bail!("hyperd ended the append without an answer; {}", kept(&None));
    };
    match outcome.await {
        Ok(Err(e)) => anyhow::bail!("reading {name}: {e}; {}", kept(&Some(result))),
        _ => print_appended(key, &result, json),
    }
}

/// Reads blocks of `block_size` until EOF and sends them in messages of about
/// [`MESSAGE_BYTES`]. Stops early, without error, when the call has ended.
fn read_blocks(
    mut reader: Box<dyn Read + Send>,
    block_size: usize,
    key: String,
    messages: &mpsc::Sender<AppendStreamRequest>,
    bar: &ProgressBar,
) -> ReadOutcome {
    let per_message = (MESSAGE_BYTES / block_size).max(1);
    let (mut blocks_read, mut bytes_read) = (0u64, 0u64);
    let mut key = Some(key);
    loop {
        let mut blocks = Vec::with_capacity(per_message);
        let mut eof = false;
        let mut message_bytes = 0u64;
        while blocks.len() < per_message {
            let block = read_block(&mut reader, block_size).map_err(|e| e.to_string())?;
            if block.len() < block_size {
                eof = true;
            }
            if !block.is_empty() {
                message_bytes += block.len() as u64;
                blocks.push(block.into());
            }
            if eof {
                break;
            }
        }
        if !blocks.is_empty() {
            let count = blocks.len() as u64;
            let message = AppendStreamRequest {
                key: key.take().unwrap_or_default(),
                blocks,
            };
            if messages.blocking_send(message).is_err() {
                // The call ended (hyperd answered or failed): its result tells.
                return Ok((blocks_read, bytes_read));
            }
            blocks_read += count;
            bytes_read += message_bytes;
            bar.inc(message_bytes);
        }
        if eof {
            return Ok((blocks_read, bytes_read));
        }
    }
}

/// Up to `size` bytes; shorter only at the end of the input.
fn read_block(reader: &mut dyn Read, size: usize) -> io::Result<Vec<u8>> {
    let mut block = Vec::with_capacity(size);
    let limit = u64::try_from(size).unwrap_or(u64::MAX);
    reader.take(limit).read_to_end(&mut block)?;
    Ok(block)
}

/// `core get KEY INDEX`: the block's bytes on stdout, or `{"index", "data": hex}`.
pub async fn get(
    client: &Client,
    key: Key,
    index: u64,
    timeout_ms: u64,
    json: bool,
) -> anyhow::Result<()> {
    let request = GetRequest {
        key: key.hex(),
        index,
        timeout_ms,
    };
    // Waiting for peers is part of the call: the deadline covers it plus --timeout.
    let deadline = client.timeout() + Duration::from_millis(timeout_ms);
    let block = client
        .unary_within(
            deadline,
            client.cores().get(client.request_within(deadline, request)),
        )
        .await?;
    if json {
        output::print_json(&json!({ "index": index, "data": hex::encode(&block.data) }))
    } else {
        output::write_raw(&block.data)
    }
}

/// Options of `core cat`.
pub struct CatOptions {
    /// First block.
    pub start: u64,
    /// End (exclusive).
    pub end: Option<u64>,
    /// Keep following appends.
    pub live: bool,
    /// Wait for blocks not stored yet.
    pub wait: bool,
}

/// `core cat KEY`: blocks in order, raw on stdout (with `--json`, one line each).
pub async fn cat(client: &Client, key: Key, options: CatOptions, json: bool) -> anyhow::Result<()> {
    let request = ReadRequest {
        key: key.hex(),
        start: options.start,
        end: options.end,
        live: options.live,
        wait: options.wait,
    };
    let mut stream = client.unary(client.cores().read(request)).await?;
    let wait = options.wait || options.live;
    while let Some(block) = stream.message().await.map_err(|status| {
        // Without --wait only stored blocks are read (the stream ends NOT_FOUND at the
        // first missing one, or when the core is removed): say how to fetch the others.
        let missing = status.code() == tonic::Code::NotFound
            && !wait
            && !status.message().contains("removed");
        let error = client.status_error(status);
        if missing {
            anyhow::anyhow!("{error:#} (use --wait to fetch it from peers)")
        } else {
            error
        }
    })? {
        if json {
            output::print_json(&json!({ "index": block.index, "data": hex::encode(&block.data) }))?;
        } else {
            output::write_raw(&block.data)?;
        }
    }
    Ok(())
}

/// `core download KEY`: waits until the range is stored, with a progress bar.
pub async fn download(
    client: &Client,
    key: Key,
    start: u64,
    end: Option<u64>,
    linear: bool,
    json: bool,
) -> anyhow::Result<()> {
    let request = DownloadRequest {
        key: key.hex(),
        start,
        end,
        linear,
    };
    let mut stream = client.unary(client.cores().download(request)).await?;
    let bar = output::progress_bar(0, false);
    let mut last = None;
    loop {
        let progress = match stream.message().await {
            Ok(Some(progress)) => progress,
            Ok(None) => break,
            Err(status) => {
                bar.abandon();
                return Err(client.status_error(status));
            }
        };
        if bar.length() != Some(progress.total) {
            bar.set_length(progress.total);
        }
        bar.set_position(progress.downloaded);
        bar.set_message(output::bytes(progress.bytes));
        let done = progress.done;
        last = Some(progress);
        if done {
            break;
        }
    }
    bar.finish_and_clear();
    let Some(progress) = last else {
        anyhow::bail!("hyperd ended the download without reporting any progress");
    };
    if !progress.done {
        anyhow::bail!(
            "the download ended before it was complete ({} of {} blocks)",
            progress.downloaded,
            progress.total
        );
    }
    if json {
        output::print_json(&json!({
            "downloaded": progress.downloaded,
            "total": progress.total,
            "bytes": progress.bytes,
            "done": progress.done,
        }))
    } else {
        output::print(format!(
            "downloaded: {} of {} blocks stored ({} received)",
            progress.downloaded,
            progress.total,
            output::bytes(progress.bytes)
        ))
    }
}

/// `core clear KEY`: deletes local copies of blocks.
pub async fn clear(
    client: &Client,
    key: Key,
    start: u64,
    end: Option<u64>,
    json: bool,
) -> anyhow::Result<()> {
    let request = ClearRequest {
        key: key.hex(),
        start,
        end,
    };
    client
        .unary(client.cores().clear(client.request(request)))
        .await?;
    let range = match end {
        Some(end) => format!("{start}..{end}"),
        None => format!("{start}.."),
    };
    if json {
        output::print_json(&json!({ "key": key.hex(), "start": start, "end": end }))
    } else {
        output::print(format!("cleared blocks {range} of {}", key.url()))
    }
}

/// `core audit KEY`.
pub async fn audit(client: &Client, key: Key, json: bool) -> anyhow::Result<()> {
    let request = AuditRequest { key: key.hex() };
    let result = client
        .unary(client.cores().audit(client.request(request)))
        .await?;
    if json {
        return output::print_json(&json!({ "valid": result.valid, "invalid": result.invalid }));
    }
    if result.invalid == 0 {
        output::print(format!("{} blocks valid, none invalid", result.valid))
    } else {
        output::print(format!(
            "{} blocks valid, {} invalid (cleared; `hyperctl core download` fetches them again from peers)",
            result.valid, result.invalid
        ))
    }
}

/// `core rm KEY`.
pub async fn remove(client: &Client, key: Key, json: bool) -> anyhow::Result<()> {
    let request = RemoveRequest { key: key.hex() };
    client
        .unary(client.cores().remove(client.request(request)))
        .await?;
    if json {
        output::print_json(&json!({ "removed": key.hex() }))
    } else {
        output::print(format!("removed {}", key.url()))
    }
}

/// `core watch KEY`: one line per event until interrupted.
pub async fn watch(client: &Client, key: Key, json: bool) -> anyhow::Result<()> {
    let request = WatchRequest { key: key.hex() };
    let mut stream = client.unary(client.cores().watch(request)).await?;
    while let Some(event) = stream
        .message()
        .await
        .map_err(|status| client.status_error(status))?
    {
        if json {
            output::print_json(&output::core_event_json(&event))?;
        } else {
            output::print(output::core_event_text(&event))?;
        }
    }
    Ok(())
}
