//! `conclave-enclave codec decode` on the attack review's crafted updates: each is refused with
//! exit code 2 and its error named on stderr, within a bounded peak RSS (measured with
//! `wait4`), never with a panic (exit code 101); the 58-byte update that used to allocate a
//! 2.4 GB DCT basis without a DCT decodes in bounded memory.
//!
//! The bound is over the binary's own floor: linking libtorch (and, in a CUDA build, its CUDA
//! libraries) makes even `conclave-enclave --version` peak at about 500 MiB, some 190 MiB of it
//! anonymous (relocated library data) and the rest file pages. So each run is compared with the
//! floor measured the same way on the same machine, plus [`RSS_MARGIN_KIB`], both as the
//! kernel's peak RSS and as sampled peak anonymous memory (see [`Run`]). And in-process: whatever decodes,
//! however mangled, aggregates without a panic, and every codebook the 2-bit quantizer writes is
//! in the canonical form decoders insist on.

use std::path::Path;
use std::process::{Command, Stdio};

use conclave_enclave::codec::{self, Codec, CodecConfig, quant};
use conclave_enclave::tensors;
use conclave_protocol::update::{MAGIC, VERSION};
use conclave_protocol::{
    BlockShape, DecodeLimits, IndexEncoding, SparseUpdate, TensorUpdate, Transform, Values,
};
use proptest::prelude::*;

/// Peak resident memory `codec decode` may add, on a crafted update, to the binary's floor
/// (`--version`). A refused update costs about nothing; the 2.4 GB basis would be 36× this.
const RSS_MARGIN_KIB: i64 = 64 * 1024;

const IDENTITY: u8 = 0;
const DCT: u8 = 1;

/// One tensor as written on the wire: a 1-D tensor of `n` in one `1 × n` block, k = 1, u32
/// index 0, f32 value 1.0, unless the fields say otherwise.
#[derive(Clone)]
struct Wire {
    name: &'static str,
    shape: Vec<u64>,
    rows: u32,
    cols: u32,
    k: u32,
    index: u8,
    value: u8,
    codebook: Option<[f32; 6]>,
    indices: Vec<u8>,
    values: Vec<u8>,
}

fn one_block(n: u32) -> Wire {
    Wire {
        name: "w",
        shape: vec![n as u64],
        rows: 1,
        cols: n,
        k: 1,
        index: 2,
        value: 0,
        codebook: None,
        indices: 0u32.to_le_bytes().to_vec(),
        values: 1f32.to_le_bytes().to_vec(),
    }
}

fn bytes(transform: u8, tensors: &[Wire]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.push(transform);
    out.push(0);
    out.extend_from_slice(&(tensors.len() as u32).to_le_bytes());
    for t in tensors {
        out.extend_from_slice(&(t.name.len() as u16).to_le_bytes());
        out.extend_from_slice(t.name.as_bytes());
        out.push(t.shape.len() as u8);
        for d in &t.shape {
            out.extend_from_slice(&d.to_le_bytes());
        }
        for v in [t.rows, t.cols, t.k] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.push(t.index);
        out.push(t.value);
        for f in t.codebook.iter().flatten() {
            out.extend_from_slice(&f.to_le_bytes());
        }
        for part in [&t.indices, &t.values] {
            out.extend_from_slice(&(part.len() as u32).to_le_bytes());
            out.extend_from_slice(part);
        }
    }
    out
}

/// A header claiming `shape` in blocks of `rows × cols` with `k`, without the data that would
/// follow: refused before any is read.
fn header_only(shape: Vec<u64>, rows: u32, cols: u32, k: u32) -> Vec<u8> {
    let mut b = bytes(
        IDENTITY,
        &[Wire {
            shape,
            rows,
            cols,
            k,
            ..one_block(1)
        }],
    );
    b.truncate(b.len() - 16);
    b
}

/// A 2-bit tensor of 8 values with codes `[1, 2, 3, 2, 2, 1, 3, 2]` and this codebook (shift,
/// scale, lookup × 4).
fn two_bit(cb: [f32; 6]) -> Vec<u8> {
    bytes(
        IDENTITY,
        &[Wire {
            shape: vec![8],
            cols: 8,
            k: 8,
            index: 0,
            value: 2,
            codebook: Some(cb),
            indices: (0..8).collect(),
            values: vec![0b10_11_10_01, 0b10_11_01_10],
            ..one_block(8)
        }],
    )
}

