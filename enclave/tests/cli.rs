//! `conclave-enclave codec ...` on real files: encode, inspect, decode one update and aggregate
//! several, and refuse damaged input with exit code 2.

use std::path::Path;
use std::process::Command;

use conclave_enclave::codec;
use conclave_enclave::tensors::{self, NamedTensor};
use conclave_protocol::{DecodeLimits, SparseUpdate, Transform};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_conclave-enclave"))
}

fn input(dir: &Path, name: &str, seed: u32) -> std::path::PathBuf {
    let mk = |n: usize, s: u32| -> Vec<f32> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(s) % 1000) as f32 / 100.0 - 5.0
            })
            .collect()
    };
    let t = vec![
        NamedTensor {
            name: "w".into(),
            shape: vec![128, 100],
            data: mk(12_800, seed),
        },
        NamedTensor {
            name: "b".into(),
            shape: vec![100],
            data: mk(100, seed + 1),
        },
    ];
    let p = dir.join(name);
    tensors::write(&p, &t).unwrap();
    p
}

#[test]
fn encode_inspect_decode_and_aggregate() {
    let dir = tempfile::tempdir().unwrap();
    let a = input(dir.path(), "a.safetensors", 1);
    let b = input(dir.path(), "b.safetensors", 7);
    for (src, out) in [(&a, "a.bin"), (&b, "b.bin")] {
        let st = bin()
            .args([
                "codec", "encode", "--topk", "8", "--values", "2bit", "--no-dct", "--json", "--in",
            ])
            .arg(src)
            .arg("--out")
            .arg(dir.path().join(out))
            .arg("--residual")
            .arg(dir.path().join(format!("{out}.residual.safetensors")))
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
        assert_eq!(v["parameters"], 12_900);
    }
    let st = bin()
        .args(["codec", "inspect", "--json"])
        .arg(dir.path().join("a.bin"))
        .output()
        .unwrap();
    assert!(st.status.success());
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(v["transform"], "identity");
    assert_eq!(v["tensors"][1]["values"], "2bit");

    // Aggregation through the CLI equals the library's.
    let out = dir.path().join("agg.safetensors");
    let st = bin()
        .args(["codec", "decode", "--in"])
        .arg(dir.path().join("a.bin"))
        .arg("--in")
        .arg(dir.path().join("b.bin"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let dense = tensors::read(&out).unwrap();
    let ua = SparseUpdate::decode(
        &std::fs::read(dir.path().join("a.bin")).unwrap(),
        &DecodeLimits::default(),
    )
    .unwrap();
    let ub = SparseUpdate::decode(
        &std::fs::read(dir.path().join("b.bin")).unwrap(),
        &DecodeLimits::default(),
    )
    .unwrap();
    let want = codec::aggregate(
        &[&ua.tensors[1], &ub.tensors[1]],
        Transform::Identity,
        false,
    )
    .unwrap();
    assert_eq!(dense.iter().find(|t| t.name == "w").unwrap().data, want);

    // The residual plus the decoded update is the input.
    let res = tensors::read(&dir.path().join("a.bin.residual.safetensors")).unwrap();
    let orig = tensors::read(&a).unwrap();
    let one = codec::decode(&ua.tensors[1], Transform::Identity).unwrap();
    for ((r, o), d) in res[1].data.iter().zip(&orig[1].data).zip(&one) {
        assert!((r + d - o).abs() < 1e-5);
    }
}

#[test]
fn damaged_updates_are_refused_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let a = input(dir.path(), "a.safetensors", 1);
    let upd = dir.path().join("a.bin");
    assert!(
        bin()
            .args(["codec", "encode", "--in"])
            .arg(&a)
            .arg("--out")
            .arg(&upd)
            .status()
            .unwrap()
            .success()
    );
    let mut bytes = std::fs::read(&upd).unwrap();
    let n = bytes.len();
    bytes[n - 3] = 0xFF; // a value byte: 0xFF.. in the exponent makes it non-finite or changes it
    bytes.truncate(n - 1);
    std::fs::write(&upd, &bytes).unwrap();
    let st = bin()
        .args(["codec", "decode", "--in"])
        .arg(&upd)
        .arg("--out")
        .arg(dir.path().join("x.safetensors"))
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(2));
    let err = String::from_utf8_lossy(&st.stderr);
    assert!(err.contains("ends early") || err.contains("bytes"), "{err}");
    assert!(!dir.path().join("x.safetensors").exists());
    let st = bin().args(["codec", "inspect"]).arg(&a).output().unwrap();
    assert_eq!(st.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&st.stderr).contains("not a Conclave sparse update"));
}
