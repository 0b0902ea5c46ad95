//! Framing: a message on a stream is a 4-byte big-endian length followed by that many bytes of
//! rmp-serde encoding with named fields. This module owns the size limit, one-shot `encode` and
//! `decode`, and the incremental `FrameDecoder` for bytes arriving in arbitrary chunks.
//!
//! Decoding never panics and never trusts a length it has not checked: a prefix above
//! [`MAX_FRAME`] is refused as soon as its four bytes arrive, before any of the body is buffered.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::Cursor;

/// The largest frame body, in bytes (16 MiB).
///
/// The limit bounds what one peer can make the other buffer: a receiver holds at most one frame
/// body plus the chunk it just read. Nothing legitimate comes close. Result files never travel in
/// frames (they are raw bytes on their own streams); the biggest frames are `Submit` batches, at
/// roughly 100 bytes per task, so a 16 MiB frame still holds over 100,000 tasks, and senders split
/// larger batches anyway.
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

/// Bytes in the length prefix.
pub const PREFIX_LEN: usize = 4;

/// Deepest nesting of MessagePack arrays and maps a body may have. Our messages nest about eight
/// levels; rmp-serde's default (1024) could overflow a 2 MiB thread stack in a debug build while
/// skipping a hostile unknown field.
const MAX_DEPTH: usize = 64;

/// Why a frame could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The body is (or its length prefix claims to be) larger than [`MAX_FRAME`].
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The body's size, or the size its prefix claims.
        len: u64,
        /// The limit, [`MAX_FRAME`].
        max: usize,
    },
    /// The message could not be encoded (a serializer error, never seen with our types).
    #[error("cannot encode message")]
    Encode(#[source] rmp_serde::encode::Error),
    /// The body is not a valid encoding of the expected message.
    #[error("malformed frame body")]
    Decode(#[source] rmp_serde::decode::Error),
    /// The body holds a complete message followed by bytes that belong to nothing.
    #[error("frame body has {extra} bytes after the message")]
    TrailingBytes {
        /// How many bytes were left over.
        extra: u64,
    },
}

/// Encodes `msg` as one frame: length prefix and body. `TooLarge` means the caller must split
/// its batch (tasks of a `Submit`, events of an `Events`) over several messages.
pub fn encode<T: Serialize + ?Sized>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let mut frame = vec![0u8; PREFIX_LEN];
    rmp_serde::encode::write_named(&mut frame, msg).map_err(FrameError::Encode)?;
    let body_len = frame.len().saturating_sub(PREFIX_LEN);
    let too_large = || FrameError::TooLarge {
        len: body_len as u64,
        max: MAX_FRAME,
    };
    if body_len > MAX_FRAME {
        return Err(too_large());
    }
    let prefix = u32::try_from(body_len)
        .map_err(|_| too_large())?
        .to_be_bytes();
    // The first PREFIX_LEN bytes were reserved above; `splice` keeps even this indexing-free.
    frame.splice(..PREFIX_LEN, prefix);
    Ok(frame)
}

/// Decodes one message from a frame body (without its length prefix).
///
/// Unknown fields are ignored (a newer peer may send more); missing fields with a default take
/// it. A body with bytes after the message is refused: it means the peers disagree on framing.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    // Through a reader rather than `rmp_serde::from_slice`, which does not say where the message
    // ended; the cursor's position does, for the trailing-bytes check.
    let mut cursor = Cursor::new(body);
    let value = {
        let mut deserializer = rmp_serde::Deserializer::new(&mut cursor);
        deserializer.set_max_depth(MAX_DEPTH);
        T::deserialize(&mut deserializer).map_err(FrameError::Decode)?
    };
    let extra = (body.len() as u64).saturating_sub(cursor.position());
    if extra > 0 {
        return Err(FrameError::TrailingBytes { extra });
    }
    Ok(value)
}

/// The body length a prefix announces, refused above [`MAX_FRAME`]; for readers that read the
/// prefix and then exactly that many bytes.
pub fn parse_length_prefix(prefix: [u8; PREFIX_LEN]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix);
    match usize::try_from(len) {
        Ok(len) if len <= MAX_FRAME => Ok(len),
        _ => Err(FrameError::TooLarge {
            len: u64::from(len),
            max: MAX_FRAME,
        }),
    }
}

