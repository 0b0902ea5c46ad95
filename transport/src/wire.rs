//! Frames over QUIC streams: a u32 big-endian length, then that many bytes (hsm-protocol's
//! framing). Reading checks the size bound first and then grows its buffer with the bytes that
//! actually arrive, so a peer announcing a huge frame costs only what it sends; writing encodes a
//! protocol message into exactly one frame.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The first allocation for a frame body, when the frame is at least this long. Most frames are
/// far smaller and get exactly their size; a large one starts here and doubles as it arrives.
const FIRST_BODY_CAPACITY: usize = 16 * 1024;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The peer announced a frame larger than the limit.
    #[error("peer sent a frame of {size} bytes, more than the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    /// The stream ended in the middle of a frame.
    #[error("stream ended in the middle of a frame")]
    Truncated,
    /// Reading or writing the stream failed.
    #[error("stream error: {0}")]
    Io(#[from] std::io::Error),
    /// The message could not be encoded (too large for one frame).
    #[error("cannot encode the message: {0}")]
    Encode(#[from] hsm_protocol::FrameError),
}

/// Reads one frame; `Ok(None)` when the stream ended cleanly between frames.
///
/// Not cancel-safe: dropped halfway (a losing `select!` branch), the bytes already read are lost
/// and the stream is out of step. Read frames from one loop that is never cancelled.
pub async fn read_frame<R: AsyncRead + Unpin>(
    recv: &mut R,
    limit: usize,
) -> Result<Option<Vec<u8>>, WireError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < len.len() {
        let n = recv.read(&mut len[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(WireError::Truncated)
            };
        }
        got += n;
    }
    let size = u32::from_be_bytes(len) as usize;
    if size > limit {
        return Err(WireError::TooLarge { size, limit });
    }
    // Not `vec![0; size]`: once the allocator has recycled a freed large frame, a zeroed buffer
    // of the announced size is real memory, and a peer announcing 16 MiB on many streams while
    // sending a few bytes on each held ~16 MiB per stream. Reading never goes past the frame's
    // end: a file header is followed on its stream by raw bytes that are not ours to take.
    let mut body = Vec::new();
    read_body(recv, size, &mut body).await?;
    Ok(Some(body))
}

/// Reads exactly `size` bytes into `body` (empty), whose capacity stays within twice what has
/// arrived (or [`FIRST_BODY_CAPACITY`]) at every point.
async fn read_body<R: AsyncRead + Unpin>(
    recv: &mut R,
    size: usize,
    body: &mut Vec<u8>,
) -> Result<(), WireError> {
    body.reserve_exact(size.min(FIRST_BODY_CAPACITY));
    let mut rest = recv.take(size as u64);
    while body.len() < size {
        if body.len() == body.capacity() {
            let grown = body.capacity().saturating_mul(2).min(size);
            body.reserve_exact(grown.saturating_sub(body.len()));
        }
        if rest.read_buf(body).await? == 0 {
            return Err(WireError::Truncated);
        }
    }
    Ok(())
}

/// Encodes `msg` as one frame (hsm-protocol's `encode` writes the length prefix) and writes it.
pub async fn write_message<W: AsyncWrite + Unpin, T: serde::Serialize + ?Sized>(
    send: &mut W,
    msg: &T,
) -> Result<(), WireError> {
    let frame = hsm_protocol::encode(msg)?;
    send.write_all(&frame).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_round_trip_through_frames() {
        use hsm_protocol::{decode, PingMsg, ToAgent};
        let (mut a, mut b) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            write_message(&mut a, &ToAgent::Ping(PingMsg { nonce: 7 }))
                .await
                .unwrap();
            write_message(&mut a, &ToAgent::Ping(PingMsg { nonce: 8 }))
                .await
                .unwrap();
        });
        for nonce in [7, 8] {
            let body = read_frame(&mut b, 1024).await.unwrap().unwrap();
            assert_eq!(
                decode::<ToAgent>(&body).unwrap(),
                ToAgent::Ping(PingMsg { nonce })
            );
        }
        writer.await.unwrap();
        assert!(
            read_frame(&mut b, 1024).await.unwrap().is_none(),
            "clean end"
        );
    }

    #[tokio::test]
    async fn a_huge_announced_frame_is_refused_before_allocating() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let err = read_frame(&mut b, 16 << 20).await.unwrap_err();
        assert!(matches!(err, WireError::TooLarge { size, .. } if size == u32::MAX as usize));
    }

    #[tokio::test]
    async fn memory_follows_the_bytes_received_not_the_announced_size() {
        use std::future::Future as _;
        let (mut a, mut b) = tokio::io::duplex(64 * 1024);
        let size = 16 << 20;
        a.write_all(&[7u8; 1024]).await.unwrap();
        let mut body = Vec::new();
        {
            // One poll takes the kilobyte and then waits for the rest (`a` stays open).
            let mut reading = Box::pin(read_body(&mut b, size, &mut body));
            let waiting = std::future::poll_fn(|cx| {
                std::task::Poll::Ready(reading.as_mut().poll(cx).is_pending())
            })
            .await;
            assert!(waiting, "the body is not complete");
        }
        assert_eq!(body.len(), 1024);
        assert!(
            body.capacity() <= FIRST_BODY_CAPACITY,
            "{} bytes allocated for 1 KiB received",
            body.capacity()
        );
    }

    #[tokio::test]
    async fn a_large_frame_arrives_intact_through_the_growing_buffer() {
        let (mut a, mut b) = tokio::io::duplex(64 * 1024);
        let frame: Vec<u8> = (0..(3u32 << 20) + 5).map(|i| (i % 251) as u8).collect();
        let sent = frame.clone();
        let writer = tokio::spawn(async move {
            a.write_all(&(sent.len() as u32).to_be_bytes())
                .await
                .unwrap();
            a.write_all(&sent).await.unwrap();
            // The next stream bytes (a file after its header) stay unread by `read_frame`.
            a.write_all(b"raw").await.unwrap();
        });
        let body = read_frame(&mut b, 16 << 20).await.unwrap().unwrap();
        assert!(body == frame, "the body differs from what was sent");
        writer.await.unwrap();
        let mut rest = Vec::new();
        b.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"raw");
    }

    #[tokio::test]
    async fn a_frame_cut_short_is_truncated_not_a_hang() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&10u32.to_be_bytes()).await.unwrap();
        a.write_all(b"abc").await.unwrap();
        drop(a);
        assert!(matches!(
            read_frame(&mut b, 1024).await,
            Err(WireError::Truncated)
        ));
    }
}