/// How a child ended, and what memory it held at its peak.
struct Run {
    code: Option<i32>,
    signal: Option<i32>,
    /// Peak resident set (KiB), from the kernel's `ru_maxrss`: exact, but it includes the file
    /// pages of the libraries, and unwinding at exit touches ~100 MiB more of those, so an
    /// allocation freed before exit hides below that.
    max_rss_kib: i64,
    /// Peak anonymous resident memory (KiB), sampled from `/proc/<pid>/status` every
    /// millisecond while the child runs: what the program allocates (a large buffer stays long
    /// enough to be seen).
    max_anon_kib: i64,
    stderr: String,
}

#[cfg(target_os = "linux")]
mod sys {
    /// `struct rusage` on Linux (64-bit): two `timeval`s, then 14 `long`s, `ru_maxrss` first.
    #[repr(C)]
    pub struct Rusage {
        pub utime: [i64; 2],
        pub stime: [i64; 2],
        pub maxrss: i64,
        pub rest: [i64; 13],
    }

    const WNOHANG: i32 = 1;

    unsafe extern "C" {
        fn wait4(pid: i32, status: *mut i32, options: i32, rusage: *mut Rusage) -> i32;
    }

    /// Reaps `pid` if it has ended: its wait status and its own peak RSS in KiB.
    pub fn try_wait(pid: u32) -> Option<(i32, i64)> {
        let mut status = 0i32;
        let mut ru = Rusage {
            utime: [0; 2],
            stime: [0; 2],
            maxrss: 0,
            rest: [0; 13],
        };
        loop {
            // SAFETY: `status` and `ru` are valid for writes and `Rusage` has the layout of
            // Linux's `struct rusage` on 64-bit targets; `pid` is our unreaped child.
            let r = unsafe { wait4(pid as i32, &mut status, WNOHANG, &mut ru) };
            if r == pid as i32 {
                return Some((status, ru.maxrss));
            }
            if r == 0 {
                return None;
            }
            let e = std::io::Error::last_os_error();
            assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "wait4: {e}");
        }
    }

    /// `RssAnon` of a live process (KiB); `None` once it has exited.
    pub fn rss_anon_kib(pid: u32) -> Option<i64> {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = s.lines().find(|l| l.starts_with("RssAnon:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }
}

/// Runs `conclave-enclave args…` and measures it.
#[cfg(target_os = "linux")]
#[allow(
    clippy::zombie_processes,
    reason = "reaped with wait4 (for its own rusage), not Child::wait"
)]
fn run(dir: &Path, args: &[&std::ffi::OsStr]) -> Run {
    let err_path = dir.join("stderr.txt");
    let child = Command::new(env!("CARGO_BIN_EXE_conclave-enclave"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    // Reaped here, not through `Child::wait`, to get its own rusage.
    let pid = child.id();
    let mut max_anon_kib = 0;
    let (status, max_rss_kib) = loop {
        if let Some(a) = sys::rss_anon_kib(pid) {
            max_anon_kib = max_anon_kib.max(a);
        }
        if let Some(done) = sys::try_wait(pid) {
            break done;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    };
    let (code, signal) = if status & 0x7f == 0 {
        (Some((status >> 8) & 0xff), None)
    } else {
        (None, Some(status & 0x7f))
    };
    Run {
        code,
        signal,
        max_rss_kib,
        max_anon_kib,
        stderr: std::fs::read_to_string(&err_path).unwrap(),
    }
}

/// What the binary costs doing nothing much: peak RSS of `--version`, and peak anonymous memory
/// decoding a valid 84-byte update (libtorch's load alone is ~190 MiB of it). The max of three
/// runs each.
#[cfg(target_os = "linux")]
struct Floor {
    rss_kib: i64,
    anon_kib: i64,
}

#[cfg(target_os = "linux")]
fn floor(dir: &Path) -> Floor {
    let f = dir.join("floor.bin");
    std::fs::write(&f, two_bit([0.5, 1.25, 0.0, -1.0, 0.0, 2.0])).unwrap();
    let mut fl = Floor {
        rss_kib: 0,
        anon_kib: 0,
    };
    for _ in 0..3 {
        let r = run(dir, &["--version".as_ref()]);
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        fl.rss_kib = fl.rss_kib.max(r.max_rss_kib);
        let r = decode_files(dir, &[&f]);
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        fl.rss_kib = fl.rss_kib.max(r.max_rss_kib);
        fl.anon_kib = fl.anon_kib.max(r.max_anon_kib);
    }
    fl
}

/// Asserts a run stayed within the floor plus [`RSS_MARGIN_KIB`], both ways of measuring.
#[cfg(target_os = "linux")]
fn assert_bounded(what: &str, r: &Run, fl: &Floor) {
    assert!(
        r.max_rss_kib < fl.rss_kib + RSS_MARGIN_KIB,
        "{what}: peak RSS {} KiB, over {} + {RSS_MARGIN_KIB} KiB",
        r.max_rss_kib,
        fl.rss_kib
    );
    assert!(
        r.max_anon_kib < fl.anon_kib + RSS_MARGIN_KIB,
        "{what}: peak anonymous RSS {} KiB, over {} + {RSS_MARGIN_KIB} KiB",
        r.max_anon_kib,
        fl.anon_kib
    );
}

#[cfg(target_os = "linux")]
fn decode_files(dir: &Path, files: &[&Path]) -> Run {
    let out = dir.join("out.safetensors");
    let _ = std::fs::remove_file(&out);
    let mut args: Vec<&std::ffi::OsStr> = vec!["codec".as_ref(), "decode".as_ref()];
    for f in files {
        args.push("--in".as_ref());
        args.push(f.as_os_str());
    }
    args.push("--out".as_ref());
    args.push(out.as_os_str());
    run(dir, &args)
}

#[cfg(target_os = "linux")]
#[test]
fn crafted_updates_are_refused_by_name_in_bounded_memory() {
    let side = 1u32 << 31;
    let valid = two_bit([0.5, 1.25, 0.0, -1.0, 0.0, 2.0]);
    let mut too_many_tensors = bytes(IDENTITY, &[]);
    too_many_tensors[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "58 bytes: one 2^32-1 block, no DCT",
            bytes(IDENTITY, &[one_block(u32::MAX)]),
            "block 1 × 4294967295 = 4294967295 positions, over the limit of 16777216",
        ),
        (
            "58 bytes: one 2^32-1 block, DCT",
            bytes(DCT, &[one_block(u32::MAX)]),
            "DCT block cols 4294967295 over the limit of 4096",
        ),
        (
            "58 bytes: the 2.4 GB basis side (17320), DCT",
            bytes(DCT, &[one_block(17_320)]),
            "DCT block cols 17320 over the limit of 4096",
        ),
        (
            "block side 2^31, DCT",
            bytes(DCT, &[one_block(side)]),
            "DCT block cols 2147483648 over the limit of 4096",
        ),
        (
            "block side 2^31, no DCT",
            bytes(IDENTITY, &[one_block(side)]),
            "block 1 × 2147483648 = 2147483648 positions, over the limit of 16777216",
        ),
        (
            "block 2^31 × 2^31 of a 2^62-element tensor",
            bytes(
                IDENTITY,
                &[Wire {
                    shape: vec![side as u64, side as u64],
                    rows: side,
                    cols: side,
                    ..one_block(1)
                }],
            ),
            "has 4611686018427387904 elements, over the limit of 17179869184",
        ),
        (
            "shape whose element count overflows u64",
            bytes(
                IDENTITY,
                &[Wire {
                    shape: vec![1 << 32, 1 << 32, 2],
                    ..one_block(1)
                }],
            ),
            "the product of shape [4294967296, 4294967296, 2] overflows 64 bits",
        ),
        (
            "2^33 elements in all",
            header_only(vec![1 << 33], 1, 1 << 24, 1),
            "8589934592 elements in all, over the limit of 4294967296",
        ),
        (
            "2^27 blocks",
            header_only(vec![1 << 27], 1, 1, 1),
            "134217728 blocks in all, over the limit of 67108864",
        ),
        (
            "2^30 entries",
            header_only(vec![1 << 30], 1, 1 << 10, 1 << 10),
            "1073741824 entries in all, over the limit of 268435456",
        ),
        (
            "2^32-1 tensors",
            too_many_tensors,
            "4294967295 tensors, over the limit of 65536",
        ),
        (
            "2-bit codebook: something in an unused entry",
            two_bit([0.5, 1.25, 7.0, -1.0, 0.0, 2.0]),
            "2-bit codebook entry 0 is 7 but no value uses it",
        ),
        (
            "2-bit codebook: entries out of order",
            two_bit([0.5, 1.25, 0.0, 2.0, 0.0, -1.0]),
            "2-bit codebook entries 1 (2) and 2 (0) are used but not strictly increasing",
        ),
        (
            "2-bit codebook: NaN scale",
            two_bit([0.5, f32::NAN, 0.0, -1.0, 0.0, 2.0]),
            "2-bit codebook scale is NaN",
        ),
        (
            "truncated update",
            valid[..valid.len() - 1].to_vec(),
            "update ends early",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let fl = floor(dir.path());
    let mut report = vec![format!(
        "floor: peak RSS {} KiB, peak anonymous {} KiB",
        fl.rss_kib, fl.anon_kib
    )];
    for (what, b, expect) in &cases {
        let f = dir.path().join("crafted.bin");
        std::fs::write(&f, b).unwrap();
        let r = decode_files(dir.path(), &[&f]);
        report.push(format!(
            "{what} ({} bytes): exit {:?}, peak RSS {} KiB, peak anonymous {} KiB",
            b.len(),
            r.code,
            r.max_rss_kib,
            r.max_anon_kib
        ));
        assert_eq!(r.signal, None, "{what}: killed by signal {:?}", r.signal);
        assert!(
            matches!(r.code, Some(1 | 2)),
            "{what}: exit {:?}\n{}",
            r.code,
            r.stderr
        );
        assert!(r.stderr.contains(expect), "{what}: {}", r.stderr);
        assert!(!r.stderr.contains("panicked"), "{what}: {}", r.stderr);
        assert_bounded(what, &r, &fl);
        assert!(!dir.path().join("out.safetensors").exists(), "{what}");
    }

    // Peers that disagree are refused the same way.
    let a = dir.path().join("a.bin");
    let b = dir.path().join("b.bin");
    std::fs::write(&a, bytes(IDENTITY, &[one_block(64)])).unwrap();
    std::fs::write(&b, bytes(IDENTITY, &[one_block(32)])).unwrap();
    let r = decode_files(dir.path(), &[&a, &b]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(
        r.stderr.contains("peers disagree on the shape"),
        "{}",
        r.stderr
    );
    std::fs::write(&b, bytes(DCT, &[one_block(64)])).unwrap();
    let r = decode_files(dir.path(), &[&a, &b]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("different transforms"), "{}", r.stderr);
    assert_bounded("disagreeing peers", &r, &fl);
    report.push(format!(
        "disagreeing peers: peak RSS {} KiB, peak anonymous {} KiB",
        r.max_rss_kib, r.max_anon_kib
    ));
    eprintln!("{}", report.join("\n"));
}

#[cfg(target_os = "linux")]
#[test]
fn the_58_byte_update_without_dct_decodes_without_a_basis() {
    // Before: a 17 320² basis and its transpose, 2.4 GB, for a tensor of 17 320 elements.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("u.bin");
    let b = bytes(IDENTITY, &[one_block(17_320)]);
    assert_eq!(b.len(), 58);
    std::fs::write(&f, &b).unwrap();
    let fl = floor(dir.path());
    let r = decode_files(dir.path(), &[&f]);
    eprintln!(
        "58-byte identity update: peak RSS {} KiB, peak anonymous {} KiB (floor {} / {} KiB)",
        r.max_rss_kib, r.max_anon_kib, fl.rss_kib, fl.anon_kib
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_bounded("58-byte identity update", &r, &fl);
    let t = tensors::read(&dir.path().join("out.safetensors")).unwrap();
    assert_eq!(t[0].shape, vec![17_320]);
    assert_eq!(t[0].data[0], 1.0);
    assert!(t[0].data[1..].iter().all(|&v| v == 0.0));
}

#[test]
fn a_dct_side_from_an_update_builds_no_basis_over_the_limit() {
    // Validation runs before any basis: an update over the side limit (as `TensorUpdate`, never
    // through the decoder) is refused by `aggregate`, not built.
    let t = TensorUpdate {
        name: "w".into(),
        shape: vec![1 << 20],
        block: BlockShape {
            rows: 1,
            cols: 1 << 20,
        },
        k: 1,
        index_encoding: IndexEncoding::U32,
        indices: vec![0],
        values: Values::F32(vec![1.0]),
    };
    assert!(matches!(
        codec::decode(&t, Transform::Dct),
        Err(codec::AggregateError::Invalid(
            conclave_protocol::UpdateError::DctBlockSideTooLarge { .. }
        ))
    ));
    // Without a DCT it is a valid one-block update, and decodes.
    let d = codec::decode(&t, Transform::Identity).unwrap();
    assert_eq!((d.len(), d[0]), (1 << 20, 1.0));
    // A codec asked for DCT blocks over the limit cuts them at the limit.
    let c = Codec::new(CodecConfig {
        chunk: 1 << 20,
        ..CodecConfig::default()
    });
    assert_eq!(c.config.block_target(), 4096);
    assert_eq!(c.geometry(&[8192]).n2, 4096);
}

/// Small valid updates from the codec, every encoding and transform.
fn encoded(seed: u64, dct: bool, values: u8) -> Vec<u8> {
    let values = conclave_protocol::ValueEncoding::ALL[values as usize % 4];
    let transform = if dct {
        Transform::Dct
    } else {
        Transform::Identity
    };
    let codec = Codec::new(CodecConfig {
        topk: 3,
        chunk: 8,
        transform,
        values,
        ..CodecConfig::default()
    });
    let mut z = seed | 1;
    let mut data = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                z ^= z << 13;
                z ^= z >> 7;
                z ^= z << 17;
                (z % 2001) as f32 / 100.0 - 10.0
            })
            .collect()
    };
    let tensors = vec![
        codec.compress_only("a", &[16, 24], &data(16 * 24)),
        codec.compress_only("b", &[40], &data(40)),
    ];
    SparseUpdate { transform, tensors }.encode().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Mangle a valid update anywhere; whatever still decodes aggregates without a panic.
    #[test]
    fn whatever_decodes_aggregates_without_panic(
        seed in any::<u64>(),
        dct in any::<bool>(),
        values in 0u8..4,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
    ) {
        let mut b = encoded(seed, dct, values);
        for (at, v) in edits {
            let n = b.len();
            b[at % n] = v;
        }
        let limits = DecodeLimits {
            // Keep what a mangled header may ask of this test process small.
            max_total_numel: 1 << 22,
            ..DecodeLimits::default()
        };
        if let Ok(u) = SparseUpdate::decode(&b, &limits) {
            prop_assert_eq!(u.encode().unwrap(), b);
            for t in &u.tensors {
                let _ = codec::decode(t, u.transform);
                let _ = codec::aggregate(&[t, t], u.transform, true);
            }
        }
    }

    /// Every codebook the quantizer writes is canonical: it validates, and re-decodes.
    #[test]
    fn the_quantizer_writes_canonical_codebooks(
        vals in proptest::collection::vec(
            prop_oneof![
                -1e3f32..1e3,
                Just(0.0f32),
                Just(-0.0f32),
                Just(1.5f32),
                Just(-1.5f32),
                Just(1e-30f32),
            ],
            1..200,
        ),
    ) {
        let (codes, codebook) = quant::quantize_2bit(&vals);
        let n = vals.len() as u32;
        let t = TensorUpdate {
            name: "w".into(),
            shape: vec![n as u64],
            block: BlockShape { rows: 1, cols: n },
            k: n,
            index_encoding: IndexEncoding::U8,
            indices: (0..n).collect(),
            values: Values::TwoBit { codes, codebook },
        };
        prop_assert_eq!(t.validate(Transform::Identity, &DecodeLimits::default()), Ok(()));
        let u = SparseUpdate { transform: Transform::Identity, tensors: vec![t] };
        let b = u.encode().unwrap();
        prop_assert_eq!(SparseUpdate::decode(&b, &DecodeLimits::default()).unwrap(), u);
    }
}
