//! Value encodings at the API edge: blocks are bytes; [`Typed`] reads and writes them as
//! UTF-8 strings or JSON values (newline-terminated, like JS `valueEncoding: 'json'`).

use std::marker::PhantomData;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::error::{Error, Result};
use crate::feed::{Feed, GetOptions};
use crate::stream::ReadStreamOptions;

/// How values become blocks and back.
pub trait ValueEncoding: Send + Sync + 'static {
    /// The value type.
    type Value: Send + 'static;
    /// Name for error messages.
    const NAME: &'static str;
    /// Encodes a value into a block.
    fn encode(value: &Self::Value) -> std::result::Result<Bytes, String>;
    /// Decodes a block (taking ownership, so no copy is needed where the type allows).
    fn decode(block: Bytes) -> std::result::Result<Self::Value, String>;
}

/// Raw bytes.
#[derive(Debug)]
pub struct Binary;

impl ValueEncoding for Binary {
    type Value = Bytes;
    const NAME: &'static str = "binary";
    fn encode(value: &Bytes) -> std::result::Result<Bytes, String> {
        Ok(value.clone())
    }
    fn decode(block: Bytes) -> std::result::Result<Bytes, String> {
        Ok(block)
    }
}

/// UTF-8 text.
#[derive(Debug)]
pub struct Utf8;

impl ValueEncoding for Utf8 {
    type Value = String;
    const NAME: &'static str = "utf-8";
    fn encode(value: &String) -> std::result::Result<Bytes, String> {
        Ok(Bytes::copy_from_slice(value.as_bytes()))
    }
    fn decode(block: Bytes) -> std::result::Result<String, String> {
        // `Vec::from(Bytes)` reuses the allocation when the block is not shared.
        String::from_utf8(Vec::from(block)).map_err(|e| e.to_string())
    }
}

/// JSON via serde, one value per block, newline-terminated (JS `ndjson`).
pub struct Json<T>(PhantomData<fn() -> T>);

impl<T> ValueEncoding for Json<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    type Value = T;
    const NAME: &'static str = "json";
    fn encode(value: &T) -> std::result::Result<Bytes, String> {
        let mut v = serde_json::to_vec(value).map_err(|e| e.to_string())?;
        v.push(b'\n');
        Ok(Bytes::from(v))
    }
    fn decode(block: Bytes) -> std::result::Result<T, String> {
        serde_json::from_slice(&block).map_err(|e| e.to_string())
    }
}

/// A feed viewed through a value encoding. Created by [`Feed::typed`].
pub struct Typed<E> {
    feed: Feed,
    _encoding: PhantomData<fn() -> E>,
}

impl<E> Clone for Typed<E> {
    fn clone(&self) -> Self {
        Typed {
            feed: self.feed.clone(),
            _encoding: PhantomData,
        }
    }
}

impl Feed {
    /// This feed read and written as values of encoding `E`.
    pub fn typed<E: ValueEncoding>(&self) -> Typed<E> {
        Typed {
            feed: self.clone(),
            _encoding: PhantomData,
        }
    }
}

fn decode<E: ValueEncoding>(index: u64, block: Bytes) -> Result<E::Value> {
    E::decode(block).map_err(|reason| Error::Encoding {
        encoding: E::NAME,
        index,
        reason,
    })
}

impl<E: ValueEncoding> Typed<E> {
    /// The underlying feed.
    pub fn feed(&self) -> &Feed {
        &self.feed
    }

    /// Appends one value; returns the new length.
    pub async fn append(&self, value: &E::Value) -> Result<u64> {
        let index = self.feed.len();
        let block = E::encode(value).map_err(|reason| Error::Encoding {
            encoding: E::NAME,
            index,
            reason,
        })?;
        self.feed.append(block).await
    }

    /// Appends values as one batch; returns the new length.
    pub async fn append_batch(&self, values: &[E::Value]) -> Result<u64> {
        let start = self.feed.len();
        let blocks = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                E::encode(v).map_err(|reason| Error::Encoding {
                    encoding: E::NAME,
                    index: start + i as u64,
                    reason,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        self.feed.append_batch(blocks).await
    }

    /// Value `index`, waiting for it if needed.
    pub async fn get(&self, index: u64) -> Result<E::Value> {
        decode::<E>(index, self.feed.get(index).await?)
    }

    /// Value `index` with explicit waiting behaviour.
    pub async fn get_with(&self, index: u64, options: GetOptions) -> Result<E::Value> {
        decode::<E>(index, self.feed.get_with(index, options).await?)
    }

    /// The last value.
    pub async fn head(&self) -> Result<E::Value> {
        let index = self.feed.len().saturating_sub(1);
        decode::<E>(index, self.feed.head().await?)
    }

    /// Values `[start, end)`.
    pub async fn get_batch(&self, start: u64, end: u64) -> Result<Vec<E::Value>> {
        self.feed
            .get_batch(start, end)
            .await?
            .into_iter()
            .enumerate()
            .map(|(i, b)| decode::<E>(start + i as u64, b))
            .collect()
    }

    /// A stream of values.
    pub fn read_stream(
        &self,
        opts: ReadStreamOptions,
    ) -> impl Stream<Item = Result<E::Value>> + Send + 'static {
        let start = if opts.tail {
            self.feed.len()
        } else {
            opts.start
        };
        self.feed
            .read_stream(opts)
            .enumerate()
            .map(move |(i, item)| item.and_then(|b| decode::<E>(start + i as u64, b)))
    }

    /// Waits for at least `min_length` values.
    pub async fn update(&self, min_length: Option<u64>, timeout: Option<Duration>) -> Result<u64> {
        self.feed.update(min_length, timeout).await
    }
}
