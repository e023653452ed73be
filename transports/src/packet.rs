//! The Engine.IO v4 packet and payload codec: bytes in, bytes out.
//!
//! It knows nothing of sessions, transports or the runtime. Outbound packets are encoded once
//! into a [`Frame`] (the WebSocket frame body, `b`-prefixed base64 aside), so a broadcast can
//! share one encoding among every recipient and each transport only adds its framing.
//!
//! Wire facts (engine.io-protocol README): a packet is one type digit `0`–`6` followed by its
//! data; a polling payload joins packets with the record separator `\x1e`; binary packets in a
//! payload are `b` + standard base64 and carry no type digit.

use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};

/// The record separator that joins packets in an HTTP payload.
pub const SEPARATOR: u8 = 0x1e;

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Engine.IO packet types, with their wire digit as discriminant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    Open = 0,
    Close = 1,
    Ping = 2,
    Pong = 3,
    Message = 4,
    Upgrade = 5,
    Noop = 6,
}

impl PacketType {
    fn from_digit(b: u8) -> Option<Self> {
        Some(match b {
            b'0' => Self::Open,
            b'1' => Self::Close,
            b'2' => Self::Ping,
            b'3' => Self::Pong,
            b'4' => Self::Message,
            b'5' => Self::Upgrade,
            b'6' => Self::Noop,
            _ => return None,
        })
    }

    fn digit(self) -> u8 {
        b'0' + self as u8
    }
}

/// Bytes known to be valid UTF-8. Cloning shares the buffer.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Str(Bytes);

impl Str {
    pub fn from_static(s: &'static str) -> Self {
        Self(Bytes::from_static(s.as_bytes()))
    }

    /// Validates `bytes` as UTF-8 without copying them.
    pub fn from_utf8(bytes: Bytes) -> Result<Self, std::str::Utf8Error> {
        std::str::from_utf8(&bytes)?;
        Ok(Self(bytes))
    }

    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor of `Str` either validates the bytes as UTF-8
        // (`from_utf8`) or takes them from a `&str`/`String`, and the bytes are never
        // mutated afterwards (`Bytes` is immutable), so they are valid UTF-8 here.
        #[allow(unsafe_code)]
        unsafe {
            std::str::from_utf8_unchecked(&self.0)
        }
    }

    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The sub-string `range` of `self`, sharing the buffer. `range` must fall on char
    /// boundaries (checked: it panics otherwise, like `&str` indexing).
    pub fn slice(&self, range: std::ops::Range<usize>) -> Str {
        let _ = &self.as_str()[range.clone()];
        Str(self.0.slice(range))
    }
}

impl From<String> for Str {
    fn from(s: String) -> Self {
        Self(Bytes::from(s))
    }
}

impl From<&str> for Str {
    fn from(s: &str) -> Self {
        Self(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl std::fmt::Debug for Str {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::ops::Deref for Str {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

/// A decoded Engine.IO packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// The handshake; its data is the JSON object (server → client only).
    Open(Str),
    Close,
    /// Ping with optional data (`probe` during an upgrade).
    Ping(Str),
    Pong(Str),
    Message(Str),
    /// A binary message: raw bytes, no type digit.
    Binary(Bytes),
    Upgrade,
    Noop,
}

impl Packet {
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Open(_) => PacketType::Open,
            Packet::Close => PacketType::Close,
            Packet::Ping(_) => PacketType::Ping,
            Packet::Pong(_) => PacketType::Pong,
            Packet::Message(_) | Packet::Binary(_) => PacketType::Message,
            Packet::Upgrade => PacketType::Upgrade,
            Packet::Noop => PacketType::Noop,
        }
    }

    /// Encodes the packet once into the frame every transport sends.
    pub fn encode(&self) -> Frame {
        let data: &[u8] = match self {
            Packet::Binary(b) => return Frame::Binary(b.clone()),
            Packet::Open(s) | Packet::Ping(s) | Packet::Pong(s) | Packet::Message(s) => {
                s.as_bytes()
            }
            Packet::Close | Packet::Upgrade | Packet::Noop => b"",
        };
        let mut buf = BytesMut::with_capacity(1 + data.len());
        buf.put_u8(self.packet_type().digit());
        buf.put_slice(data);
        Frame::Text(Str(buf.freeze()))
    }
}

/// An encoded outbound packet. `Text` holds the type digit and the data, exactly the body of a
/// WebSocket text frame; `Binary` holds the raw message bytes of a WebSocket binary frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Text(Str),
    Binary(Bytes),
}

impl Frame {
    /// A text message frame (`4` + `text`).
    pub fn message(text: &str) -> Self {
        let mut buf = BytesMut::with_capacity(1 + text.len());
        buf.put_u8(b'4');
        buf.put_slice(text.as_bytes());
        Frame::Text(Str(buf.freeze()))
    }

