//! Corpus fuzzing of the frame and message decoders (`FrameDecoder`, and `decode` as every
//! top-level type: `ToAgent`, `FromAgent`, `Hello`, `HelloReply`, `FileHeader`): every file of
//! `protocol/fuzz/corpus/frames/`, then mutations of them for `HSM_FUZZ_SECS` seconds (default
//! 15) or `HSM_FUZZ_RUNS` inputs, whichever comes first, from the seed `HSM_FUZZ_SEED` (printed;
//! a fixed default). A panic fails the test; the input is printed and written to
//! `target/fuzz-crash-frames-<n>`. So does a decoder holding more memory than twice the bytes it
//! was given.
//!
//! cargo-fuzz is not available offline here; this runner needs no extra crate. A corpus file is a
//! byte stream: it goes through a `FrameDecoder` in pieces (each frame body it yields decoded as
//! every type) and, whole, straight to `decode` as every type. The valid seeds are written by the
//! ignored test `write_the_frames_corpus` (run it after changing a message type).

mod common;

use common::decode_as_everything;
use hsm_protocol::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/frames")
}

/// Where crash inputs go: the workspace's target directory.
fn crash_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// xorshift64*: small, fast, reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Bytes worth planting: MessagePack markers that announce huge lengths or nest, the unused
/// marker 0xc1, and the edges of small integers.
const INTERESTING_BYTES: &[u8] = &[
    0x00, 0x01, 0x7f, 0x80, 0xff, 0xc0, 0xc1, 0xc2, 0xc3, 0x90, 0x91, 0x9f, 0x80, 0x81, 0x8f, 0xa0,
    0xbf, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xcb, 0xcf, 0xd3, 0xd9, 0xda, 0xdb, 0xdc, 0xdd,
    0xde, 0xdf, 0xe0,
];

/// Four-byte values worth planting: frame length prefixes at and around the limit, and
/// MessagePack 32-bit lengths.
fn interesting_words() -> [[u8; 4]; 7] {
    let limit = MAX_FRAME as u32;
    [
        u32::MAX.to_be_bytes(),
        limit.to_be_bytes(),
        (limit + 1).to_be_bytes(),
        (limit - 1).to_be_bytes(),
        0u32.to_be_bytes(),
        1u32.to_be_bytes(),
        0x8000_0000u32.to_be_bytes(),
    ]
}

/// Applies one to four random mutations to `input`; `other` is a second corpus entry to splice.
fn mutate(rng: &mut Rng, input: &mut Vec<u8>, other: &[u8]) {
    for _ in 0..1 + rng.below(4) {
        let len = input.len();
        match rng.below(9) {
            0 if len > 0 => {
                let at = rng.below(len);
                input[at] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let at = rng.below(len);
                input[at] = *rng.pick(INTERESTING_BYTES);
            }
            2 => {
                let at = rng.below(len + 1);
                input.insert(at, *rng.pick(INTERESTING_BYTES));
            }
            3 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(16));
                input.drain(at..at + n);
            }
            4 => {
                // Splice: this input up to a point, the other from a point.
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                input.truncate(cut);
                input.extend_from_slice(&other[from..]);
            }
            5 if len > 0 => {
                // Duplicate a chunk in place (repeated fields, nesting, frames).
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(64));
                let chunk = input[at..at + n].to_vec();
                let to = rng.below(len + 1);
                input.splice(to..to, chunk);
            }
            6 => {
                let word = *rng.pick(&interesting_words());
                let at = rng.below(len + 1);
                if rng.below(2) == 0 && at + 4 <= len {
                    input[at..at + 4].copy_from_slice(&word);
                } else {
                    input.splice(at..at, word);
                }
            }
            7 => {
                // A 32-bit-length marker claiming a huge string, binary, array or map.
                let marker = *rng.pick(&[0xc6u8, 0xc9, 0xdb, 0xdd, 0xdf]);
                let at = rng.below(len + 1);
                input.splice(at..at, [marker, 0xff, 0xff, 0xff, 0xff]);
            }
            _ => {
                let at = rng.below(len + 1);
                input.truncate(at);
            }
        }
    }
    // Keep inputs small: big ones only slow the run down.
    input.truncate(64 * 1024);
}

