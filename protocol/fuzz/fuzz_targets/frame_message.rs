//! Arbitrary bytes through the frame decoder and every message decoder, fed in two pieces
//! (the first input byte picks the split): never a panic, the same result however the
//! bytes arrive, and every decoded message re-encodes to a body that decodes to itself.
#![no_main]

use bytes::BytesMut;
use hypercore_protocol::frame::{self, Frame};
use hypercore_protocol::message::Message;
use libfuzzer_sys::fuzz_target;

type Decoded = (Vec<(u64, u8, Result<Message, String>)>, Option<String>);

fn decode_all(pieces: &[&[u8]]) -> Decoded {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match frame::decode(&mut buf) {
                Ok(Some(Frame::Message {
                    channel,
                    type_id,
                    body,
                })) => {
                    let m = Message::decode(type_id, body).map_err(|e| e.to_string());
                    if let Ok(m) = &m {
                        let mut again = BytesMut::new();
                        m.encode_body(&mut again);
                        assert_eq!(again.len(), m.encoded_len());
                        let back = Message::decode(type_id, again.freeze())
                            .expect("a decoded message re-encodes to something undecodable");
                        assert_eq!(&back, m);
                    }
                    out.push((channel, type_id, m));
                }
                Ok(Some(Frame::KeepAlive)) => {}
                Ok(None) => break,
                Err(e) => return (out, Some(e.to_string())),
            }
        }
    }
    (out, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, wire)) = data.split_first() else {
        return;
    };
    let at = usize::from(split) * wire.len() / 256;
    let whole = decode_all(&[wire]);
    let pieces = decode_all(&[&wire[..at], &wire[at..]]);
    assert_eq!(whole, pieces);
});