    /// The number of bytes this frame adds to an HTTP payload, separator excluded.
    pub fn payload_len(&self) -> usize {
        match self {
            Frame::Text(s) => s.len(),
            Frame::Binary(b) => 1 + b.len().div_ceil(3) * 4,
        }
    }

    pub fn is_binary(&self) -> bool {
        matches!(self, Frame::Binary(_))
    }
}

/// Why a packet or payload could not be decoded. Any of these closes the session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty packet")]
    Empty,
    #[error("unknown packet type {0:#04x}")]
    UnknownType(u8),
    #[error("payload is not valid UTF-8")]
    InvalidUtf8,
    #[error("invalid base64 in binary packet")]
    InvalidBase64,
}

/// Decodes one text packet: a WebSocket text frame, or one `\x1e`-separated piece of a payload
/// that is not binary.
pub fn decode_text(text: Str) -> Result<Packet, DecodeError> {
    let Some(&first) = text.as_bytes().first() else {
        return Err(DecodeError::Empty);
    };
    let kind = PacketType::from_digit(first).ok_or(DecodeError::UnknownType(first))?;
    // The type digit is ASCII, so byte 1 is a char boundary.
    let data = text.slice(1..text.len());
    Ok(match kind {
        PacketType::Open => Packet::Open(data),
        PacketType::Close => Packet::Close,
        PacketType::Ping => Packet::Ping(data),
        PacketType::Pong => Packet::Pong(data),
        PacketType::Message => Packet::Message(data),
        PacketType::Upgrade => Packet::Upgrade,
        PacketType::Noop => Packet::Noop,
    })
}

/// Decodes an HTTP payload (a polling POST body): packets joined by `\x1e`, binary ones as
/// `b<base64>`. The whole body must be UTF-8; an empty body or an empty piece is an error.
pub fn decode_payload(body: Bytes) -> Result<Vec<Packet>, DecodeError> {
    let body = Str::from_utf8(body).map_err(|_| DecodeError::InvalidUtf8)?;
    let mut packets = Vec::new();
    let mut start = 0;
    let bytes = body.as_bytes().clone();
    loop {
        let end = bytes[start..]
            .iter()
            .position(|&b| b == SEPARATOR)
            .map_or(bytes.len(), |i| start + i);
        // `\x1e` is ASCII, so both ends are char boundaries.
        let piece = body.slice(start..end);
        packets.push(decode_piece(piece)?);
        if end == bytes.len() {
            return Ok(packets);
        }
        start = end + 1;
    }
}

fn decode_piece(piece: Str) -> Result<Packet, DecodeError> {
    if let Some(b64) = piece.as_str().strip_prefix('b') {
        let raw = BASE64.decode(b64).map_err(|_| DecodeError::InvalidBase64)?;
        return Ok(Packet::Binary(Bytes::from(raw)));
    }
    decode_text(piece)
}

