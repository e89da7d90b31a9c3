//! The mDNS packets hyperswarm's local discovery sends (multicast-dns 7 with dns-packet
//! 5): a query is one SRV question for `hex(topic[..20]).hyperswarm.local`; an answer
//! has, per announcing topic, an SRV record (port, target `0.0.0.0`: the packet's source)
//! and a TXT record (the topic's 35-byte instance id `id=…`), all with TTL 0, and when it
//! answers a query an A record `referrer.hyperswarm.local` with the querier's address.
//! Encoded without name compression, as dns-packet does; decoded from any responder,
//! compression pointers included, refusing what does not parse.

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::Id;

/// Where mDNS packets go, and the port they come from.
pub const MDNS_ADDR: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(224, 0, 0, 251), 5353);
/// The name under which the querier's address is answered (informational).
pub const REFERRER: &str = "referrer.hyperswarm.local";

const TYPE_A: u16 = 1;
const TYPE_TXT: u16 = 16;
const TYPE_SRV: u16 = 33;
const CLASS_IN: u16 = 1;
/// QR and AA: an authoritative answer.
const FLAGS_RESPONSE: u16 = 0x8400;
/// Compression pointers followed at most while reading one name.
const MAX_POINTERS: usize = 32;

/// The mDNS name of `topic`: its first 20 bytes in hex, under `hyperswarm.local`.
pub fn topic_name(topic: &Id) -> String {
    let hex: String = topic.0[..20].iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}.hyperswarm.local")
}

/// One topic announced in a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announcement {
    /// The topic's name ([`topic_name`]).
    pub name: String,
    /// The port peers dial.
    pub port: u16,
    /// The announcing topic object's instance id (`id=` and 32 random bytes).
    pub instance: Vec<u8>,
}

/// A decoded packet: what local discovery reads of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Packet {
    /// A response (QR set), not a query.
    pub response: bool,
    /// The questions: name and type.
    pub questions: Vec<(String, u16)>,
    /// The answer records.
    pub answers: Vec<Record>,
}

/// An answer record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Its name.
    pub name: String,
    /// Its data.
    pub data: RecordData,
}

/// The data of the record types local discovery reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordData {
    /// A service: its port and target host name.
    Srv {
        /// The port.
        port: u16,
        /// The host, `0.0.0.0` for "the packet's source".
        target: String,
    },
    /// Character strings.
    Txt(Vec<Vec<u8>>),
    /// An IPv4 address.
    A(Ipv4Addr),
    /// Any other type.
    Other(u16),
}

/// Why bytes are not an mDNS packet.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MdnsError {
    /// The packet ends inside a header, name or record.
    #[error("the mDNS packet ends at byte {0}, inside a header, name or record")]
    Truncated(usize),
    /// A label of 64 bytes or more that is not a pointer, or a pointer loop.
    #[error("a bad name at byte {0}")]
    BadName(usize),
    /// A name or label that cannot be written.
    #[error("cannot write the name {0:?}")]
    Unwritable(String),
}

