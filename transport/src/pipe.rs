//! The ssh transport's pipe framing, shared by `hsm-agent relay` (one end) and the
//! coordinator's `StdioSocket` (the other): each QUIC datagram as a big-endian u16 length, then
//! its bytes.

use std::io::{self, Read};

/// The largest datagram the framing carries (its length is a u16).
pub const MAX_DATAGRAM: usize = u16::MAX as usize;

/// Appends one datagram to `out` as a frame: its length (u16, big-endian), then its bytes.
/// Datagrams longer than [`MAX_DATAGRAM`] cannot be framed (QUIC's are below 1,500 bytes).
pub fn encode_frame(datagram: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    let len = u16::try_from(datagram.len()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a datagram of {} bytes does not fit a relay frame",
                datagram.len()
            ),
        )
    })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(datagram);
    Ok(())
}

/// Reads one frame into `buf` (at least [`MAX_DATAGRAM`] bytes) and returns the datagram's
/// length; `None` at a clean end of input (between frames). An end inside a frame is an
/// `UnexpectedEof` error: the pipe broke mid-datagram.
pub fn read_frame<R: Read>(input: &mut R, buf: &mut [u8]) -> io::Result<Option<usize>> {
    let mut len = [0u8; 2];
    // The first byte decides between a clean end and a torn frame.
    loop {
        match input.read(&mut len[..1]) {
            Ok(0) => return Ok(None),
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    input.read_exact(&mut len[1..])?;
    let len = u16::from_be_bytes(len) as usize;
    input.read_exact(&mut buf[..len])?;
    Ok(Some(len))
}