/// Splits a byte stream into frame bodies, whatever the chunking of its arrival.
///
/// Feed it with [`push`](Self::push) and drain it with [`next_frame`](Self::next_frame) until that
/// returns `Ok(None)`. After draining it holds less than one frame (at most
/// `PREFIX_LEN + MAX_FRAME` bytes); its allocation grows with the bytes received, never with a
/// claimed length alone. Once it has seen an oversized prefix it refuses everything: the stream
/// cannot be resynchronised and should be closed.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    /// Received bytes; those before `start` are already returned.
    buf: Vec<u8>,
    /// Offset of the first byte not yet returned as part of a frame.
    start: usize,
    /// The oversized length that poisoned the decoder, if any.
    refused: Option<u32>,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    /// Appends received bytes. Fails, and drops everything buffered, when the next frame's
    /// length prefix is over [`MAX_FRAME`] (or was before).
    pub fn push(&mut self, data: &[u8]) -> Result<(), FrameError> {
        self.check_refused()?;
        // Returned frames are dropped here rather than in `next_frame`, so draining several
        // frames from one chunk moves the remainder once.
        if self.start > 0 {
            self.buf.drain(..self.start.min(self.buf.len()));
            self.start = 0;
        }
        // A prefix that arrived behind an earlier frame of the last chunk is checked before any
        // more of its body is taken.
        let frame_end = self.pending_frame_end()?;
        let needed = self.buf.len().saturating_add(data.len());
        if needed > self.buf.capacity() {
            // Double as a Vec would (amortised pushes), but never past the end of the frame
            // being received when its length is known: a peer that announces 16 MiB and sends
            // 10 bytes gets about 10 bytes of memory.
            let doubled = self.buf.capacity().saturating_mul(2);
            let target = match frame_end {
                Some(end) => needed.max(doubled.min(end)),
                None => needed,
            };
            self.buf
                .reserve_exact(target.saturating_sub(self.buf.len()));
        }
        self.buf.extend_from_slice(data);
        // Check the prefix now rather than at the next `next_frame`, so the caller learns of an
        // oversized frame before pushing any more of it.
        self.pending_frame_end().map(|_| ())
    }

    /// The next complete frame body, `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        self.check_refused()?;
        let Some(end) = self.pending_frame_end()? else {
            return Ok(None);
        };
        let body_start = self.start.saturating_add(PREFIX_LEN);
        match self.buf.get(body_start..end) {
            Some(body) => {
                let body = body.to_vec();
                self.start = end;
                if self.start == self.buf.len() {
                    // Common case: the buffer is fully drained; reuse it without moving bytes.
                    self.buf.clear();
                    self.start = 0;
                }
                Ok(Some(body))
            }
            None => Ok(None),
        }
    }

    /// Bytes received but not yet returned as frames. After a file header, these are the start
    /// of the file's raw content.
    pub fn buffered(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or_default()
    }

    /// Bytes the decoder currently holds allocated, for tests and metrics.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// The decoder's unreturned bytes; see [`buffered`](Self::buffered).
    pub fn into_buffered(mut self) -> Vec<u8> {
        let start = self.start.min(self.buf.len());
        self.buf.drain(..start);
        self.buf
    }

    fn check_refused(&self) -> Result<(), FrameError> {
        match self.refused {
            Some(len) => Err(FrameError::TooLarge {
                len: u64::from(len),
                max: MAX_FRAME,
            }),
            None => Ok(()),
        }
    }

    /// Where the frame starting at `start` ends in `buf` (it may not have arrived yet), or
    /// `None` while its prefix is incomplete. An oversized prefix poisons the decoder and frees
    /// the buffer.
    fn pending_frame_end(&mut self) -> Result<Option<usize>, FrameError> {
        let prefix_end = self.start.saturating_add(PREFIX_LEN);
        let Some(prefix) = self.buf.get(self.start..prefix_end) else {
            return Ok(None);
        };
        let Ok(bytes) = <[u8; PREFIX_LEN]>::try_from(prefix) else {
            return Ok(None);
        };
        match parse_length_prefix(bytes) {
            // Cannot overflow: prefix_end <= buf.len() and body_len <= MAX_FRAME.
            Ok(body_len) => Ok(prefix_end.checked_add(body_len)),
            Err(err) => {
                self.refused = Some(u32::from_be_bytes(bytes));
                self.buf = Vec::new();
                self.start = 0;
                Err(err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_of(body: &[u8]) -> Vec<u8> {
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(body);
        frame
    }

    #[test]
    fn encode_prefixes_the_body_length() {
        let frame = encode(&7u8).unwrap();
        assert_eq!(frame, [0, 0, 0, 1, 7]);
    }

    #[test]
    fn an_oversized_message_is_refused_when_encoding() {
        let big = crate::Bytes(vec![0u8; MAX_FRAME]);
        match encode(&big) {
            Err(FrameError::TooLarge { len, max }) => {
                assert!(len > MAX_FRAME as u64);
                assert_eq!(max, MAX_FRAME);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let err = decode::<u8>(&[7, 7]).unwrap_err();
        assert!(
            matches!(err, FrameError::TrailingBytes { extra: 1 }),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "frame body has 1 bytes after the message");
    }

    #[test]
    fn an_empty_body_is_a_decode_error() {
        assert!(matches!(decode::<u8>(&[]), Err(FrameError::Decode(_))));
    }

    #[test]
    fn deep_nesting_is_refused_without_overflowing_the_stack() {
        // A map with one unknown key whose value is 100,000 nested one-element arrays.
        #[derive(Debug, serde::Deserialize)]
        struct Empty {}
        let mut body = vec![0x81, 0xa1, b'x'];
        body.extend(std::iter::repeat_n(0x91, 100_000));
        body.push(0xc0);
        assert!(matches!(decode::<Empty>(&body), Err(FrameError::Decode(_))));
    }

    #[test]
    fn decoder_returns_frames_from_one_chunk_in_order() {
        let mut stream = frame_of(b"a");
        stream.extend(frame_of(b""));
        stream.extend(frame_of(b"bcd"));
        stream.extend(&[0, 0]); // half of the next prefix
        let mut decoder = FrameDecoder::new();
        decoder.push(&stream).unwrap();
        assert_eq!(decoder.next_frame().unwrap(), Some(b"a".to_vec()));
        assert_eq!(decoder.next_frame().unwrap(), Some(Vec::new()));
        assert_eq!(decoder.next_frame().unwrap(), Some(b"bcd".to_vec()));
        assert_eq!(decoder.next_frame().unwrap(), None);
        assert_eq!(decoder.buffered(), [0, 0]);
        decoder.push(&[0, 2, b'e']).unwrap();
        assert_eq!(decoder.next_frame().unwrap(), None);
        decoder.push(b"fg").unwrap();
        assert_eq!(decoder.next_frame().unwrap(), Some(b"ef".to_vec()));
        assert_eq!(decoder.into_buffered(), b"g");
    }

    #[test]
    fn an_oversized_prefix_is_refused_on_push_and_forever_after() {
        let mut decoder = FrameDecoder::new();
        decoder.push(&[0xff, 0xff]).unwrap();
        let err = decoder.push(&[0xff, 0xff, 1, 2, 3]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("frame of 4294967295 bytes exceeds the limit of {MAX_FRAME} bytes")
        );
        assert_eq!(decoder.capacity(), 0);
        assert!(decoder.buffered().is_empty());
        assert!(decoder.next_frame().is_err());
        assert!(decoder.push(&[0]).is_err());
    }

    #[test]
    fn the_limit_itself_is_allowed_and_one_more_is_not() {
        let at_limit = (MAX_FRAME as u32).to_be_bytes();
        assert_eq!(parse_length_prefix(at_limit).unwrap(), MAX_FRAME);
        let over = (MAX_FRAME as u32 + 1).to_be_bytes();
        assert!(parse_length_prefix(over).is_err());
        let mut decoder = FrameDecoder::new();
        decoder.push(&at_limit).unwrap();
        decoder.push(&[1, 2, 3]).unwrap();
        assert_eq!(decoder.next_frame().unwrap(), None);
        // Memory follows what arrived, not what was announced.
        assert!(decoder.capacity() < 64, "capacity {}", decoder.capacity());
    }

    #[test]
    fn a_frame_announced_later_in_a_chunk_is_checked_by_next_frame() {
        let mut stream = frame_of(b"ok");
        stream.extend(u32::MAX.to_be_bytes());
        let mut decoder = FrameDecoder::new();
        decoder.push(&stream).unwrap();
        assert_eq!(decoder.next_frame().unwrap(), Some(b"ok".to_vec()));
        assert!(matches!(
            decoder.next_frame(),
            Err(FrameError::TooLarge { .. })
        ));
        assert_eq!(decoder.capacity(), 0);
    }
}
