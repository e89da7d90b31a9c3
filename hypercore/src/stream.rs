//! Read streams and the write sink of a [`Feed`].

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;

use crate::error::{Error, Result};
use crate::feed::{Feed, GetOptions};

/// Options for [`Feed::read_stream`] (those of JS `createReadStream`).
#[derive(Clone, Copy, Debug)]
pub struct ReadStreamOptions {
    /// First block (default 0).
    pub start: u64,
    /// End (exclusive); default: the length when the stream starts, or the current length
    /// at every step when `snapshot` is false.
    pub end: Option<u64>,
    /// Fix the end at the length when the stream starts (default true).
    pub snapshot: bool,
    /// Start at the current length (only new blocks).
    pub tail: bool,
    /// Never end: wait for appended blocks.
    pub live: bool,
    /// Give up when a block takes longer than this to arrive.
    pub timeout: Option<Duration>,
    /// Wait for blocks that are not stored (default true); otherwise the stream fails.
    pub wait: bool,
}

impl Default for ReadStreamOptions {
    fn default() -> Self {
        ReadStreamOptions {
            start: 0,
            end: None,
            snapshot: true,
            tail: false,
            live: false,
            timeout: None,
            wait: true,
        }
    }
}

/// Stored blocks read with one call while streaming.
const RUN_BYTES: u64 = 1 << 20;

struct Reader {
    feed: Feed,
    next: u64,
    end: Option<u64>,
    opts: ReadStreamOptions,
    buffer: VecDeque<Bytes>,
    done: bool,
}

impl Reader {
    async fn next_block(&mut self) -> Option<Result<Bytes>> {
        if let Some(b) = self.buffer.pop_front() {
            return Some(Ok(b));
        }
        if self.done {
            return None;
        }
        let end = if self.opts.live {
            u64::MAX
        } else if self.opts.snapshot {
            self.end.unwrap_or(0)
        } else {
            self.opts.end.unwrap_or_else(|| self.feed.len())
        };
        if self.next >= end {
            self.done = true;
            return None;
        }
        // Fast path: a run of stored blocks in one read. Live streams only read what exists.
        let run_end = end.min(self.feed.len());
        if self.next < run_end {
            match self.feed.read_run(self.next, run_end, RUN_BYTES).await {
                Ok(run) if !run.is_empty() => {
                    self.next += run.len() as u64;
                    self.buffer.extend(run);
                    return self.buffer.pop_front().map(Ok);
                }
                Ok(_) => {}
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        let got = self
            .feed
            .get_with(
                self.next,
                GetOptions {
                    wait: self.opts.wait,
                    timeout: self.opts.timeout,
                },
            )
            .await;
        match got {
            Ok(b) => {
                self.next += 1;
                Some(Ok(b))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl Feed {
    /// A stream of blocks (see [`ReadStreamOptions`]).
    pub fn read_stream(
        &self,
        opts: ReadStreamOptions,
    ) -> impl Stream<Item = Result<Bytes>> + Send + 'static {
        let len = self.len();
        let start = if opts.tail { len } else { opts.start };
        let reader = Reader {
            feed: self.clone(),
            next: start,
            end: Some(opts.end.unwrap_or(len)),
            opts,
            buffer: VecDeque::new(),
            done: false,
        };
        futures::stream::unfold(reader, |mut r| async move {
            r.next_block().await.map(|item| (item, r))
        })
    }

    /// A sink that appends blocks, batching them (up to 1024 blocks or 4 MiB per append);
    /// a batch appends while the next one fills.
    pub fn write_sink(&self) -> WriteSink {
        WriteSink {
            feed: self.clone(),
            buffer: Vec::new(),
            buffered: 0,
            pending: None,
        }
    }
}

type AppendFuture = Pin<Box<dyn Future<Output = Result<u64>> + Send>>;

/// Appends what is sent to it, in batches. Created by [`Feed::write_sink`].
pub struct WriteSink {
    feed: Feed,
    buffer: Vec<Bytes>,
    buffered: usize,
    pending: Option<AppendFuture>,
}

impl WriteSink {
    const MAX_BLOCKS: usize = 1024;
    const MAX_BYTES: usize = 4 << 20;

    fn start_append(&mut self) {
        let blocks = std::mem::take(&mut self.buffer);
        self.buffered = 0;
        let feed = self.feed.clone();
        self.pending = Some(Box::pin(async move { feed.append_batch(blocks).await }));
    }

    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if let Some(fut) = &mut self.pending {
            let res = ready!(fut.as_mut().poll(cx));
            self.pending = None;
            res?;
        }
        Poll::Ready(Ok(()))
    }
}

impl futures::Sink<Bytes> for WriteSink {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        if this.buffer.len() >= Self::MAX_BLOCKS || this.buffered >= Self::MAX_BYTES {
            // One batch appends (hashing and signing on the blocking pool) while the next
            // fills: wait only for the one before it.
            ready!(this.poll_pending(cx))?;
            this.start_append();
            if let Poll::Ready(result) = this.poll_pending(cx) {
                result?;
            }
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, item: Bytes) -> Result<()> {
        let this = self.get_mut();
        this.buffered += item.len();
        this.buffer.push(item);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if !this.buffer.is_empty() {
            this.start_append();
            ready!(this.poll_pending(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.poll_flush(cx)
    }
}
