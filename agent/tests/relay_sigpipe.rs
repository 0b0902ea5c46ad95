//! A relay child that closes its stdin while the coordinator still sends: the write fails with
//! EPIPE instead of SIGPIPE killing the process. Its own test binary, because it sets SIGPIPE to
//! its default action (die) as `hsm-coordinator` does, which must not affect other tests.

use hsm_agent::tls::stdio_socket::{Relay, RelayCommand};
use quinn::AsyncUdpSocket;
use std::time::Duration;

#[test]
fn sending_to_a_relay_whose_stdin_closed_does_not_raise_sigpipe() {
    // SAFETY: setting a signal disposition; the test binary's other threads do not write pipes.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // Closes its stdin at once, then stays alive (so only the pipe is gone).
        let command = RelayCommand {
            program: "sh".into(),
            args: vec!["-c".into(), "exec 0<&-; sleep 30".into()],
        };
        let relay = Relay::spawn(&command, "127.0.0.1:9".parse().unwrap()).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let datagram = [0u8; 1200];
        let transmit = quinn::udp::Transmit {
            destination: "127.0.0.1:9".parse().unwrap(),
            ecn: None,
            contents: &datagram,
            segment_size: None,
            src_ip: None,
        };
        for _ in 0..20 {
            // Ok or WouldBlock; with SIGPIPE at its default the process would be dead here.
            let _ = relay.socket.try_send(&transmit);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(relay);
    });
}
