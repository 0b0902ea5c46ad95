//! Property tests: no input — random bytes, damaged valid frames, any chunking of a stream —
//! makes a decoder panic, and the frame decoder's memory stays bounded by what it was sent.

mod common;

use common::*;
use hsm_protocol::*;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};

/// One way of damaging a frame body.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(Index, u8),
    SetByte(Index, u8),
    Insert(Index, u8),
    Delete(Index),
    Truncate(Index),
    /// A MessagePack marker that announces a huge string, binary, array, map or extension,
    /// inserted where it can make a decoder believe a length it should not.
    HugeLength(Index, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit(at, bit)),
        (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::SetByte(at, byte)),
        (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert(at, byte)),
        any::<Index>().prop_map(Mutation::Delete),
        any::<Index>().prop_map(Mutation::Truncate),
        (
            any::<Index>(),
            select(vec![0xc6u8, 0xc9, 0xdb, 0xdd, 0xdf, 0xcf, 0xd3])
        )
            .prop_map(|(at, marker)| Mutation::HugeLength(at, marker)),
    ]
}

fn apply(body: &mut Vec<u8>, mutation: &Mutation) {
    // Positions index the body as it is now, one past the end included for insertions.
    let position = |at: &Index, len: usize| at.index(len + 1);
    match mutation {
        Mutation::FlipBit(at, bit) if !body.is_empty() => {
            let i = at.index(body.len());
            body[i] ^= 1 << bit;
        }
        Mutation::SetByte(at, byte) if !body.is_empty() => {
            let i = at.index(body.len());
            body[i] = *byte;
        }
        Mutation::Insert(at, byte) => body.insert(position(at, body.len()), *byte),
        Mutation::Delete(at) if !body.is_empty() => {
            body.remove(at.index(body.len()));
        }
        Mutation::Truncate(at) => body.truncate(position(at, body.len())),
        Mutation::HugeLength(at, marker) => {
            let i = position(at, body.len());
            body.splice(i..i, [*marker, 0xff, 0xff, 0xff, 0xff]);
        }
        _ => {}
    }
}

/// A stream piece: a frame of one of our messages, a frame with a random small body, or bytes
/// that need not be a frame at all.
fn stream_piece(frames_only: bool) -> BoxedStrategy<Vec<u8>> {
    let framed = |body: Vec<u8>| {
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend(body);
        frame
    };
    let valid = prop_oneof![select(sample_bodies()), any_body()].prop_map(framed);
    let random_body = vec(any::<u8>(), 0..64).prop_map(framed);
    if frames_only {
        prop_oneof![valid, random_body].boxed()
    } else {
        prop_oneof![3 => valid, 3 => random_body, 1 => vec(any::<u8>(), 0..16)].boxed()
    }
}

/// Cuts `stream` at the given fractions into chunks (some empty).
fn chunks<'a>(stream: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|cut| cut.index(stream.len() + 1)).collect();
    points.push(0);
    points.push(stream.len());
    points.sort_unstable();
    points.windows(2).map(|w| &stream[w[0]..w[1]]).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn random_bytes_never_panic_a_decoder(body in vec(any::<u8>(), 0..256)) {
        decode_as_everything(&body);
    }

    #[test]
    fn damaged_valid_frames_never_panic_a_decoder(
        mut body in prop_oneof![select(sample_bodies()), any_body()],
        mutations in vec(mutation(), 1..6),
    ) {
        for mutation in &mutations {
            apply(&mut body, mutation);
        }
        decode_as_everything(&body);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3_000))]

    #[test]
    fn any_chunking_of_valid_frames_gives_the_bodies_back(
        pieces in vec(stream_piece(true), 0..6),
        cuts in vec(any::<Index>(), 0..12),
    ) {
        let stream = pieces.concat();
        let mut decoder = FrameDecoder::new();
        let mut bodies = Vec::new();
        for chunk in chunks(&stream, &cuts) {
            decoder.push(chunk).unwrap();
            while let Some(body) = decoder.next_frame().unwrap() {
                bodies.push(body);
            }
        }
        let expected: Vec<Vec<u8>> = pieces.iter().map(|piece| piece[PREFIX_LEN..].to_vec()).collect();
        prop_assert_eq!(bodies, expected);
        prop_assert!(decoder.buffered().is_empty());
    }

    #[test]
    fn any_bytes_in_any_chunks_never_panic_nor_overgrow_the_decoder(
        pieces in vec(stream_piece(false), 0..6),
        cuts in vec(any::<Index>(), 0..12),
    ) {
        let stream = pieces.concat();
        let mut decoder = FrameDecoder::new();
        let mut received = 0usize;
        'stream: for chunk in chunks(&stream, &cuts) {
            received += chunk.len();
            let pushed = decoder.push(chunk);
            prop_assert!(decoder.buffered().len() <= PREFIX_LEN + MAX_FRAME + chunk.len());
            prop_assert!(decoder.capacity() <= PREFIX_LEN + MAX_FRAME + chunk.len());
            // Memory follows the bytes received, never a length that was merely announced.
            prop_assert!(
                decoder.capacity() <= (2 * received).max(8),
                "capacity {} after {} bytes", decoder.capacity(), received
            );
            if pushed.is_err() {
                prop_assert_eq!(decoder.capacity(), 0);
                prop_assert!(decoder.next_frame().is_err());
                break 'stream;
            }
            loop {
                match decoder.next_frame() {
                    Ok(Some(body)) => decode_as_everything(&body),
                    Ok(None) => break,
                    Err(_) => break 'stream,
                }
            }
            prop_assert!(decoder.buffered().len() <= PREFIX_LEN + MAX_FRAME);
        }
    }
}
