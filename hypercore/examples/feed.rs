//! A tiny command line over the log: `feed DIR append TEXT...`, `feed DIR cat`,
//! `feed DIR info`, `feed DIR audit`. Used by `scripts/run` as the demo of the log.

use std::process::ExitCode;

use futures::StreamExt;
use hypercore::{Feed, ReadStreamOptions};

#[tokio::main]
async fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("feed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Vec<String>) -> Result<(), Box<dyn std::error::Error>> {
    let [dir, command, rest @ ..] = &args[..] else {
        return Err("usage: feed DIR (append TEXT... | cat | info | audit)".into());
    };
    let feed = Feed::open_dir(dir).await?;
    match command.as_str() {
        "append" => {
            let length = feed
                .append_batch(rest.iter().map(|s| s.clone().into_bytes()))
                .await?;
            println!("appended {} block(s); length is now {length}", rest.len());
        }
        "cat" => {
            let mut blocks = Box::pin(feed.read_stream(ReadStreamOptions::default()));
            while let Some(block) = blocks.next().await {
                println!("{}", String::from_utf8_lossy(&block?));
            }
        }
        "info" => {
            let info = serde_json::json!({
                "key": feed.key().to_hex(),
                "discoveryKey": feed.discovery_key().to_hex(),
                "length": feed.len(),
                "byteLength": feed.byte_len(),
                "writable": feed.writable(),
                "signatureVerifies": match feed.len() {
                    0 => None,
                    n => Some(feed.verify(n - 1, &feed.signature(n - 1)?.signature)?),
                },
            });
            println!("{}", serde_json::to_string_pretty(&info)?);
        }
        "audit" => println!("{}", serde_json::to_string(&feed.audit().await?)?),
        other => return Err(format!("unknown command {other:?}").into()),
    }
    feed.close().await?;
    Ok(())
}