/// A query for `name`'s SRV record.
pub fn encode_query(name: &str) -> Result<Vec<u8>, MdnsError> {
    let mut out = header(0, 1, 0);
    put_name(&mut out, name)?;
    out.extend_from_slice(&TYPE_SRV.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(out)
}

/// A response announcing `announcements` (an SRV and a TXT record each), and when it
/// answers a query from `referrer`, the A record naming it.
pub fn encode_response(
    announcements: &[Announcement],
    referrer: Option<Ipv4Addr>,
) -> Result<Vec<u8>, MdnsError> {
    let answers = announcements.len() * 2 + usize::from(referrer.is_some());
    let count = u16::try_from(answers).map_err(|_| MdnsError::Unwritable("answers".into()))?;
    let mut out = header(FLAGS_RESPONSE, 0, count);
    for a in announcements {
        let mut srv = vec![0, 0, 0, 0];
        srv.extend_from_slice(&a.port.to_be_bytes());
        put_name(&mut srv, "0.0.0.0")?;
        put_record(&mut out, &a.name, TYPE_SRV, &srv)?;
        let len = u8::try_from(a.instance.len())
            .map_err(|_| MdnsError::Unwritable(format!("a TXT of {} bytes", a.instance.len())))?;
        let mut txt = vec![len];
        txt.extend_from_slice(&a.instance);
        put_record(&mut out, &a.name, TYPE_TXT, &txt)?;
    }
    if let Some(ip) = referrer {
        put_record(&mut out, REFERRER, TYPE_A, &ip.octets())?;
    }
    Ok(out)
}

fn header(flags: u16, questions: u16, answers: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    for field in [0, flags, questions, answers, 0, 0] {
        out.extend_from_slice(&u16::to_be_bytes(field));
    }
    out
}

fn put_name(out: &mut Vec<u8>, name: &str) -> Result<(), MdnsError> {
    for label in name.split('.').filter(|l| !l.is_empty()) {
        let len = u8::try_from(label.len())
            .ok()
            .filter(|&l| l < 64)
            .ok_or_else(|| MdnsError::Unwritable(name.to_string()))?;
        out.push(len);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    Ok(())
}

fn put_record(out: &mut Vec<u8>, name: &str, kind: u16, data: &[u8]) -> Result<(), MdnsError> {
    put_name(out, name)?;
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    // TTL 0, as hyperswarm sends every record.
    out.extend_from_slice(&[0, 0, 0, 0]);
    let len = u16::try_from(data.len()).map_err(|_| MdnsError::Unwritable(name.to_string()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(data);
    Ok(())
}

/// The packet in `bytes` (authority and additional records are not read).
pub fn decode(bytes: &[u8]) -> Result<Packet, MdnsError> {
    let mut r = Reader { bytes, at: 0 };
    let _id = r.u16()?;
    let flags = r.u16()?;
    let (questions, answers) = (r.u16()?, r.u16()?);
    r.take(4)?;
    let mut packet = Packet {
        response: flags & 0x8000 != 0,
        ..Packet::default()
    };
    for _ in 0..questions {
        let name = r.name()?;
        let kind = r.u16()?;
        r.take(2)?;
        packet.questions.push((name, kind));
    }
    for _ in 0..answers {
        let name = r.name()?;
        let kind = r.u16()?;
        r.take(2 + 4)?;
        let len = usize::from(r.u16()?);
        let start = r.at;
        let data = r.take(len)?;
        let data = match kind {
            TYPE_SRV if len >= 6 => {
                let port = u16::from_be_bytes([data[4], data[5]]);
                let mut target = Reader {
                    bytes,
                    at: start + 6,
                };
                RecordData::Srv {
                    port,
                    target: target.name()?,
                }
            }
            TYPE_TXT => {
                let mut strings = Vec::new();
                let mut rest = data;
                while let Some((&n, tail)) = rest.split_first() {
                    let n = usize::from(n);
                    let s = tail.get(..n).ok_or(MdnsError::Truncated(start + len))?;
                    strings.push(s.to_vec());
                    rest = &tail[n..];
                }
                RecordData::Txt(strings)
            }
            TYPE_A if len == 4 => RecordData::A(Ipv4Addr::new(data[0], data[1], data[2], data[3])),
            other => RecordData::Other(other),
        };
        packet.answers.push(Record { name, data });
    }
    Ok(packet)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], MdnsError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or(MdnsError::Truncated(self.bytes.len()))?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn u16(&mut self) -> Result<u16, MdnsError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A name, following compression pointers; the reader ends up after its first part.
    fn name(&mut self) -> Result<String, MdnsError> {
        let mut labels: Vec<String> = Vec::new();
        let mut at = self.at;
        let mut resume = None;
        let mut pointers = 0;
        loop {
            let &len = self.bytes.get(at).ok_or(MdnsError::Truncated(at))?;
            match len {
                0 => {
                    at += 1;
                    break;
                }
                l if l & 0xc0 == 0xc0 => {
                    let &low = self.bytes.get(at + 1).ok_or(MdnsError::Truncated(at))?;
                    pointers += 1;
                    if pointers > MAX_POINTERS {
                        return Err(MdnsError::BadName(at));
                    }
                    resume.get_or_insert(at + 2);
                    at = usize::from(l & 0x3f) << 8 | usize::from(low);
                }
                l if l < 64 => {
                    let label = self
                        .bytes
                        .get(at + 1..at + 1 + usize::from(l))
                        .ok_or(MdnsError::Truncated(at))?;
                    labels.push(String::from_utf8_lossy(label).into_owned());
                    at += 1 + usize::from(l);
                }
                _ => return Err(MdnsError::BadName(at)),
            }
        }
        self.at = resume.unwrap_or(at);
        Ok(labels.join("."))
    }
}