/// Encodes frames into one HTTP payload, appending to `out`.
pub fn encode_payload<'a>(frames: impl IntoIterator<Item = &'a Frame>, out: &mut BytesMut) {
    for (i, frame) in frames.into_iter().enumerate() {
        if i > 0 {
            out.put_u8(SEPARATOR);
        }
        match frame {
            Frame::Text(s) => out.put_slice(s.as_bytes()),
            Frame::Binary(b) => {
                out.put_u8(b'b');
                let start = out.len();
                out.resize(start + b.len().div_ceil(3) * 4, 0);
                // The buffer was sized for exactly this encoding, so this cannot fail.
                let written = BASE64
                    .encode_slice(b, &mut out[start..])
                    .expect("buffer sized for base64 output");
                debug_assert_eq!(written, out.len() - start);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Str {
        Str::from(s)
    }

    #[test]
    fn decodes_every_packet_type() {
        assert_eq!(decode_text(text("1")), Ok(Packet::Close));
        assert_eq!(decode_text(text("2probe")), Ok(Packet::Ping(text("probe"))));
        assert_eq!(decode_text(text("3")), Ok(Packet::Pong(text(""))));
        assert_eq!(
            decode_text(text("4héllo")),
            Ok(Packet::Message(text("héllo")))
        );
        assert_eq!(decode_text(text("5")), Ok(Packet::Upgrade));
        assert_eq!(decode_text(text("6")), Ok(Packet::Noop));
    }

    #[test]
    fn rejects_unknown_type_and_empty_packet() {
        assert_eq!(
            decode_text(text("abc")),
            Err(DecodeError::UnknownType(b'a'))
        );
        assert_eq!(decode_text(text("7")), Err(DecodeError::UnknownType(b'7')));
        assert_eq!(decode_text(text("")), Err(DecodeError::Empty));
        assert_eq!(decode_payload(Bytes::new()), Err(DecodeError::Empty));
        assert_eq!(
            decode_payload(Bytes::from_static(b"4a\x1e")),
            Err(DecodeError::Empty)
        );
    }

    #[test]
    fn decodes_mixed_payload() {
        let packets = decode_payload(Bytes::from_static(b"4hello\x1ebAQIDBA==\x1e2probe")).unwrap();
        assert_eq!(
            packets,
            vec![
                Packet::Message(text("hello")),
                Packet::Binary(Bytes::from_static(&[1, 2, 3, 4])),
                Packet::Ping(text("probe")),
            ]
        );
    }

    #[test]
    fn rejects_bad_utf8_and_bad_base64() {
        assert_eq!(
            decode_payload(Bytes::from_static(b"4\xff\xfe")),
            Err(DecodeError::InvalidUtf8)
        );
        assert_eq!(
            decode_payload(Bytes::from_static(b"bAQIDB")),
            Err(DecodeError::InvalidBase64)
        );
        assert_eq!(
            decode_payload(Bytes::from_static(b"b!!!!")),
            Err(DecodeError::InvalidBase64)
        );
    }

    #[test]
    fn encodes_payload_with_binary_as_base64() {
        let frames = [
            Frame::message("hello"),
            Frame::Binary(Bytes::from_static(&[1, 2, 3, 4])),
            Packet::Ping(Str::default()).encode(),
        ];
        let mut out = BytesMut::new();
        encode_payload(&frames, &mut out);
        assert_eq!(&out[..], b"4hello\x1ebAQIDBA==\x1e2");
        let lens: usize = frames.iter().map(Frame::payload_len).sum::<usize>() + 2;
        assert_eq!(lens, out.len());
    }

    #[test]
    fn encode_then_decode_round_trips() {
        for packet in [
            Packet::Close,
            Packet::Ping(text("probe")),
            Packet::Pong(text("")),
            Packet::Message(text("x\u{2028}y")),
            Packet::Upgrade,
            Packet::Noop,
        ] {
            let Frame::Text(t) = packet.encode() else {
                panic!("text packet encoded as binary")
            };
            assert_eq!(decode_text(t), Ok(packet));
        }
    }
}