/// Everything one input goes through: the frame decoder in pieces, each body decoded as every
/// type, the remainder handed back; and the whole input as one body. Panics on a broken
/// invariant as a decoder panic would.
fn exercise(input: &[u8], cuts: &[usize]) {
    decode_as_everything(input);
    let mut decoder = FrameDecoder::new();
    let mut received = 0usize;
    let mut start = 0;
    for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
        let cut = cut.clamp(start, input.len());
        let chunk = &input[start..cut];
        start = cut;
        received += chunk.len();
        let pushed = decoder.push(chunk);
        assert!(
            decoder.capacity() <= (2 * received).max(64),
            "the frame decoder holds {} bytes after receiving {received}",
            decoder.capacity()
        );
        if pushed.is_err() {
            assert!(
                decoder.next_frame().is_err(),
                "a refused stream stays refused"
            );
            return;
        }
        loop {
            match decoder.next_frame() {
                Ok(Some(body)) => decode_as_everything(&body),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    assert!(decoder.buffered().len() <= input.len());
    let _ = decoder.into_buffered();
}

/// Runs one input through [`exercise`], cut at random places; the panic message if it panics.
fn try_input(input: &[u8], rng: &mut Rng) -> Result<(), String> {
    let cuts: Vec<usize> = (0..rng.below(6))
        .map(|_| rng.below(input.len() + 1))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    std::panic::catch_unwind(|| exercise(input, &cuts)).map_err(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        format!("{message} (cut at {cuts:?})")
    })
}

fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn frames_and_messages_survive_the_corpus_and_its_mutations() {
    let seed = env_number("HSM_FUZZ_SEED").unwrap_or(0x5eed_f4a3);
    let secs = env_number("HSM_FUZZ_SECS").unwrap_or(15);
    let runs = env_number("HSM_FUZZ_RUNS");
    println!(
        "fuzz frames: seed {seed} (HSM_FUZZ_SEED), {secs} s (HSM_FUZZ_SECS), runs {runs:?} \
         (HSM_FUZZ_RUNS)"
    );
    let mut corpus: Vec<(String, Vec<u8>)> = std::fs::read_dir(corpus_dir())
        .expect("the corpus directory protocol/fuzz/corpus/frames")
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    corpus.sort();
    assert!(corpus.len() >= 20, "the corpus is missing its seeds");

    // Quiet panics: each one is reported below with its input.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut rng = Rng(seed.max(1));
    let mut crashes = Vec::new();
    let mut tried = 0u64;
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut record = |input: &[u8], what: String, rng: &mut Rng| {
        if let Err(failure) = try_input(input, rng) {
            let path = crash_dir().join(format!("fuzz-crash-frames-{}", crashes.len()));
            let _ = std::fs::write(&path, input);
            crashes.push(format!(
                "{what}: {failure}\n  input ({} bytes, saved to {}): {}",
                input.len(),
                path.display(),
                hex(input)
            ));
        }
        crashes.len()
    };
    let mut failed = 0;
    for (name, input) in &corpus {
        failed = record(input, format!("corpus file {name}"), &mut rng);
        tried += 1;
    }
    while Instant::now() < deadline && runs.is_none_or(|runs| tried < runs) && failed < 10 {
        let (name, base) = rng.pick(&corpus);
        let (_, other) = rng.pick(&corpus);
        let mut input = base.clone();
        mutate(&mut rng, &mut input, other);
        failed = record(&input, format!("mutation of {name}"), &mut rng);
        tried += 1;
    }
    std::panic::set_hook(hook);
    println!(
        "fuzz frames: {tried} inputs tried, {} crashes",
        crashes.len()
    );
    assert!(
        crashes.is_empty(),
        "decoder failures (seed {seed}):\n{}",
        crashes.join("\n")
    );
}

/// The corpus seeds: every sample message of every top-level type as a frame, streams of several
/// frames, and hostile shapes. `cargo test -p hsm-protocol --test fuzz_frames -- --ignored`
/// rewrites them.
#[test]
#[ignore = "writes the corpus; run by hand after changing a message type"]
fn write_the_frames_corpus() {
    let dir = corpus_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |name: String, bytes: Vec<u8>| seeds.push((name, bytes));
    fn frames<T: serde::Serialize>(samples: &[T]) -> Vec<Vec<u8>> {
        samples.iter().map(|msg| encode(msg).unwrap()).collect()
    }
    let kinds = [
        ("to_agent", frames(&common::to_agent_samples())),
        ("from_agent", frames(&common::from_agent_samples())),
        ("hello", frames(&common::hello_samples())),
        ("hello_reply", frames(&common::hello_reply_samples())),
        ("file_header", frames(&common::file_header_samples())),
    ];
    for (kind, frames) in &kinds {
        for (i, frame) in frames.iter().enumerate() {
            add(format!("valid_{kind}_{i}"), frame.clone());
        }
    }
    let frame_of = |body: &[u8]| {
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(body);
        frame
    };
    // A conversation: hello, then messages; and a file stream: header, then raw bytes.
    let mut conversation = encode(&common::hello_samples()[0]).unwrap();
    for frame in &kinds[0].1 {
        conversation.extend_from_slice(frame);
    }
    add("stream_conversation".into(), conversation);
    let mut file = encode(&common::file_header_samples()[0]).unwrap();
    file.extend_from_slice(b"raw file bytes that are not a frame\x00\xff");
    add("stream_file_header_then_bytes".into(), file);
    add("empty".into(), Vec::new());
    add("frame_empty_body".into(), frame_of(b""));
    add("prefix_half".into(), vec![0, 0]);
    add("prefix_u32_max".into(), u32::MAX.to_be_bytes().to_vec());
    let mut over = (MAX_FRAME as u32 + 1).to_be_bytes().to_vec();
    over.extend_from_slice(b"abc");
    add("prefix_over_the_limit".into(), over);
    let mut at_limit = (MAX_FRAME as u32).to_be_bytes().to_vec();
    at_limit.extend_from_slice(&[0x90; 1024]);
    add("prefix_at_the_limit_1k_sent".into(), at_limit);
    let mut later = frame_of(&encode(&common::hello_samples()[0]).unwrap()[PREFIX_LEN..]);
    later.extend_from_slice(&u32::MAX.to_be_bytes());
    add("valid_then_huge_prefix".into(), later);
    let ping = encode(&ToAgent::Ping(PingMsg { nonce: 1 })).unwrap();
    add("truncated_body".into(), ping[..ping.len() - 2].to_vec());
    let mut trailing = ping.clone();
    trailing.push(0);
    let body_len = (trailing.len() - PREFIX_LEN) as u32;
    trailing[..PREFIX_LEN].copy_from_slice(&body_len.to_be_bytes());
    add("trailing_byte_in_body".into(), trailing);
    // Nesting far past the decoder's depth limit, under an unknown field and at the top.
    let mut nested = vec![0x81, 0xa1, b'x'];
    nested.extend(std::iter::repeat_n(0x91, 20_000));
    nested.push(0xc0);
    add("deep_nesting_unknown_field".into(), frame_of(&nested));
    let mut top = vec![0x91; 20_000];
    top.push(0xc0);
    add("deep_nesting_top".into(), frame_of(&top));
    // MessagePack lengths claiming gigabytes.
    for (name, marker) in [
        ("bin32", 0xc6u8),
        ("str32", 0xdb),
        ("array32", 0xdd),
        ("map32", 0xdf),
        ("ext32", 0xc9),
    ] {
        add(
            format!("huge_{name}"),
            frame_of(&[marker, 0xff, 0xff, 0xff, 0xff, 0]),
        );
    }
    // A `Ping` whose nonce is negative, a float, a string; a variant name nobody knows.
    for (name, value) in [
        ("negative", vec![0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0]),
        ("float", vec![0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0]),
        ("string", vec![0xa1, b'1']),
    ] {
        let mut body = vec![0x81, 0xa4];
        body.extend_from_slice(b"Ping");
        body.extend_from_slice(&[0x81, 0xa5]);
        body.extend_from_slice(b"nonce");
        body.extend(value);
        add(format!("ping_nonce_{name}"), frame_of(&body));
    }
    let mut unknown = vec![0x81, 0xa7];
    unknown.extend_from_slice(b"Unknown");
    unknown.push(0x80);
    add("unknown_variant".into(), frame_of(&unknown));
    add("invalid_marker".into(), frame_of(&[0xc1, 0xc1, 0xc1]));
    let mut bad_utf8 = vec![0x81, 0xa4];
    bad_utf8.extend_from_slice(b"Ping");
    bad_utf8.extend_from_slice(&[0x81, 0xa5, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0x01]);
    add("field_name_not_utf8".into(), frame_of(&bad_utf8));

    for entry in std::fs::read_dir(&dir).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let mut total = 0;
    for (name, bytes) in &seeds {
        total += bytes.len();
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    assert!(total < 200 * 1024, "the corpus is {total} bytes");
    println!(
        "wrote {} seeds, {total} bytes, to {}",
        seeds.len(),
        dir.display()
    );
}
