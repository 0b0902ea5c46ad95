//! Frames over QUIC streams: a u32 big-endian length, then that many bytes (hsm-protocol's
//! framing). Reading checks the size bound before allocating, so a peer announcing a huge frame
//! costs nothing; writing encodes a protocol message into exactly one frame.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

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
    let mut body = vec![0u8; size];
    recv.read_exact(&mut body).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            WireError::Truncated
        } else {
            WireError::Io(e)
        }
    })?;
    Ok(Some(body))
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
