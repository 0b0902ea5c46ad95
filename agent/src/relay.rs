//! `hsm-agent relay`: carries QUIC datagrams between a byte pipe (stdin/stdout, usually an `ssh`
//! session) and the agent's local UDP port, for hosts that UDP from the coordinator cannot reach.
//! The pipe's framing (a big-endian u16 length before each datagram) is hsm-transport's
//! `pipe.rs`, shared with the coordinator's end (`tls/stdio_socket.rs`).
//!
//! The relay holds no state beyond one UDP socket and two fixed buffers: the QUIC connection
//! (TLS, streams, retransmission) runs end to end between coordinator and agent, so a relay that
//! dies loses only datagrams in flight, which QUIC treats as loss.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, UdpSocket};

pub use hsm_transport::pipe::{encode_frame, read_frame, MAX_DATAGRAM};

/// Runs the relay until stdin ends (or stdout breaks): each frame read from stdin goes to `to`
/// as one UDP datagram from a single local socket; each datagram that socket receives from `to`
/// goes to stdout as a frame.
pub fn run(to: SocketAddr) -> io::Result<()> {
    let bind: SocketAddr = if to.is_ipv6() {
        "[::1]:0".parse().expect("literal")
    } else {
        "127.0.0.1:0".parse().expect("literal")
    };
    let socket = UdpSocket::bind(bind)?;
    // Connected: the kernel delivers only the agent's datagrams to this socket.
    socket.connect(to)?;
    let from_agent = socket.try_clone()?;
    // The agent's datagrams towards the pipe: the thread ends with the process.
    std::thread::Builder::new()
        .name("relay-out".into())
        .spawn(move || {
            let stdout = io::stdout().lock();
            if let Err(e) = udp_to_pipe(&from_agent, stdout) {
                eprintln!("hsm-agent relay: writing to stdout failed: {e}");
            }
            // Nobody reads what the agent sends any more: this relay is of no use.
            std::process::exit(0);
        })?;
    pipe_to_udp(io::stdin().lock(), &socket)
}

/// Sends each frame of `input` as one datagram until the input ends.
fn pipe_to_udp<R: Read>(input: R, socket: &UdpSocket) -> io::Result<()> {
    let mut input = io::BufReader::with_capacity(256 * 1024, input);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while let Some(len) = read_frame(&mut input, &mut buf)? {
        if let Err(e) = socket.send(&buf[..len]) {
            // Nothing listens there yet (ECONNREFUSED from an earlier ICMP), or the socket
            // buffer is full: the datagram is lost, as on any network; QUIC sends it again.
            tracing::debug!(error = %e, "relay: datagram to the agent not sent");
        }
    }
    Ok(())
}

/// Writes each datagram the socket receives to `output` as a frame, flushing whenever no more
/// are waiting (batching under load, no delay when idle).
fn udp_to_pipe<W: Write>(socket: &UdpSocket, output: W) -> io::Result<()> {
    let mut output = io::BufWriter::with_capacity(256 * 1024, output);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut frame = Vec::with_capacity(MAX_DATAGRAM + 2);
    loop {
        let mut waiting = true;
        let mut len = match socket.recv(&mut buf) {
            Ok(len) => Some(len),
            Err(e) if refused_or_interrupted(&e) => None,
            Err(e) => return Err(e),
        };
        while waiting {
            if let Some(len) = len {
                frame.clear();
                encode_frame(&buf[..len], &mut frame)?;
                output.write_all(&frame)?;
            }
            len = match recv_now(socket, &mut buf) {
                Ok(len) => Some(len),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    waiting = false;
                    None
                }
                Err(e) if refused_or_interrupted(&e) => None,
                Err(e) => return Err(e),
            };
        }
        output.flush()?;
    }
}

/// Errors of a connected UDP socket that are no reason to stop: an ICMP "port unreachable"
/// (the agent not listening yet, or restarting), or a signal.
fn refused_or_interrupted(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::Interrupted
    )
}

/// `recv` that does not wait: `WouldBlock` when no datagram is queued. Per call (MSG_DONTWAIT),
/// because the socket is shared with the sending thread, which must keep blocking.
fn recv_now(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of the call, and
    // the descriptor belongs to `socket`, which outlives it.
    let n = unsafe {
        libc::recv(
            socket.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(datagrams: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for d in datagrams {
            encode_frame(d, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn frames_round_trip_and_end_cleanly_between_frames() {
        let big = vec![7u8; MAX_DATAGRAM];
        let bytes = frames(&[b"hello", b"", &big]);
        assert_eq!(&bytes[..2], &[0, 5]);
        let mut input = &bytes[..];
        let mut buf = vec![0u8; MAX_DATAGRAM];
        assert_eq!(read_frame(&mut input, &mut buf).unwrap(), Some(5));
        assert_eq!(&buf[..5], b"hello");
        assert_eq!(read_frame(&mut input, &mut buf).unwrap(), Some(0));
        assert_eq!(
            read_frame(&mut input, &mut buf).unwrap(),
            Some(MAX_DATAGRAM)
        );
        assert_eq!(buf, big);
        assert_eq!(read_frame(&mut input, &mut buf).unwrap(), None);
    }

    #[test]
    fn a_frame_torn_by_the_end_of_input_is_an_error_not_a_datagram() {
        let bytes = frames(&[b"hello"]);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        for cut in 1..bytes.len() {
            let mut input = &bytes[..cut];
            let err = read_frame(&mut input, &mut buf).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "cut at {cut}");
        }
    }

    #[test]
    fn a_datagram_too_long_for_a_frame_is_refused() {
        let mut out = Vec::new();
        let err = encode_frame(&vec![0; MAX_DATAGRAM + 1], &mut out).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(out.is_empty());
    }

    /// The relay's two loops against a real UDP peer on 127.0.0.1: frames in become datagrams
    /// out, datagrams back become frames, in order.
    #[test]
    fn the_relay_loops_carry_datagrams_both_ways() {
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.connect(peer.local_addr().unwrap()).unwrap();
        pipe_to_udp(&frames(&[b"one", b"two"])[..], &socket).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(
            (&buf[..n], from),
            (&b"one"[..], socket.local_addr().unwrap())
        );
        let (n, _) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"two");

        // Back: the writer thread frames what arrives; a pipe lets the test read it.
        let (mut read_end, write_end) = std::io::pipe().unwrap();
        let back = socket.try_clone().unwrap();
        std::thread::spawn(move || udp_to_pipe(&back, write_end));
        peer.send_to(b"three", socket.local_addr().unwrap())
            .unwrap();
        peer.send_to(b"four", socket.local_addr().unwrap()).unwrap();
        let mut out = vec![0u8; MAX_DATAGRAM];
        assert_eq!(read_frame(&mut read_end, &mut out).unwrap(), Some(5));
        assert_eq!(&out[..5], b"three");
        assert_eq!(read_frame(&mut read_end, &mut out).unwrap(), Some(4));
        assert_eq!(&out[..4], b"four");
    }
}
