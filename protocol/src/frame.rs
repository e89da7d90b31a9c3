//! Frames (`simple-message-channels`): `varint(length) varint(channel << 4 | type) body`;
//! a frame of length 0 is a keep-alive.

use bytes::{Buf, Bytes, BytesMut};

use crate::error::Error;
use crate::message::Message;

/// Largest message body accepted (and sent), as in JS.
pub const MAX_MESSAGE_SIZE: usize = 8 * 1024 * 1024;

/// Appends a frame carrying `message` on `channel`.
pub fn encode(channel: u64, message: &Message, out: &mut BytesMut) {
    let header = channel << 4 | u64::from(message.type_id());
    let len = varint::encoded_len(header) + message.encoded_len();
    out.reserve(len + 10);
    out.extend_from_slice(&varint::encode(len as u64));
    out.extend_from_slice(&varint::encode(header));
    message.encode_body(out);
}

/// One unit read off the wire.
#[derive(Debug, PartialEq)]
pub enum Frame {
    /// A message on a channel (the body is decoded separately).
    Message {
        /// The sender's channel id.
        channel: u64,
        /// The message type.
        type_id: u8,
        /// The encoded body.
        body: Bytes,
    },
    /// An empty frame.
    KeepAlive,
}

/// Reads a varint from the front of `buf` without consuming it: `(value, bytes)`, or
/// `None` if more bytes are needed. Varints longer than 8 bytes are refused, as JS does.
fn peek_varint(buf: &[u8]) -> Result<Option<(u64, usize)>, Error> {
    match varint::decode_within(buf, 8) {
        Ok(v) => Ok(Some(v)),
        Err(varint::Error::Incomplete) => Ok(None),
        Err(e) => Err(Error::Malformed {
            what: "frame",
            reason: e.to_string(),
        }),
    }
}

/// The size in bytes (header included) of the frame at the front of `buf`, once its
/// length is known; `None` while more bytes are needed to tell. Refuses oversized frames
/// as [`decode`] does.
pub fn next_frame_size(buf: &[u8]) -> Result<Option<usize>, Error> {
    let Some((len, n)) = peek_varint(buf)? else {
        return Ok(None);
    };
    if len > (MAX_MESSAGE_SIZE + 8) as u64 {
        return Err(Error::TooLarge {
            size: len,
            max: MAX_MESSAGE_SIZE,
        });
    }
    Ok(Some(n + len as usize))
}

/// Takes the next complete frame from the front of `buf`, if there is one.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, Error> {
    let Some((len, n)) = peek_varint(buf)? else {
        return Ok(None);
    };
    if len == 0 {
        buf.advance(n);
        return Ok(Some(Frame::KeepAlive));
    }
    // Refuse before buffering: the header takes at most 8 bytes of the length.
    if len > (MAX_MESSAGE_SIZE + 8) as u64 {
        return Err(Error::TooLarge {
            size: len,
            max: MAX_MESSAGE_SIZE,
        });
    }
    let len = len as usize;
    if buf.len() < n + len {
        return Ok(None);
    }
    buf.advance(n);
    // Copied out rather than split off: a split would keep the whole read buffer alive
    // for as long as any message of it is, and every read would allocate a new one.
    let mut frame = Bytes::copy_from_slice(&buf[..len]);
    buf.advance(len);
    let Some((header, h)) = peek_varint(&frame)? else {
        return Err(Error::Malformed {
            what: "frame",
            reason: "header runs past the end of the frame".into(),
        });
    };
    frame.advance(h);
    if frame.len() > MAX_MESSAGE_SIZE {
        return Err(Error::TooLarge {
            size: frame.len() as u64,
            max: MAX_MESSAGE_SIZE,
        });
    }
    Ok(Some(Frame::Message {
        channel: header >> 4,
        type_id: (header & 15) as u8,
        body: frame,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Close, Have, Status};
    use proptest::prelude::*;

    fn hex(b: &[u8]) -> String {
        hypercore::crypto::to_hex(b)
    }

    #[test]
    fn examples_from_the_spec() {
        let mut out = BytesMut::new();
        encode(
            1,
            &Message::Status(Status {
                uploading: Some(true),
                downloading: Some(false),
            }),
            &mut out,
        );
        assert_eq!(hex(&out), "051208011000");
        out.clear();
        encode(
            1,
            &Message::Close(Close {
                discovery_key: None,
            }),
            &mut out,
        );
        assert_eq!(hex(&out), "011a");
        out.clear();
        encode(
            1,
            &Message::Have(Have {
                start: 6,
                length: None,
                bitfield: None,
                ack: None,
            }),
            &mut out,
        );
        assert_eq!(hex(&out), "03130806");
    }

    #[test]
    fn partial_frames_wait_and_keepalives_pass() {
        let mut wire = BytesMut::from(&[0u8, 0x03, 0x13, 0x08][..]);
        assert_eq!(decode(&mut wire).unwrap(), Some(Frame::KeepAlive));
        assert_eq!(decode(&mut wire).unwrap(), None);
        wire.extend_from_slice(&[0x06]);
        let Some(Frame::Message {
            channel,
            type_id,
            body,
        }) = decode(&mut wire).unwrap()
        else {
            panic!()
        };
        assert_eq!((channel, type_id, &body[..]), (1, 3, &[8u8, 6][..]));
        assert!(wire.is_empty());
    }

    #[test]
    fn oversized_frames_are_refused_before_buffering() {
        let mut wire = BytesMut::new();
        wire.extend_from_slice(&varint::encode(9 * 1024 * 1024));
        assert!(matches!(decode(&mut wire), Err(Error::TooLarge { .. })));
        let mut wire = BytesMut::from(&[0xff; 9][..]);
        assert!(matches!(decode(&mut wire), Err(Error::Malformed { .. })));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(frame)) = decode(&mut buf) {
                if let Frame::Message { type_id, body, .. } = frame {
                    let _ = Message::decode(type_id, body);
                }
            }
        }

        #[test]
        fn messages_round_trip(start in any::<u64>(), length in proptest::option::of(any::<u64>()), channel in 0u64..1 << 40) {
            let msg = Message::Have(Have { start, length, bitfield: None, ack: Some(true) });
            let mut out = BytesMut::new();
            encode(channel, &msg, &mut out);
            let Some(Frame::Message { channel: c, type_id, body }) = decode(&mut out).unwrap() else { panic!() };
            prop_assert_eq!(c, channel);
            prop_assert_eq!(Message::decode(type_id, body).unwrap(), msg);
        }
    }
}
