//! The link between coordinator and agent below the protocol: identities (keys, certificates,
//! authorized fingerprints, the strict file-permission rules they are kept under), QUIC with
//! mutual TLS (`tls`, with the ssh relay's socket), length-prefixed frames (`wire`) and the
//! relay pipe's framing (`pipe`). No daemon or coordinator logic lives here.

pub mod identity;
pub mod pipe;
pub mod strict;
pub mod tls;
pub mod wire;
